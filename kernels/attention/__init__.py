"""Fused attention with per-head statistics and edits.

``attention`` dispatches to the Triton kernels (``fused``) on CUDA when they support the request
and to the PyTorch reference (``reference``) everywhere else; both share one signature (see
``api``). ``naive`` is the float64 softmax the tests hold both against. When a CUDA call falls back
to the reference, a one-time warning names the reason (per reason).

Layout: api.py (contract), reference.py (PyTorch), naive.py (float64 test oracle), fused.py (host
side of the kernels), prefill_kernel.py / received_kernel.py / decode_kernel.py (Triton), graph_op.py (the
decode step as the custom op probe::decode_attention, for compiled / CUDA-graph decode steps),
jit_utils.py (shared Triton helpers), tiles.py (tile table per variant). Benchmarks live outside
the package, in benchmarks/.
"""
from __future__ import annotations

import os
import warnings
import weakref
from typing import Optional

from .api import NO_STATS, AttentionEdits, AttentionResult, StatsRequest
from .reference import attention as reference_attention

_KERNELS: list = []          # [module or None, reason it is None]
_WARNED: set = set()


def _kernel_module():
    """(the Triton host module, None) or (None, why it is unavailable)."""
    if os.environ.get("PROBE_DISABLE_TRITON") == "1":
        return None, "PROBE_DISABLE_TRITON=1 is set"
    if not _KERNELS:
        try:
            from . import fused
            _KERNELS[:] = [fused, None]
        except Exception as err:  # triton missing or broken: the reference is always correct
            _KERNELS[:] = [None, f"the Triton kernels failed to import ({type(err).__name__}: {err})"]
    return _KERNELS[0], _KERNELS[1]


def _warn_fallback(reason: str) -> None:
    """Warn once per reason that a CUDA call runs the (slower, O(block_q * S) memory) reference."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    warnings.warn(f"probe attention: the Triton kernel is not used ({reason}); running the PyTorch reference",
                  RuntimeWarning, stacklevel=3)


def fallback_reason(q, k, v, **kw) -> Optional[str]:
    """Why ``attention`` would run the reference for this CUDA request (None = the Triton kernel)."""
    tri, why = _kernel_module()
    if tri is None:
        return why
    return tri.unsupported_reason(q, k, v, kw)


def attention(q, k, v, **kw) -> AttentionResult:
    """Dispatch: Triton on CUDA when the request is supported, else the PyTorch reference."""
    if q.is_cuda:
        why = fallback_reason(q, k, v, **kw)
        if why is None:
            return _KERNELS[0].attention_validated(q, k, v, **kw)   # checked once, here
        _warn_fallback(why)
    return reference_attention(q, k, v, **kw)


_DECODE_OK: dict = {}        # decode_attention's accepted requests (see there)
_DECODE_OK_MAX = 256


def decode_attention(q, k, v, *, scale: float, key_start=None, window: Optional[int] = None,
                     softcap: Optional[float] = None, edits: Optional[AttentionEdits] = None) -> AttentionResult:
    """``attention`` for one eager decode step (q [B, H, 1, D], k / v [B, KV, S, D], no statistics) of a request that
    repeats step after step with a growing S (the seam's ACT / VAR decode steps): the dispatcher's check runs once per
    (shapes but S, dtypes, device, window, softcap, edit object and the fields it checks) and is remembered, so later
    steps go straight to the Triton decode lane; same result as ``attention``."""
    if not q.is_cuda or q.shape[2] != 1:
        return attention(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap, edits=edits)
    return decode_lane(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap, edits=edits)


def decode_lane(q, k, v, *, scale: float, key_start=None, window: Optional[int] = None,
                softcap: Optional[float] = None, edits: Optional[AttentionEdits] = None) -> AttentionResult:
    """``decode_attention``'s CUDA branch (q [B, H, 1, D]): the remembered check, then the kernels' decode lane (or
    the reference for a request they refuse). Called directly only by the CPU benchmark of the host path.
    PROBE_DISABLE_TRITON is read by the first check of a request (set it before the generation starts)."""
    ks, vs = k.shape, v.shape
    fields = (None,) if edits is None else (edits.col_idx, edits.redist_idx, edits.head_uniform)
    key = (q.shape, ks[0], ks[1], ks[3], vs[0], vs[1], vs[3], q.dtype, k.dtype, v.dtype, q.device, k.device,
           v.device, window, softcap, id(edits), *[None if t is None else (id(t), t.shape) for t in fields])
    hit = _DECODE_OK.get(key)
    # the key holds the fields' ids and the entry the fields themselves (so no id is reused while it lives): a field
    # replaced by another tensor, or another edit object at a dead one's address, is checked again
    if hit is None or hit[0]() is not edits or vs[2] != ks[2]:
        why = fallback_reason(q, k, v, window=window, edits=edits)
        if why is not None:
            _warn_fallback(why)
            return reference_attention(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap,
                                       edits=edits)
        if len(_DECODE_OK) >= _DECODE_OK_MAX:
            _DECODE_OK.clear()
        _DECODE_OK[key] = ((lambda: None) if edits is None else weakref.ref(edits), fields)
    return _KERNELS[0].decode_validated(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap,
                                        edits=edits)


__all__ = ["attention", "decode_attention", "reference_attention", "fallback_reason", "StatsRequest",
           "AttentionEdits", "AttentionResult", "NO_STATS"]
