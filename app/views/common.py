"""Helpers every view uses: error display without tracebacks, cached report and model loading."""
from __future__ import annotations

import contextlib
import html
from typing import Optional

import streamlit as st

from probe.errors import ProbeError

from .. import reports


def show_error(err: BaseException, what: str = "") -> None:
    """One clear ``st.error`` line: ProbeError as 'problem — fix', anything else as its type and message."""
    prefix = f"{what}: " if what else ""
    if isinstance(err, ProbeError):
        st.error(f"{prefix}{err.problem}" + (f" — {err.fix}" if err.fix else ""))
    else:
        st.error(f"{prefix}{type(err).__name__}: {str(err)[:400]}")


@contextlib.contextmanager
def guard(what: str = ""):
    """Run a view; any error becomes a message in the page, never a traceback (st.stop / reruns pass)."""
    try:
        yield
    except Exception as err:  # Streamlit's control-flow exceptions derive from BaseException
        show_error(err, what)


@st.cache_data(show_spinner=False, max_entries=16)
def _read(path: str, stamp: float):
    return reports.load(path)


def read_report(path: str):
    """The report at ``path`` (cached until its manifest changes); raises ProbeError."""
    return _read(str(path), reports.report_stamp(path))


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_model(name: str):
    import probe

    return probe.load(name)


def get_model(name: str):
    """The model ``name`` loaded once per server (with a spinner the first time); raises ProbeError."""
    name = (name or "").strip()
    if not name:
        raise ProbeError("no model named", "type a model alias (smollm2, gemma3-270m), a folder or a .gguf path")
    with st.spinner(f"loading {name} (once per server)…"):
        return _load_model(name)


def tokens_html(tokens: list, values, marks: Optional[dict] = None, vmax: Optional[float] = None) -> str:
    """Tokens as inline spans shaded by ``values`` (white -> red), with optional marks per index.

    marks: {index: (css border colour, tooltip)}; several marks on one token join their tooltips.
    """
    marks = marks or {}
    top = float(vmax if vmax is not None else (max(values) if len(values) else 1.0)) or 1.0
    spans = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        a = max(0.0, min(1.0, float(v) / top))
        colour = f"rgba(220, 38, 38, {a:.2f})"
        text = html.escape(tok).replace("\n", "↵<br>") or "&nbsp;"
        tip = f"#{i} {tok!r} received {float(v):.3f}"
        border = ""
        if i in marks:
            border_colour, why = marks[i]
            border = f"border:2px solid {border_colour};"
            tip += " — " + why
        spans.append(f"<span title=\"{html.escape(tip)}\" style=\"background:{colour};{border}border-radius:3px;"
                     f"padding:1px 1px;margin:1px 0;white-space:pre-wrap;font-family:monospace\">{text}</span>")
    return "<div style='line-height:2.0'>" + "".join(spans) + "</div>"
