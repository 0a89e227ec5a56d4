"""Retrieval heads on SmolLM2: detect (methods.md §4), then the masking curve (top-K vs random-K).

Run from the repository root:  PYTHONPATH=. python studies/retrieval/run.py [--quick]
Writes studies/retrieval/{heads.csv, samples.csv, curve.csv, curve.html, results.md}.
Detection and evaluation use different depths of the same haystacks (evaluation never sees the
exact prompts the heads were scored on).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

import probe
from probe.detect import retrieval as R

OUT = Path(__file__).parent


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(OUT), help="folder for the outputs")
    ap.add_argument("--lengths", default="400,800")
    ap.add_argument("--depths", default="0,50,100")
    ap.add_argument("--eval-depths", default="25,75")
    ap.add_argument("--needles", default="2,3")
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=18)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    t0 = time.time()
    h = probe.load(args.model, device=args.device, dtype=torch.float32)
    OUT = Path(args.out)
    OUT.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    det = R.run(h, lengths=ints(args.lengths), depths=ints(args.depths), needles=ints(args.needles),
                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    log(f"detection: {json.dumps(det.summary)}")
    heads = det.heads.sort_values("retrieval_score", ascending=False)
    heads.to_csv(OUT / "heads.csv", index=False)
    det.tables["retrieval"].to_csv(OUT / "samples.csv", index=False)

    opts = {**R.DEFAULTS, "lengths": ints(args.lengths), "depths": ints(args.eval_depths), "needles": ints(args.needles)}
    evals = R.build_samples(h, opts, chat_template=h.has_chat_template)
    curve = R.masking_curve(h, evals, det.heads, ks=ints(args.ks), draws=args.draws, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, progress=log)
    curve.to_csv(OUT / "curve.csv", index=False)
    write_report(det, heads, curve, args, len(evals), time.time() - t0)
    log("done")


def write_report(det, heads: pd.DataFrame, curve: pd.DataFrame, args, n_eval: int, seconds: float) -> None:
    import plotly.graph_objects as go

    agg = curve.groupby(["kind", "k"]).agg(recall=("recall", "mean"), recall_min=("recall", "min"),
                                           recall_max=("recall", "max"), accuracy=("accuracy", "mean"),
                                           runs=("recall", "size")).reset_index()
    fig = go.Figure()
    base = agg[agg.kind == "none"]
    for kind, color in (("top", "crimson"), ("random", "steelblue")):
        part = pd.concat([base.assign(kind=kind), agg[agg.kind == kind]]).sort_values("k")
        fig.add_trace(go.Scatter(x=part.k, y=part.recall, mode="lines+markers", name=f"{kind}-K masked", line=dict(color=color)))
    fig.update_layout(title="SmolLM2-135M NIAH recall vs masked heads (uniform at decode steps)",
                      xaxis_title="K heads masked", yaxis_title="mean ROUGE-1 recall", yaxis_range=[0, 1.05])
    fig.write_html(OUT / "curve.html", include_plotlyjs="cdn")
    top = heads.head(15)
    lines = [f"# Retrieval heads on {args.model}: measured", "",
             f"Command: `PYTHONPATH=. python studies/retrieval/run.py --lengths {args.lengths} --depths {args.depths} "
             f"--eval-depths {args.eval_depths} --needles {args.needles} --ks {args.ks} --draws {args.draws} "
             f"--max-new-tokens {args.max_new_tokens}` ({seconds / 60:.1f} min on the shared CPU).", "",
             "## Detection", "", "```", json.dumps(det.summary, indent=1), "```", "",
             "| head | retrieval score |", "|---|---|"]
    lines += [f"| L{int(r.layer)}H{int(r.head)} | {r.retrieval_score:.3f} |" for r in top.itertuples()]
    lines += ["", f"## Masking curve ({n_eval} evaluation samples, depths {args.eval_depths})", "",
              "| masked | K | mean recall | min..max over draws | accuracy (recall > 0.5) | runs |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.kind} | {r.k} | {r.recall:.3f} | {r.recall_min:.3f}..{r.recall_max:.3f} | {r.accuracy:.3f} | {r.runs} |"
              for r in agg.itertuples()]
    (OUT / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
