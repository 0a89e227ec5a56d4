"""Arithmetic heads on SmolLM2: activation patching (methods.md §5) with bootstrap intervals, then a
mean-ablation check on held-out triples against layer-matched random heads.

Run from the repository root:  python -m studies.arithmetic.run [--device cuda]
then:                          python -m studies.arithmetic.report   (README tables)

Pre-registered (fixed here, before any held-out prompt is scored): detection = 16 operand-counterfactual
pairs per operator (seed 0); heads ranked by the all-operator normalized effect; ablated sets = the top
3 and top 10; control = for every ablated head one random head of the same layer outside the top 20
(10 draws per k); evaluation = every (op, a, b) single-digit triple *not* among the detection prompts'
clean or counterfactual triples (asserted), one 4-shot prompt each (seed 1). Mean ablation uses means
over the evaluation prompts. Tests: exact McNemar (top-k vs none), draws p-value (top-k drop vs the
random drops), Holm over every comparison in comparisons.csv.

Writes (all under --out): heads.csv (effect + 95% bootstrap CI per head), mlp.csv, operator_heads.csv,
prompts.csv (per detection prompt), eval_items.csv (per evaluation prompt x condition: prediction,
correct), ablation.csv (per condition x operator: accuracy, Wilson CI), comparisons.csv, attention.csv,
settings.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import probe
from probe import stats
from probe.data.arithmetic import OPERATORS, digit_token_ids, make_prompts
from probe.detect import arithmetic as A

OUT = Path(__file__).parent
SETTINGS = dict(n_detect=16, shots=4, detect_seed=0, eval_seed=1, ks=[3, 10], draws=10, exclude_top=20,
                boot=2000, rank_by="arithmetic_effect")


def triples(prompts, cf: bool = True) -> set:
    """{(op, a, b)} of the clean (and counterfactual) sides of ``prompts``."""
    out = {(p.op, p.a, p.b) for p in prompts}
    if cf:
        out |= {(p.cf_op, p.cf_a, p.cf_b) for p in prompts}
    return out


def heldout_prompts(detect, shots: int, seed: int) -> list:
    """Every single-digit triple not used by ``detect`` (clean or counterfactual), one prompt each."""
    used = triples(detect)
    pool = make_prompts(tuple(OPERATORS), n=100, shots=shots, counterfactual="operands", seed=seed)
    held = [p for p in pool if (p.op, p.a, p.b) not in used]
    assert not triples(held, cf=False) & used, "held-out triples overlap the detection prompts"
    assert len({(p.op, p.a, p.b) for p in held}) == len(held)
    return held


def effect_table(res: dict, rows: torch.Tensor, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized effect per head [L, H] on the mean over ``rows`` and its 95% percentile-bootstrap CI
    (prompts resampled; the ratio (LD_clean - LD_patched) / (LD_clean - LD_cf) recomputed per resample)."""
    idx = torch.nonzero(rows).flatten().numpy()
    clean, cf, heads = res["clean"].numpy(), res["cf"].numpy(), res["heads"].numpy()      # [N], [N], [L, H, N]

    def eff(sel):                                                                          # sel [R, n] -> [R, L, H]
        c, f = clean[sel].mean(-1), cf[sel].mean(-1)                                      # [R]
        hp = heads[..., sel].mean(-1)                                                     # [L, H, R]
        return np.moveaxis((c - hp) / (c - f), -1, 0)

    point = eff(idx[None, :])[0]
    rng = np.random.default_rng(seed)
    draws = np.concatenate([eff(idx[rng.integers(0, idx.size, size=(200, idx.size))]) for _ in range(n_boot // 200)])
    low, high = np.nanquantile(draws, [0.025, 0.975], axis=0)
    return point, low, high


def predict(handle, prompts, intervention=None, batch_size: int = 32) -> np.ndarray:
    """Predicted digit per prompt [N] (argmax over all tokens; -1 when it is not a digit)."""
    from interventions import intervene

    digits = digit_token_ids(handle.tokenizer)
    to_digit = {t: d for d, t in enumerate(digits)}
    out = []
    ctx = intervene(handle, intervention) if intervention is not None else torch.no_grad()
    with torch.no_grad(), ctx:
        for i in range(0, len(prompts), batch_size):
            enc = handle.encode([p.text for p in prompts[i:i + batch_size]])
            logits = handle.model(**enc, use_cache=False, logits_to_keep=1).logits[:, -1]       # [b, V]
            out += [to_digit.get(int(t), -1) for t in logits.argmax(-1).cpu()]
    return np.array(out)


def layer_matched(heads, order, n_heads: int, exclude: set, rng: random.Random) -> list:
    """One random head of the same layer per head in ``heads``, outside ``exclude``, no repeats."""
    pick = []
    for l, _ in heads:
        pool = [(l, h) for h in range(n_heads) if (l, h) not in exclude and (l, h) not in pick]
        pick.append(rng.choice(pool))
    return pick


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the plumbing, numbers mean nothing")
    ap.add_argument("--ranking", help="heads.csv of an earlier detection run: skip patching, run the held-out ablation")
    args = ap.parse_args()
    s = {**SETTINGS, **(dict(n_detect=1, ks=[3], draws=2, boot=200) if args.quick else {})}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    h = probe.load(args.model, device=args.device, dtype=torch.float32)
    H = h.n_heads

    # ---- detection: operand counterfactual, effects with bootstrap CIs
    detect = make_prompts(tuple(OPERATORS), n=s["n_detect"], shots=s["shots"], counterfactual="operands",
                          seed=s["detect_seed"])
    if args.ranking:                       # ablation only, on a ranking an earlier run of this script wrote
        heads = pd.read_csv(args.ranking).sort_values(s["rank_by"], ascending=False)
    else:
        A.check_single_tokens(h.tokenizer, detect)
        res = A.patch_prompts(h, detect, args.batch_size)
        right = res["pred"] == res["correct"]                                                 # [N]
        op_of = np.array([p.op for p in detect])
        point, low, high = effect_table(res, right, s["boot"], 0)
        heads = pd.DataFrame([dict(layer=l, head=hh, arithmetic_effect=point[l, hh], effect_low=low[l, hh],
                                   effect_high=high[l, hh]) for l in range(h.n_layers) for hh in range(H)])
        for op, name in OPERATORS.items():
            rows = torch.tensor(op_of == op) & right
            e = A.normalized_effect(res, rows)[0].numpy() if bool(rows.any()) else np.full((h.n_layers, H), np.nan)
            heads[f"effect_{name}"] = e.reshape(-1)
            heads[f"n_correct_{name}"] = int(rows.sum())
        heads = heads.sort_values("arithmetic_effect", ascending=False)
        heads.to_csv(out / "heads.csv", index=False)
        mlp_eff = A.normalized_effect(res, right)[1].numpy()
        pd.DataFrame(dict(layer=range(h.n_layers), effect=mlp_eff)).to_csv(out / "mlp.csv", index=False)
        pd.DataFrame([dict(prompt_id=i, operator=p.op, a=p.a, b=p.b, answer=p.answer, cf_a=p.cf_a, cf_b=p.cf_b,
                           cf_answer=p.cf_answer, correct=bool(right[i]), ld_clean=float(res["clean"][i]),
                           ld_cf=float(res["cf"][i])) for i, p in enumerate(detect)]).to_csv(out / "prompts.csv", index=False)
        log(f"patching: {int(right.sum())}/{len(detect)} detection prompts right")

        opdet = A.run(h, n=s["n_detect"], shots=s["shots"], counterfactual="operator", seed=s["detect_seed"])
        opdet.heads.sort_values("arithmetic_effect", ascending=False).to_csv(out / "operator_heads.csv", index=False)

    # ---- held-out mean ablation
    held = heldout_prompts(detect, s["shots"], s["eval_seed"])
    gold = np.array([p.answer for p in held])
    ops = np.array([p.op for p in held])
    from interventions import HeadMask

    means = HeadMask.compute_means(h, [p.text for p in held])
    order = [(int(r.layer), int(r.head)) for r in heads.itertuples()]
    rng = random.Random(0)
    items, conds = [], []

    def evaluate(kind, k, draw, hs):
        iv = HeadMask(hs, mode="mean", means=means) if hs else None
        pred = predict(h, held, iv)
        conds.append(dict(kind=kind, k=k, draw=draw, heads=" ".join(f"L{l}H{x}" for l, x in hs)))
        items.extend(dict(kind=kind, k=k, draw=draw, item=i, operator=ops[i], a=held[i].a, b=held[i].b,
                          answer=int(gold[i]), predicted=int(pred[i]), correct=bool(pred[i] == gold[i]))
                     for i in range(len(held)))
        log(f"{kind} k={k} draw={draw}: acc {np.mean(pred == gold):.3f}")

    evaluate("none", 0, 0, [])
    for k in s["ks"]:
        top = order[:k]
        evaluate("top", k, 0, top)
        for d in range(s["draws"]):
            evaluate("layer_matched", k, d, layer_matched(top, order, H, set(order[:s["exclude_top"]]), rng))
    pd.DataFrame(items).to_csv(out / "eval_items.csv", index=False)
    pd.DataFrame(conds).to_csv(out / "conditions.csv", index=False)
    att = A.attention_targets(h, held, order[:5])
    att.to_csv(out / "attention.csv", index=False)
    summarize(out)
    (out / "settings.json").write_text(json.dumps(
        {**s, "model": h.source, "model_hash": h.file_hash, "device": args.device, "n_detect_prompts": len(detect),
         "ranking": args.ranking or "this run's patching",
         "n_heldout": {OPERATORS[o]: int((ops == o).sum()) for o in OPERATORS},
         "command": "python -m studies.arithmetic.run " + " ".join(sys.argv[1:]), "seconds": round(time.time() - t0, 1)}, indent=1))
    log("done")


def summarize(out: Path) -> None:
    """ablation.csv and comparisons.csv from eval_items.csv (also run by report.py's tests? no: by run.py only)."""
    items = pd.read_csv(out / "eval_items.csv")
    rows = []
    for (kind, k, draw), g in items.groupby(["kind", "k", "draw"]):
        for op in ["all", *OPERATORS]:
            sub = g if op == "all" else g[g.operator == op]
            if len(sub):
                ci = stats.wilson_interval(int(sub.correct.sum()), len(sub))
                rows.append(dict(kind=kind, k=k, draw=draw, operator=op, n=len(sub), **ci.as_dict("acc_")))
    abl = pd.DataFrame(rows)
    abl.to_csv(out / "ablation.csv", index=False)
    base = items[items.kind == "none"].sort_values("item").correct.to_numpy()
    comps = []
    for k in sorted(items[items.kind == "top"].k.unique()):
        top = items[(items.kind == "top") & (items.k == k)].sort_values("item").correct.to_numpy()
        mc = stats.mcnemar_exact(base, top)
        diff = stats.paired_bootstrap(lambda a, b: a.mean() - b.mean(), base.astype(float), top.astype(float))
        comps.append(dict(comparison=f"top-{k} vs none", k=k, effect=diff.estimate, low=diff.low, high=diff.high,
                          test="exact McNemar", p=mc.p_value))
        ctrl = items[(items.kind == "layer_matched") & (items.k == k)]
        drops = [base.mean() - g.sort_values("item").correct.mean() for _, g in ctrl.groupby("draw")]
        comps.append(dict(comparison=f"top-{k} vs layer-matched random", k=k, effect=base.mean() - top.mean()
                          - float(np.mean(drops)), low=float("nan"), high=float("nan"),
                          test=f"draws p ({len(drops)} draws)", p=stats.draws_p_value(base.mean() - top.mean(), drops)))
    comp = pd.DataFrame(comps)
    comp["p_holm"] = stats.holm(comp.p.to_numpy())
    comp.to_csv(out / "comparisons.csv", index=False)


if __name__ == "__main__":
    main()
