"""``probe.plot``: plotly figures for notebooks (each function returns a ``plotly.graph_objects.Figure``).

    probe.plot.heads(report, "key0_mass")            # layer x head heatmap of any score column
    probe.plot.tokens(h, text, layer=18, head=8)     # tokens coloured by the attention they receive (any length)
    probe.plot.attention(h, text, layer=3, head=2)   # query x key map of one head (short prompts)
    probe.plot.patching(result)                      # probe.patch's result (or its table): layer x head/position
    probe.plot.compare(before, after, "key0_mass")   # head drift between two reports, layers by depth fraction
    probe.plot.top_tokens(report)                    # the tokens that most often act as hidden sinks

The token view reads the received-mass statistic (s_j = mean attention key j receives from the
queries that see it), so it never builds the T x S map and works on long prompts; the attention
view builds the full map and refuses prompts longer than ``max_tokens``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from .errors import ProbeError
from .report.render import heatmap, score_columns, top_tokens_figure

FULL_MAP_LIMIT = 160      # tokens; longer prompts get the received-mass views only


def _heads_of(report_or_heads) -> pd.DataFrame:
    return report_or_heads if isinstance(report_or_heads, pd.DataFrame) else report_or_heads.heads


def heads(report_or_heads, column: Optional[str] = None):
    """Layer x head heatmap of one score column of a report (or a heads DataFrame).

    ``column`` defaults to the report's first score column. Hover shows the head and value; in
    Jupyter with ``plotly.graph_objects.FigureWidget(fig)`` clicks reach ``on_click`` callbacks.
    """
    df = _heads_of(report_or_heads)
    cols = score_columns(df)
    column = column or (cols[0] if cols else None)
    if column not in df.columns:
        raise ProbeError(f"no score column {column!r} in this report", f"choose from {', '.join(cols)}")
    return heatmap(df, column)


def top_tokens(report, n: int = 15):
    """Bar chart of the hidden-sink tokens of a report's ``tokens`` table."""
    tokens = report.table("tokens")
    if tokens is None or not len(tokens):
        raise ProbeError("this report has no hidden-sink tokens table", "scan with --detect sinks")
    return top_tokens_figure(tokens, n)


def received_mass(handle, text: str, layer: int, head: int) -> tuple[list[str], np.ndarray]:
    """Token strings and s_j (mean attention each key receives in head L``layer``H``head``) for ``text``: [S]."""
    from .capture import capture

    handle.check_head(layer, head)
    enc = handle.encode(text)
    with torch.no_grad(), capture(handle, stats=("received",), layers=[layer]) as rec:
        handle.model(**enc, use_cache=False)
    return handle.token_strings(enc["input_ids"][0].cpu()), rec.layer(layer).received_mean[0, head].numpy()


def token_figure(strings: Sequence[str], values: Sequence[float], title: str = "", width: int = 16,
                 label: str = "received"):
    """Tokens laid out as text, ``width`` per row, each cell coloured by its value ([S] each)."""
    import plotly.graph_objects as go

    n = len(strings)
    rows = (n + width - 1) // width
    z = np.full((rows, width), np.nan)
    text = np.full((rows, width), "", dtype=object)
    z.flat[:n] = np.asarray(values, dtype=float)
    text.flat[:n] = [s.replace("\n", "↵") for s in strings]
    pos = np.arange(rows * width).reshape(rows, width)
    fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", customdata=pos, colorscale="Reds",
                               zmin=0, colorbar=dict(title=label), xgap=1, ygap=1,
                               hovertemplate="#%{customdata} %{text}<br>" + label + "=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=max(160, 28 * rows + 80), yaxis=dict(autorange="reversed", visible=False),
                      xaxis=dict(visible=False), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def tokens(handle, text: str, layer: int, head: int, width: int = 16):
    """The tokens of ``text`` coloured by the attention each receives in one head (any prompt length)."""
    strings, s = received_mass(handle, text, layer, head)
    return token_figure(strings, s, f"L{layer}H{head}: attention each token receives (s_j), {len(strings)} tokens",
                        width)


def attention_map_figure(strings: Sequence[str], probs: np.ndarray, title: str = ""):
    """Query x key heatmap of one head's map probs [T, S] with token labels (T <= S, queries = last T)."""
    import plotly.graph_objects as go

    labels = [f"{i}:{t!r}" for i, t in enumerate(strings)]
    fig = go.Figure(go.Heatmap(z=probs, x=labels, y=labels[len(labels) - probs.shape[0]:], colorscale="Viridis",
                               colorbar=dict(title="p"), hovertemplate="query %{y}<br>key %{x}<br>p=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=600, yaxis=dict(autorange="reversed"), xaxis=dict(tickangle=-60),
                      margin=dict(l=40, r=20, t=50, b=30))
    return fig


def attention(handle, text: str, layer: int, head: int, max_tokens: int = FULL_MAP_LIMIT):
    """The full attention map of head L``layer``H``head`` on a short ``text`` (at most ``max_tokens`` tokens)."""
    from .capture import capture

    handle.check_head(layer, head)
    enc = handle.encode(text)
    n = enc["input_ids"].shape[1]
    if n > max_tokens:
        raise ProbeError(f"{n} tokens is too long for a full attention map (limit {max_tokens})",
                         "use probe.plot.tokens for long prompts, or raise max_tokens")
    with torch.no_grad(), capture(handle, stats=("full",), layers=[layer]) as rec:
        handle.model(**enc, use_cache=False)
    strings = handle.token_strings(enc["input_ids"][0].cpu())
    return attention_map_figure(strings, rec.layer(layer).probs[0, head].numpy(), f"L{layer}H{head}: attention map")


def patching(result_or_table, value: str = "normalized_effect"):
    """Heatmap of an activation-patching result: layer x head (site z) or layer x site / position.

    Accepts what ``probe.patch`` returns or its table (columns site, layer, head, position, ``value``).
    """
    import plotly.graph_objects as go

    t = getattr(result_or_table, "table", result_or_table).copy()
    if value not in t.columns:
        raise ProbeError(f"no column {value!r} in the patching table", "pass value='effect' or 'normalized_effect'")
    head = t["head"] if "head" in t.columns else pd.Series(-1, index=t.index)
    pos = t["position"] if "position" in t.columns else pd.Series("all", index=t.index)
    t["column"] = [(f"H{int(h)}" if h >= 0 else s) + ("" if p == "all" else f" @{p}")
                   for s, h, p in zip(t["site"], head, pos)]
    grid = t.pivot_table(index="layer", columns="column", values=value, sort=False)
    top = float(np.nanmax(np.abs(grid.values))) or 1.0
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=[f"L{l}" for l in grid.index], colorscale="RdBu",
                               zmid=0, zmin=-top, zmax=top, colorbar=dict(title=value),
                               hovertemplate="%{y} %{x}<br>" + value + "=%{z:.3f}<extra></extra>"))
    metric = getattr(result_or_table, "metric", "")
    fig.update_layout(title=f"activation patching{' (' + metric + ')' if metric else ''}: clean into corrupt",
                      xaxis_title="head / site @ position", height=max(300, 18 * len(grid)),
                      yaxis=dict(autorange="reversed"), margin=dict(l=40, r=20, t=50, b=30))
    return fig


def difference_figure(a: pd.DataFrame, b: pd.DataFrame, column: str, labels: Sequence[str] = ("A", "B")):
    """Layer x head heatmap of b - a for two heads tables of the same shape."""
    import plotly.graph_objects as go

    ga = a.pivot(index="layer", columns="head", values=column).sort_index()
    gb = b.pivot(index="layer", columns="head", values=column).sort_index()
    d = gb - ga
    top = float(np.nanmax(np.abs(d.values))) or 1.0
    name = f"{labels[1]} − {labels[0]}"
    fig = go.Figure(go.Heatmap(z=d.values, x=[f"H{h}" for h in d.columns], y=[f"L{l}" for l in d.index],
                               colorscale="RdBu", zmid=0, zmin=-top, zmax=top, colorbar=dict(title=name),
                               hovertemplate="%{y}%{x}<br>" + name + "=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"{column}: {name}", height=max(300, 18 * len(d)), yaxis=dict(autorange="reversed"),
                      margin=dict(l=40, r=20, t=50, b=30))
    return fig


def depth_profile(heads_df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per layer: depth fraction (layer / (L - 1)), mean and max of ``column`` over heads."""
    g = heads_df.groupby("layer")[column].agg(["mean", "max"]).reset_index().sort_values("layer")
    L = int(heads_df["layer"].max()) + 1
    g["depth"] = g["layer"] / max(L - 1, 1)
    return g


def compare(before, after, column: str, labels: Sequence[str] = ("before", "after")):
    """Head drift between two reports (two models, checkpoints, or a model with / without an intervention).

    Always: the per-layer mean and max of ``column`` against depth fraction (layer / (L - 1)), so
    models with different depths line up. When both have the same layers x heads: also the
    layer x head heatmap of after - before (returned as a second figure in a tuple).
    Returns:
        (profile figure, difference figure or None).
    """
    import plotly.graph_objects as go

    a, b = _heads_of(before), _heads_of(after)
    for df, name in ((a, labels[0]), (b, labels[1])):
        if column not in df.columns:
            raise ProbeError(f"{name} has no score column {column!r}", "scan both with the same detectors")
    fig = go.Figure()
    for df, name, dash in ((a, labels[0], "solid"), (b, labels[1], "dash")):
        p = depth_profile(df, column)
        for stat in ("mean", "max"):
            fig.add_trace(go.Scatter(x=p["depth"], y=p[stat], mode="lines+markers", name=f"{name} {stat}",
                                     line=dict(dash=dash), customdata=p["layer"],
                                     hovertemplate=f"{name} L%{{customdata}}<br>{stat}=%{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=f"{column} by depth: {labels[0]} vs {labels[1]}", xaxis_title="depth fraction (layer / (L-1))",
                      yaxis_title=column, height=380, margin=dict(l=40, r=20, t=50, b=40))
    same = a[["layer", "head"]].shape == b[["layer", "head"]].shape and a["layer"].max() == b["layer"].max()
    return fig, (difference_figure(a, b, column, labels) if same else None)


__all__ = ["heads", "tokens", "attention", "patching", "compare", "top_tokens", "received_mass", "token_figure",
           "attention_map_figure", "difference_figure", "depth_profile", "FULL_MAP_LIMIT"]
