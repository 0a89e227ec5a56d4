"""Copy what the device run returned into studies/vlm2/results/ (the files report.py and the README use).

    python -m studies.vlm2.unpack RUN_OUT        # RUN_OUT holds vlm2_results.tar.gz (+ log.txt)

Per-item JSONL files are gzipped, the visual-token table becomes parquet; the early projector snapshots
are not kept (their sink statistics are in phenomena_snapshots.json).
"""
from __future__ import annotations

import gzip
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
KEEP = ("questions.json", "conditions_summary.json", "phenomena_v2.json", "phenomena_v1.json",
        "phenomena_snapshots.json", "heads_v2.csv", "train.json", "stages.json", "vhr_parity.json",
        "settings_used.json", "log.txt")

if __name__ == "__main__":
    src = Path(sys.argv[1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(src / "vlm2_results.tar.gz") as tar:
            tar.extractall(tmp, filter="data")
        for name in KEEP:
            if (tmp / name).exists():
                shutil.copyfile(tmp / name, RESULTS / name)
        for stem in ("pope_items", "captions"):
            if (tmp / f"{stem}.jsonl").exists():
                with open(tmp / f"{stem}.jsonl", "rb") as f, gzip.open(RESULTS / f"{stem}.jsonl.gz", "wb", 9) as g:
                    shutil.copyfileobj(f, g)
        if (tmp / "visual_tokens_v2.csv.gz").exists():
            pd.read_csv(tmp / "visual_tokens_v2.csv.gz").to_parquet(RESULTS / "visual_tokens_v2.parquet")
    if (src / "log.txt").exists():
        shutil.copyfile(src / "log.txt", RESULTS / "log.txt")
    print(f"unpacked into {RESULTS}: {sorted(p.name for p in RESULTS.iterdir())}")
