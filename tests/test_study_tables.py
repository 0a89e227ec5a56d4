"""Every generated table in the committed READMEs equals what the study's report.py (or studies/summary.py)
computes from the committed result files: a README cannot drift from its files."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
sys.path.insert(0, str(STUDIES))

from tables import read_blocks, write_blocks  # noqa: E402


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_report_{path.parent.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REPORTS = sorted(p for p in STUDIES.glob("*/report.py") if "def tables(" in p.read_text())


@pytest.mark.parametrize("report", REPORTS, ids=[p.parent.name for p in REPORTS])
def test_study_readme_tables_match_files(report):
    expected = _module(report).tables(report.parent)
    committed = read_blocks(report.parent / "README.md")
    assert expected, f"{report} generates no table"
    for name, body in expected.items():
        assert name in committed, f"{report.parent.name}/README.md has no <!-- table:{name} --> block"
        assert committed[name] == body, f"{report.parent.name}/README.md table {name!r} differs from its files: " \
                                        f"run PYTHONPATH=. python {report.relative_to(ROOT)}"


def test_top_level_results_table_matches_files():
    summary = _module(STUDIES / "summary.py")
    assert read_blocks(ROOT / "README.md")["studies"] == summary.table(STUDIES), \
        "README.md studies table differs from the result files: run PYTHONPATH=. python studies/summary.py"
    assert read_blocks(ROOT / "README.md")["phenomena"] == summary.phenomena_table(), \
        "README.md phenomena table differs from studies/phenomena/smollm2/: run PYTHONPATH=. python studies/summary.py"
    assert read_blocks(ROOT / "README.md")["engineering"] == summary.engineering_table(ROOT), \
        "README.md engineering table differs from the GPU result files: run PYTHONPATH=. python studies/summary.py"


def test_the_check_catches_a_drifted_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- table:t -->\n| a |\n|---|\n| 1 |\n<!-- /table:t -->\ny\n")
    write_blocks(readme, {"t": "| a |\n|---|\n| 2 |\n"})
    assert read_blocks(readme) == {"t": "| a |\n|---|\n| 2 |\n"} and readme.read_text().endswith("y\n")
    with pytest.raises(KeyError):
        write_blocks(readme, {"missing": "| b |\n"})
