"""The hook backends' map reduction (``probe.backends.reduce.stats_from_probs``), before and after session 6.

Before: the map went through ``reference_attention`` with identity keys and zero values of width S (two
T x S x S float64 products per layer, O(N^3)); now: ``reference.stats_from_logits`` (O(N^2)). One layer of
SmolLM2's shape (9 heads), causal, a random probability map, the sinks detector's statistics (entropy,
received mass, key-0 mass); wall seconds, the fastest of ``--repeats`` after a warm-up, both in one process
(the ratio holds under a loaded machine better than either time), and the largest difference of the two results.

    python -m benchmarks.bench_backend_reduce --out benchmarks/results/backend_reduce_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch


def old_stats_from_probs(probs, key_start, request):
    """The session-5 reduction: reference_attention on log P with identity keys and zero values [S, S]."""
    from kernels.attention import reference_attention
    B, H, T, S = probs.shape
    logits = probs.to(torch.float64).clamp_min(1e-300).log()
    eye = torch.eye(S, dtype=torch.float64)[None, None].expand(B, 1, S, S)
    values = torch.zeros((), dtype=torch.float64).expand(B, 1, S, S)
    return reference_attention(logits, eye, values, scale=1.0, key_start=key_start, stats=request)


def causal_probs(H: int, N: int, seed: int = 0) -> torch.Tensor:
    """A random causal probability map [1, H, N, N] (float32, rows sum to 1 over the visible keys)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(1, H, N, N, generator=g)
    s = s.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1)


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    from kernels.attention import StatsRequest
    from probe.backends.reduce import stats_from_probs
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    req = StatsRequest(entropy=True, received=True, sink_mass=True)
    ks = torch.zeros(1, dtype=torch.long)
    out = {"meta": {"argv": sys.argv[1:], "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}, "rows": []}
    for N in [int(x) for x in args.sizes.split(",")]:
        probs = causal_probs(args.heads, N)
        new = stats_from_probs(probs, ks, req)
        old = old_stats_from_probs(probs, ks, req)
        diff = max(float((getattr(new, f) - getattr(old, f)).abs().max()) for f in ("entropy", "received_sum", "sink_mass"))
        row = {"tokens": N, "heads": args.heads, "old_s": best_of(lambda: old_stats_from_probs(probs, ks, req), args.repeats),
               "new_s": best_of(lambda: stats_from_probs(probs, ks, req), args.repeats), "max_abs_diff": diff}
        row["speedup"] = row["old_s"] / row["new_s"]
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    out["meta"]["loadavg_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
