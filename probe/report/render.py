"""Render a report: plotly heatmaps (shared with the app), the self-contained HTML, a terminal summary."""
from __future__ import annotations

import html as htmllib

import pandas as pd

from .io import Report
from .schema import HEAD_SCORES


def score_columns(heads: pd.DataFrame) -> list[str]:
    """Numeric per-head score columns present in a heads table (known ones first)."""
    skip = {"layer", "head", "kv_head"}
    numeric = [c for c in heads.columns if c not in skip and pd.api.types.is_numeric_dtype(heads[c])]
    return [c for c in HEAD_SCORES if c in numeric] + [c for c in numeric if c not in HEAD_SCORES]


def heatmap(heads: pd.DataFrame, column: str):
    """A layer x head plotly heatmap of one score column."""
    import plotly.graph_objects as go

    grid = heads.pivot(index="layer", columns="head", values=column).sort_index()
    fig = go.Figure(go.Heatmap(z=grid.values, x=[f"H{h}" for h in grid.columns], y=[f"L{l}" for l in grid.index],
                               colorscale="Viridis", colorbar=dict(title=column),
                               hovertemplate="%{y}%{x}<br>" + column + "=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"{column} — {HEAD_SCORES.get(column, '')}", height=max(300, 18 * len(grid)),
                      yaxis=dict(autorange="reversed"), margin=dict(l=40, r=20, t=50, b=30))
    return fig


def top_tokens_figure(tokens: pd.DataFrame, n: int = 15):
    """Bar chart of the token strings that most often act as hidden sinks."""
    import plotly.graph_objects as go

    agg = tokens.groupby("token")["received_mass"].agg(["count", "mean"]).sort_values("count", ascending=False).head(n)
    fig = go.Figure(go.Bar(x=[repr(t) for t in agg.index], y=agg["count"], customdata=agg["mean"],
                           hovertemplate="%{x}: %{y} (prompt, position, head) rows, mean mass %{customdata:.3f}<extra></extra>"))
    fig.update_layout(title="Top hidden-sink tokens (rows in tokens.parquet)", height=350)
    return fig


def to_html(report: Report) -> str:
    """A self-contained HTML page (plotly.js inlined once) with every score heatmap and the tables."""
    figs = [heatmap(report.heads, c) for c in score_columns(report.heads)]
    tokens = report.table("tokens")
    if tokens is not None and len(tokens):
        figs.append(top_tokens_figure(tokens))
    parts = [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False) for i, fig in enumerate(figs)]
    m = report.manifest
    model = m.get("model", {})
    head = (f"<h1>probe head report</h1><p>model <b>{htmllib.escape(str(model.get('source')))}</b> "
            f"({model.get('n_layers')} layers x {model.get('n_heads')} heads, {model.get('n_kv_heads')} kv heads); "
            f"{m.get('prompts', {}).get('count')} prompts; detectors {', '.join(m.get('detectors', []))}</p>")
    summary = f"<pre>{htmllib.escape(summary_text(report))}</pre>"
    massive = report.table("massive")
    mtable = ""
    if massive is not None and len(massive):
        top = massive.sort_values("max_ratio", ascending=False).head(20)
        mtable = "<h2>Massive activations (top 20 by ratio)</h2>" + top.to_html(index=False, float_format="%.1f")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>probe report</title></head><body>"
            + head + summary + "".join(parts) + mtable + "</body></html>")


def top_heads(heads: pd.DataFrame, column: str, n: int = 5) -> list[tuple[str, float]]:
    """[("L18H8", 0.998), ...]: the ``n`` heads with the largest ``column``."""
    return [(f"L{int(r.layer)}H{int(r.head)}", float(getattr(r, column))) for r in heads.nlargest(n, column).itertuples()]


def summary_html(report: Report, top: int = 5) -> str:
    """A compact HTML card for Jupyter: model, prompts, detectors, top heads per score, the tables."""
    esc = htmllib.escape
    m = report.manifest
    model, prompts = m.get("model", {}), m.get("prompts", {})
    rows = []
    for col in score_columns(report.heads):
        tops = ", ".join(f"{name} <b>{value:.3f}</b>" for name, value in top_heads(report.heads, col, top))
        rows.append(f"<tr><td style='text-align:left' title='{esc(HEAD_SCORES.get(col, ''))}'><code>{esc(col)}</code></td>"
                    f"<td style='text-align:left'>{tops}</td></tr>")
    tables = []
    for name, df in report.tables.items():
        where = f" — {esc(str(report.path / (name + '.parquet')))}" if report.path else ""
        tables.append(f"<li><code>report.{esc(name)}</code>: {len(df)} rows x {len(df.columns)} columns{where}</li>")
    total = m.get("timings", {}).get("total_s")
    return ("<div style='font-family:sans-serif;font-size:13px'>"
            f"<b>probe report</b>{' at <code>' + esc(str(report.path)) + '</code>' if report.path else ''}<br>"
            f"model <b>{esc(str(model.get('source')))}</b> ({model.get('n_layers')} layers x {model.get('n_heads')} heads, "
            f"{model.get('n_kv_heads')} kv heads); {prompts.get('count')} prompts ({esc(str(prompts.get('source')))}); "
            f"detectors <b>{esc(', '.join(m.get('detectors', [])))}</b>"
            f"{'; scan %.1f s' % total if isinstance(total, (int, float)) else ''}"
            f"<table><tr><th style='text-align:left'>score</th><th style='text-align:left'>top {top} heads</th></tr>"
            + "".join(rows) + "</table><ul>" + "".join(tables) + "</ul></div>")


def summary_text(report: Report, top: int = 5) -> str:
    """A terminal summary: the model, each score's top heads, the detectors' headline numbers."""
    m = report.manifest
    model = m.get("model", {})
    lines = [f"report {report.path or ''}",
             f"model {model.get('source')} — {model.get('n_layers')} layers x {model.get('n_heads')} heads "
             f"({model.get('n_kv_heads')} kv), {m.get('prompts', {}).get('count')} prompts, "
             f"scan {m.get('timings', {}).get('total_s', float('nan')):.1f} s"]
    heads = report.heads
    for col in score_columns(heads):
        tops = ", ".join(f"{name}={value:.3f}" for name, value in top_heads(heads, col, top))
        lines.append(f"{col:>18}: mean {heads[col].mean():.3f}; top {tops}")
    for det, summ in m.get("summary", {}).items():
        for k, v in summ.items():
            if isinstance(v, (int, float, str)) or (isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (int, float)) for x in v)):
                lines.append(f"{det}.{k}: {v:.3f}" if isinstance(v, float) else f"{det}.{k}: {v}")
    tokens = report.table("tokens")
    if tokens is not None and len(tokens):
        agg = tokens.groupby("token")["received_mass"].agg(["count", "mean"]).sort_values("count", ascending=False).head(top)
        lines.append("hidden-sink tokens: " + ", ".join(f"{t!r} x{int(r['count'])} (mean {r['mean']:.2f})" for t, r in agg.iterrows()))
    massive = report.table("massive")
    if massive is not None and len(massive):
        sink = massive[massive.get("sink_dim", False) == True]  # noqa: E712
        dims = sorted(set(sink["dim"])) if len(sink) else []
        lines.append(f"massive activations: {len(massive)} (layer, dim) rows; sink dims {dims}; "
                     f"max ratio {massive['max_ratio'].max():.0f}")
    return "\n".join(lines)
