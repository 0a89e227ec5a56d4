"""Arithmetic study tables: the README's generated blocks from heads.csv, ablation.csv, comparisons.csv,
attention.csv, operator_intervals.csv (and ablation_h200.csv when present).

    python -m studies.arithmetic.report       # after run.py and operator_intervals.py
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from studies.tables import ci, main_for, markdown_table, num, pval  # noqa: E402

from probe.data.arithmetic import valid_pairs  # noqa: E402

HERE = Path(__file__).parent
OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


def _ablation_rows(abl: pd.DataFrame) -> list[list]:
    """none, then per k: top-k and its layer-matched random draws (mean and range over draws)."""
    rows = []
    keys = [("none", 0)] + [(kind, k) for k in sorted(abl[abl.kind == "top"].k.unique()) for kind in ("top", "layer_matched")]
    for kind, k in keys:
        g = abl[(abl.kind == kind) & (abl.k == k)]
        if not len(g):
            continue
        allop = g[g.operator == "all"]
        if kind == "layer_matched":
            label = f"layer-matched random ({allop.draw.nunique()} draws)"
            acc = f"{allop.acc_estimate.mean():.3f} (range {allop.acc_estimate.min():.3f}–{allop.acc_estimate.max():.3f})"
            per_op = [num(g[g.operator == op].acc_estimate.mean()) for op in OPS]
        else:
            r = allop.iloc[0]
            label = "none" if kind == "none" else f"top-{k} by patching effect"
            acc = ci(r.acc_estimate, r.acc_low, r.acc_high)
            per_op = [ci(*g[g.operator == op][["acc_estimate", "acc_low", "acc_high"]].iloc[0], digits=2)
                      if (g.operator == op).any() else "–" for op in OPS]
        rows.append([label, int(k), int(allop.n.iloc[0]), acc, *per_op])
    return rows


def tables(folder: Path = HERE) -> dict[str, str]:
    heads = pd.read_csv(folder / "heads.csv").sort_values("arithmetic_effect", ascending=False)
    abl = pd.read_csv(folder / "ablation.csv")
    comp = pd.read_csv(folder / "comparisons.csv")
    att = pd.read_csv(folder / "attention.csv")
    n_by_op = abl[(abl.kind == "none")].set_index("operator").n
    out = {}
    if "effect_low" in heads:       # run.py's format: bootstrap CI, per-operator effects over the prompts answered right
        n_right = {n: int(heads[f"n_correct_{n}"].iloc[0]) for n in OPS.values()}
        out["arith_heads"] = markdown_table(
            ["head", "effect (all ops) [95% CI]"] + [f"{n} (n={n_right[n]})" for n in OPS.values()],
            [[f"L{int(r.layer)}H{int(r['head'])}", ci(r.arithmetic_effect, r.effect_low, r.effect_high)] +
             [num(r[f"effect_{n}"]) for n in OPS.values()] for _, r in heads.head(10).iterrows()])
    else:                           # the earlier detector's format (no intervals)
        out["arith_heads"] = markdown_table(
            ["head", "effect (all ops)", "add", "sub", "mul", "div"],
            [[f"L{int(r.layer)}H{int(r['head'])}", num(r.arithmetic_effect)] +
             [num(r[f"arithmetic_effect_{n}"]) for n in OPS.values()] for _, r in heads.head(10).iterrows()])
    out["arith_ablation"] = markdown_table(
        ["ablated (mean ablation)", "k", "n", "accuracy, all ops [95% CI]"] +
        [f"{n} (n={int(n_by_op.get(op, 0))})" for op, n in OPS.items()], _ablation_rows(abl))
    out["arith_comparisons"] = markdown_table(
        ["comparison", "effect", "estimate [95% CI]", "test", "p", "p (Holm)"],
        [[r.comparison, "accuracy drop" if "none" in r.comparison else "drop minus mean random drop",
          ci(r.effect, r.low, r.high) if pd.notna(r.low) else num(r.effect), r.test, pval(r.p), pval(r.p_holm)]
         for r in comp.itertuples()])
    a = att[att.operator == "all"]
    out["arith_attention"] = markdown_table(
        ["head", "operand a", "operator", "operand b", '"="', "first token", "rest of prefix"],
        [[f"L{int(r.layer)}H{int(r['head'])}", *(num(r[c], 2) for c in ("operand_a", "operator_mass", "operand_b",
                                                                          "equals_self", "first_token", "prefix_other"))]
         for _, r in a.iterrows()])
    if (folder / "operator_intervals.csv").exists():       # operator_intervals.py: per-prompt results, bootstrap CIs
        oi = pd.read_csv(folder / "operator_intervals.csv")
        for kind in ("operands", "operator"):
            g = oi[oi.counterfactual == kind]
            if not len(g):
                continue
            n = g.groupby("operator").n.first()
            order = list(dict.fromkeys(zip(g.layer, g["head"])))
            out[f"arith_operator_{kind}"] = markdown_table(
                ["head"] + [f"{name} (n={int(n[name])}) [95% CI]" for name in OPS.values()],
                [[f"L{l}H{x}"] + [ci(*g[(g.layer == l) & (g["head"] == x) & (g.operator == name)]
                                     [["effect", "low", "high"]].iloc[0], digits=2) for name in OPS.values()]
                 for l, x in order])
    if (folder / "ablation_h200.csv").exists():
        out["arith_h200"] = markdown_table(["ablated (mean ablation)", "k", "n", "accuracy, all ops [95% CI]", *OPS.values()],
                                           _ablation_rows(pd.read_csv(folder / "ablation_h200.csv")))
    # why ">= 100 held-out prompts per operation" cannot be met: the whole single-digit pool per operation
    n_all = abl[(abl.kind == "none") & (abl.operator != "all")].set_index("operator").n
    out["arith_pool"] = markdown_table(
        ["operation", "single-digit triples in all (`probe.data.arithmetic.valid_pairs`)", "held out (not in any detection prompt)"],
        [[name, len(valid_pairs(op)), int(n_all.get(op, 0))] for op, name in OPS.items()])
    return out


if __name__ == "__main__":
    main_for(HERE, tables)
