"""Live A/B: a prompt, a set of interventions, baseline vs intervened greedy generations side by side."""
from __future__ import annotations

import html

import streamlit as st

from .. import live
from .common import get_model

DEFAULT_PROMPT = "The capital of France is"


def _controls(layer: int, head: int) -> list[str]:
    """The intervention widgets -> SPEC strings."""
    c1, c2, c3 = st.columns(3)
    with c1:
        act = st.checkbox("ACT (sink calibration)", value=True, key="ab_act")
        beta = st.slider("ACT beta", 0.0, 1.0, 0.4, 0.05, key="ab_beta", disabled=not act)
    with c2:
        masks = st.text_input("Mask heads", value="", key="ab_masks", placeholder=f"e.g. L{layer}H{head}, L20H6")
        mode = st.selectbox("Mask mode", ["uniform", "zero", "mean"], key="ab_mode")
    with c3:
        scales = st.text_input("Scale heads", value="", key="ab_scales", placeholder=f"e.g. L{layer}H{head}")
        alpha = st.slider("Scale alpha", 0.0, 4.0, 2.0, 0.1, key="ab_alpha")
    extra = st.text_area("More interventions (one SPEC per line, e.g. sinkwindow:sinks=4,window=64)", value="",
                         key="ab_extra", height=68)
    return live.build_specs(act, beta, masks, mode, scales, alpha, extra)


def _column(title: str, shared: str, rest: str, ids: list) -> None:
    """One generation in a bordered box; the part after the first differing token is highlighted."""
    st.markdown(f"**{title}** ({len(ids)} tokens)")
    body = html.escape(shared) + (f"<mark style='background:#fde68a'>{html.escape(rest)}</mark>" if rest else "")
    st.html(f"<div style='white-space:pre-wrap;font-family:monospace;border:1px solid #ddd;border-radius:6px;"
            f"padding:8px'>{body or '<i>(nothing generated)</i>'}</div>")


def render(model_name: str, layer: int, head: int) -> None:
    """Prompt, interventions, a Generate button; the two generations side by side with the first divergence."""
    prompt = st.text_area("Prompt", value=DEFAULT_PROMPT, key="ab_prompt", height=80)
    specs = _controls(layer, head)
    a, b = st.columns(2)
    n = a.slider("New tokens", 1, 64, 16, key="ab_tokens")
    chat = b.checkbox("Wrap in the chat template", value=False, key="ab_chat")
    st.caption("Interventions: " + ("; ".join(f"`{s}`" for s in specs) if specs else "none chosen"))
    if st.button("Generate A/B", key="ab_run", type="primary"):
        live.check_prompt(prompt)
        handle = get_model(model_name)
        with st.spinner(f"generating {n} tokens twice on {model_name}…"):
            st.session_state["ab_result"] = (model_name, live.generate_ab(handle, prompt, specs, n, chat))
    result = st.session_state.get("ab_result")
    if not result:
        return
    name, ab = result
    st.markdown(f"**{name}** · prompt `{ab.prompt[:80]}` · " + "; ".join(f"`{s}`" for s in ab.specs))
    left, right = st.columns(2)
    with left:
        _column("Baseline", ab.shared, ab.baseline_rest, ab.baseline_ids)
    with right:
        _column("Intervened", ab.shared, ab.intervened_rest, ab.intervened_ids)
    diff = ab.first_difference
    st.caption("Identical generations." if diff is None else
               f"The generations diverge at new token {diff} (highlighted from there on).")
