"""Detectors: turn captured statistics into tidy per-head (and per-token) tables.

The registry (``probe.detect.registry``) is plain data; the rest loads on first use so that the
CLI can check names and options without importing torch or pandas.
"""
from .registry import DETECTORS, SPECS, spec

_LAZY = {"DetectorOutput": "base", "get_detector": "base", "head_frame": "base"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DetectorOutput", "DETECTORS", "SPECS", "spec", "get_detector", "head_frame"]
