"""Detectors: turn captured statistics into tidy per-head (and per-token) tables."""
from .base import DETECTORS, DetectorOutput, get_detector, head_frame

__all__ = ["DetectorOutput", "DETECTORS", "get_detector", "head_frame"]
