"""Tokens view: one prompt's tokens shaded by the attention they receive, hidden sinks and massive activations marked."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from .. import live, reports
from .common import get_model, tokens_html

DEFAULT_PROMPT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                  "must be in want of a wife. However little known the feelings or views of such a man may be "
                  "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
                  "surrounding families.")
SINK_COLOUR, MASSIVE_COLOUR = "#2563eb", "#f59e0b"
SCOPES = {"average": "averaged over all layers and heads", "layer": "mean over the selected layer's heads",
          "head": "the selected head"}


def render(model_name: str, manifest: dict, layer: int, head: int) -> None:
    """Prompt box + capture button; then the shaded tokens for the chosen scope and a per-position bar chart."""
    prompt = st.text_area("Prompt", value=DEFAULT_PROMPT, key="tokens_prompt", height=100)
    scope = st.radio("Colour by", list(SCOPES), format_func=lambda s: SCOPES[s], horizontal=True, key="tokens_scope")
    threshold = float(reports.setting(manifest, "sinks", "hidden_threshold", 0.1))
    min_queries = int(reports.setting(manifest, "sinks", "min_queries", 8))
    ratio = float(reports.setting(manifest, "sinks", "relative_ratio", 100.0))
    if st.button("Capture attention", key="tokens_run"):
        live.check_prompt(prompt)
        handle = get_model(model_name)
        with st.spinner("one forward pass, all layers…"):
            st.session_state["tokens_result"] = (model_name, prompt, live.token_attention(handle, prompt, min_queries))
    result = st.session_state.get("tokens_result")
    if not result:
        st.caption("Press 'Capture attention' to run the prompt through the live model.")
        return
    name, used_prompt, ta = result
    L, H = ta.received.shape[:2]
    if scope != "average" and (layer >= L or head >= H):
        st.warning(f"L{layer}H{head} does not exist in {name} ({L} layers x {H} heads); showing the average.")
        scope = "average"
    values = ta.scores(scope, layer, head)
    sinks = ta.hidden_sinks(scope, layer, head, threshold)
    marks = {}
    for i in sinks.nonzero()[0]:
        marks[int(i)] = (SINK_COLOUR, f"hidden sink (s_j > {threshold:g} in {'the head' if scope == 'head' else 'some head of the scope'})")
    for i in (ta.massive_ratio >= ratio).nonzero()[0]:
        why = f"massive activation: dim {int(ta.massive_dim[i])} at layer {int(ta.massive_layer[i])}, {ta.massive_ratio[i]:.0f}x median"
        colour, prev = marks.get(int(i), (MASSIVE_COLOUR, ""))
        marks[int(i)] = ("#7c3aed" if prev else MASSIVE_COLOUR, f"{prev}; {why}" if prev else why)
    where = {"average": "all layers and heads", "layer": f"layer {layer}", "head": f"L{layer}H{head}"}[scope]
    st.markdown(f"**{name}**, {len(ta.tokens)} tokens, received attention s_j ({where}). "
                f"<span style='border:2px solid {SINK_COLOUR};padding:0 3px'>hidden sink</span> "
                f"<span style='border:2px solid {MASSIVE_COLOUR};padding:0 3px'>massive activation "
                f"(≥ {ratio:g}× median |x|)</span> <span style='border:2px solid #7c3aed;padding:0 3px'>both</span>",
                unsafe_allow_html=True)
    if used_prompt != prompt:
        st.caption("(captured for an earlier prompt — press 'Capture attention' again)")
    st.html(tokens_html(ta.tokens, values, marks))
    st.caption(f"Hidden sinks (keys after the first with s_j > {threshold:g} for the head, or for any head of the "
               f"layer / model, seen by ≥ {min_queries} queries): {int(sinks.sum())}; massive-activation tokens: {int((ta.massive_ratio >= ratio).sum())}. "
               "Hover a token for its value; the first token is usually the sink.")
    fig = go.Figure(go.Bar(x=list(range(len(values))), y=values, customdata=[repr(t) for t in ta.tokens],
                           marker_color=[SINK_COLOUR if s else "#dc2626" for s in sinks],
                           hovertemplate="#%{x} %{customdata}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"received attention per position ({where})", xaxis_title="position",
                      yaxis_title="s_j", height=300, margin=dict(l=40, r=20, t=40, b=30))
    st.plotly_chart(fig, key="tokens_profile", width="stretch")
