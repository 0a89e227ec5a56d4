"""KV-cache storage at 8K tokens per policy, measured on the cache objects themselves (no model run).

A transformers ``DynamicCache`` (full attention) and ``HeadwiseCache`` s with SmolLM2-135M's shape
(30 layers x 3 KV heads x head_dim 64) are filled exactly as a generate call fills them: one
8000-token prefill per layer (``update``, then ``compact`` as HeadwiseKV's attention hook does),
then 4 single-token decode steps. K/V values are random (storage does not depend on them). Bytes
are summed over the tensors the caches hold afterwards, for fp32 (what the CPU study runs) and
bf16 (a usual GPU deployment).

    python -m studies.headkv.memory      # -> studies/headkv/results_cpu/memory.csv
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch


from interventions import HeadwiseKV  # noqa: E402
from interventions.headkv_cache import HeadwiseCache, kv_bytes  # noqa: E402
from transformers import DynamicCache  # noqa: E402

HERE = Path(__file__).resolve().parent
L, H, KV, D, THETA = 30, 9, 3, 64, 100000.0          # SmolLM2-135M-Instruct
PROMPT, STEPS, SINKS, WINDOW = 8000, 4, 4, 256


class _Shape:
    n_layers, n_heads, n_kv_heads, head_dim = L, H, KV, D


def fill(cache, dtype, layers_headwise: bool) -> int:
    torch.manual_seed(0)
    for step, T in enumerate([PROMPT] + [1] * STEPS):
        for layer in range(L):
            k = torch.randn(1, KV, T, D, dtype=dtype)
            cache.update(k, torch.randn_like(k), layer)
            if layers_headwise and step == 0:
                cache.layers[layer].compact()
    return kv_bytes(cache)


def main() -> None:
    inv_freq = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    retrieval = HERE.parent / "retrieval" / "heads.csv"
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        n = PROMPT + STEPS
        full = fill(DynamicCache(), dtype, False)
        rows.append({"policy": "full", "budget": 1.0, "dtype": str(dtype).replace("torch.", ""), "tokens": n,
                     "kv_bytes": full, "bytes_per_token": full / n, "vs_full": 1.0})
        for name, budget in [("streaming", 0.0), ("headwise", 0.125), ("headwise", 0.25), ("headwise", 0.5)]:
            iv = HeadwiseKV(report=retrieval, full=budget, sinks=SINKS, window=WINDOW) if budget else \
                HeadwiseKV(select="random", full=0, sinks=SINKS, window=WINDOW)
            plan = iv.resolve(_Shape())
            got = fill(HeadwiseCache(plan, SINKS, WINDOW, inv_freq), dtype, True)
            rows.append({"policy": name, "budget": budget, "dtype": str(dtype).replace("torch.", ""), "tokens": n,
                         "full_kv_heads": int(plan.sum()), "kv_bytes": got, "bytes_per_token": got / n,
                         "vs_full": got / full})
    out = HERE / "results_cpu" / "memory.csv"
    out.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(pd.DataFrame(rows).to_string())


if __name__ == "__main__":
    main()
