"""Tables for studies/headkv/README.md from the run's CSVs (every number in the README comes from here).

    PYTHONPATH=. python studies/headkv/report.py [--results studies/headkv/results]
Rewrites the part of README.md between the ``<!-- tables:begin -->`` / ``<!-- tables:end -->`` markers
and writes summary.json (the same numbers, machine-readable).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe.stats import bootstrap_interval, draws_p_value, holm, mcnemar_exact, wilson_interval  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
CHOSEN = ("retrieval", "sinkmass")
RANDOM = ("random", "random-layers")


def _ci(iv) -> str:
    return f"[{iv.low:.2f}, {iv.high:.2f}]"


KEY = ["needle", "length", "depth"]


def common_prompts(items: pd.DataFrame) -> pd.DataFrame:
    """Only the prompts every measured policy (policy, budget, window, draw) saw; ``item`` renumbered by prompt."""
    runs = items.groupby(["policy", "budget", "window", "draw"])
    keys = None
    for _, g in runs:
        k = set(map(tuple, g[KEY].values.tolist()))
        keys = k if keys is None else keys & k
    keep = items[[tuple(r) in keys for r in items[KEY].values.tolist()]].copy()
    order = {k: i for i, k in enumerate(sorted(keys))}
    keep["item"] = [order[tuple(r)] for r in keep[KEY].values.tolist()]
    return keep


def niah_tables(items: pd.DataFrame) -> tuple[list[str], dict]:
    out, summary = [], {"niah": []}
    items = common_prompts(items)
    n_items = items["item"].nunique()
    full = items[items.policy == "full"].sort_values("item")
    out.append(f"Needle recall on the {n_items} prompts every policy saw (needles {sorted(items.needle.unique().tolist())}, "
               f"{items.length.min()}-{items.length.max()} tokens, depths {sorted(items.depth.unique().tolist())} %). "
               "exact = every answer token is the greedy argmax; Wilson 95 % intervals; random rows: mean over draws, "
               "[min, max] of the draws.")
    pvals, tests = [], []
    for W in sorted(items.loc[items.window > 0, "window"].unique()):
        out += ["", f"**window {W}** (4 sink tokens + the last {W}; full = the unmodified model: exact "
                f"{full.exact.mean():.3f} {_ci(wilson_interval(int(full.exact.sum()), len(full)))})", "",
                "| policy | KV heads full | exact recall | first answer token | mean NLL (nats) | vs random draws (p) |",
                "|---|---|---|---|---|---|"]
        sub = items[items.window == W]
        stream = sub[sub.policy == "streaming"]
        if len(stream):
            out.append(f"| StreamingLLM everywhere | 0 % | {stream.exact.mean():.3f} {_ci(wilson_interval(int(stream.exact.sum()), len(stream)))} "
                       f"| {stream['first'].mean():.3f} | {stream.nll.mean():.2f} | |")
        for b in sorted(sub.loc[sub.budget.between(0.01, 0.99), "budget"].unique()):
            at = sub[sub.budget == b]
            nfull = int(at.full_kv_heads.iloc[0])
            draws = {name: at[at.policy == name].groupby("draw").exact.mean() for name in RANDOM}
            for name in CHOSEN + RANDOM:
                rows = at[at.policy == name]
                if not len(rows):
                    continue
                if name in CHOSEN:
                    ex = _ci(wilson_interval(int(rows.exact.sum()), len(rows)))
                    cell = []
                    for against in RANDOM:
                        if len(draws[against]):
                            p = draws_p_value(rows.exact.mean(), draws[against].values)
                            pvals.append(p)
                            tests.append((W, b, name, against))
                            cell.append(f"{against}: {p:.3f}")
                    cell = "; ".join(cell) or "no random draws measured"
                    label = {"retrieval": "retrieval heads (probe)", "sinkmass": "lowest first-token sink mass"}[name]
                else:
                    d = draws[name]
                    ex = f"[{d.min():.2f}, {d.max():.2f}] ({len(d)} draws)"
                    cell, label = "", {"random": "random KV heads", "random-layers": "random, same layers as retrieval"}[name]
                out.append(f"| {label} | {b:.1%} ({nfull}) | {rows.exact.mean():.3f} {ex} | {rows['first'].mean():.3f} "
                           f"| {rows.nll.mean():.2f} | {cell} |")
                summary["niah"].append({"window": int(W), "budget": float(b), "policy": name, "exact": float(rows.exact.mean()),
                                        "first": float(rows["first"].mean()), "nll": float(rows.nll.mean())})
            ret, snk = at[at.policy == "retrieval"].sort_values("item"), at[at.policy == "sinkmass"].sort_values("item")
            if len(ret) and len(snk):
                m = mcnemar_exact(ret.exact.values, snk.exact.values)
                summary["niah"].append({"window": int(W), "budget": float(b), "test": "retrieval vs sinkmass McNemar",
                                        "p": float(m.p_value)})
                out.append(f"| *retrieval vs sink-mass, same prompts (exact McNemar)* | | p = {m.p_value:.3g} | | | |")
    if not pvals:
        out += ["", "No random-head draws finished in this session, so retrieval-head selection was not compared "
                "with random heads."]
    if pvals:
        adj = holm(pvals)
        summary["draws_tests"] = [{"window": int(W), "budget": float(b), "policy": n, "against": a, "p": float(p), "p_holm": float(q)}
                                  for (W, b, n, a), p, q in zip(tests, pvals, adj)]
        out += ["", f"p: (1 + #draws with recall >= the policy's) / (1 + #draws), against uniform random / layer-matched "
                f"random draws; the smallest attainable is {1 / (1 + items[items.policy == 'random'].draw.nunique()):.3f}. "
                f"Holm-adjusted over the {len(pvals)} comparisons: see summary.json."]
    out += ["", "Exact recall by needle (budget 25 % where present; random: mean over draws):", ""]
    b25 = items[(items.budget.sub(0.25).abs() < 1e-9) | items.policy.isin(["full", "streaming"])]
    W0 = sorted(items.loc[items.window > 0, "window"].unique())[0] if (items.window > 0).any() else 0
    b25 = b25[(b25.window == W0) | (b25.policy == "full")]
    piv = b25.groupby(["policy", "needle"]).exact.mean().unstack("needle")
    lengths = list(piv.columns)
    out += ["| policy | " + " | ".join(f"needle {int(L)}" for L in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for name in ["full", "streaming", "retrieval", "sinkmass", "random", "random-layers"]:
        if name in piv.index:
            out.append(f"| {name} | " + " | ".join(f"{piv.loc[name, L]:.2f}" for L in lengths) + " |")
    return out, summary


def ppl_table(ppl: pd.DataFrame) -> tuple[list[str], list]:
    out, summary = [], []
    ppl = ppl.copy()
    key = ["policy", "budget", "window"]
    out += ["Perplexity on the first 8000 tokens of four Austen novels (one forward per book; 95 % bootstrap "
            "interval over the 1024-token chunks; random: mean over draws).", "",
            "| policy | window | KV heads full | perplexity | tokens 4097+ |", "|---|---|---|---|---|"]
    for (name, b, W), g in ppl.groupby(key, sort=False):
        chunk = g.groupby(["book", "from_token", "draw"]).agg(nll=("nll_sum", "sum"), n=("tokens", "sum")).reset_index()
        total = math.exp(chunk.nll.sum() / chunk.n.sum())
        late = chunk[chunk.from_token > 4096]
        late_ppl = math.exp(late.nll.sum() / late.n.sum()) if len(late) else float("nan")
        iv = bootstrap_interval((chunk.nll / chunk.n).values, statistic=np.mean)
        out.append(f"| {name} | {W or '-'} | {b:.1%} | {total:.2f} [{math.exp(iv.low):.2f}, {math.exp(iv.high):.2f}] | {late_ppl:.2f} |")
        summary.append({"policy": name, "budget": float(b), "window": int(W), "ppl": total, "ppl_after_4096": late_ppl})
    return out, summary


def decode_table(dec: pd.DataFrame) -> tuple[list[str], list]:
    full = dec[dec.policy == "full"].iloc[0]
    gpu = bool(dec.peak_decode_bytes.max() > 0)
    out = [f"KV cache and decode speed: {int(full.prompt_tokens)}-token prompt + {int(full.decode_steps)} greedy steps, "
           f"batch 1, {'H200' if gpu else 'shared 2-core CPU (speed indicative only; no allocator peak)'}, fp32. KV bytes "
           "are counted from the cache tensors after the last step; `full-headwise` = HeadwiseKV with every head "
           "full (the seam path's own cost).", "",
           "| policy | window | KV heads full | KV cache | bytes / token | vs full | peak decode memory | decode tok/s | prefill s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in dec.itertuples():
        out.append(f"| {r.policy} | {r.window or '-'} | {r.budget:.1%} ({r.full_kv_heads}) | {r.kv_bytes / 2**20:.1f} MiB | "
                   f"{r.kv_bytes_per_token:,.0f} | {r.kv_bytes / full.kv_bytes:.1%} | "
                   f"{f'{r.peak_decode_bytes / 2**20:.0f} MiB' if gpu else 'n/a'} | "
                   f"{r.decode_tok_s:.1f} | {r.prefill_s:.3f} |")
    return out, dec.to_dict("records")


def memory_table(mem: pd.DataFrame) -> tuple[list[str], list]:
    n = int(mem.tokens.iloc[0])
    out = [f"KV-cache storage after an 8000-token prompt + 4 decode steps ({n} tokens, batch 1), summed over the "
           "tensors the cache objects hold (`memory.py`: a transformers DynamicCache for full attention, HeadwiseCache "
           "for the rest, SmolLM2's shape, window 256 + 4 sinks). The KV heads chosen do not change the bytes, only "
           "their number does.", "",
           "| policy | KV heads full | dtype | KV cache | bytes / token | vs full |", "|---|---|---|---|---|---|"]
    for r in mem.itertuples():
        nfull = 90 if r.policy == "full" else int(r.full_kv_heads)
        out.append(f"| {r.policy} | {r.budget:.1%} ({nfull}) | {r.dtype} | {r.kv_bytes / 2**20:.1f} MiB | "
                   f"{r.bytes_per_token:,.0f} | {r.vs_full:.1%} |")
    return out, mem.to_dict("records")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--decode", type=Path, default=None, help="folder with decode.csv (default: --results)")
    ap.add_argument("--extra", type=Path, action="append", default=[], help="more result folders (same prompts) to merge")
    args = ap.parse_args(argv)
    lines, summary = [], {}
    niah = [pd.read_csv(d / "niah_items.csv") for d in [args.results, *args.extra] if (d / "niah_items.csv").exists()]
    if niah:
        part, s = niah_tables(pd.concat(niah, ignore_index=True))
        lines += part + [""]
        summary.update(s)
    if (args.results / "ppl_items.csv").exists():
        part, summary["ppl"] = ppl_table(pd.read_csv(args.results / "ppl_items.csv"))
        lines += part + [""]
    if (args.results / "memory.csv").exists():
        part, summary["memory"] = memory_table(pd.read_csv(args.results / "memory.csv"))
        lines += part + [""]
    dec = (args.decode or args.results) / "decode.csv"
    if dec.exists():
        part, summary["decode"] = decode_table(pd.read_csv(dec))
        lines += part + [""]
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    text = args.readme.read_text() if args.readme.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    args.readme.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
