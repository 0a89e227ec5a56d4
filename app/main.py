"""probe dashboard (Streamlit script). Start it with ``probe app [DIR]``, or
``streamlit run app/main.py -- [--report DIR] [--reports-root ROOT] [--model NAME]``.

Settings come from those arguments or the environment (PROBE_APP_REPORT, PROBE_APP_REPORTS_ROOT,
PROBE_APP_MODEL). The app only reads report directories; it never writes into them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Streamlit: make `app` and `probe` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st

from app import reports
from app.views import attention, common, compare, heads, live_ab, picker, tables, tokens


def settings() -> argparse.Namespace:
    """--report / --reports-root / --model from the script arguments, falling back on PROBE_APP_* variables."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--report", default=os.environ.get("PROBE_APP_REPORT") or None)
    parser.add_argument("--reports-root", default=os.environ.get("PROBE_APP_REPORTS_ROOT", "reports"))
    parser.add_argument("--model", default=os.environ.get("PROBE_APP_MODEL") or None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


def main() -> None:
    """Sidebar pickers, the report header, then one tab per view (report tabs only for a readable report)."""
    st.set_page_config(page_title="probe", layout="wide")
    args = settings()
    st.title("probe — attention heads")
    path = picker.pick_report(args.reports_root, args.report)
    report = None
    if path:
        try:
            report = common.read_report(path)
        except Exception as err:
            common.show_error(err, "Cannot show this report")
    else:
        st.info("No report selected: pick one in the sidebar (or run `probe scan --out reports/NAME`). "
                "The live views work without one.")
    manifest = report.manifest if report is not None else {}
    model_name = picker.pick_model(args.model or (reports.loadable_model(manifest) if manifest else None) or "smollm2")
    if report is not None:
        m = report.manifest
        st.markdown(f"**{report.path}** · model {reports.model_label(m)} · {m.get('prompts', {}).get('count')} prompts "
                    f"({m.get('prompts', {}).get('source')}) · detectors {', '.join(m.get('detectors', []))} · {m.get('created', '')}")

    names = (["Heads"] + (["Tables"] if tables.has_content(report) else []) if report is not None else [])
    names += ["Tokens", "Attention", "Live A/B", "Compare"]
    tabs = dict(zip(names, st.tabs(names)))
    if report is not None:
        with tabs["Heads"], common.guard("Heads"):
            heads.render_heatmaps(report)
    layer, head = heads.select_head(report)  # after the heatmaps, so a click can set the selectors
    if report is not None:
        with tabs["Heads"], common.guard("Head details"):
            heads.render_details(report, layer, head)
        if "Tables" in tabs:
            with tabs["Tables"], common.guard("Tables"):
                tables.render(report)
    with tabs["Tokens"], common.guard("Tokens view"):
        tokens.render(model_name, manifest, layer, head)
    with tabs["Attention"], common.guard("Attention viewer"):
        attention.render(model_name, layer, head)
    with tabs["Live A/B"], common.guard("Live A/B"):
        live_ab.render(model_name, layer, head)
    with tabs["Compare"], common.guard("Compare"):
        compare.render([str(p) for p in reports.list_reports(st.session_state.get("reports_root", args.reports_root))],
                       str(path) if path else None)


main()
