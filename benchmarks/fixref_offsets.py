"""How far each row's max rises above the max of its first key block, on real SmolLM2 activations (CPU).

The prefill kernel's ``fixref`` switch (kernels/attention/prefill_kernel.py) takes every fully visible key block past
the first against that first block's row max, with no running max. Two things follow from the rise r = (row max over
all the keys the kernel takes that way) - (row max over the first block), in base-2 logit units:
  * a program runs its key range a second time (the exact running-max path) when some row's sums pass 1e30, i.e. only
    when r approaches ~100 for some row of its query block;
  * the entropy sum is taken r away from the row max, so its float32 cancellation grows with r.
This script runs SmolLM2-135M-Instruct (the embedded GGUF) over real text (Austen), takes every layer's post-RoPE q and
k (``norm_bound_skip.smollm2_qk``), and reports r's distribution over the rows the switch applies to (query blocks with
more than one fully visible key block at the d 64 statistics tile: 64 query rows, 128 keys), per layer and overall,
with the same for standard normal q and k (the benchmarks' inputs) at layer 0's shape.

    PYTHONPATH=. python -m benchmarks.fixref_offsets --tokens 2048 --out benchmarks/results/fixref_offsets_smollm2.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from benchmarks.norm_bound_skip import smollm2_qk
from benchmarks.tables import write_json

BT, BS = 64, 128                                     # the d 64 statistics tile (kernels/attention/tiles.py)
FALLBACK_BITS = math.log2(1e30)                      # sums past 1e30 send a program back (prefill_kernel._overflowed)


def rises(q, k):
    """Per-row rises [rows] (base 2) for one layer's q [H, T, D] and k [H, T, D] (KV heads repeated): over the query
    blocks with two or more fully visible key blocks, the max over those blocks minus the max over the first."""
    import torch
    H, T, D = q.shape
    c2 = D ** -0.5 * math.log2(math.e)
    out = []
    for t0 in range(0, T, BT):
        j_b = (t0 + 1) // BS * BS                                             # end of the fully visible keys
        if j_b < 2 * BS:
            continue
        s = torch.einsum("htd,hsd->hts", q[:, t0:t0 + BT], k[:, :j_b]) * c2  # [H, rows, j_b]
        out.append((s.amax(-1) - s[..., :BS].amax(-1)).flatten())             # [H * rows]
    return torch.cat(out) if out else torch.zeros(0)


def summary(r) -> dict:
    """Quantiles of rises r and the share of rows past a few thresholds."""
    import torch
    qs = torch.quantile(r.double(), torch.tensor([0.5, 0.9, 0.99, 0.999], dtype=torch.float64)).tolist()
    return {"rows": int(r.numel()), "median": qs[0], "p90": qs[1], "p99": qs[2], "p999": qs[3], "max": float(r.max()),
            "share_above_8": float((r > 8).double().mean()), "share_above_32": float((r > 32).double().mean()),
            f"share_above_{FALLBACK_BITS:.1f}": float((r > FALLBACK_BITS).double().mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    seen, n_tokens = smollm2_qk(args.tokens)
    per_layer = [rises(q, k.repeat_interleave(q.shape[0] // k.shape[0], 0)) for q, k in seen]
    overall = summary(torch.cat(per_layer))
    g = torch.Generator().manual_seed(0)
    q0 = seen[0][0]
    rnd = summary(rises(torch.randn(q0.shape, generator=g), torch.randn(q0.shape, generator=g)))
    out = {"model": "smollm2", "text": "austen prideprejudice", "tokens": n_tokens, "tile": [BT, BS],
           "fallback_bits": FALLBACK_BITS, "rise_bits": overall, "random_normal_rise_bits": rnd,
           "per_layer": [summary(r) for r in per_layer],
           "command": "PYTHONPATH=. python -m benchmarks.fixref_offsets " + " ".join(sys.argv[1:] if argv is None
                                                                                       else argv)}
    print(json.dumps(overall), json.dumps(rnd))
    if args.out:
        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
