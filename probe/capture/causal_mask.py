"""The seam's mask function: a compact (key_start, window) description instead of an N x N mask.

transformers asks the attention implementation's mask function for a mask per layer type
(``AttentionMaskInterface``). SDPA's builds a [B, 1, T, S] boolean mask (1 GiB at 32K tokens) and
the seam then checked it with several more N x N temporaries. Here, when the requested pattern
is causal (optionally sliding-window) with left padding -- checked exactly, row block by row
block, in O(block x S) memory -- the mask function returns a ``CompactCausalMask`` holding only
the first real key per row and the window; every other pattern (bidirectional, packed, chunked,
vmap-only, tensor offsets) gets SDPA's dense mask as before, which the seam refuses as today.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from kernels.attention.api import visible_mask

# Row blocks of the exact check: at most this many mask elements per block (4 Mi on CPU; 16 Mi on a
# GPU, where fewer, larger blocks mean fewer launches: a 32K sliding layer checks in 64 blocks).
_CHECK_ELEMENTS = 1 << 22
_CHECK_ELEMENTS_CUDA = 1 << 24


@dataclass(frozen=True, eq=False)
class CompactCausalMask:
    """Causal (+ sliding window) attention with left padding, without the N x N mask.

    key_start [B] int64: first real key of each row (S = no real key); window: W or None.
    ``dense()`` builds SDPA's boolean mask [B, 1, T, S] (for modules that fall through to SDPA).
    """

    key_start: Tensor
    window: Optional[int]
    q_length: int
    kv_length: int
    build_dense: Callable[[], Optional[Tensor]]

    def dense(self) -> Optional[Tensor]:
        return self.build_dense()


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
                        device) -> Optional[Tensor]:
    """[B] first real key from transformers' 2-D padding mask, or None when it is not left padding."""
    if attention_mask is None:
        return torch.zeros(B, dtype=torch.long, device=device)
    pad = attention_mask.to(device).bool()                                 # [B, >= kv_offset + S] (keys past it: 0)
    if pad.shape[-1] < kv_offset + kv_length:
        pad = torch.nn.functional.pad(pad, (0, kv_offset + kv_length - pad.shape[-1]))
    pad = pad[:, kv_offset: kv_offset + kv_length]                         # [B, S]
    j = torch.arange(kv_length, device=device)
    key_start = torch.where(pad.any(-1), pad.long().argmax(-1), torch.full((B,), kv_length, device=device))
    if not torch.equal(pad, j[None, :] >= key_start[:, None]):
        return None
    return key_start.long()


def compact_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                 mask_function=None, attention_mask: Optional[Tensor] = None, local_size: Optional[int] = None,
                 allow_is_causal_skip: bool = True, allow_is_bidirectional_skip: bool = False,
                 use_vmap: bool = False, device="cpu", **kwargs):
    """``AttentionMaskInterface`` function: a ``CompactCausalMask`` when the pattern is causal
    (+ window ``local_size``) with left padding, else SDPA's mask (same arguments as ``sdpa_mask``)."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    mask_function = mask_function or causal_mask_function
    args = dict(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                local_size=local_size, allow_is_causal_skip=allow_is_causal_skip,
                allow_is_bidirectional_skip=allow_is_bidirectional_skip, use_vmap=use_vmap, device=device, **kwargs)
    dense = lambda: sdpa_mask(**args)  # noqa: E731
    if use_vmap or not isinstance(q_offset, int) or not isinstance(kv_offset, int):
        return dense()
    key_start = _left_padding_start(attention_mask, batch_size, kv_length, kv_offset, device)
    if key_start is None:
        return dense()
    window = int(local_size) if local_size is not None else None
    b = torch.arange(batch_size, device=device)[:, None, None, None]       # [B, 1, 1, 1]
    h = torch.zeros(1, dtype=torch.long, device=device)[None, :, None, None]
    kv = (torch.arange(kv_length, device=device) + kv_offset)[None, None, None, :]

    def rows(t0: int, t1: int) -> Tensor:                                  # [B, n, S] the asked pattern
        qi = (torch.arange(t0, t1, device=device) + q_offset)[None, None, :, None]
        m = torch.as_tensor(mask_function(b, h, qi, kv), device=device)
        return m.expand(batch_size, 1, t1 - t0, kv_length)[:, 0] & (kv[0, 0] - kv_offset >= key_start[:, None, None])

    known = mask_function is causal_mask_function and window is None and q_offset - kv_offset == kv_length - q_length
    if not known and not rows_match(rows, key_start, q_length, kv_length, window):   # plain causal needs no check
        return dense()
    return CompactCausalMask(key_start, window, q_length, kv_length, dense)
