"""HeadwiseKV on SmolLM2: needle recall, perplexity, KV memory and decode speed per cache policy.

Policies (fixed before any measurement; budgets count KV heads, 90 on SmolLM2 = 30 layers x 3):
  full                          the unmodified model (dense cache, SDPA)
  streaming  W                  StreamingLLM everywhere: every KV head keeps 4 sinks + the last W tokens
  retrieval  b, W               HeadwiseKV: the KV heads of probe's retrieval heads (studies/retrieval/heads.csv,
                                max over each KV head's query heads) keep everything, budget b
  sinkmass   b, W               the KV heads whose query heads put the least mass on the first token
                                (studies/headkv/sinks_heads.csv, min over the group) keep everything
  random     b, W, draw 0..4    b KV heads drawn uniformly (seeded)
  random-layers b, W, draw 0..4 as many per layer as the retrieval choice, drawn within each layer

Needles: probe's 4 needles in Persuasion (not the Emma haystack the retrieval heads were found on), at
depths 10/30/70/90 % (detection used 0/50/100) and lengths 1024/2048/4096/8000 tokens; teacher-forced
(``interventions.headkv_niah``). Perplexity: the first 8000 tokens of four other Austen novels, one
forward per book and policy. Memory / speed: an 8000-token prompt, then 64 greedy decode steps, one
warm-up run and 3 timed runs per policy (``studies.headkv.decode``).

    python -m studies.headkv.run --device cuda --out studies/headkv/results   # the H200 run
    python -m studies.headkv.run --lengths 512 --depths 50 --needles 2 --budgets 0.25 --draws 1 \
        --ppl-tokens 512 --decode-prompt 512 --decode-steps 4 --out /tmp/hk                 # a CPU smoke run
Writes niah_items.csv, ppl_items.csv, decode.csv (appended policy by policy) and run.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


import probe  # noqa: E402
from interventions import HeadwiseKV, intervene  # noqa: E402
from interventions.headkv_niah import answer_sample, score_batch, score_sample  # noqa: E402
from probe.data.niah import haystack_text  # noqa: E402
from probe.data.texts import austen  # noqa: E402
from studies.headkv.decode import decode_policy  # noqa: E402

HERE = Path(__file__).resolve().parent
RETRIEVAL = HERE.parent / "retrieval" / "heads.csv"
SINKS = HERE / "sinks_heads.csv"
PPL_BOOKS = ("prideprejudice", "mansfieldpark", "sensesensibility", "northangerabbey")


def policies(budgets, windows, draws, sinks=4):
    """[(name, budget, window, draw, factory)] in run order; factory() -> intervention or None.

    Priority order, so a run cut short by its time budget keeps the most useful part: full attention,
    then per window the chosen policies (streaming, retrieval, sinkmass at every budget), then the
    random draws draw-major (first window, then the others), then the layer-matched random draws."""
    out = [("full", 1.0, 0, -1, lambda: None)]
    for W in windows:
        out.append(("streaming", 0.0, W, -1, lambda W=W: HeadwiseKV(select="random", full=0, sinks=sinks, window=W)))
        for b in budgets:
            out.append(("retrieval", b, W, -1, lambda b=b, W=W: HeadwiseKV(report=RETRIEVAL, full=b, sinks=sinks, window=W)))
            out.append(("sinkmass", b, W, -1, lambda b=b, W=W: HeadwiseKV(report=SINKS, column="key0_mass", select="bottom",
                                                                         full=b, sinks=sinks, window=W)))
    for W in windows:
        for d in range(draws):
            for b in budgets:
                out.append(("random", b, W, d, lambda b=b, W=W, d=d: HeadwiseKV(select="random", full=b, seed=d,
                                                                                sinks=sinks, window=W)))
    for W in windows:
        for d in range(draws):
            for b in budgets:
                out.append(("random-layers", b, W, d, lambda b=b, W=W, d=d: HeadwiseKV(
                    report=RETRIEVAL, select="random-layers", full=b, seed=d, sinks=sinks, window=W)))
    return out


def nocudnn():
    """SDPA with every backend but cuDNN (flash, memory-efficient, math: torch picks among them)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def append_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, mode="a", header=not path.exists(), index=False)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lengths", default="1024,2048,4096,8000")
    ap.add_argument("--depths", default="10,30,70,90")
    ap.add_argument("--needles", default="0,1,2,3")
    ap.add_argument("--budgets", default="0.125,0.25,0.5")
    ap.add_argument("--windows", default="256,1024")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--ppl-tokens", type=int, default=8000)
    ap.add_argument("--decode-prompt", type=int, default=8000)
    ap.add_argument("--decode-steps", type=int, default=64)
    ap.add_argument("--decode-repeats", type=int, default=3, help="timed runs per policy (after one warm-up run)")
    ap.add_argument("--decode-diag-prompts", default="", help="also time full attention at these prompt lengths "
                    "(does the step cost grow with the cache?)")
    ap.add_argument("--decode-nocudnn", type=int, default=0, help="also time the unmodified model with SDPA's cuDNN "
                    "backend off (is its first-use cost per cache length cuDNN's?)")
    ap.add_argument("--decode-headwise-full", type=int, default=1, help="also time HeadwiseKV with every head full")
    ap.add_argument("--decode-budgets", default="0.125,0.25,0.5", help="retrieval budgets measured for memory / speed")
    ap.add_argument("--parts", default="parity,decode,niah,ppl", help="which measurements, in order")
    ap.add_argument("--only", default="", help="comma list of policy names to run (default: all)")
    ap.add_argument("--max-seconds", type=float, default=1e9,
                    help="stop starting new policies this many seconds after the script started (load included)")
    ap.add_argument("--niah-share", type=float, default=0.7, help="NIAH stops starting policies at this share of --max-seconds")
    ap.add_argument("--niah-batch", type=int, default=1, help="NIAH prompts of one length per forward (right-padded)")
    ap.add_argument("--decode-share", type=float, default=0.4, help="decode stops starting policies at this share")
    ap.add_argument("--ppl-draws", type=int, default=5, help="random draws also measured for perplexity")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()                    # --max-seconds counts from here
    args.out.mkdir(parents=True, exist_ok=True)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parity = None
    if "parity" in args.parts:                       # the CUDA path against the float64 CPU reference first
        from studies.headkv.parity import check

        parity = check(args.device)
        (args.out / "parity.json").write_text(json.dumps(parity, indent=1))
        if not parity["ok"]:
            sys.exit("HeadwiseKV parity failed on " + args.device + ": see parity.json; the study did not run")
    t_load0 = time.perf_counter()
    h = probe.load("smollm2", device=args.device)
    t_load = time.perf_counter() - t_load0
    dev = h.model.device
    tok = h.tokenizer
    plan = policies([float(b) for b in args.budgets.split(",")], ints(args.windows), args.draws)
    if args.only:
        plan = [p for p in plan if p[0] in args.only.split(",")]
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "dtype": str(h.model.dtype),
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "timings": {"load_s": t_load}, "parity": parity}

    def over(share: float = 1.0) -> bool:
        return time.perf_counter() - t_start > share * args.max_seconds

    def save_meta() -> None:                          # after every part, so a killed run still says what ran
        meta["timings"]["total_s"] = time.perf_counter() - t_start
        (args.out / "run.json").write_text(json.dumps(meta, indent=1))

    def do_decode() -> None:
        t0 = time.perf_counter()
        text = tok(haystack_text("austen:emma"), add_special_tokens=False)["input_ids"]
        chosen = [p for p in plan if p[0] in ("full", "streaming", "retrieval") and p[2] in (0, ints(args.windows)[0])
                  and p[1] in (0.0, 1.0, *[float(b) for b in args.decode_budgets.split(",")])]
        first = [p for p in chosen if p[0] == "retrieval" and abs(p[1] - 0.25) < 1e-9]      # the headline budget,
        stream = [p for p in chosen if p[0] == "streaming"]                                  # then StreamingLLM
        chosen = chosen[:1] + first + stream + [p for p in chosen[1:] if p not in first + stream]
        if args.decode_headwise_full:
            chosen.append(("full-headwise", 1.0, ints(args.windows)[0], -1,
                           lambda: HeadwiseKV(plan=torch.ones(h.n_layers, h.n_kv_heads, dtype=torch.bool))))
        if args.decode_nocudnn:           # the unmodified model with SDPA's cuDNN backend off (the others stay on)
            chosen.append(("full-nocudnn", 1.0, 0, -1, lambda: None))
        runs = [(p, args.decode_prompt) for p in chosen]
        runs += [(p, n) for n in ints(args.decode_diag_prompts) for p in chosen[:1]]   # the same step at a short cache
        for (name, b, W, d, make), n_prompt in runs:
            if over(args.decode_share):
                print(f"time limit: stopped before decode {name} b={b} prompt {n_prompt}", flush=True)
                break
            ids = torch.tensor([text[:n_prompt]], device=dev)
            backend = nocudnn if name == "full-nocudnn" else contextlib.nullcontext
            row, prof = decode_policy(h, ids, make, args.decode_steps, args.decode_repeats, backend=backend)
            iv = make()
            if iv is not None:
                iv.resolve(h)
            row = {"policy": name, "budget": b, "window": W, **row,
                   "full_kv_heads": int(iv.plan.sum()) if iv is not None else h.n_layers * h.n_kv_heads}
            append_csv(args.out / "decode.csv", [row])
            with open(args.out / "profile.txt", "a") as f:
                f.write(f"# {name} b={b} W={W}\n{prof}\n")
            print(f"decode {name} b={b} W={W} prompt {n_prompt}: {row['decode_tok_s']:.1f} tok/s "
                  f"({row['decode_tok_s_min']:.1f}-{row['decode_tok_s_max']:.1f}), step {row['step_ms_median']:.2f} ms, "
                  f"warm-up {row['warmup_decode_s']:.2f} s, syncs/step {row.get('syncs_per_step')}, "
                  f"kernels {row.get('profile_device_ms')} ms, {row['kv_bytes'] / 2**20:.1f} MiB KV", flush=True)
        meta["timings"]["decode_s"] = time.perf_counter() - t0
        save_meta()

    def do_niah() -> None:
        t0 = time.perf_counter()
        hay = tok(haystack_text("austen:persuasion"), add_special_tokens=False)["input_ids"]
        samples = [answer_sample(h, n, L, d, hay_ids=hay, offset=2000 * n)
                   for n in ints(args.needles) for L in ints(args.lengths) for d in ints(args.depths)]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        by_len = {}                                                  # batches of samples of one requested length
        for i, (n, L, dp) in enumerate((n, L, dp) for n in ints(args.needles) for L in ints(args.lengths)
                                       for dp in ints(args.depths)):
            by_len.setdefault(L, []).append(i)
        batches = [idx[j:j + args.niah_batch] for idx in by_len.values() for j in range(0, len(idx), args.niah_batch)]
        for name, b, W, d, make in plan:
            if over(args.niah_share):
                print(f"time limit: stopped before niah {name} b={b} W={W} d={d}", flush=True)
                break
            iv = make()
            rows = []
            scores = []
            for batch in batches:
                scores += score_batch(h, [samples[i] for i in batch], iv, pad_id=pad) if args.niah_batch > 1 else \
                    [score_sample(h, samples[batch[0]], iv)]
            for i, r in zip([i for bt in batches for i in bt], scores):
                s = samples[i]
                rows.append({"policy": name, "budget": b, "window": W, "draw": d, "item": i, "needle": s.needle,
                             "length": s.length, "depth": s.depth, "actual_depth": round(s.actual_depth, 2),
                             "full_kv_heads": int(iv.plan.sum()) if iv is not None else h.n_layers * h.n_kv_heads,
                             "heads": " ".join(iv.summary()["heads"]) if iv is not None and i == 0 else "", **r})
            rows.sort(key=lambda r: r["item"])
            append_csv(args.out / "niah_items.csv", rows)
            print(f"niah {name} b={b} W={W} d={d}: exact {sum(r['exact'] for r in rows) / len(rows):.3f}", flush=True)
        meta["timings"]["niah_s"] = time.perf_counter() - t0
        save_meta()

    def do_ppl() -> None:
        t0 = time.perf_counter()
        books = {b: torch.tensor([tok(austen(b), add_special_tokens=False)["input_ids"][:args.ppl_tokens]], device=dev)
                 for b in PPL_BOOKS}
        for name, b, W, d, make in plan:
            if d >= args.ppl_draws:
                continue
            if over():
                print(f"time limit: stopped before ppl {name} b={b} W={W} d={d}", flush=True)
                break
            iv = make()
            rows = []
            for book, ids in books.items():
                ctx = intervene(h, iv) if iv is not None else torch.inference_mode()
                with torch.inference_mode(), ctx:
                    logits = h.model(input_ids=ids, use_cache=False).logits[0, :-1].float()
                nll = F.cross_entropy(logits, ids[0, 1:], reduction="none")          # [N - 1]
                for start in range(0, nll.numel(), 1024):
                    part = nll[start:start + 1024]
                    rows.append({"policy": name, "budget": b, "window": W, "draw": d, "book": book, "from_token": start + 1,
                                 "tokens": part.numel(), "nll_sum": float(part.sum())})
                del logits
            append_csv(args.out / "ppl_items.csv", rows)
            print(f"ppl {name} b={b} W={W} d={d} done", flush=True)
        meta["timings"]["ppl_s"] = time.perf_counter() - t0

    for part in args.parts.split(","):                # in the order given
        {"parity": lambda: None, "decode": do_decode, "niah": do_niah, "ppl": do_ppl}[part]()
    save_meta()


if __name__ == "__main__":
    main()
