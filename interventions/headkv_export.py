"""Export a HeadwiseKV head set to what people deploy with: DuoAttention's pattern folder.

DuoAttention (``duo_attn.utils.load_attn_pattern``) reads a folder with ``full_attention_heads.tsv``
(one row per layer, one tab-separated column per KV head, 1 = full attention, 0 = streaming) and
``config.json`` (``sink_size``, ``recent_size``). We write those two files plus ``heads.tsv``, a
tidy per-(layer, KV head) table: its query heads, full or not, and the pooled score it was chosen by.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probe.errors import ProbeError


def write_duo_tsv(iv, folder: Union[str, Path]) -> Path:
    """Write a resolved HeadwiseKV's plan [L, KV] as a DuoAttention pattern folder; return the folder."""
    if getattr(iv, "plan", None) is None:
        raise ProbeError("HeadwiseKV plan not resolved", "call iv.resolve(handle) (or use it in intervene) first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plan = iv.plan.to(torch.int64)                                        # [L, KV]
    L, KV = plan.shape
    matrix = "\n".join("\t".join(str(int(x)) for x in row) for row in plan.tolist()) + "\n"
    scores = iv.scores if iv.scores is not None else torch.full((L, KV), float("nan"))
    G = (iv.n_heads // KV) if getattr(iv, "n_heads", None) else None
    rows = [{"layer": l, "kv_head": g, "query_heads": "" if G is None else "+".join(f"L{l}H{g * G + i}" for i in range(G)),
             "full": int(plan[l, g]), "score": float(scores[l, g])} for l in range(L) for g in range(KV)]
    files = {"full_attention_heads.tsv": matrix,
             "config.json": json.dumps({"sink_size": iv.sinks, "recent_size": iv.window}),
             "heads.tsv": pd.DataFrame(rows).to_csv(sep="\t", index=False)}
    for name, text in files.items():                                     # atomic: no half-written file
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
    return folder


def read_duo_tsv(folder: Union[str, Path]) -> tuple[Tensor, int, int]:
    """(plan [L, KV] bool, sinks, window) from a DuoAttention pattern folder (values >= 0.5 = full)."""
    folder = Path(folder)
    try:
        matrix = np.loadtxt(folder / "full_attention_heads.tsv", delimiter="\t", ndmin=2)
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ProbeError(f"cannot read a DuoAttention pattern from {folder}", "give a folder with full_attention_heads.tsv and config.json") from err
    return torch.from_numpy(matrix >= 0.5), int(config["sink_size"]), int(config["recent_size"])
