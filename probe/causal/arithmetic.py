"""Causal check of arithmetic heads (Zhang et al., ICML 2024; docs/methods.md §5): mean-ablate them.

``ablation``: accuracy on clean "a op b=" prompts with the top-k heads by ``arithmetic_effect``
(``probe.detect.arithmetic``) mean-ablated (``interventions.HeadMask(mode="mean")``) vs k random heads
outside the top k; ``accuracy`` scores one prompt set under an optional intervention.
"""
from __future__ import annotations

import contextlib
import random
from typing import Sequence

import pandas as pd
import torch

from interventions import HeadMask, intervene

from ..data.arithmetic import ArithPrompt, digit_token_ids
from ..detect.arithmetic import _encode, _last_logits


def accuracy(handle, prompts: Sequence[ArithPrompt], intervention=None, batch_size: int = 32) -> float:
    """Fraction of clean prompts whose next-token argmax is the answer digit (optionally under an
    ``interventions`` object, e.g. HeadMask(..., mode="mean"))."""
    digits = digit_token_ids(handle.tokenizer)
    hits = 0
    ctx = intervene(handle, intervention) if intervention is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i:i + batch_size])
            enc = _encode(handle, [p.text for p in chunk])
            pred = _last_logits(handle.model, enc["input_ids"], enc["attention_mask"]).argmax(-1).cpu()
            hits += sum(int(pred[b]) == digits[p.answer] for b, p in enumerate(chunk))
    return hits / max(len(prompts), 1)


def ablation(handle, prompts: Sequence[ArithPrompt], heads: pd.DataFrame, ks: Sequence[int] = (5, 10, 20),
             draws: int = 3, seed: int = 0, column: str = "arithmetic_effect") -> pd.DataFrame:
    """Accuracy with the top-k heads (by ``column``) mean-ablated vs k random heads outside the top k
    (means over the clean prompts, ``HeadMask.compute_means``). Rows: kind, k, draw, heads, accuracy."""
    means = HeadMask.compute_means(handle, [p.text for p in prompts])
    order = [(int(r.layer), int(r.head)) for r in heads.sort_values(column, ascending=False).itertuples()]
    rng = random.Random(seed)
    rows = [dict(kind="none", k=0, draw=0, heads="", accuracy=accuracy(handle, prompts))]
    for k in ks:
        top = order[:k]
        rows.append(dict(kind="top", k=k, draw=0, heads=" ".join(f"L{l}H{h}" for l, h in top),
                         accuracy=accuracy(handle, prompts, HeadMask(top, mode="mean", means=means))))
        for d in range(draws):
            pick = rng.sample(order[k:], k)
            rows.append(dict(kind="random", k=k, draw=d, heads=" ".join(f"L{l}H{h}" for l, h in pick),
                             accuracy=accuracy(handle, prompts, HeadMask(pick, mode="mean", means=means))))
    return pd.DataFrame(rows)
