"""Compare two reports side by side: one score's heatmaps and, when the shapes match, their difference."""
from __future__ import annotations

import streamlit as st

from probe.plot import difference_figure
from probe.report import heatmap, score_columns

from .. import reports
from .common import read_report, show_error
from .heads import titled


def _diff_figure(a, b, column: str):
    return difference_figure(a.heads, b.heads, column, ("A", "B"))


def render(paths: list[str], current: str | None) -> None:
    """Two report pickers, a common score, both heatmaps side by side, and B − A when comparable."""
    if len(paths) < 2:
        st.info("Comparing needs two reports under the reports root.")
        return
    top = st.container()
    c1, c2 = st.columns(2)
    ia = paths.index(current) if current in paths else 0
    pa = c1.selectbox("Report A", paths, index=ia, key="cmp_a")
    pb = c2.selectbox("Report B", paths, index=(ia + 1) % len(paths), key="cmp_b")
    loaded = []
    for col, path in ((c1, pa), (c2, pb)):
        try:
            loaded.append(read_report(path))
        except Exception as err:
            with col:
                show_error(err, path)
            loaded.append(None)
    a, b = loaded
    if a is None or b is None:
        return
    common = [c for c in score_columns(a.heads) if c in set(score_columns(b.heads))]
    if not common:
        st.warning("The two reports share no score column.")
        return
    column = top.selectbox("Score", common, key="cmp_score")
    for side, col, rep in (("A", c1, a), ("B", c2, b)):
        with col:
            st.caption(reports.model_label(rep.manifest))
            st.plotly_chart(titled(heatmap(rep.heads, column), column), key=f"cmp_{side}", width="stretch")
            st.metric(f"mean {column}", f"{rep.heads[column].mean():.3f}")
    if a.heads[["layer", "head"]].shape == b.heads[["layer", "head"]].shape and \
            (a.heads[["layer", "head"]].values == b.heads[["layer", "head"]].values).all():
        st.plotly_chart(_diff_figure(a, b, column), key="cmp_diff", width="stretch")
    else:
        st.caption("Different head layouts (different models): no difference map.")
