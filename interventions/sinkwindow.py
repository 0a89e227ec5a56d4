"""SinkWindow: StreamingLLM's KV cache (Xiao et al., ICLR 2024; methods.md §6).

The cache keeps the first ``sinks`` tokens plus the most recent ``window`` tokens; the middle is
evicted. Positions are re-indexed *inside the cache*: every query-key distance equals the one in
StreamingLLM's re-indexed cache (keys at cache slots 0..n-1, the query at its slot).

How (our call, documented): transformers caches post-RoPE keys and computes the query's rotation
from its absolute position. Since RoPE scores depend only on the query-key distance, the recent
window (contiguous, ending at the query) already has the re-indexed distances; only the ``sinks``
keys are re-rotated, by the position shift, so that they sit right before the window start
(sink i at window_start - sinks + i). Rotation uses the model's ``rotary_emb.inv_freq``
(default / linear / llama3 RoPE: pure rotations; dynamic RoPE variants are not supported).

Eviction happens before new tokens are appended, keeping sinks + the last (window - T) tokens, so a
decode step (T = 1) attends to exactly sinks + window keys (incl. itself) as in StreamingLLM's
``evict_for_space``. A multi-token prompt is processed with ordinary causal attention and then
trimmed. Left padding is not supported (the sinks would be padding); rows must have equal length.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from transformers.cache_utils import DynamicLayer

from probe.errors import ProbeError

from .base import Intervention


def rerotate(keys: Tensor, delta: int, inv_freq: Tensor, memo: Optional[dict] = None) -> Tensor:
    """Move post-RoPE keys [B, KV, n, D] by ``delta`` positions (exact RoPE composition).

    memo: a dict that keeps each (delta, device, dtype)'s cos / sin [D] (a decode step moves the sinks by
    one position every time: one host->device copy of inv_freq per layer and sequence, not per step)."""
    if delta == 0:
        return keys
    key = (delta, keys.device, keys.dtype)
    cs = None if memo is None else memo.get(key)
    if cs is None:
        ang = delta * inv_freq.to(device=keys.device, dtype=torch.float64)    # [D/2]
        sin = ang.sin().to(keys.dtype)
        cs = (torch.cat((ang, ang)).cos().to(keys.dtype), torch.cat((-sin, sin)))   # cos [D], sign-folded sin [D]
        if memo is not None:
            if len(memo) >= 8:                                                # prompt trims move by one-off deltas
                memo.clear()
            memo[key] = cs
    cos, sin_signed = cs
    # rotate_half(x) * sin == roll(x, D/2) * (-sin, sin) exactly (a sign flip is exact): one roll instead of
    # chunk + neg + cat on the decode path
    return keys * cos + keys.roll(keys.shape[-1] // 2, -1) * sin_signed


class SinkWindowLayer(DynamicLayer):
    """One layer's StreamingLLM cache. Drop-in for transformers' ``DynamicLayer`` (same methods).

    keys / values: [B, KV, n, D] with n <= sinks + window after each update; ``seen`` counts every
    token ever appended (what ``get_seq_length`` reports, so generate's positions stay absolute).
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, sinks: int, window: int, inv_freq: Tensor, keys: Optional[Tensor] = None,
                 values: Optional[Tensor] = None):
        super().__init__()
        self.sinks, self.window, self.inv_freq = sinks, window, inv_freq
        self.keys, self.values = keys, values
        self.is_initialized = keys is not None
        self.seen = 0 if keys is None else keys.shape[-2]
        self.sink_pos = 0            # effective position of sink 0
        self.evicted = 0
        self._rot: dict = {}         # rerotate's cos / sin per (delta, device, dtype)
        if keys is not None:
            self.device = keys.device

    def __repr__(self) -> str:
        return f"SinkWindowLayer(sinks={self.sinks}, window={self.window}, kept={self.get_seq_length_kept()})"

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.device = key_states.device
        self.keys = key_states[..., :0, :]
        self.values = value_states[..., :0, :]
        self.is_initialized = True

    def get_seq_length_kept(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def _kept_before(self, T: int) -> int:
        """Cached entries left after evicting for T new tokens."""
        n = self.get_seq_length_kept()
        if T > 1 and n > 0:
            raise ProbeError("SinkWindow: a multi-token call on a non-empty cache",
                             "feed the prompt in one call, then one token per step")
        return min(n, self.sinks + max(0, self.window - T))

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Evict for space, re-rotate the sinks, append: key/value_states [B, KV, T, D]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        T = key_states.shape[-2]
        n, keep = self.get_seq_length_kept(), self._kept_before(T)
        if keep < n:          # evict and append in one cat per tensor (a decode step: two copies, not four)
            recent = keep - self.sinks
            ks = self.keys[..., : self.sinks, :]                                  # [B, KV, k, D]
            window_start = self.seen - recent                                      # absolute position
            new_sink_pos = window_start - self.sinks
            ks = rerotate(ks, new_sink_pos - self.sink_pos, self.inv_freq, self._rot)
            self.sink_pos = new_sink_pos
            tail = slice(n - recent, n)
            self.keys = torch.cat([ks, self.keys[..., tail, :], key_states], dim=-2)
            self.values = torch.cat([self.values[..., : self.sinks, :], self.values[..., tail, :], value_states], dim=-2)
            self.evicted += n - keep
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
        self.seen += T
        return self.keys, self.values

    def trim(self) -> None:
        """Evict down to sinks + window (e.g. after a long prompt), re-rotating the sinks."""
        n, keep = self.get_seq_length_kept(), min(self.get_seq_length_kept(), self.sinks + self.window)
        if keep < n:
            recent = keep - self.sinks
            window_start = self.seen - recent
            ks = rerotate(self.keys[..., : self.sinks, :], window_start - self.sinks - self.sink_pos, self.inv_freq)
            self.sink_pos = window_start - self.sinks
            self.keys = torch.cat([ks, self.keys[..., n - recent:, :]], dim=-2)
            self.values = torch.cat([self.values[..., : self.sinks, :], self.values[..., n - recent:, :]], dim=-2)
            self.evicted += n - keep

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset): the kept keys occupy consecutive effective positions ending at the query."""
        kv_length = self._kept_before(query_length) + query_length
        return kv_length, self.seen + query_length - kv_length

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return self.sinks + self.window

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False
        self.seen = self.sink_pos = self.evicted = 0

    def offload(self):
        pass

    def prefetch(self):
        pass

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise ProbeError("SinkWindow does not support beam search", "use greedy or sampling")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.keys is not None:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: Tensor) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys[indices], self.values[indices]


class SinkWindow(Intervention):
    """StreamingLLM cache: ``sinks`` first tokens + the last ``window`` tokens (4 + 1020 default).

    Inside ``intervene``, every forward of the decoder gets a cache whose layers are
    ``SinkWindowLayer`` (an existing transformers ``DynamicCache`` is converted in place; a forward
    without a cache and with use_cache gets a new one). ``sinks=0`` is the window-only baseline.
    """

    order = 0
    uses_seam = False

    def __init__(self, sinks: int = 4, window: int = 1020):
        if int(sinks) < 0 or int(window) < 1:
            raise ProbeError(f"SinkWindow(sinks={sinks}, window={window})", "need sinks >= 0 and window >= 1")
        self.sinks, self.window = int(sinks), int(window)

    def __repr__(self) -> str:
        return f"SinkWindow(sinks={self.sinks}, window={self.window})"

    def validate(self, handle) -> None:
        rope = getattr(handle.model.get_decoder(), "rotary_emb", None)
        if rope is None or not hasattr(rope, "inv_freq"):
            raise ProbeError(f"SinkWindow needs a RoPE model; {type(handle.model).__name__} has no rotary_emb.inv_freq",
                             "use a Llama-style model (SmolLM2)")
        rope_type = getattr(rope, "rope_type", "default")
        if rope_type not in ("default", "linear", "llama3"):
            raise ProbeError(f"SinkWindow: RoPE type {rope_type!r} is not a fixed rotation", "use a default-RoPE model")
        if handle.sliding_windows:
            raise ProbeError("SinkWindow on a model with sliding-window layers", "use a full-attention model (SmolLM2)")

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        decoder = handle.model.get_decoder()
        inv_freq = decoder.rotary_emb.inv_freq.detach().float().cpu().clone()
        n_layers = handle.n_layers

        def on_cache(cache) -> None:
            if cache is not None:
                self.convert(cache, n_layers, inv_freq)

        install_cache_hook(decoder, stack, "SinkWindow", on_cache)

    def convert(self, cache, n_layers: int, inv_freq: Tensor):
        """Turn a transformers ``DynamicCache`` into a StreamingLLM cache in place (idempotent)."""
        layers = getattr(cache, "layers", None)
        if layers is None:
            raise ProbeError(f"SinkWindow cannot use a {type(cache).__name__}", "let generate build its default DynamicCache")
        while len(layers) < n_layers:
            layers.append(SinkWindowLayer(self.sinks, self.window, inv_freq))
        for i, layer in enumerate(layers):
            if isinstance(layer, SinkWindowLayer):
                continue
            if getattr(layer, "is_sliding", False):
                raise ProbeError("SinkWindow on a sliding-window cache layer", "use a full-attention model")
            keys = layer.keys if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel() else None
            new = SinkWindowLayer(self.sinks, self.window, inv_freq, keys, None if keys is None else layer.values)
            new.trim()
            layers[i] = new
        return cache


def install_cache_hook(decoder: torch.nn.Module, stack: contextlib.ExitStack, who: str, on_cache) -> None:
    """Pre-hook on ``decoder`` owned by ``stack``: refuse padded batches, make sure the call has a KV cache
    (a fresh ``DynamicCache`` when generate passes none) and hand it to ``on_cache(cache)`` before the
    forward; ``on_cache(None)`` when the call runs without a cache (``use_cache=False``)."""
    from probe.capture.taps import ModuleHooks

    def pre_hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2 and not bool(mask.all()):
            raise ProbeError(f"{who} does not support padded batches", "run one prompt (or equal-length prompts) per call")
        key = "cache" if "cache" in kwargs else "past_key_values"
        cache = kwargs.get(key)
        if cache is None:
            use = kwargs.get("use_cache")
            if use is False or (use is None and not module.config.use_cache):
                on_cache(None)
                return None
            from transformers import DynamicCache

            cache = DynamicCache(config=module.config)
            kwargs["cache"] = cache
        on_cache(cache)
        return args, kwargs

    stack.enter_context(ModuleHooks()).pre(decoder, pre_hook, with_kwargs=True)
