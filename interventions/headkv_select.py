"""Which KV heads keep the whole cache: plans [L, KV] bool from a head table, a list, or at random.

Under grouped-query attention a cache entry belongs to a KV head, shared by G = H / KV query
heads; a head table scores query heads. ``pool_kv`` turns query-head scores [L, H] into KV-head
scores [L, KV]: "max" (default: a KV head is kept whole if any of its query heads retrieves -- the
keys a retrieval head needs are the group's keys) or "mean". An explicit list of query heads
keeps their KV heads whole.

Budgets count KV heads: ``full=0.25`` (a number with a decimal point) is a fraction of all L * KV
KV heads, rounded to the nearest count; ``full=11`` (an integer) is a count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probe.errors import ProbeError

SELECTIONS = ("top", "bottom", "random", "random-layers")


def budget_count(full: Union[int, float, str], total: int) -> int:
    """KV heads to keep whole: a float in [0, 1] (or a string with '.') is a fraction, an int a count."""
    text = str(full).strip()
    try:
        value = float(text)
    except ValueError as err:
        raise ProbeError(f"HeadwiseKV budget full={full!r} is not a number", "give a fraction (0.25) or a count (11)") from err
    if "." in text or isinstance(full, float):
        if not 0.0 <= value <= 1.0:
            raise ProbeError(f"HeadwiseKV fraction full={full} outside [0, 1]", "give e.g. full=0.25")
        return int(round(value * total))
    count = int(value)
    if not 0 <= count <= total:
        raise ProbeError(f"HeadwiseKV count full={full} outside 0..{total}", f"give at most {total} KV heads")
    return count


def read_head_table(source: Union[str, Path, pd.DataFrame]) -> pd.DataFrame:
    """A per-head table with ``layer`` and ``head`` columns: a DataFrame, a probe report folder
    (its heads.parquet), or a .csv / .parquet / .tsv file."""
    if isinstance(source, pd.DataFrame):
        table = source
    else:
        path = Path(source)
        if path.is_dir():
            from probe.report.io import read_report

            table = read_report(path).heads
        elif not path.exists():
            raise ProbeError(f"no head report at {path}", "give a probe report folder or a heads .csv / .parquet file")
        elif path.suffix == ".parquet":
            table = pd.read_parquet(path)
        elif path.suffix in (".csv", ".tsv"):
            table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        else:
            raise ProbeError(f"cannot read a head table from {path.name}", "give a report folder, .csv, .tsv or .parquet")
    missing = {"layer", "head"} - set(table.columns)
    if missing:
        raise ProbeError(f"head table lacks column(s) {sorted(missing)}", "use a probe report's heads table")
    return table


def head_scores(table: pd.DataFrame, column: str, n_layers: int, n_heads: int) -> Tensor:
    """[L, H] float64 scores from ``table[column]`` (heads missing from the table: NaN)."""
    if column not in table.columns:
        numeric = [c for c in table.columns if c not in ("layer", "head", "kv_head") and
                   pd.api.types.is_numeric_dtype(table[c])]
        raise ProbeError(f"head table has no column {column!r}", "pick one of: " + ", ".join(numeric))
    scores = torch.full((n_layers, n_heads), float("nan"), dtype=torch.float64)
    for layer, head, value in zip(table["layer"], table["head"], table[column]):
        if 0 <= int(layer) < n_layers and 0 <= int(head) < n_heads:
            scores[int(layer), int(head)] = float(value)
    if torch.isnan(scores).all():
        raise ProbeError(f"column {column!r} has no value for this model's heads", "use a report of the same model")
    return scores


def pool_kv(scores: Tensor, n_kv: int, how: str = "max") -> Tensor:
    """Query-head scores [L, H] -> KV-head scores [L, KV] (query head h belongs to KV head h // (H / KV))."""
    L, H = scores.shape
    grouped = scores.reshape(L, n_kv, H // n_kv)                       # [L, KV, G]
    if how == "max":
        return torch.nan_to_num(grouped, nan=float("-inf")).amax(-1)
    if how == "mean":
        return grouped.nanmean(-1)
    raise ProbeError(f"unknown pooling {how!r}", "use pool=max or pool=mean")


def top_plan(kv_scores: Tensor, count: int, lowest: bool = False) -> Tensor:
    """[L, KV] bool: the ``count`` KV heads with the highest (``lowest``: lowest) score; ties by index."""
    flat = kv_scores.reshape(-1).to(torch.float64)
    flat = torch.nan_to_num(flat, nan=float("inf") if lowest else float("-inf"))
    order = sorted(range(flat.numel()), key=lambda i: (float(flat[i]) if lowest else -float(flat[i]), i))
    plan = torch.zeros(flat.numel(), dtype=torch.bool)
    plan[order[:count]] = True
    return plan.reshape(kv_scores.shape)


def random_plan(n_layers: int, n_kv: int, count: int, seed: int, like: Optional[Tensor] = None) -> Tensor:
    """[L, KV] bool: ``count`` KV heads drawn uniformly (seeded); with ``like`` [L, KV] the same number
    per layer as ``like`` (a layer-matched control)."""
    rng = np.random.default_rng(seed)
    plan = torch.zeros(n_layers, n_kv, dtype=torch.bool)
    if like is not None:
        for layer, k in enumerate(like.sum(-1).tolist()):
            plan[layer, torch.as_tensor(rng.choice(n_kv, size=int(k), replace=False))] = True
        return plan
    flat = plan.reshape(-1)
    flat[torch.as_tensor(rng.choice(n_layers * n_kv, size=count, replace=False))] = True
    return flat.reshape(n_layers, n_kv)


def heads_plan(heads: Sequence[tuple[int, int]], n_layers: int, n_heads: int, n_kv: int) -> Tensor:
    """[L, KV] bool: the KV heads of the given (layer, query head) pairs."""
    plan = torch.zeros(n_layers, n_kv, dtype=torch.bool)
    for layer, head in heads:
        plan[layer, head // (n_heads // n_kv)] = True
    return plan


def plan_heads(plan: Tensor) -> list[str]:
    """["L18K2", ...]: the full KV heads of a plan."""
    return [f"L{l}K{g}" for l, g in torch.nonzero(plan).tolist()]
