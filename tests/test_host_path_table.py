"""kernels/BENCHMARKS.md's host-path table equals what benchmarks/bench_host_path.py renders from its
committed result file (the table cannot drift from the measurements)."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_host_path_block_matches_its_file():
    spec = importlib.util.spec_from_file_location("_bench_host_path", ROOT / "benchmarks" / "bench_host_path.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = json.loads((ROOT / mod.RESULT).read_text())
    assert {r["label"] for r in doc["rows"]} == {"before", "after"} and all(doc["meta"][k]["command"] for k in doc["meta"])
    page = (ROOT / "kernels" / "BENCHMARKS.md").read_text()
    block = re.search(rf"<!-- table:{mod.BLOCK} -->\n(.*?)\n<!-- /table:{mod.BLOCK} -->", page, re.S)
    assert block, "kernels/BENCHMARKS.md has no host-path block"
    assert block.group(1) == mod.table(doc), "run: PYTHONPATH=. python benchmarks/bench_host_path.py --write-block kernels/BENCHMARKS.md"
