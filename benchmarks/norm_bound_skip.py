"""How often a norm bound would let the prefill kernel skip a key block's row max, on real SmolLM2 activations (CPU).

The idea checked (session 13, not built): in the online softmax, a key block whose scores cannot exceed the running
row max by more than a margin M (in bits) needs no new max and no rescale. A bound that costs nothing per score is
Cauchy-Schwarz: c * max_rows |q| * max_keys |k| (c = scale * log2 e), against the smallest running max of the block's
rows. This script runs SmolLM2-135M-Instruct (the embedded GGUF) over real text (Austen), records every layer's
post-RoPE q and k through transformers' attention interface, and counts, at the kernel's d 64 statistics tile
(64 query rows, 128 keys), the fully visible (query block, key block) pairs whose bound is within M of that minimum,
and the same for standard normal q and k (the benchmarks' inputs) at layer 0's shape.

    PYTHONPATH=. python -m benchmarks.norm_bound_skip --tokens 2048 --out benchmarks/results/norm_bound_skip_smollm2.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from benchmarks.tables import write_json

BT, BS = 64, 128                                     # the d 64 statistics tile (kernels/attention/tiles.py)


def skip_fractions(q, k, margins: tuple) -> dict:
    """{margin: fraction of fully visible (query block, key block) pairs the bound lets skip} for one layer's
    q [H, T, D] and k [H, T, D] (KV heads repeated), key blocks visited in order from key 0."""
    import torch
    H, T, D = q.shape
    c2 = D ** -0.5 * math.log2(math.e)
    s = torch.einsum("htd,hsd->hts", q, k) * c2                               # [H, T, T] base-2 logits
    qn, kn = q.norm(dim=-1), k.norm(dim=-1)                                   # [H, T]
    hits, total = dict.fromkeys(margins, 0), 0
    for t0 in range(0, T, BT):
        qmax = qn[:, t0:t0 + BT].amax(-1)                                     # [H]
        m = torch.full((H, min(BT, T - t0)), -1e30)                           # running row max
        for j0 in range(0, (t0 + 1) // BS * BS, BS):                          # fully visible key blocks
            gap = c2 * qmax * kn[:, j0:j0 + BS].amax(-1) - m.amin(-1)         # [H] bound above the smallest max
            for mg in margins:
                hits[mg] += int((gap <= mg).sum())
            total += H
            m = torch.maximum(m, s[:, t0:t0 + BT, j0:j0 + BS].amax(-1))
    return {mg: hits[mg] / max(total, 1) for mg in margins} | {"pairs": total}


def smollm2_qk(tokens: int, with_v: bool = False) -> tuple:
    """(every layer's post-RoPE (q [H, T, D], k [KV, T, D]) float32 -- with_v: (q, k, v [KV, T, D]) --, token count)
    of SmolLM2-135M-Instruct (the embedded GGUF, CPU) over the first ``tokens`` tokens of Austen, recorded through
    transformers' attention interface."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from probe.data.texts import austen
    from probe.models.loader import load

    seen = []

    def record(module, q, k, v, attention_mask, **kw):
        seen.append((q.detach().float()[0], k.detach().float()[0]) + ((v.detach().float()[0],) if with_v else ()))
        return sdpa_attention_forward(module, q, k, v, attention_mask, **kw)

    AttentionInterface.register("norm_bound_record", record)
    h = load("smollm2", device="cpu", attn_implementation="norm_bound_record")
    ids = h.tokenizer(austen()[:40000], return_tensors="pt").input_ids[:, :tokens]
    with torch.no_grad():
        h.model(ids)
    return seen, int(ids.shape[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--margins", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    seen, n_tokens = smollm2_qk(args.tokens)
    margins = tuple(args.margins)
    layers = []
    for q, k in seen:
        layers.append(skip_fractions(q, k.repeat_interleave(q.shape[0] // k.shape[0], 0), margins))
    pairs = sum(x["pairs"] for x in layers)
    overall = {str(mg): sum(x[mg] * x["pairs"] for x in layers) / pairs for mg in margins}
    # the benchmarks' inputs (bench_sweep.Case: standard normal q, k) at the same shape, for contrast
    g = torch.Generator().manual_seed(0)
    q0 = seen[0][0]
    rnd = skip_fractions(torch.randn(q0.shape, generator=g), torch.randn(q0.shape, generator=g), margins)
    out = {"model": "smollm2", "text": "austen prideprejudice", "tokens": n_tokens, "tile": [BT, BS],
           "skip_fraction_by_margin_bits": overall,
           "random_normal_skip_fraction_by_margin_bits": {str(mg): rnd[mg] for mg in margins},
           "per_layer": [{str(mg): x[mg] for mg in margins} for x in layers],
           "command": "PYTHONPATH=. python -m benchmarks.norm_bound_skip " + " ".join(sys.argv[1:] if argv is None
                                                                                       else argv)}
    print(json.dumps(overall), json.dumps({str(mg): rnd[mg] for mg in margins}))
    if args.out:
        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
