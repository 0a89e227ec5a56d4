"""What every detector returns, and the registry ``probe scan --detect NAME`` looks names up in.

A detector is a function ``run(handle, prompts, **options) -> DetectorOutput``. It never patches
the model: it reads statistics captured through ``probe.capture`` (or runs interventions
through ``probe.intervene``). Its head frame has one row per (layer, head); the scan merges
all detectors' head frames on those keys into ``heads.parquet``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ..errors import ProbeError
from .registry import DETECTORS, SPECS, spec  # noqa: F401  (re-exported)


@dataclass
class DetectorOutput:
    """heads: columns layer, head + scores; tables: extra parquet files (name -> frame);
    settings: the detector's parameters (into the manifest); summary: headline numbers."""

    heads: pd.DataFrame
    tables: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def get_detector(name: str) -> Callable[..., DetectorOutput]:
    """The run function of detector ``name``; ProbeError for unknown or unavailable ones."""
    module, func = spec(name).target.split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as err:
        if err.name == module:
            raise ProbeError(f"detector '{name}' is not available in this build", "choose another --detect") from err
        raise


def head_frame(n_layers: int, n_heads: int, n_kv_heads: int) -> pd.DataFrame:
    """The (layer, head, kv_head) skeleton every head table starts from."""
    group = n_heads // n_kv_heads
    rows = [(l, h, h // group) for l in range(n_layers) for h in range(n_heads)]
    return pd.DataFrame(rows, columns=["layer", "head", "kv_head"])
