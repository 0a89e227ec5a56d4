"""Greedy decode tokens/s of real SmolLM2 on this CPU: unmodified model vs each intervention.

Usage: python -m studies.capture.bench_decode_cpu [--new 32] [--prompt-tokens 128] [--reps 2]
Prints one JSON line per variant (best of --reps runs, after one warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    import probe
    from interventions import ACT, HeadMask, HeadScale, intervene
    from probe.data.prompts import default_prompts

    h = probe.load("smollm2")
    enc = h.encode(default_prompts(h.tokenizer, n=1, tokens=args.prompt_tokens)[0])
    variants = {"unmodified (sdpa, no probe)": None, "seam, no edit": [], "ACT": [ACT()],
                "HeadMask uniform L18H6": [HeadMask([(18, 6)], mode="uniform")],
                "HeadScale L3H2 x2": [HeadScale([(3, 2)], alpha=2.0)]}
    for name, ivs in variants.items():
        def gen():
            with torch.no_grad():
                if ivs is None:
                    return h.model.generate(**enc, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
                with intervene(h, *ivs):
                    return h.model.generate(**enc, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
        gen()
        best = min(_timed(gen) for _ in range(args.reps))
        print(json.dumps({"variant": name, "new_tokens": args.new, "prompt_tokens": int(enc["input_ids"].shape[1]),
                          "tokens_per_s": round(args.new / best, 2), "load_avg": round(os.getloadavg()[0], 2),
                          "threads": torch.get_num_threads()}), flush=True)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
