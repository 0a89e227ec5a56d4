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


def test_decode_edits_block_matches_its_file():
    from benchmarks import bench_decode_edits as bench
    committed = read_blocks(ROOT / "kernels" / "BENCHMARKS.md")
    data = json.loads(Path(bench.RESULT).read_text())
    assert committed[bench.BLOCK] == bench.block(data), "run PYTHONPATH=. python -m benchmarks.bench_decode_edits --render"


def test_decode_edit_defaults_follow_the_waves():
    """ACT / VAR decode steps whose B x KV programs fit one wave of the chunk / block kernel keep those modes (no
    register cap); wider batches take split with the 128-register cap (head_dim 64 / 128 only); wide VAR takes span since session 8
    (split in session 7, bits before)."""
    from kernels.attention.fused import decode_edit_config, decode_slots
    slots = decode_slots(128, 2, 132)
    assert slots == 396
    assert decode_edit_config("act", 1, 32, 128, slots) == {"col_mode": "chunk", "maxnreg": None, "cols_out": False}
    assert decode_edit_config("var", 12, 32, 128, slots) == {"col_mode": "block", "maxnreg": None, "cols_out": False}
    assert decode_edit_config("act", 16, 32, 128, slots) == {"col_mode": "split", "maxnreg": 128, "cols_out": False}
    assert decode_edit_config("var", 16, 32, 128, slots) == {"col_mode": "span", "maxnreg": 128, "cols_out": False}
    assert decode_edit_config("var", 16, 32, 256, decode_slots(256, 2, 132))["maxnreg"] is None
