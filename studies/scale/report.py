"""Tables for studies/scale/README.md from the files the device scripts wrote in results/.

    python -m studies.scale.report

Rewrites the README's ``<!-- table:scale_* -->`` blocks (``studies/tables.py``); ``tables(folder)`` is what
tests/test_study_tables.py recomputes.
"""
from __future__ import annotations

import json
from pathlib import Path


from studies.tables import main_for, markdown_table  # noqa: E402


def tables(folder: Path) -> dict[str, str]:
    res = Path(folder) / "results"
    sc = json.loads((res / "scan_compare_h200x2.json").read_text())
    parts = ("heads", "tokens", "massive")
    one, two = sc["timings_one"], sc["timings_two"]
    scan = markdown_table(
        ["", "one GPU", "torchrun, 2 GPUs (merged report)"],
        [["manifest `load_s` / `sinks_s` (rank 0)", f"{one['load_s']:.1f} / {one['sinks_s']:.1f} s",
          f"{two['load_s']:.1f} / {two['sinks_s']:.1f} s"],
         ["heads / tokens / massive table rows", " / ".join(f"{sc[p]['rows'][0]:,}" for p in parts),
          " / ".join(f"{sc[p]['rows'][1]:,}" for p in parts)],
         ["max abs diff vs one GPU (heads / tokens / massive)", "–",
          "**" + " / ".join(f"{sc[p]['max_abs_diff']}" for p in parts) + "**"]])
    after = json.loads((res / "device_map_h200x2.json").read_text())
    before = json.loads((res / "device_map_h200x2_before_fix.json").read_text())
    per_dev = after["device_map_modules_per_device"]
    yes = {True: "yes", False: "no"}
    dm = markdown_table(
        ["", "before the fix", "after"],
        [["heads table max abs diff vs one GPU", f"**{before['heads_max_abs_diff']}**", f"**{after['heads_max_abs_diff']}**"],
         ["ACT greedy tokens equal", yes[before["act_generate_same_tokens"]], yes[after["act_generate_same_tokens"]]],
         [f"scan wall ({after['prompts']} tokens): device_map vs one GPU", "–",
          f"{after['scan_device_map_s']:.2f} s vs {after['scan_one_gpu_s']:.2f} s"],
         ["modules per GPU (`balanced`)", "", ", ".join(f"GPU {k}: {v}" for k, v in per_dev.items())]])
    return {"scale_scan": scan, "scale_device_map": dm}


def main() -> None:
    main_for(Path(__file__).parent, tables)


if __name__ == "__main__":
    main()
