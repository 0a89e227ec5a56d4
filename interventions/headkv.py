"""HeadwiseKV: a head-wise KV-cache policy (DuoAttention, Xiao et al. 2024; RazorAttention, Tang et al. 2024).

Chosen KV heads (e.g. the KV heads of probe's retrieval heads) keep every cache entry; every other
KV head keeps StreamingLLM's cache: the first ``sinks`` tokens plus the last ``window`` tokens,
positions re-indexed inside the cache exactly as ``SinkWindow`` does. The saving is real: the
cache is a ``HeadwiseCache`` whose streaming heads hold at most sinks + window entries
(``interventions.headkv_cache``); the attention goes through probe's seam, which hands each layer
to this intervention's ``attend`` (``interventions.headkv_attend``: kernels.attention for the
full heads and the windows, a small PyTorch block for the sink columns).

Head choice (``interventions.headkv_select``; budgets count KV heads; query-head scores are pooled
over each KV head's query group by its most demanding head -- max for ``select="top"``, min for
``select="bottom"`` -- or by ``pool="mean"``):
  * ``report`` + ``column`` (default "retrieval_score") + ``full`` (fraction or count):
    the top-scoring KV heads (``select="bottom"``: the lowest, e.g. low first-token sink mass);
  * ``heads=["L18H7", ...]``: the KV heads of those query heads;
  * ``select="random"`` (+ ``seed``): the same budget drawn uniformly over all KV heads;
    ``select="random-layers"``: as many per layer as the report's top choice (layer-matched control);
  * ``plan=`` an [L, KV] bool tensor.

Prefill runs every query row under the policy (a streaming head's prompt rows see exactly what
StreamingLLM token by token would show them), so a needle in the prompt is only reachable through
the full heads. Limits: no left padding (rows of equal length), no beam search, one multi-token
call per cache (the prompt), RoPE models without sliding-window layers (as SinkWindow).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd
import torch
from torch import Tensor

from probe.errors import ProbeError

from .base import Intervention, attach_hook, check_heads, parse_heads
from .headkv_attend import headwise_attention, query_heads
from .headkv_cache import HeadwiseLayer, convert, span
from .headkv_select import (SELECTIONS, budget_count, head_scores, heads_plan, plan_heads, pool_kv, random_plan,
                            read_head_table, top_plan)
from .sinkwindow import SinkWindow, install_cache_hook


class HeadwiseKV(Intervention):
    """Full KV cache for chosen KV heads, sinks + window for the rest (see the module doc).

    Args:
        heads: query heads ("L18H7" or (18, 7)) whose KV heads stay full; overrides report / select.
        report: a probe report folder or a heads .csv / .parquet / DataFrame with ``column``.
        column: the score to rank heads by (default "retrieval_score"; e.g. "key0_mass").
        full: the budget: a fraction of KV heads (0.25) or a count (11).
        select: "top" | "bottom" | "random" | "random-layers".
        seed: the random draw (random selections).
        pool: "max" | "mean" (query-head scores -> KV-head score).
        sinks, window: the streaming heads' cache.
        plan: [L, KV] bool (True = full KV head), used as given.
    """

    order = 0
    uses_seam = True

    def __init__(self, heads=None, *, report: Union[None, str, Path, pd.DataFrame] = None,
                 column: str = "retrieval_score", full: Union[int, float, str] = 0.25, select: str = "top",
                 seed: int = 0, pool: str = "max", sinks: int = 4, window: int = 256, plan: Optional[Tensor] = None):
        if select not in SELECTIONS:
            raise ProbeError(f"HeadwiseKV select={select!r}", "use one of " + ", ".join(SELECTIONS))
        if int(sinks) < 0 or int(window) < 1:
            raise ProbeError(f"HeadwiseKV(sinks={sinks}, window={window})", "need sinks >= 0 and window >= 1")
        self.heads = parse_heads(heads)
        self.table = read_head_table(report) if report is not None else None
        self.report = None if report is None or isinstance(report, pd.DataFrame) else str(report)
        if self.heads is None and plan is None and self.table is None and select != "random":
            raise ProbeError("HeadwiseKV needs a head choice",
                             "give report=DIR (a probe report with retrieval_score), heads=L18H7+..., or select=random")
        self.column, self.full, self.select, self.seed, self.pool = column, full, select, int(seed), pool
        self.sinks, self.window = int(sinks), int(window)
        self.given_plan = None if plan is None else torch.as_tensor(plan).bool().cpu()
        self.plan: Optional[Tensor] = None        # [L, KV] bool, set by resolve()
        self.scores: Optional[Tensor] = None      # [L, KV] pooled scores when chosen from a table
        self.n_heads: Optional[int] = None

    def __repr__(self) -> str:
        if self.heads is not None:
            how = f"heads={['L%dH%d' % h for h in self.heads]}"
        elif self.given_plan is not None:
            how = "plan=<given>"
        else:
            how = f"select={self.select!r}, full={self.full}" + (f", column={self.column!r}" if self.table is not None else "") \
                + (f", seed={self.seed}" if self.select.startswith("random") else "")
        return f"HeadwiseKV({how}, sinks={self.sinks}, window={self.window})"

    # ---- which heads -------------------------------------------------------------------------

    def resolve(self, handle) -> Tensor:
        """Compute (and keep) the plan [L, KV] bool for this model."""
        L, H, KV = handle.n_layers, handle.n_heads, handle.n_kv_heads
        self.n_heads = H
        if self.given_plan is not None:
            if tuple(self.given_plan.shape) != (L, KV):
                raise ProbeError(f"HeadwiseKV plan has shape {tuple(self.given_plan.shape)}", f"expected [{L}, {KV}] (layers, KV heads)")
            plan = self.given_plan
        elif self.heads is not None:
            check_heads(handle, self.heads)
            plan = heads_plan(self.heads, L, H, KV)
        else:
            count = budget_count(self.full, L * KV)
            if self.table is not None:
                raw = head_scores(self.table, self.column, L, H)
                lowest = self.select == "bottom"      # pool the group's most demanding query head: min when lowest wins
                self.scores = -pool_kv(-raw, KV, self.pool) if lowest else pool_kv(raw, KV, self.pool)
            if self.select == "random":
                plan = random_plan(L, KV, count, self.seed)
            elif self.select == "random-layers":
                plan = random_plan(L, KV, count, self.seed, like=top_plan(self.scores, count))
            else:
                plan = top_plan(self.scores, count, lowest=self.select == "bottom")
        self.plan = plan.clone()
        return self.plan

    def summary(self) -> dict:
        """Plan facts: full KV heads (count, fraction, names) and the streaming cache size."""
        if self.plan is None:
            raise ProbeError("HeadwiseKV.summary before the plan is resolved", "call resolve(handle) or enter intervene")
        return {"full_kv_heads": int(self.plan.sum()), "kv_heads": int(self.plan.numel()),
                "full_fraction": float(self.plan.float().mean()), "sinks": self.sinks, "window": self.window,
                "heads": plan_heads(self.plan), "policy": repr(self)}

    def kv_bytes_per_token(self, handle, dtype: torch.dtype, length: int) -> float:
        """KV bytes per token at ``length`` tokens (batch 1): full heads grow, streaming heads cap at sinks + window."""
        per_entry = 2 * handle.head_dim * torch.empty((), dtype=dtype).element_size()     # key + value
        n_full = int(self.plan.sum())
        n_stream = int(self.plan.numel()) - n_full
        return per_entry * (n_full * length + n_stream * min(length, self.sinks + self.window)) / length

    # ---- Intervention --------------------------------------------------------------------------

    def validate(self, handle) -> None:
        SinkWindow(self.sinks, self.window).validate(handle)
        self.resolve(handle)

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        decoder = handle.model.get_decoder()
        inv_freq = decoder.rotary_emb.inv_freq.detach().float().cpu().clone()
        hook = _HeadwiseHook(self, self.plan, inv_freq)

        def on_cache(cache) -> None:
            hook.cache = None if cache is None else convert(cache, self.plan, self.sinks, self.window, inv_freq)

        install_cache_hook(decoder, stack, "HeadwiseKV", on_cache)
        stack.callback(setattr, hook, "cache", None)
        attach_hook(handle, range(handle.n_layers), hook, stack)


class _HeadwiseHook:
    """Seam hook: computes each layer's attention itself (``attend``), from the head-wise cache.

    The decode path reads no tensor value on the host and copies nothing to the device: the head index
    tensors live on the model's device from the first call on (``_indices``), and the padding check (a
    device->host read) runs on multi-token calls only (a decode step's padding is refused by the cache
    hook's mask check, once per forward)."""

    def __init__(self, iv: HeadwiseKV, plan: Tensor, inv_freq: Tensor):
        self.iv, self.inv_freq = iv, inv_freq
        self.full = [torch.nonzero(row).flatten() for row in plan]           # per layer [KVf]
        self.stream = [torch.nonzero(~row).flatten() for row in plan]        # per layer [KVs]
        self.n_kv = plan.shape[1]
        self.cache = None
        self._on: dict = {}                                                  # (layer, device) -> index tensors

    def _indices(self, layer: int, dev: torch.device, G: int) -> tuple:
        """(full KV heads [KVf], streaming KV heads [KVs], their query heads [KVf * G], [KVs * G]) on dev and the
        query heads' (full, stream) spans (slices where contiguous), made once per layer and device."""
        key = (layer, dev, G)
        hit = self._on.get(key)
        if hit is None:
            full, stream = self.full[layer], self.stream[layer]
            qf, qs = query_heads(full, G), query_heads(stream, G)
            hit = self._on[key] = (full.to(dev), stream.to(dev), qf.to(dev), qs.to(dev),
                                   (span(qf.tolist()), span(qs.tolist())))
        return hit

    def after(self, call, result) -> None:
        pass

    def attend(self, call, common: dict) -> Tensor:
        """q [B, H, T, D] + this layer's cache -> out [B, T, H, D]."""
        if call.T > 1 and bool((call.key_start != 0).any()):
            raise ProbeError("HeadwiseKV does not support padded batches", "run one prompt (or equal-length prompts) per call")
        layer = None if self.cache is None else self.cache.layers[call.layer]
        full, stream, q_full, q_stream, q_spans = self._indices(call.layer, call.query.device, call.H // self.n_kv)
        if isinstance(layer, HeadwiseLayer):
            kf, vf = call.key, call.value
            ks, vs = layer.stream.keys, layer.stream.values
            prefill = layer.is_prefill
        else:                                     # no cache: key / value hold every KV head
            kf, vf = call.key.index_select(1, full), call.value.index_select(1, full)
            ks, vs = call.key.index_select(1, stream), call.value.index_select(1, stream)
            prefill = True
        out = headwise_attention(call.query, kf, vf, ks, vs, full_kv=full, stream_kv=stream, n_kv=self.n_kv,
                                 prefill=prefill, sinks=self.iv.sinks, window=self.iv.window, inv_freq=self.inv_freq,
                                 scale=common["scale"], key_start=call.key_start, q_full=q_full, q_stream=q_stream,
                                 q_spans=q_spans)
        if isinstance(layer, HeadwiseLayer) and prefill:
            layer.compact()
        return out
