"""Detector tables when the report has them (nothing for what it lacks): top heads by retrieval /
arithmetic / vision scores, masking curves, per-layer MLP effects, visual sinks over the image grid,
massive activations, and any other detector's table as a plain table."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from probe.report.schema import HEAD_SCORES

from .. import reports

RANKED = ("retrieval_score", "arithmetic_effect", "vhd", "visual_sink_mass")


def has_content(report) -> bool:
    """Whether this section has anything to show for ``report``."""
    massive = report.table("massive")
    return (any(c in report.heads.columns for c in RANKED) or bool(reports.extra_tables(report))
            or (massive is not None and len(massive) > 0))


def is_masking_curve(df: pd.DataFrame) -> bool:
    """Rows (kind: none/top/random, k, draw, metric): ablation or masking curves."""
    return {"kind", "k"} <= set(df.columns) and bool({"recall", "accuracy"} & set(df.columns))


def masking_figure(name: str, df: pd.DataFrame):
    """Metric vs K masked heads: top-K and random-K (mean over draws, min-max bars); K=0 unmasked on both."""
    metric = "recall" if "recall" in df.columns else "accuracy"
    base = df[df["kind"] == "none"]
    fig = go.Figure()
    for kind, colour in (("top", "#dc2626"), ("random", "#2563eb")):
        part = pd.concat([base.assign(kind=kind), df[df["kind"] == kind]])
        if part.empty:
            continue
        g = part.groupby("k")[metric].agg(["mean", "min", "max"]).reset_index()
        fig.add_trace(go.Scatter(x=g["k"], y=g["mean"], mode="lines+markers", name=f"{kind}-K masked",
                                 line=dict(color=colour),
                                 error_y=dict(type="data", symmetric=False, array=g["max"] - g["mean"],
                                              arrayminus=g["mean"] - g["min"])))
    fig.update_layout(title=f"{name}: {metric} vs K masked heads", xaxis_title="K", yaxis_title=metric,
                      height=350, margin=dict(l=40, r=20, t=50, b=30))
    return fig


def is_layer_curve(df: pd.DataFrame) -> bool:
    """Rows (layer, effect[, operator]): a per-layer effect curve (e.g. arithmetic MLP patching)."""
    return {"layer", "effect"} <= set(df.columns) and "head" not in df.columns


def layer_figure(name: str, df: pd.DataFrame):
    colour = "operator" if "operator" in df.columns else None
    fig = px.line(df.sort_values("layer"), x="layer", y="effect", color=colour, markers=True, title=f"{name}: effect per layer")
    fig.update_layout(height=330, margin=dict(l=40, r=20, t=50, b=30))
    return fig


def visual_grid(df: pd.DataFrame) -> None:
    """Visual sinks over the image patch grid: received mass per patch for one item and layer, sinks ringed."""
    a, b = st.columns(2)
    item = a.selectbox("Image item", sorted(df["item"].unique()), key="vis_item")
    part = df[df["item"] == item]
    layer = b.selectbox("Layer", sorted(part["layer"].unique()), key="vis_layer")
    cell = part[part["layer"] == layer]
    grid = cell.pivot_table(index="patch_row", columns="patch_col", values="received_mass", aggfunc="mean")
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="Viridis",
                               colorbar=dict(title="received"),
                               hovertemplate="row %{y} col %{x}<br>received %{z:.3f}<extra></extra>"))
    sinks = cell[cell["is_visual_sink"].astype(bool)]
    if len(sinks):
        fig.add_trace(go.Scatter(x=sinks["patch_col"], y=sinks["patch_row"], mode="markers", name="visual sink",
                                 marker=dict(symbol="circle-open", size=16, color="#dc2626", line=dict(width=3))))
    image = str(cell["image"].iloc[0]) if len(cell) else ""
    fig.update_layout(title=f"{image} — layer {layer}: attention received per patch", height=420,
                      yaxis=dict(autorange="reversed", scaleanchor="x"), margin=dict(l=40, r=20, t=50, b=30))
    st.plotly_chart(fig, key="visual_grid", width="stretch")


def render(report, top: int = 15) -> None:
    """The sections present in ``report``; nothing for what it lacks."""
    heads = report.heads
    for col in RANKED:
        if col in heads.columns and heads[col].notna().any():
            st.subheader(f"Top heads by {col}")
            st.caption(HEAD_SCORES.get(col, ""))
            extra = [c for c in heads.columns if c.startswith(col + "_")]
            best = heads.nlargest(top, col)[["layer", "head", "kv_head", col, *extra]]
            st.dataframe(best, hide_index=True, width="stretch")
    for name, df in reports.extra_tables(report).items():
        st.subheader(f"{name}.parquet")
        if is_masking_curve(df):
            st.plotly_chart(masking_figure(name, df), key=f"curve_{name}", width="stretch")
        elif is_layer_curve(df):
            st.plotly_chart(layer_figure(name, df), key=f"curve_{name}", width="stretch")
        elif name == "visual_tokens" and {"item", "layer", "patch_row", "patch_col", "received_mass"} <= set(df.columns):
            visual_grid(df)
        st.dataframe(df.head(500), hide_index=True, width="stretch")
    massive = report.table("massive")
    if massive is not None and len(massive):
        st.subheader("Massive activations (top 20 by ratio to the median)")
        st.dataframe(massive.sort_values("max_ratio", ascending=False).head(20), hide_index=True, width="stretch")
