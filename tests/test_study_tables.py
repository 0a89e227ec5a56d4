"""Every generated table in the committed READMEs equals what the study's report.py (or studies/summary.py)
computes from the committed result files: a README cannot drift from its files."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"

from studies.tables import read_blocks, write_blocks  # noqa: E402  (the repository root is on pytest's pythonpath)


def _module(path: Path):
    """studies/<study>/report.py -> the module studies.<study>.report (as ``python -m`` runs it)."""
    return importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))


REPORTS = sorted(p for p in STUDIES.glob("*/report.py") if "def tables(" in p.read_text())


@pytest.mark.parametrize("report", REPORTS, ids=[p.parent.name for p in REPORTS])
def test_study_readme_tables_match_files(report):
    expected = _module(report).tables(report.parent)
    committed = read_blocks(report.parent / "README.md")
    assert expected, f"{report} generates no table"
    for name, body in expected.items():
        assert name in committed, f"{report.parent.name}/README.md has no <!-- table:{name} --> block"
        assert committed[name] == body, f"{report.parent.name}/README.md table {name!r} differs from its files: " \
                                        f"run python -m studies.{report.parent.name}.report"


def test_top_level_results_table_matches_files():
    summary = _module(STUDIES / "summary.py")
    assert read_blocks(ROOT / "README.md")["studies"] == summary.table(STUDIES), \
        "README.md studies table differs from the result files: run python -m studies.summary"
    assert read_blocks(ROOT / "README.md")["phenomena"] == summary.phenomena_table(), \
        "README.md phenomena table differs from studies/phenomena/smollm2/: run python -m studies.summary"
    assert read_blocks(ROOT / "README.md")["engineering"] == summary.engineering_table(ROOT), \
        "README.md engineering table differs from the GPU result files: run python -m studies.summary"


def test_the_check_catches_a_drifted_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- table:t -->\n| a |\n|---|\n| 1 |\n<!-- /table:t -->\ny\n")
    write_blocks(readme, {"t": "| a |\n|---|\n| 2 |\n"})
    assert read_blocks(readme) == {"t": "| a |\n|---|\n| 2 |\n"} and readme.read_text().endswith("y\n")
    with pytest.raises(KeyError):
        write_blocks(readme, {"missing": "| b |\n"})
