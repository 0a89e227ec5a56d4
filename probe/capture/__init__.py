"""Attention capture: the seam registered with transformers plus the context manager that owns it."""
import sys as _sys
import types as _types

from .recorder import CallRecord, HiddenSummary, LayerStats, Recorder, capture, stats_request
from .seam import ATTN_NAME, AttentionCall, attach, detach, merge_edits, use_seam

__all__ = ["capture", "Recorder", "LayerStats", "HiddenSummary", "CallRecord", "stats_request", "AttentionCall",
           "attach", "detach", "use_seam", "merge_edits", "ATTN_NAME"]


class _CallableModule(_types.ModuleType):
    """``probe.capture(...)`` calls the function even where ``probe.capture`` resolves to this package
    (``import probe`` is lazy, so importing any ``probe.capture.*`` module binds the package there)."""

    def __call__(self, *args, **kwargs):
        return capture(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
