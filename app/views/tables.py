"""Detector tables when the report has them: top retrieval / arithmetic / VHD heads, massive activations,
any other detector's table, and line charts for curve-shaped tables (e.g. masking curves)."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from probe.report.schema import HEAD_SCORES

from .. import reports

RANKED = ("retrieval_score", "arithmetic_effect", "vhd")


def has_content(report) -> bool:
    """Whether this section has anything to show for ``report``."""
    massive = report.table("massive")
    return (any(c in report.heads.columns for c in RANKED) or bool(reports.extra_tables(report))
            or (massive is not None and len(massive) > 0))


def curve_figure(name: str, df: pd.DataFrame):
    """Lines of every numeric column against the first one, one colour per value of the first text column."""
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    text = [c for c in df.columns if c not in numeric and df[c].nunique() <= 20]
    x, ys = numeric[0], numeric[1:]
    long = df.melt(id_vars=[x, *text[:1]], value_vars=ys, var_name="series", value_name="value")
    if text:
        long["series"] = long[text[0]].astype(str) + " · " + long["series"]
    fig = px.line(long.sort_values(x), x=x, y="value", color="series", markers=True, title=f"{name}")
    fig.update_layout(height=350, margin=dict(l=40, r=20, t=50, b=30))
    return fig


def render(report, top: int = 15) -> None:
    """The sections present in ``report``; nothing for what it lacks."""
    heads = report.heads
    for col in RANKED:
        if col in heads.columns and heads[col].notna().any():
            st.subheader(f"Top heads by {col}")
            st.caption(HEAD_SCORES.get(col, ""))
            best = heads.nlargest(top, col)[["layer", "head", "kv_head", col]]
            st.dataframe(best, hide_index=True, width="stretch")
    for name, df in reports.extra_tables(report).items():
        st.subheader(f"{name}.parquet")
        if reports.is_curve(df):
            st.plotly_chart(curve_figure(name, df), key=f"curve_{name}", width="stretch")
        st.dataframe(df.head(500), hide_index=True, width="stretch")
    massive = report.table("massive")
    if massive is not None and len(massive):
        st.subheader("Massive activations (top 20 by ratio to the median)")
        st.dataframe(massive.sort_values("max_ratio", ascending=False).head(20), hide_index=True, width="stretch")
