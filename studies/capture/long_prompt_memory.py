"""Peak memory of capturing a long SmolLM2 prompt with probe vs what output_attentions costs.

Each measurement runs in its own process (peak RSS from getrusage), fp32 on CPU:
  plain     — the model's SDPA forward (no capture): the floor
  capture   — probe.capture(stats=received, sink, entropy) over all 30 layers (query-blocked reference)
  eager     — output_attentions=True (transformers' eager path keeps every N x N map)

Usage: python -m studies.capture.long_prompt_memory [--tokens 4096] [--eager-tokens 1024]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(mode: str, tokens: int) -> None:
    import torch

    import probe
    from probe.data.prompts import default_prompts

    torch.set_num_threads(2)
    h = probe.load("smollm2")
    text = default_prompts(h.tokenizer, n=1, tokens=tokens, book="emma")[0]
    enc = h.encode(text)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.no_grad():
        if mode == "plain":
            h.model(**enc, use_cache=False)
        elif mode == "capture":
            with probe.capture(h, stats=("received", "sink", "entropy")) as rec:
                h.model(**enc, use_cache=False)
            assert rec.layer(29).received_sum.shape[-1] == enc["input_ids"].shape[1]
        else:
            h.model.set_attn_implementation("eager")
            h.model(**enc, use_cache=False, output_attentions=True)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "tokens": int(enc["input_ids"].shape[1]), "seconds": round(dt, 1),
                      "peak_rss_gib": round(peak / 2**20, 2), "rss_before_gib": round(base / 2**20, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--eager-tokens", type=int, default=1024)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tokens)
        return
    rows = []
    for mode, n in (("plain", args.tokens), ("capture", args.tokens), ("eager", args.eager_tokens)):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--tokens", str(n)], capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("{")]
        rows.append(json.loads(line[-1]) if line else {"mode": mode, "tokens": n, "error": out.stderr[-300:]})
        print(rows[-1], flush=True)
    # eager keeps L x H x N^2 fp32 maps: extrapolate to --tokens
    maps_gib = 30 * 9 * args.tokens ** 2 * 4 / 2**30
    print(f"output_attentions at {args.tokens} tokens would hold {maps_gib:.1f} GiB of maps (30 layers x 9 heads x N^2 x 4 B)")


if __name__ == "__main__":
    main()
