"""kernels/BENCHMARKS.md's session-5 prefill blocks equal what benchmarks/sweep_report.py renders from the committed
bench_sweep result files: a table cannot drift from its file."""
from __future__ import annotations

import json
from pathlib import Path

from studies.tables import read_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_prefill_sweep_blocks_match_their_files():
    from benchmarks import sweep_report
    committed = read_blocks(ROOT / "kernels" / "BENCHMARKS.md")
    checked = 0
    for name, path in sweep_report.BLOCKS.items():
        f = ROOT / path
        if not f.exists():
            assert committed.get(name, "") == "", f"{name}: a block without its result file {path}"
            continue
        assert committed[name] == sweep_report.render(json.loads(f.read_text())), \
            "run PYTHONPATH=. python -m benchmarks.sweep_report - --write"
        checked += 1
    assert checked >= 1
