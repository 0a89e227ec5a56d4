"""Arithmetic heads on SmolLM2: activation patching (methods.md §5), mean-ablation check, attention targets.

Run from the repository root:  PYTHONPATH=. python studies/arithmetic/run.py
Writes studies/arithmetic/{heads.csv, prompts.csv, mlp.csv, operator_heads.csv, ablation.csv,
attention.csv, effects.html, results.md}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

import probe
from probe.data.arithmetic import make_prompts
from probe.detect import arithmetic as A

OUT = Path(__file__).parent


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(OUT), help="folder for the outputs")
    ap.add_argument("--n", type=int, default=12, help="prompt pairs per operator")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--ks", default="3,10,20")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--eval-n", type=int, default=30, help="held-out prompts per operator for the ablation")
    args = ap.parse_args()
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    h = probe.load(args.model, device=args.device, dtype=torch.float32)
    OUT = Path(args.out)
    OUT.mkdir(parents=True, exist_ok=True)
    det = A.run(h, n=args.n, shots=args.shots, counterfactual="operands", seed=0)
    log(f"operand patching: {json.dumps(det.summary)}")
    heads = det.heads.sort_values("arithmetic_effect", ascending=False)
    heads.to_csv(OUT / "heads.csv", index=False)
    det.tables["arithmetic"].to_csv(OUT / "prompts.csv", index=False)
    det.tables["arithmetic_mlp"].to_csv(OUT / "mlp.csv", index=False)
    opdet = A.run(h, n=args.n, shots=args.shots, counterfactual="operator", seed=0)
    log(f"operator patching: {json.dumps(opdet.summary)}")
    opdet.heads.sort_values("arithmetic_effect", ascending=False).to_csv(OUT / "operator_heads.csv", index=False)

    evals = make_prompts(n=args.eval_n, shots=args.shots, seed=1)
    ks = [int(k) for k in args.ks.split(",")]
    abl = A.ablation(h, evals, det.heads, ks=ks, draws=args.draws)
    abl.to_csv(OUT / "ablation.csv", index=False)
    log("ablation:\n" + abl.to_string())
    top = [(int(r.layer), int(r.head)) for r in heads.head(5).itertuples()]
    att = A.attention_targets(h, evals, top)
    att.to_csv(OUT / "attention.csv", index=False)
    write_report(args, det, opdet, heads, abl, att, len(evals), time.time() - t0)
    log("done")


def write_report(args, det, opdet, heads, abl, att, n_eval, seconds) -> None:
    import plotly.express as px

    grid = det.heads.pivot(index="layer", columns="head", values="arithmetic_effect")
    fig = px.imshow(grid, color_continuous_scale="RdBu_r", color_continuous_midpoint=0, origin="lower",
                    title="SmolLM2-135M: normalized patching effect per head (operand counterfactual)")
    fig.write_html(OUT / "effects.html", include_plotlyjs="cdn")
    agg = abl.groupby(["kind", "k"]).agg(accuracy=("accuracy", "mean"), acc_min=("accuracy", "min"),
                                         acc_max=("accuracy", "max"), runs=("accuracy", "size")).reset_index()
    mlp = det.tables["arithmetic_mlp"]
    mlp_all = mlp[mlp.operator == "all"].sort_values("effect", ascending=False).head(6)
    ops = [c for c in det.heads.columns if c.startswith("arithmetic_effect_")]
    L = ["# Arithmetic heads on SmolLM2-135M-Instruct: measured", "",
         f"Command: `PYTHONPATH=. python studies/arithmetic/run.py --n {args.n} --shots {args.shots} --ks {args.ks} "
         f"--draws {args.draws} --eval-n {args.eval_n}` ({seconds / 60:.1f} min on the shared CPU).", "",
         "## Patching (operand counterfactual)", "", "```", json.dumps(det.summary, indent=1), "```", "",
         "| head | effect (all) | " + " | ".join(o.replace("arithmetic_effect_", "") for o in ops) + " |",
         "|---|---|" + "---|" * len(ops)]
    for r in heads.head(12).itertuples():
        L.append(f"| L{int(r.layer)}H{int(r.head)} | {r.arithmetic_effect:.3f} | " +
                 " | ".join(f"{getattr(r, o):.3f}" for o in ops) + " |")
    L += ["", "MLPs (all operators): " + ", ".join(f"MLP{int(r.layer)} {r.effect:.3f}" for r in mlp_all.itertuples()), "",
          "## Patching (operator counterfactual)", "", "```", json.dumps(opdet.summary, indent=1), "```", "",
          f"## Mean ablation ({n_eval} held-out prompts, means over those prompts)", "",
          "| ablated | k | accuracy | min..max over draws | runs |", "|---|---|---|---|---|"]
    L += [f"| {r.kind} | {r.k} | {r.accuracy:.3f} | {r.acc_min:.3f}..{r.acc_max:.3f} | {r.runs} |" for r in agg.itertuples()]
    L += ["", "## Where the top heads attend from the last position ('=')", "",
          "| head | operator | operand a | op | operand b | '=' | first token | rest of prefix |", "|---|---|---|---|---|---|---|---|"]
    for _, r in att.iterrows():
        L.append(f"| L{r['layer']}H{r['head']} | {r['operator']} | {r['operand_a']:.2f} | {r['operator_mass']:.2f} | "
                 f"{r['operand_b']:.2f} | {r['equals_self']:.2f} | {r['first_token']:.2f} | {r['prefix_other']:.2f} |")
    (OUT / "results.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
