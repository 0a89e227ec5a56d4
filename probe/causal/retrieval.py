"""Causal check of retrieval heads (Wu et al., ICLR 2025; docs/methods.md §4): mask them, measure NIAH recall.

``masking_curve``: NIAH recall with the top-K heads by ``retrieval_score`` (``probe.detect.retrieval``)
masked to uniform attention at decode steps (``interventions.HeadMask(mode="uniform", decode_only=True)``)
vs ``draws`` sets of K random heads outside the top list.
"""
from __future__ import annotations

import random
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from interventions import HeadMask, intervene

from ..data.niah import NIAHSample
from ..detect.retrieval import generate


def niah_recall(handle, samples: Sequence[NIAHSample], heads: Sequence[tuple] = (), *, max_new_tokens: int = 24,
                batch_size: int = 4) -> list[float]:
    """ROUGE-1 recall per sample with ``heads`` [(layer, head), ...] masked to uniform attention at
    decode steps (``interventions.HeadMask(mode="uniform", decode_only=True)``); none = unmasked."""
    if not heads:
        return [r.recall for r in generate(handle, samples, max_new_tokens, score=False, batch_size=batch_size)]
    with intervene(handle, HeadMask([tuple(map(int, h)) for h in heads], mode="uniform", decode_only=True)):
        results = generate(handle, samples, max_new_tokens, score=False, batch_size=batch_size)
    return [r.recall for r in results]


def masking_curve(handle, samples: Sequence[NIAHSample], heads: pd.DataFrame, ks: Sequence[int] = (5, 10, 20),
                  draws: int = 3, top_list: Optional[int] = None, seed: int = 0, max_new_tokens: int = 24,
                  batch_size: int = 4, progress: Optional[Callable[[str], None]] = None) -> pd.DataFrame:
    """NIAH recall vs K masked heads: the top-K by ``retrieval_score`` and ``draws`` sets of K random
    heads drawn outside the top ``top_list`` (default max(ks)) heads.

    Returns rows (kind in {"none", "top", "random"}, k, draw, heads, recall, accuracy) where recall
    is the mean ROUGE-1 recall and accuracy the fraction of samples with recall > 0.5.
    """
    ranked = heads.sort_values("retrieval_score", ascending=False)
    order = [(int(r.layer), int(r.head)) for r in ranked.itertuples()]
    top_n = top_list or max(ks)
    outside = order[top_n:]
    rng = random.Random(seed)
    rows = []

    def add(kind, k, draw, hs):
        rec = niah_recall(handle, samples, hs, max_new_tokens=max_new_tokens, batch_size=batch_size)
        rows.append(dict(kind=kind, k=k, draw=draw, heads=" ".join(f"L{l}H{h}" for l, h in hs),
                         recall=float(np.mean(rec)), accuracy=float(np.mean([x > 0.5 for x in rec]))))
        if progress:
            progress(f"{kind} k={k} draw={draw}: recall {rows[-1]['recall']:.3f}")

    add("none", 0, 0, [])
    for k in ks:
        add("top", k, 0, order[:k])
        for d in range(draws):
            add("random", k, d, rng.sample(outside, k))
    return pd.DataFrame(rows)
