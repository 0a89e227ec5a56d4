"""Fused attention with per-head statistics and edits.

``attention`` dispatches to the Triton kernel on CUDA (when it supports the request) and to the
PyTorch reference everywhere else; both share one signature (see ``api``).
"""
from __future__ import annotations

import os

from .api import NO_STATS, AttentionEdits, AttentionResult, StatsRequest
from .reference import attention as reference_attention


def _kernel_module():
    """The Triton implementation, or None when Triton or a GPU is unavailable."""
    if os.environ.get("PROBE_DISABLE_TRITON") == "1":
        return None
    try:
        from . import triton as tri
    except Exception:  # triton missing or broken: the reference is always correct
        return None
    return tri


def attention(q, k, v, **kw) -> AttentionResult:
    """Dispatch: Triton on CUDA when the request is supported, else the PyTorch reference."""
    if q.is_cuda:
        tri = _kernel_module()
        if tri is not None and tri.supports(q, k, v, **kw):
            return tri.attention(q, k, v, **kw)
    return reference_attention(q, k, v, **kw)


__all__ = ["attention", "reference_attention", "StatsRequest", "AttentionEdits", "AttentionResult", "NO_STATS"]
