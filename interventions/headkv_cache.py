"""A transformers KV cache with two kinds of KV heads per layer (DuoAttention-style storage).

``HeadwiseLayer`` stores a layer's full KV heads in one growing tensor [B, KVf, seen, D] (what
``update`` returns to the attention module, so transformers' mask sizes stay those of a normal
cache) and its streaming KV heads in a ``SinkWindowLayer`` [B, KVs, <= sinks + window, D]
(StreamingLLM's cache: sinks re-rotated before the window). Memory per layer therefore grows
with the number of *full* KV heads only. A multi-token call is allowed on an empty layer only
(the prompt); its streaming part is compacted to sinks + window right after the layer's
attention has read it (``HeadwiseLayer.compact``), so between forward calls and inside every
decode step a streaming head holds at most sinks + window entries.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from transformers.cache_utils import Cache, DynamicLayer

from probe.errors import ProbeError

from .sinkwindow import SinkWindowLayer


def span(idx: Sequence[int]) -> Optional[slice]:
    """``slice(a, b)`` when the sorted indices idx are exactly a, a + 1, ..., b - 1 (a view selects them), else None."""
    idx = [int(i) for i in idx]
    return slice(idx[0], idx[-1] + 1) if idx and idx == list(range(idx[0], idx[-1] + 1)) else None


def take(x: Tensor, idx: Tensor, sl: Optional[slice], dim: int = 1) -> Tensor:
    """x's entries idx along dim: a view when they are contiguous (``sl``), else an index_select copy."""
    if sl is not None:
        return x.narrow(dim, sl.start, sl.stop - sl.start)
    return x.index_select(dim, idx)


class HeadwiseLayer(DynamicLayer):
    """One layer: full KV heads ``full_kv`` grow; the rest keep StreamingLLM's sinks + window.

    keys / values: [B, KVf, seen, D] (the full heads, in ``full_kv`` order); ``stream`` holds
    [B, KVs, n, D] for ``stream_kv``. ``seen`` counts every token appended.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, full_kv: Sequence[int], n_kv: int, sinks: int, window: int, inv_freq: Tensor):
        super().__init__()
        full = sorted(int(g) for g in full_kv)
        self.n_kv = int(n_kv)
        self.full_kv = torch.tensor(full, dtype=torch.long)                                   # [KVf]
        self.stream_kv = torch.tensor([g for g in range(self.n_kv) if g not in full], dtype=torch.long)  # [KVs]
        self.full_span, self.stream_span = span(full), span(self.stream_kv.tolist())   # slices when contiguous
        self.stream = SinkWindowLayer(sinks, window, inv_freq)
        self.sinks, self.window = int(sinks), int(window)
        self.seen = 0

    def __repr__(self) -> str:
        return (f"HeadwiseLayer(full_kv={self.full_kv.tolist()}, sinks={self.sinks}, window={self.window}, "
                f"seen={self.seen}, stream_kept={self.stream.get_seq_length_kept()})")

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.device = key_states.device
        self.full_kv, self.stream_kv = self.full_kv.to(self.device), self.stream_kv.to(self.device)
        self.keys = key_states.index_select(1, self.full_kv)[..., :0, :]
        self.values = value_states.index_select(1, self.full_kv)[..., :0, :]
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append key/value_states [B, KV, T, D]; return the full heads [B, KVf, seen, D]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        T = key_states.shape[-2]
        if T > 1 and self.seen > 0:
            raise ProbeError("HeadwiseKV: a multi-token call on a non-empty cache",
                             "feed the prompt in one call, then one token per step")
        n_full, n_stream = self.full_kv.numel(), self.stream_kv.numel()          # host ints: no device read
        if n_full == 0:       # an empty [B, 0, seen, D] view keeps the returned length (the seam's S) right
            B, _, _, D = key_states.shape
            self.keys = key_states.new_empty(B, 0, self.seen + T, D)
            self.values = value_states.new_empty(B, 0, self.seen + T, D)
        else:
            kf, vf = take(key_states, self.full_kv, self.full_span), take(value_states, self.full_kv, self.full_span)
            self.keys = torch.cat([self.keys, kf], dim=-2)
            self.values = torch.cat([self.values, vf], dim=-2)
        if n_stream:
            ks = take(key_states, self.stream_kv, self.stream_span)                             # [B, KVs, T, D]
            vs = take(value_states, self.stream_kv, self.stream_span)
            self.stream.update(ks, vs)
        self.seen += T
        return self.keys, self.values

    @property
    def is_prefill(self) -> bool:
        """The streaming part still holds the uncompacted prompt (positions 0 .. seen - 1)."""
        return self.stream.evicted == 0 and self.stream.get_seq_length_kept() == self.seen

    def compact(self) -> None:
        """Evict the streaming heads down to sinks + window (after the prompt's attention)."""
        self.stream.trim()

    def stream_length(self) -> int:
        return self.stream.get_seq_length_kept()

    def kv_bytes(self) -> int:
        """Bytes held by this layer's keys and values (full + streaming heads)."""
        total = 0
        for t in (self.keys, self.values, self.stream.keys, self.stream.values):
            total += 0 if t is None else t.numel() * t.element_size()
        return total

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False
        self.stream.reset()
        self.seen = 0

    def offload(self):
        pass

    def prefetch(self):
        pass

    def crop(self, tokens_to_remove: int) -> None:
        raise ProbeError("HeadwiseKV caches cannot be cropped", "do not use assisted / speculative decoding with it")

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise ProbeError("HeadwiseKV does not support beam search", "use greedy or sampling")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.keys is not None:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)
        self.stream.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: Tensor) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys[indices], self.values[indices]
        self.stream.batch_select_indices(indices)


def make_layer(plan_row: Tensor, sinks: int, window: int, inv_freq: Tensor, old=None) -> HeadwiseLayer:
    """A HeadwiseLayer for plan_row [KV] bool (True = full head), filled from ``old`` (a DynamicLayer) if any."""
    layer = HeadwiseLayer(torch.nonzero(plan_row).flatten().tolist(), plan_row.numel(), sinks, window, inv_freq)
    keys = getattr(old, "keys", None) if getattr(old, "is_initialized", False) else None
    if keys is not None and keys.numel():
        layer.update(keys, old.values)
        layer.compact()
    return layer


class HeadwiseCache(Cache):
    """A transformers ``Cache`` of ``HeadwiseLayer`` s, one per decoder layer.

    Args:
        plan: [L, KV] bool, True = the KV head keeps every entry.
        sinks, window: the streaming heads' StreamingLLM cache.
        inv_freq: [D/2] the model's RoPE inverse frequencies (re-rotating evicted-around sinks).
    """

    def __init__(self, plan: Tensor, sinks: int, window: int, inv_freq: Tensor):
        super().__init__(layers=[make_layer(row, sinks, window, inv_freq) for row in plan.bool().cpu()])

    def kv_bytes(self) -> int:
        return kv_bytes(self)


def convert(cache, plan: Tensor, sinks: int, window: int, inv_freq: Tensor):
    """Turn a transformers ``DynamicCache`` into head-wise layers in place (idempotent); return it."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ProbeError(f"HeadwiseKV cannot use a {type(cache).__name__}", "let generate build its default DynamicCache")
    rows = plan.bool().cpu()
    while len(layers) < rows.shape[0]:
        layers.append(make_layer(rows[len(layers)], sinks, window, inv_freq))
    for i, layer in enumerate(layers):
        if isinstance(layer, HeadwiseLayer):
            continue
        if getattr(layer, "is_sliding", False) or not isinstance(layer, DynamicLayer):
            raise ProbeError(f"HeadwiseKV on a {type(layer).__name__} cache layer", "use a full-attention model (SmolLM2)")
        layers[i] = make_layer(rows[i], sinks, window, inv_freq, old=layer)
    return cache


def kv_bytes(cache) -> int:
    """Bytes of keys + values held by a cache (head-wise or plain transformers layers)."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        if isinstance(layer, HeadwiseLayer):
            total += layer.kv_bytes()
        else:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                total += 0 if t is None else t.numel() * t.element_size()
    return total


def stream_lengths(cache) -> list[Optional[int]]:
    """Entries held by each layer's streaming heads (None for non-head-wise layers)."""
    return [layer.stream_length() if isinstance(layer, HeadwiseLayer) else None for layer in cache.layers]
