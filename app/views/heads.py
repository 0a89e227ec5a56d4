"""Layer x head heatmaps of every score in the report; click a cell (or use the selectors) for a head's details."""
from __future__ import annotations

import re

import streamlit as st

from probe.report import heatmap, score_columns, top_tokens_figure
from probe.report.schema import HEAD_SCORES

from .. import reports

_CELL = re.compile(r"^L(\d+)$"), re.compile(r"^H(\d+)$")


def _clicked(event) -> tuple[int, int] | None:
    """(layer, head) of the first selected heatmap cell in a plotly selection event, if any."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for p in points:
        ly, hx = _CELL[0].match(str(p.get("y", ""))), _CELL[1].match(str(p.get("x", "")))
        if ly and hx:
            return int(ly.group(1)), int(hx.group(1))
    return None


def clickable(fig, heads, column: str):
    """Overlay an invisible marker on every cell: plotly heatmaps are not selectable, scatter points are,
    so a click on a cell reaches Streamlit as a point selection (x "H<head>", y "L<layer>")."""
    import plotly.graph_objects as go

    cells = heads[["layer", "head", column]]
    fig.add_trace(go.Scatter(x=[f"H{h}" for h in cells["head"]], y=[f"L{l}" for l in cells["layer"]],
                             customdata=cells[column], mode="markers", showlegend=False,
                             marker=dict(size=14, opacity=0, symbol="square"),
                             selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
                             hovertemplate="%{y}%{x}<br>" + column + "=%{customdata:.3f}<extra></extra>"))
    fig.data[0].hoverinfo = "skip"
    n_layers, n_heads = heads["layer"].nunique(), heads["head"].nunique()
    fig.update_layout(clickmode="event+select", dragmode=False,
                      xaxis=dict(range=[-0.5, n_heads - 0.5]), yaxis=dict(range=[n_layers - 0.5, -0.5], autorange=False))
    return fig


def titled(fig, column: str):
    """Short title (the column) with its meaning as a subtitle, so narrow charts do not clip it."""
    fig.update_layout(title=dict(text=column, subtitle=dict(text=HEAD_SCORES.get(column, "")[:90])),
                      margin=dict(l=40, r=20, t=75, b=30))
    return fig


def outline(fig, layer: int, head: int):
    """A red box around the selected head's cell."""
    fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                  line=dict(color="#dc2626", width=3))
    return fig


def render_heatmaps(report) -> None:
    """Every score's heatmap, two per row; a clicked cell becomes the selected head (sel_layer, sel_head)."""
    heads = report.heads
    layers = set(int(v) for v in heads["layer"].unique())
    n_heads = set(int(v) for v in heads["head"].unique())
    cols = score_columns(heads)
    if not cols:
        st.info("This report has no per-head scores.")
        return
    selected = (st.session_state.get("sel_layer"), st.session_state.get("sel_head"))
    cells = set(zip(heads["layer"].astype(int), heads["head"].astype(int)))
    st.caption("Click a cell to select that head (or pick it in the sidebar); its details are below the charts.")
    grid = st.columns(2)
    for i, col in enumerate(cols):
        with grid[i % 2]:
            fig = titled(clickable(heatmap(heads, col), heads, col), col)
            if selected in cells:
                outline(fig, *selected)
            event = st.plotly_chart(fig, key=f"heatmap_{col}", on_select="rerun",
                                    selection_mode="points", width="stretch")
            cell = _clicked(event)
            if cell and st.session_state.get(f"_seen_{col}") != cell:
                st.session_state[f"_seen_{col}"] = cell
                if cell[0] in layers and cell[1] in n_heads and cell != selected:
                    st.session_state["sel_layer"], st.session_state["sel_head"] = cell
                    st.rerun()  # redraw every heatmap with the new head outlined


def select_head(report) -> tuple[int, int]:
    """Sidebar selectors for the head every view uses (from the report's heads, else free numbers)."""
    st.sidebar.header("Head")
    a, b = st.sidebar.columns(2)
    if report is not None:
        layers = sorted(int(v) for v in report.heads["layer"].unique())
        heads = sorted(int(v) for v in report.heads["head"].unique())
        for key, opts in (("sel_layer", layers), ("sel_head", heads)):
            if st.session_state.get(key) not in opts:
                st.session_state[key] = opts[0]
        return a.selectbox("Layer", layers, key="sel_layer"), b.selectbox("Head", heads, key="sel_head")
    layer = a.number_input("Layer", min_value=0, value=0, step=1, key="sel_layer_n")
    head = b.number_input("Head", min_value=0, value=0, step=1, key="sel_head_n")
    return int(layer), int(head)


def render_details(report, layer: int, head: int) -> None:
    """The selected head's scores (value, rank, mean over heads) and its top hidden-sink tokens."""
    heads = report.heads
    row = heads[(heads["layer"] == layer) & (heads["head"] == head)]
    if not len(row):
        st.warning(f"L{layer}H{head} is not in this report.")
        return
    st.subheader(f"Head L{layer}H{head}")
    st.caption(f"kv head {int(row['kv_head'].iloc[0])}")
    st.dataframe(reports.head_scores(report, layer, head), hide_index=True, width="stretch")
    tokens = report.table("tokens")
    if tokens is None:
        return
    toks = reports.head_tokens(report, layer, head)
    if len(toks):
        st.markdown(f"Top hidden-sink tokens of L{layer}H{head} (rows of tokens.parquet: prompt × position)")
        st.dataframe(toks, hide_index=True, width="stretch")
    else:
        st.caption(f"L{layer}H{head} has no hidden-sink rows in this report.")
    if len(tokens):
        st.plotly_chart(top_tokens_figure(tokens), key="top_tokens", width="stretch")
