"""kernels/BENCHMARKS.md's end-to-end tables and the README headline equal what benchmarks/e2e_report.py
computes from the committed result files (a table cannot drift from its files)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("_e2e_report", ROOT / "benchmarks" / "e2e_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_e2e_blocks_match_the_result_files():
    report = _report()
    for rel, blocks in report.tables().items():
        committed = report.read_blocks(ROOT / rel)
        for name, body in blocks.items():
            assert name in committed, f"{rel} has no <!-- table:{name} --> block"
            assert committed[name] == body, f"{rel} block {name} differs from its files: run PYTHONPATH=. python benchmarks/e2e_report.py"


def test_a_drifted_block_is_caught(tmp_path):
    report = _report()
    page = tmp_path / "page.md"
    page.write_text("a\n<!-- table:t -->\nold\n<!-- /table:t -->\nb\n")
    report.write_blocks(page, {"t": "new\n"})
    assert report.read_blocks(page) == {"t": "new\n"} and page.read_text().endswith("b\n")


def test_cpu_numbers_block_matches_its_file(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))                  # benchmarks/ and studies/ are run from the root
    spec = importlib.util.spec_from_file_location("_cpu_numbers", ROOT / "benchmarks" / "cpu_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = mod.read_blocks(ROOT / "README.md")
    assert committed["cpu-numbers"] == mod.table(), \
        "README.md cpu-numbers block differs from benchmarks/results/cpu_numbers.json: run PYTHONPATH=. python -m benchmarks.cpu_numbers --render"
