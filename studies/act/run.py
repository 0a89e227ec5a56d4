"""ACT as a pre-registered experiment: head search on dev, evaluation on disjoint test folds, matched controls.

Run from the repository root:  python -m studies.act.run [--device cuda] [--tasks capitals,...]
then:                          python -m studies.act.report        (README tables)

Pre-registered (SETTINGS below, written into settings.json and every calibration file before any test
item is scored): per task the items are shuffled once (seed 0) and cut into FOLDS disjoint test folds;
for fold f the dev split is ``dev`` items drawn (seed f) from the other folds, the head search
(``interventions.calibrate.search``: beta 0.4, threshold 0.1, ``candidates`` most-sink-mass heads) runs
on dev only, and the test fold is scored under four conditions:

- ``baseline``  no intervention
- ``searched``  ACT on the heads the search kept (= baseline when it kept none)
- ``random``    ACT on as many heads drawn at random from the same layers as the kept heads, excluding
                them (DRAWS draws per fold)
- ``all``       ACT on every head of layers 2..L-2 (``ACT()``)

Writes items.parquet (one row per task x fold x condition x draw x item: gold, the K label logits,
prediction), calibration_<task>_fold<f>.json (the search record) and settings.json. report.py computes
every metric, interval and p-value from items.parquet.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import probe
from interventions import ACT
from interventions.calibrate import label_logits, search
from interventions.tasks import Task, load_task

OUT = Path(__file__).parent
COMMON = dict(beta=0.4, threshold=0.1, candidates=4, folds=3, draws=10, split_seed=0)
SETTINGS = {
    "sentiment": dict(COMMON, dev=64),
    "topic": dict(COMMON, dev=64),
    "capitals": dict(COMMON, dev=48),
    "currencies": dict(COMMON, dev=12),
}


def subset(task: Task, idx: list[int]) -> Task:
    return Task(task.name, [task.prompts[i] for i in idx], [task.gold[i] for i in idx], task.labels)


def folds(n: int, k: int, seed: int) -> list[list[int]]:
    """k disjoint folds covering range(n) (shuffled with ``seed``)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[f::k] for f in range(k)]


def random_same_layers(heads: list, n_heads: int, rng: random.Random) -> list:
    """One random head per kept head, from the same layer, not a kept head, no repeats."""
    kept = {tuple(h) for h in heads}
    pick: list = []
    for l, _ in heads:
        pool = [(l, h) for h in range(n_heads) if (l, h) not in kept and (l, h) not in pick]
        pick.append(rng.choice(pool))
    return pick


QUICK = dict(items=24, dev=8, draws=2, candidates=2)   # --quick: checks the plumbing, numbers mean nothing


def run_task(h, name: str, out: Path, log, batch_size: int, quick: bool = False) -> list[dict]:
    s = SETTINGS[name]
    task = load_task(name, h.tokenizer)
    if quick:
        s = {**s, **QUICK}
        task = subset(task, list(range(min(QUICK["items"], len(task.prompts)))))
    rows = []
    for f, test_idx in enumerate(folds(len(task.prompts), s["folds"], s["split_seed"])):
        rest = sorted(set(range(len(task.prompts))) - set(test_idx))
        dev_idx = sorted(random.Random(f).sample(rest, min(s["dev"], len(rest))))
        assert not set(dev_idx) & set(test_idx)
        dev, test = subset(task, dev_idx), subset(task, test_idx)
        rec = search(h, dev, None, s["beta"], s["threshold"], s["candidates"], batch_size=batch_size, log=lambda m: None)
        rec.update(fold=f, dev_items=dev_idx, test_items=test_idx, study_settings=s)
        (out / f"calibration_{name}_fold{f}.json").write_text(json.dumps(rec, indent=1))
        heads = [tuple(x) for x in rec["heads"]]
        log(f"{name} fold {f}: dev {rec['dev']['baseline']:.3f} -> {rec['dev']['act']:.3f}, heads {heads}")
        rng = random.Random(1000 + f)
        conds = [("baseline", 0, ()), ("searched", 0, (ACT(s["beta"], s["threshold"], heads=heads),) if heads else ()),
                 ("all", 0, (ACT(s["beta"], s["threshold"]),))]
        if heads:
            conds += [("random", d, (ACT(s["beta"], s["threshold"], heads=random_same_layers(heads, h.n_heads, rng)),))
                      for d in range(s["draws"])]
        for cond, draw, ivs in conds:
            z = label_logits(h, test, ivs, batch_size)                                          # [n, K]
            hs = ivs[0].heads if ivs else []
            hs_txt = "all" if ivs and hs is None else " ".join(f"L{l}H{x}" for l, x in (hs or []))
            for j, i in enumerate(test_idx):
                rows.append(dict(task=name, fold=f, condition=cond, draw=draw, heads=hs_txt, item=i,
                                 gold=task.gold[i], pred=int(z[j].argmax()), logits=z[j].tolist()))
        log(f"{name} fold {f}: {len(conds)} conditions scored on {len(test_idx)} test items")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", default=",".join(SETTINGS))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--append", action="store_true", help="keep the other tasks already in --out (one task per run)")
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the plumbing, numbers mean nothing")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    h = probe.load(args.model, device=args.device, dtype=torch.float32)
    tasks = args.tasks.split(",")
    rows, runs = [], []
    if args.append and (out / "items.parquet").exists():   # keep the other tasks of an earlier run
        old = pd.read_parquet(out / "items.parquet")
        rows = old[~old.task.isin(tasks)].to_dict("records")
        prev = json.loads((out / "settings.json").read_text())
        runs = prev.get("runs") or [{"command": prev["command"], "device": prev["device"],
                                     "tasks_completed": sorted(set(old.task))}]
        runs = [dict(r, tasks_completed=[t for t in r["tasks_completed"] if t not in tasks]) for r in runs]
    run = {"command": "python -m studies.act.run " + " ".join(sys.argv[1:]), "device": args.device, "tasks_completed": []}
    settings = {"tasks": SETTINGS, "model": h.source, "model_hash": h.file_hash, "runs": runs + [run]}
    for name in tasks:
        rows += run_task(h, name, out, log, args.batch_size, args.quick)
        pd.DataFrame(rows).to_parquet(out / "items.parquet", index=False)              # after every task
        run["tasks_completed"].append(name)
        run["seconds"] = round(time.time() - t0, 1)
        (out / "settings.json").write_text(json.dumps(settings, indent=1))
    log("done")


if __name__ == "__main__":
    main()
