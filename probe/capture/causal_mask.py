"""The seam's mask function: a compact (key_start, window) description instead of an N x N mask.

transformers asks the attention implementation's mask function for a mask per layer type
(``AttentionMaskInterface``). SDPA's builds a [B, 1, T, S] boolean mask (1 GiB at 32K tokens) and
the seam then checked it with several more N x N temporaries. Here, when the requested pattern
is causal (optionally sliding-window) with left padding -- checked exactly, row block by row
block, in O(block x S) memory -- the mask function returns a ``CompactCausalMask`` holding only
the first real key per row and the window; every other pattern (bidirectional, packed, chunked,
vmap-only) gets SDPA's dense mask as before, which the seam refuses as today.

Per forward the mask function costs one device->host read (the left-padding check and whether any
row is padded, read together); a layer that falls through to SDPA asks for the dense mask, which is
built at most once per forward and shared by every such layer (None, SDPA's own causal path, when no
row is padded and the pattern is plain causal with T == 1 or T == S). A static cache (transformers'
``cache_implementation="static"``) hands a tensor ``q_offset`` and a ``kv_length`` of the whole
pre-allocated cache: only the first ``kv_valid = q_offset + q_length`` keys exist, and the seam
slices keys and values to them before the kernel -- except in graph mode (``seam.allow_compile``: every hook
edits head outputs only), where a static cache's decode steps get SDPA's dense mask over the whole cache, the
same fixed-shape tensors as the plain model, so that generate's compiled decode step (CUDA graphs) can run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from kernels.attention.api import visible_mask

# Row blocks of the exact check: at most this many mask elements per block (4 Mi on CPU; 16 Mi on a
# GPU, where fewer, larger blocks mean fewer launches: a 32K sliding layer checks in 64 blocks).
_CHECK_ELEMENTS = 1 << 22
_CHECK_ELEMENTS_CUDA = 1 << 24

# id(config) -> config of models whose seam runs in graph mode (``seam.allow_compile``): a static cache's decode
# steps get SDPA's dense mask over the whole cache (fixed shapes, no host read) instead of a compact one.
GRAPH_MODE_CONFIGS: dict = {}


@dataclass(frozen=True, eq=False)
class CompactCausalMask:
    """Causal (+ sliding window) attention with left padding, without the N x N mask.

    key_start [B] int64: first real key of each row (S = no real key); window: W or None;
    kv_valid: keys that exist (a static cache's filled prefix; = kv_length otherwise).
    ``dense()`` is SDPA's mask [B, 1, T, kv_length] or None (for modules that fall through to SDPA),
    built on the first call and shared by every later one.
    """

    key_start: Tensor
    window: Optional[int]
    q_length: int
    kv_length: int
    build_dense: Callable[[], Optional[Tensor]]
    kv_valid: Optional[int] = None
    _memo: dict = field(default_factory=dict, repr=False)

    ndim = 4    # transformers treats a mask that is not 2-D as prepared (generate builds it ahead with a static cache)

    @property
    def shape(self) -> tuple:
        return (self.key_start.shape[0], 1, self.q_length, self.kv_length)

    @property
    def n_keys(self) -> int:
        """Keys the attention sees: the static cache's filled prefix, else kv_length."""
        return self.kv_length if self.kv_valid is None else self.kv_valid

    def dense(self) -> Optional[Tensor]:
        if "dense" not in self._memo:
            self._memo["dense"] = self.build_dense()
        return self._memo["dense"]


def rows_match(rows: Callable[[int, int], Tensor], key_start: Tensor, T: int, S: int,
               window: Optional[int]) -> bool:
    """True iff rows(t0, t1) -> bool [B, t1 - t0, S] equals causal + window + left padding on every
    query row that sees a key. Row blocks of O(_CHECK_ELEMENTS) elements; one device sync at the end."""
    B = key_start.shape[0]
    budget = _CHECK_ELEMENTS_CUDA if key_start.is_cuda else _CHECK_ELEMENTS
    step = max(1, budget // max(1, B * S))
    q_pos = torch.arange(S - T, S, device=key_start.device)                # [T]
    bad = torch.zeros((), dtype=torch.bool, device=key_start.device)
    for t0 in range(0, T, step):
        t1 = min(T, t0 + step)
        expect = visible_mask(key_start, q_pos[t0:t1], S, window)          # [B, n, S]
        seen = expect.any(-1, keepdim=True)                                # rows that see a key
        bad |= ((rows(t0, t1).expand_as(expect) ^ expect) & seen).any()
    return not bool(bad)


def _left_padding_start(attention_mask: Optional[Tensor], B: int, kv_length: int, kv_offset: int,
                        device) -> tuple[Optional[Tensor], bool]:
    """([B] first real key, whether no row is padded) from transformers' 2-D padding mask; (None, False)
    when it is not left padding. One device->host read for both answers."""
    if attention_mask is None:
        return torch.zeros(B, dtype=torch.long, device=device), True
    pad = attention_mask.to(device).bool()                                 # [B, >= kv_offset + S] (keys past it: 0)
    if pad.shape[-1] < kv_offset + kv_length:
        pad = torch.nn.functional.pad(pad, (0, kv_offset + kv_length - pad.shape[-1]))
    pad = pad[:, kv_offset: kv_offset + kv_length]                         # [B, S]
    j = torch.arange(kv_length, device=device)
    key_start = torch.where(pad.any(-1), pad.long().argmax(-1), torch.full((B,), kv_length, device=device))
    left = (pad == (j[None, :] >= key_start[:, None])).all()
    left, unpadded = torch.stack([left, (key_start == 0).all()]).tolist()   # the one sync
    if not left:
        return None, False
    return key_start.long(), bool(unpadded)


def compact_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                 mask_function=None, attention_mask: Optional[Tensor] = None, local_size: Optional[int] = None,
                 allow_is_causal_skip: bool = True, allow_is_bidirectional_skip: bool = False,
                 use_vmap: bool = False, device="cpu", **kwargs):
    """``AttentionMaskInterface`` function: a ``CompactCausalMask`` when the pattern is causal
    (+ window ``local_size``) with left padding, else SDPA's mask (same arguments as ``sdpa_mask``)."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    if isinstance(attention_mask, CompactCausalMask):      # built ahead by generate (static cache): already final
        return attention_mask
    mask_function = mask_function or causal_mask_function
    args = dict(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                local_size=local_size, allow_is_causal_skip=allow_is_causal_skip,
                allow_is_bidirectional_skip=allow_is_bidirectional_skip, use_vmap=use_vmap, device=device, **kwargs)
    dense = lambda: sdpa_mask(**args)  # noqa: E731
    if use_vmap or not isinstance(kv_offset, int) or torch.compiler.is_compiling():   # no value reads under compile
        return dense()
    kv_valid = None
    if not isinstance(q_offset, int):          # a static cache: q_offset is a tensor, kv_length the whole cache
        if q_length == 1 and id(kwargs.get("config")) in GRAPH_MODE_CONFIGS:   # a decode step a CUDA graph may replay
            return dense()
        if kv_offset != 0:
            return dense()
        q_offset = args["q_offset"] = int(q_offset)   # read now: the cache advances it in place during the forward
    if kv_offset == 0 and q_offset + q_length < kv_length:                 # keys past the last query were never written
        kv_valid = q_offset + q_length
    n_keys = kv_length if kv_valid is None else kv_valid
    key_start, unpadded = _left_padding_start(attention_mask, batch_size, n_keys, kv_offset, device)
    if key_start is None:
        return dense()
    window = int(local_size) if local_size is not None else None
    known = mask_function is causal_mask_function and window is None and q_offset - kv_offset == n_keys - q_length
    if not known:                                                          # plain causal needs no check
        b = torch.arange(batch_size, device=device)[:, None, None, None]   # [B, 1, 1, 1]
        h = torch.zeros(1, dtype=torch.long, device=device)[None, :, None, None]
        kv = (torch.arange(n_keys, device=device) + kv_offset)[None, None, None, :]

        def rows(t0: int, t1: int) -> Tensor:                              # [B, n, S] the asked pattern
            qi = (torch.arange(t0, t1, device=device) + q_offset)[None, None, :, None]
            m = torch.as_tensor(mask_function(b, h, qi, kv), device=device)
            return m.expand(batch_size, 1, t1 - t0, n_keys)[:, 0] & (kv[0, 0] - kv_offset >= key_start[:, None, None])

        if not rows_match(rows, key_start, q_length, n_keys, window):
            return dense()
    if known and unpadded and allow_is_causal_skip and kv_valid is None and q_length in (1, kv_length):
        dense = lambda: None  # noqa: E731  (what sdpa_mask returns here: SDPA's own causal path, no read)
    elif not unpadded:
        args["allow_is_causal_skip"] = False   # padded rows: SDPA's skip test could only say no, after a host read
    return CompactCausalMask(key_start, window, q_length, kv_length, dense, kv_valid)
