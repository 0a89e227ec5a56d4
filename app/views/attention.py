"""Attention viewer: one head on one prompt — the full map for short prompts, the received profile for long ones."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from probe.plot import attention_map_figure

from .. import live
from .common import get_model

DEFAULT_PROMPT = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is"


def render(model_name: str, layer: int, head: int) -> None:
    """Prompt + button; draws the T x S map (≤ live.FULL_MAP_LIMIT tokens) or the received-mass profile."""
    st.caption(f"Head L{layer}H{head} (pick it in the sidebar or by clicking a heatmap). Prompts up to "
               f"{live.FULL_MAP_LIMIT} tokens show the full map; longer ones only how much attention each key receives.")
    prompt = st.text_area("Prompt", value=DEFAULT_PROMPT, key="attn_prompt", height=100)
    if st.button("Show attention", key="attn_run"):
        live.check_prompt(prompt)
        handle = get_model(model_name)
        with st.spinner(f"capturing L{layer}H{head}…"):
            st.session_state["attn_result"] = (model_name, live.head_attention(handle, prompt, layer, head))
    result = st.session_state.get("attn_result")
    if not result:
        return
    name, ha = result
    if ha.full:
        fig = attention_map_figure(ha.tokens, ha.probs, f"{name} L{ha.layer}H{ha.head}: attention map (query × key)")
        st.plotly_chart(fig, key="attn_map", width="stretch")
    else:
        st.info(f"{len(ha.tokens)} tokens: too long for a full map; showing the received-mass profile.")
    fig = go.Figure(go.Bar(x=list(range(len(ha.received))), y=ha.received, customdata=[repr(t) for t in ha.tokens],
                           hovertemplate="#%{x} %{customdata}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{name} L{ha.layer}H{ha.head}: received attention s_j per key", xaxis_title="key position",
                      yaxis_title="s_j", height=300, margin=dict(l=40, r=20, t=40, b=30))
    st.plotly_chart(fig, key="attn_profile", width="stretch")
