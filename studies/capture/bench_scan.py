"""Time `probe scan` (sinks) of SmolLM2 on 32 Austen prompts x 512 tokens vs the eager output_attentions baseline.

Usage: python -m studies.capture.bench_scan [--prompts 32] [--tokens 512] [--batch-size 4]
Prints one JSON line per measurement. fp32, CPU, torch threads = cores.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    import probe
    from probe.data.prompts import default_prompts
    from probe.detect import get_detector

    h = probe.load("smollm2")
    prompts = default_prompts(h.tokenizer, n=args.prompts, tokens=args.tokens)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    get_detector("sinks")(h, prompts, batch_size=args.batch_size)
    scan_s = time.perf_counter() - t0
    print(json.dumps({"what": "probe sinks detector (capture + detect)", "prompts": args.prompts, "tokens": args.tokens,
                      "seconds": round(scan_s, 1), "load_avg_before": load, "threads": torch.get_num_threads()}), flush=True)
    h.model.set_attn_implementation("eager")
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(prompts), args.batch_size):
            enc = h.encode(prompts[i:i + args.batch_size])
            out = h.model(**enc, use_cache=False, output_attentions=True)
            # the minimum a map-based tool does with them: key-0 mass per head
            _ = torch.stack([a[:, :, :, 0].mean(-1) for a in out.attentions])
    eager_s = time.perf_counter() - t0
    print(json.dumps({"what": "eager output_attentions forward only", "prompts": args.prompts, "tokens": args.tokens,
                      "seconds": round(eager_s, 1), "load_avg_before": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
