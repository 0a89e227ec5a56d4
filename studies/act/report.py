"""ACT study tables: metrics.csv, comparisons.csv and folds.csv from items.parquet and the calibration
files, then the README's generated blocks from those csv files.

    python -m studies.act.report          # after run.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from studies.tables import ci, main_for, markdown_table, num, pval  # noqa: E402

from probe import stats  # noqa: E402

HERE = Path(__file__).parent
TASKS = ("sentiment", "topic", "capitals", "currencies")


def _metrics(g: pd.DataFrame, labels) -> dict:
    g = g.sort_values("item")
    return stats.label_metrics(g.gold.to_numpy(), np.stack(g.logits.to_numpy()), labels)


def _fill_noop_folds(items: pd.DataFrame) -> pd.DataFrame:
    """A fold whose search kept no heads has searched = baseline (ACT on no heads); its same-layer random
    control is then ACT on no heads too: give it the baseline rows for every draw, so searched and random
    are compared on the same pooled items."""
    extra = []
    for (task, fold), g in items.groupby(["task", "fold"]):
        draws = sorted(items[(items.task == task) & (items.condition == "random")].draw.unique())
        if draws and not (g.condition == "random").any():
            base = g[g.condition == "baseline"]
            extra += [base.assign(condition="random", draw=d) for d in draws]
    return pd.concat([items, *extra], ignore_index=True) if extra else items


def summarize(folder: Path = HERE) -> None:
    """items.parquet -> metrics.csv (task x condition x draw), comparisons.csv (Holm over all rows), folds.csv."""
    items = _fill_noop_folds(pd.read_parquet(folder / "items.parquet"))
    from interventions.tasks import load_task
    import probe

    tok = probe.load("smollm2", device="cpu").tokenizer
    rows, comps, fold_rows = [], [], []
    for task, t in items.groupby("task", sort=False):
        labels = load_task(task, tok).labels
        names = ["negative", "positive"] if len(labels) != 2 else [x.strip() for x in labels]
        for (cond, draw), g in t.groupby(["condition", "draw"]):
            m = _metrics(g, labels)
            w = stats.wilson_interval(int(round(m["accuracy"] * m["n"])), m["n"])
            rows.append(dict(task=task, condition=cond, draw=draw, acc_low=w.low, acc_high=w.high, **m))
        base = t[t.condition == "baseline"].sort_values("item")
        y = base.gold.to_numpy()
        correct = lambda g: (g.sort_values("item").pred.to_numpy() == y)  # noqa: E731
        for cond in ("searched", "all"):
            g = t[t.condition == cond].sort_values("item")
            if not len(g):
                continue
            a, b = correct(g).astype(float), correct(base).astype(float)
            d = stats.paired_bootstrap(lambda u, v: u.mean() - v.mean(), a, b)
            mc = stats.mcnemar_exact(a.astype(bool), b.astype(bool))
            row = dict(task=task, comparison=f"{cond} vs baseline", effect="accuracy gain", estimate=d.estimate,
                       low=d.low, high=d.high, test="exact McNemar", p=mc.p_value,
                       detail=f"{mc.only_a} gained / {mc.only_b} lost")
            comps.append(row)
            if len(labels) == 2:
                za, zb = np.stack(g.logits.to_numpy()), np.stack(base.logits.to_numpy())
                auc = stats.paired_bootstrap(lambda yy, s1, s2: stats.roc_auc(yy, s1) - stats.roc_auc(yy, s2),
                                             y, za[:, 1] - za[:, 0], zb[:, 1] - zb[:, 0])
                comps.append(dict(task=task, comparison=f"{cond} vs baseline", effect="AUC gain", estimate=auc.estimate,
                                  low=auc.low, high=auc.high, test="", p=np.nan, detail="paired bootstrap CI only"))
        rnd = t[t.condition == "random"]
        if len(rnd):
            base_acc = correct(base).mean()
            gains = [correct(g).mean() - base_acc for _, g in rnd.groupby("draw")]
            obs = correct(t[t.condition == "searched"]).mean() - base_acc
            comps.append(dict(task=task, comparison="searched vs same-layer random", effect="accuracy gain minus mean random gain",
                              estimate=obs - float(np.mean(gains)), low=np.nan, high=np.nan,
                              test=f"rank among {len(gains)} draws", p=stats.draws_p_value(obs, gains),
                              detail=f"random gains {min(gains):+.3f}..{max(gains):+.3f}"))
        for f in sorted(t.fold.unique()):
            rec = json.loads((folder / f"calibration_{task}_fold{f}.json").read_text())
            tf = t[t.fold == f]
            acc = lambda c: float((tf[tf.condition == c].pred == tf[tf.condition == c].gold).mean())  # noqa: E731
            fold_rows.append(dict(task=task, fold=f, dev_n=rec["dev"]["n"], dev_baseline=rec["dev"]["baseline"],
                                  dev_act=rec["dev"]["act"], heads=" ".join(f"L{l}H{h}" for l, h in rec["heads"]) or "none",
                                  test_n=int((tf.condition == "baseline").sum()), test_baseline=acc("baseline"),
                                  test_searched=acc("searched")))
    metrics = pd.DataFrame(rows)
    comp = pd.DataFrame(comps)
    tested = comp.p.notna()
    comp.loc[tested, "p_holm"] = stats.holm(comp.loc[tested, "p"].to_numpy())
    metrics.to_csv(folder / "metrics.csv", index=False)
    comp.to_csv(folder / "comparisons.csv", index=False)
    pd.DataFrame(fold_rows).to_csv(folder / "folds.csv", index=False)


def tables(folder: Path = HERE) -> dict[str, str]:
    """README blocks from metrics.csv / comparisons.csv / folds.csv."""
    m = pd.read_csv(folder / "metrics.csv")
    comp = pd.read_csv(folder / "comparisons.csv")
    folds = pd.read_csv(folder / "folds.csv")
    out = {}
    rows = []
    for task in [t for t in TASKS if t in set(m.task)]:
        mt = m[m.task == task]
        for cond in ("baseline", "searched", "all"):
            r = mt[mt.condition == cond]
            if not len(r):
                continue
            r = r.iloc[0]
            rows.append([task, cond, int(r.n), ci(r.accuracy, r.acc_low, r.acc_high), num(r.balanced_accuracy),
                         num(r.auc), num(r.log_loss), _label_share(task, r), _confusion(task, r)])
        rnd = mt[mt.condition == "random"]
        if len(rnd):
            rows.append([task, f"random same-layer ({len(rnd)} draws)", int(rnd.n.iloc[0]),
                         f"{rnd.accuracy.mean():.3f} (range {rnd.accuracy.min():.3f}–{rnd.accuracy.max():.3f})",
                         num(rnd.balanced_accuracy.mean()), num(rnd.auc.mean()), num(rnd.log_loss.mean()),
                         _label_share(task, rnd.mean(numeric_only=True)), ""])
    out["act_metrics"] = markdown_table(["task", "condition", "test n (3 folds)", "accuracy [95% CI]", "balanced acc.", "AUC",
                                         "log-loss", "predicted-label share", "confusion (gold→pred)"], rows)
    out["act_comparisons"] = markdown_table(
        ["task", "comparison", "effect", "estimate [95% CI]", "test", "p", "p (Holm)", "detail"],
        [[r.task, r.comparison, r.effect, ci(r.estimate, r.low, r.high) if pd.notna(r.low) else num(r.estimate), r.test if isinstance(r.test, str) and r.test else "–",
          pval(r.p), pval(r.p_holm), r.detail] for r in comp.itertuples()])
    out["act_folds"] = markdown_table(
        ["task", "fold", "dev n", "dev baseline → ACT", "heads kept", "test n", "test baseline → searched"],
        [[r.task, r.fold, r.dev_n, f"{r.dev_baseline:.3f} → {r.dev_act:.3f}", r.heads, r.test_n,
          f"{r.test_baseline:.3f} → {r.test_searched:.3f}"] for r in folds.itertuples()])
    return out


def _label_share(task: str, r) -> str:
    pos = r.get("frac_pred_positive") if task == "sentiment" else r.get("frac_pred_space") if task == "topic" else None
    if pos is not None and pd.notna(pos):
        return f"{'positive' if task == 'sentiment' else 'space'} {pos:.2f}"
    return f"top label {r['max_frac_pred']:.2f}"


def _confusion(task: str, r) -> str:
    names = {"sentiment": ("negative", "positive"), "topic": ("religion", "space")}.get(task)
    if not names:
        return ""
    return " ".join(f"{x[0]}→{y[0]} {int(r[f'n_{x}_as_{y}'])}" for x in names for y in names)


if __name__ == "__main__":
    if "--tables-only" not in sys.argv:
        summarize(HERE)
    main_for(HERE, tables)
