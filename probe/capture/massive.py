"""Massive activations of the residual stream, shared by the sink detectors and VAR.

Definitions (docs/methods.md §2, §8; x = residual stream entering a decoder layer):
  massive dims = hidden dims whose max |x| dwarfs the median |x| of their token: Sun et al.
    (|x| > ``massive_abs`` and > ``massive_ratio`` x median) or the relative criterion
    (> ``relative_ratio`` x median) that a 135M model needs.
  sink dims D_sink = massive dims that fire on the first token in at least half of the layers from 2 on.
  phi(x_j) = max_{d in D_sink} |x_j[d] / rms(x_j)|, rms without gain, eps 1e-6; phi <= sqrt(D) always.

``probe.detect.sinks`` reports the massive dims of a prompt set; ``probe.detect.vision`` and
``interventions.VAR`` find D_sink with ``find_sink_dims`` and mark tokens with ``massive_phi``.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Optional, Sequence

import pandas as pd
import torch
from torch import Tensor

from ..models.padding import first_real_index
from .recorder import capture

MASSIVE_DEFAULTS = dict(massive_abs=100.0, massive_ratio=1000.0, relative_ratio=100.0)
SINK_DIM_TEXTS = ("What is this item of clothing? Answer:", "Describe the image.",
                  "The quick brown fox jumps over the lazy dog.", "Is there a person in this picture?")


def massive_phi(x: Tensor, dims: Optional[Sequence[int]] = None) -> Tensor:
    """phi(x_j) = max_{d in dims} |x_j[d] / rms(x_j)|: x [B, T, D] -> [B, T]."""
    x = x.float()
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()                    # [B, T, 1]
    z = (x / rms).abs()                                                       # [B, T, D]
    if dims is not None:
        z = z[..., list(dims)]
    return z.amax(-1)


class MassiveAccumulator:
    """Per layer and dim: max |x|, max ratio to the median, first-token ratio, top tokens."""

    def __init__(self, n_layers: int, dim: int, relative_ratio: float):
        self.max_value = torch.zeros(n_layers, dim)
        self.max_ratio = torch.zeros(n_layers, dim)
        self.first_ratio_sum = torch.zeros(n_layers, dim)
        self.n = 0
        self.rel = relative_ratio
        self.tokens: dict = defaultdict(Counter)   # (layer, dim) -> Counter(token)

    def update(self, rec, strings: list[list[str]], key_start: torch.Tensor, n_layers: int) -> None:
        for layer in range(n_layers):
            hs = rec.hidden(layer)
            med = hs.median_abs.clamp_min(1e-6)[:, None]                  # [B, 1]
            self.max_value[layer] = torch.maximum(self.max_value[layer], hs.absmax.max(0).values)
            self.max_ratio[layer] = torch.maximum(self.max_ratio[layer], (hs.absmax / med).max(0).values)
            self.first_ratio_sum[layer] += (hs.first.abs() / med).sum(0)
            ratio = hs.token_max / med                                     # [B, T]
            for b, pos in (ratio >= self.rel).nonzero().tolist():
                if pos >= key_start[b]:
                    self.tokens[(layer, int(hs.token_dim[b, pos]))][strings[b][pos]] += 1
        self.n += len(strings)

    def frame(self, massive_abs: float, massive_ratio: float) -> tuple[pd.DataFrame, list[int]]:
        first = self.first_ratio_sum / max(self.n, 1)                      # [L, D]
        sun = (self.max_value > massive_abs) & (self.max_ratio > massive_ratio)
        keep = sun | (self.max_ratio >= self.rel)
        L = first.shape[0]
        fires_first = (first >= self.rel) & keep
        late = fires_first[2:] if L > 2 else fires_first
        sink_dims = sorted(int(d) for d in (late.float().mean(0) >= 0.5).nonzero().flatten())
        rows = []
        for layer, dim in keep.nonzero().tolist():
            top = self.tokens.get((layer, dim), Counter()).most_common(5)
            rows.append(dict(layer=layer, dim=dim, max_value=float(self.max_value[layer, dim]),
                             max_ratio=float(self.max_ratio[layer, dim]), first_token_ratio=float(first[layer, dim]),
                             sun_criterion=bool(sun[layer, dim]), sink_dim=dim in sink_dims,
                             top_tokens=", ".join(f"{t!r}x{c}" for t, c in top)))
        cols = ["layer", "dim", "max_value", "max_ratio", "first_token_ratio", "sun_criterion", "sink_dim", "top_tokens"]
        return pd.DataFrame(rows, columns=cols), sink_dims


@torch.no_grad()
def find_sink_dims(handle, texts: Sequence[str] = SINK_DIM_TEXTS,
                   relative_ratio: float = MASSIVE_DEFAULTS["relative_ratio"],
                   massive_abs: float = MASSIVE_DEFAULTS["massive_abs"],
                   massive_ratio: float = MASSIVE_DEFAULTS["massive_ratio"]) -> tuple[list[int], pd.DataFrame]:
    """D_sink of the LM from text-only prompts (massive activations on the first token).

    Returns (sorted dims, the massive-activation frame: layer, dim, max_value, max_ratio,
    first_token_ratio, sun_criterion, sink_dim, top_tokens).
    """
    acc = MassiveAccumulator(handle.n_layers, handle.hidden_size, relative_ratio)
    enc = handle.encode(list(texts))
    with capture(handle, stats=(), hidden="summary") as rec:
        handle.model(**enc, use_cache=False)
    strings = [handle.token_strings(r) for r in enc["input_ids"].cpu()]
    acc.update(rec, strings, first_real_index(enc["attention_mask"].cpu()), handle.n_layers)
    frame, dims = acc.frame(massive_abs, massive_ratio)
    return dims, frame
