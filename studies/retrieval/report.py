"""Retrieval study tables from the files run.py (and sink_overlap.py) wrote.

    python -m studies.retrieval.report

Always: the detection table (heads.csv, or heads_<length>.csv of a re-run) and, when sink_mass.csv exists,
the overlap of retrieval heads with first-token sink heads. After a masking re-run (eval_items.csv,
nll_items.csv): summarize() writes masking.csv and comparisons.csv (bootstrap CIs over samples, paired
permutation p for top vs none, rank among the random draws for top vs controls, Holm over all) and the
masking tables are generated from them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from studies.tables import ci, main_for, markdown_table, num, pval  # noqa: E402

from probe import stats  # noqa: E402

HERE = Path(__file__).parent
CONTROLS = ("layer_matched", "sink_matched")


def summarize(folder: Path = HERE) -> None:
    """eval_items.csv + nll_items.csv -> masking.csv (per length x condition) and comparisons.csv."""
    rec = pd.read_csv(folder / "eval_items.csv")
    nll = pd.read_csv(folder / "nll_items.csv")
    sets = pd.read_csv(folder / "conditions.csv")                     # heads and their mean sink mass per set
    rows, comps = [], []
    for length in sorted(rec.length.unique()):
        r, n = rec[rec.length == length], nll[nll.length == length]
        vec = lambda df, cond, d, col: df[(df.condition == cond) & (df.draw == d)].sort_values(df.columns[3])[col].to_numpy()  # noqa: E731
        for cond in ["none", "top", *CONTROLS]:
            draws = sorted(r[r.condition == cond].draw.unique())
            if not draws:
                continue
            recs = [vec(r, cond, d, "recall") for d in draws]
            nlls = [vec(n, cond, d, "nll") for d in draws]
            ri = stats.bootstrap_interval(recs[0]) if len(draws) == 1 else None
            ni = stats.bootstrap_interval(nlls[0]) if len(draws) == 1 else None
            rows.append(dict(length=length, condition=cond, draws=len(draws), samples=len(recs[0]), passages=len(nlls[0]),
                             recall=float(np.mean([x.mean() for x in recs])), recall_low=ri.low if ri else np.nan,
                             recall_high=ri.high if ri else np.nan, recall_min=min(x.mean() for x in recs),
                             recall_max=max(x.mean() for x in recs), nll=float(np.mean([x.mean() for x in nlls])),
                             nll_low=ni.low if ni else np.nan, nll_high=ni.high if ni else np.nan,
                             nll_min=min(x.mean() for x in nlls), nll_max=max(x.mean() for x in nlls),
                             key0_mass=sets[(sets.length == length) & (sets.condition == cond)].key0_mass_mean.mean()))
        base_r, top_r = vec(r, "none", 0, "recall"), vec(r, "top", 0, "recall")
        base_n, top_n = vec(n, "none", 0, "nll"), vec(n, "top", 0, "nll")
        for metric, b, t in (("recall drop", base_r, top_r), ("NLL increase", top_n, base_n)):
            d = stats.paired_bootstrap(lambda u, v: u.mean() - v.mean(), b, t)
            comps.append(dict(length=length, comparison="top-5 vs none", metric=metric, estimate=d.estimate, low=d.low,
                              high=d.high, test="paired permutation", p=stats.paired_permutation(b, t)))
        for ctrl in CONTROLS:
            draws = sorted(r[r.condition == ctrl].draw.unique())
            rdrops = [base_r.mean() - vec(r, ctrl, d, "recall").mean() for d in draws]
            nups = [vec(n, ctrl, d, "nll").mean() - base_n.mean() for d in draws]
            for metric, obs, null in (("recall drop", base_r.mean() - top_r.mean(), rdrops),
                                      ("NLL increase", top_n.mean() - base_n.mean(), nups)):
                comps.append(dict(length=length, comparison=f"top-5 vs {ctrl.replace('_', '-')} random", metric=metric,
                                  estimate=obs - float(np.mean(null)), low=np.nan, high=np.nan,
                                  test=f"rank among {len(null)} draws", p=stats.draws_p_value(obs, null),
                                  detail=f"top-5 {obs:.3f}; draws {min(null):.3f}..{max(null):.3f}"))
    comp = pd.DataFrame(comps)
    comp["p_holm"] = stats.holm(comp.p.to_numpy())
    pd.DataFrame(rows).to_csv(folder / "masking.csv", index=False)
    comp.to_csv(folder / "comparisons.csv", index=False)


def _head(r) -> str:
    return f"L{int(r['layer'])}H{int(r['head'])}"


def tables(folder: Path = HERE) -> dict[str, str]:
    out = {}
    per_length = sorted(folder.glob("heads_*.csv"), key=lambda f: int(f.stem.split("_")[1]))   # the masking run
    files = [f for f in [folder / "heads.csv"] if f.exists()] + per_length
    rows = []
    for f in files:
        h = pd.read_csv(f).sort_values("retrieval_score", ascending=False)
        tag = f.stem.replace("heads_", "") if f.stem != "heads" else "1000–8000"
        rows.append([tag, int(h.retrieval_samples.iloc[0]), int(h.retrieval_head.sum()), f"{h.retrieval_head.mean():.3f}",
                     ", ".join(f"{_head(r)} {r.retrieval_score:.3f}" for _, r in h.head(8).iterrows())])
    out["retrieval_detection"] = markdown_table(["haystack tokens", "samples kept", "retrieval heads (score > 0.1)",
                                                 "fraction of heads", "top 8 (score)"], rows)
    if (folder / "sink_mass.csv").exists():
        sink = pd.read_csv(folder / "sink_mass.csv")
        sink["sink_rank"] = sink.key0_mass.rank(ascending=False, method="min").astype(int)
        h = pd.read_csv((per_length or files)[0]).sort_values("retrieval_score", ascending=False).head(10)
        h = h.drop(columns=[c for c in ("key0_mass",) if c in h]).merge(sink, on=["layer", "head"])
        out["retrieval_sinks"] = markdown_table(
            ["retrieval head", "retrieval score", "first-token sink mass", f"sink rank (of {len(sink)})"],
            [[_head(r), num(r.retrieval_score), num(r.key0_mass), int(r.sink_rank)] for _, r in h.iterrows()])
    if (folder / "masking.csv").exists():
        m = pd.read_csv(folder / "masking.csv")
        out["retrieval_masking"] = markdown_table(
            ["haystack", "masked", "draws", "samples", "masked heads' first-token sink mass (mean)",
             "NIAH recall [95% CI] / mean (range) over draws", "continuation NLL [95% CI] / mean (range)"],
            [[int(r.length), r.condition.replace("_", "-"), int(r.draws), int(r.samples),
              num(r.key0_mass) if pd.notna(r.key0_mass) else "–",
              ci(r.recall, r.recall_low, r.recall_high) if r.draws == 1 else f"{r.recall:.3f} ({r.recall_min:.3f}–{r.recall_max:.3f})",
              ci(r.nll, r.nll_low, r.nll_high) if r.draws == 1 else f"{r.nll:.3f} ({r.nll_min:.3f}–{r.nll_max:.3f})"]
             for r in m.itertuples()])
        c = pd.read_csv(folder / "comparisons.csv")
        out["retrieval_comparisons"] = markdown_table(
            ["haystack", "comparison", "metric", "estimate [95% CI]", "test", "p", "p (Holm)", "detail"],
            [[int(r.length), r.comparison, r.metric, ci(r.estimate, r.low, r.high) if pd.notna(r.low) else num(r.estimate),
              r.test, pval(r.p), pval(r.p_holm), r.detail if isinstance(r.detail, str) else ""]
             for r in c.itertuples()])
        out["retrieval_verdict"] = _verdict(m, c, pd.read_csv(folder / "eval_items.csv"))
    return out


def _verdict(m: pd.DataFrame, c: pd.DataFrame, items: pd.DataFrame) -> str:
    """One row per haystack length: the numbers the README's verdict rests on."""
    rows = []
    for length, g in m.groupby("length"):
        row = {r.condition: r for r in g.itertuples()}
        ctrl = g[g.condition.isin(CONTROLS)]
        k = items[(items.length == length) & items.condition.isin(CONTROLS)]
        draw_recall = k.groupby(["condition", "draw"]).recall.mean()                    # [controls x draws]
        below = int((draw_recall <= row["top"].recall).sum())
        d = c[(c.length == length) & (c.comparison == "top-5 vs none")].set_index("metric")
        rd, nu = d.loc["recall drop"], d.loc["NLL increase"]
        nll_up = [r.nll - row["none"].nll for r in ctrl.itertuples()]
        rows.append([int(length), f"{row['none'].recall:.3f} → {row['top'].recall:.3f}",
                     f"{ci(rd.estimate, rd.low, rd.high)} (Holm p {pval(rd.p_holm)})",
                     f"{ctrl.recall_min.min():.3f}–{ctrl.recall_max.max():.3f}", f"{below} of {len(draw_recall)}",
                     f"{num(row['top'].key0_mass)} / {num(row['sink_matched'].key0_mass)}",
                     ci(nu.estimate, nu.low, nu.high),
                     " / ".join(f"{x:.3f}" for x in nll_up) + f" (range {ctrl.nll_min.min() - row['none'].nll:.3f}–"
                     f"{ctrl.nll_max.max() - row['none'].nll:.3f})"])
    return markdown_table(["haystack", "recall, none → top-5", "recall drop [95% CI]", "control draws' recall",
                           "control draws at or below top-5's recall", "sink mass: top-5 / sink-matched",
                           "top-5 NLL increase [95% CI]", "mean NLL increase: layer- / sink-matched (range over draws)"],
                          rows)


if __name__ == "__main__":
    if (HERE / "eval_items.csv").exists() and "--tables-only" not in sys.argv:
        summarize(HERE)
    main_for(HERE, tables)
