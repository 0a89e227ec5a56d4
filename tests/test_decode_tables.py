"""kernels/BENCHMARKS.md's decode blocks equal what their scripts render from the committed result files
(benchmarks/profile_decode_kernels.py, benchmarks/bench_decode_edits.py): a table cannot drift from its file."""
from __future__ import annotations

import json
from pathlib import Path

from studies.tables import read_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_decode_kernels_profile_block_matches_its_file():
    from benchmarks import profile_decode_kernels as prof
    committed = read_blocks(ROOT / "kernels" / "BENCHMARKS.md")
    data = json.loads(Path(prof.RESULT).read_text())
    assert committed[prof.BLOCK] == prof.table(data), \
        "run PYTHONPATH=. python -m benchmarks.profile_decode_kernels --render"
