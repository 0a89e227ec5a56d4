"""Sidebar: the reports root, the report to show, and the model used by the live views."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import streamlit as st

from probe.models import ALIASES, VLM_ALIASES

from .. import reports

MANUAL = "(type a path)"


def pick_report(root: str, given: Optional[str]) -> Optional[str]:
    """Choose a report directory: one listed under the reports root, or a typed path. Returns the path."""
    st.sidebar.header("Report")
    root = st.sidebar.text_input("Reports root", value=root, key="reports_root",
                                 help="folders holding a manifest.json under here are listed")
    found = [str(p) for p in reports.list_reports(root)]
    options = found + [MANUAL]
    if given and given not in options:
        options.insert(0, given)
    default = options.index(given) if given in options else 0
    choice = st.sidebar.selectbox("Report directory", options, index=default, key="report_choice")
    if not found and not given:
        st.sidebar.caption(f"no reports under {root!r} — run `probe scan --out {Path(root) / 'NAME'}`")
    if choice == MANUAL:
        typed = st.sidebar.text_input("Report path", value="", key="report_path").strip()
        return typed or None
    return choice


def pick_model(default: str) -> str:
    """The model the live views load (alias, folder, .gguf or cached hub id)."""
    st.sidebar.header("Live model")
    name = st.sidebar.text_input("Model", value=default, key="model_name",
                                 help=f"aliases: {', '.join([*ALIASES, *VLM_ALIASES])}; or a folder / .gguf path").strip()
    if name in VLM_ALIASES:
        st.sidebar.caption(f"{name} is an {reports.VLM_LABEL}; the live views use its text decoder on text prompts.")
    return name
