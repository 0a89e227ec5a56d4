"""Attention capture: the seam registered with transformers plus the context manager that owns it."""
from .recorder import CallRecord, HiddenSummary, LayerStats, Recorder, capture, stats_request
from .seam import ATTN_NAME, AttentionCall, attach, detach, merge_edits, use_seam

__all__ = ["capture", "Recorder", "LayerStats", "HiddenSummary", "CallRecord", "stats_request", "AttentionCall",
           "attach", "detach", "use_seam", "merge_edits", "ATTN_NAME"]
