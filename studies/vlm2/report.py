"""studio-vlm2 benchmark metrics from the per-item files ``train.py`` wrote.

    python studies/vlm2/report.py studies/vlm2/results            # -> results/benchmark.json

POPE (per split, with and without the image): accuracy, precision, recall, F1 of the "yes" class and
the yes-ratio, each with a 95 % interval (Wilson for the proportions, percentile bootstrap over
questions for F1). CHAIR over the greedy captions: CHAIR_i, CHAIR_s and object recall with Wilson
intervals (CHAIR_i's interval treats mentions as independent: an approximation).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from probe.data import scenes as sc  # noqa: E402
from probe.stats import paired_bootstrap, wilson_interval  # noqa: E402


def _ci(k: int, n: int) -> dict:
    if not n:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    iv = wilson_interval(int(k), int(n))
    return {"value": k / n if n else float("nan"), "low": float(iv.low), "high": float(iv.high), "n": int(n)}


def _f1(gold: np.ndarray, pred: np.ndarray) -> float:
    gold, pred = np.asarray(gold), np.asarray(pred)
    tp = float(((gold == 1) & (pred == 1)).sum())
    fp = float(((gold == 0) & (pred == 1)).sum())
    fn = float(((gold == 1) & (pred == 0)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def pope_metrics(rows: list[dict]) -> dict:
    """rows: {"answer": "yes"/"no", "pred": "yes"/"no"} -> accuracy, precision, recall, f1, yes_ratio (intervals)."""
    gold = np.array([r["answer"] == "yes" for r in rows], dtype=int)
    pred = np.array([r["pred"] == "yes" for r in rows], dtype=int)
    tp = int(((gold == 1) & (pred == 1)).sum())
    f1_iv = paired_bootstrap(_f1, gold, pred, seed=0)
    return {
        "questions": len(rows),
        "accuracy": _ci(int((gold == pred).sum()), len(rows)),
        "precision": _ci(tp, int(pred.sum())),
        "recall": _ci(tp, int(gold.sum())),
        "f1": {"value": _f1(gold, pred), "low": float(f1_iv.low), "high": float(f1_iv.high)},
        "yes_ratio": _ci(int(pred.sum()), len(rows)),
    }


def chair_metrics(rows: list[dict]) -> dict:
    scenes = [sc.Scene(np.zeros((1, 1), np.uint8), [tuple(o) for o in r["objects"]], "") for r in rows]
    m = sc.chair([r["caption"] for r in rows], scenes)
    present = sum(len(s.classes) for s in scenes)
    return {**m, "chair_i": _ci(m["hallucinated"], m["mentions"]),
            "chair_s": _ci(m["captions_with_hallucination"], m["captions"]),
            "recall": _ci(int(round(m["recall"] * present)), present),
            "exact_reference": sum(r["caption"].strip() == r["reference"].strip() for r in rows) / max(1, len(rows))}


def main(folder: str) -> dict:
    folder = Path(folder)
    pope = [json.loads(line) for line in (folder / "pope.jsonl").read_text().splitlines()]
    caps = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    out = {"pope": {}, "chair": chair_metrics(caps)}
    for split in ("random", "popular", "adversarial"):
        for with_image in (True, False):
            part = [r for r in pope if r["split"] == split and r["with_image"] == with_image]
            out["pope"][f"{split}/{'image' if with_image else 'no_image'}"] = pope_metrics(part)
    (folder / "benchmark.json").write_text(json.dumps(out, indent=1))
    for key, m in out["pope"].items():
        print(f"{key:26} acc {m['accuracy']['value']:.3f} [{m['accuracy']['low']:.3f}, {m['accuracy']['high']:.3f}]"
              f"  P {m['precision']['value']:.3f}  R {m['recall']['value']:.3f}  F1 {m['f1']['value']:.3f}"
              f"  yes {m['yes_ratio']['value']:.3f}  (n={m['questions']})")
    c = out["chair"]
    print(f"CHAIR_i {c['chair_i']['value']:.3f}  CHAIR_s {c['chair_s']['value']:.3f}  recall {c['recall']['value']:.3f}"
          f"  ({c['captions']} captions)")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "results"))
