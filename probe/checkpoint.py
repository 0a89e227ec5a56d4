"""Resumable scans: what a killed ``probe scan`` had finished is on disk, and the next run reuses it.

Layout, next to the report folder ``out`` (hidden, removed when the report is written)::

    .<out>.partial/<plan>/batches/<sha256>.pt     one captured forward (CallRecord tensors), per batch
    .<out>.partial/<plan>/detectors/<name>/       a finished detector's tables (parquet) + result.json

``plan`` hashes what the results depend on (model, dtype, device, prompts, detectors, options,
chat template), so a changed setting never reuses stale work; folders of other plans are removed.
Every file is written to a temporary name and renamed, so a SIGKILL leaves whole files or none.
Capture batches are replayed through a ``probe.capture.replay`` session with one rank:
the detector runs unchanged, and batches already on disk are answered without a forward.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional


def plan_id(handle, prompts, detect, options, chat_template: bool) -> str:
    """Hash of everything a scan's numbers depend on."""
    blob = json.dumps({"model": handle.describe(), "dtype": str(handle.dtype), "prompts": prompts,
                       "detect": list(detect), "options": options, "chat": chat_template}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def partial_root(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


class Checkpoint:
    """The on-disk progress of one scan plan."""

    def __init__(self, out: Path, plan: str):
        self.root = partial_root(out)
        self.folder = self.root / plan
        if self.root.exists():                      # other plans' leftovers are stale
            for old in self.root.iterdir():
                if old.name != plan:
                    shutil.rmtree(old, ignore_errors=True)
        (self.folder / "batches").mkdir(parents=True, exist_ok=True)
        (self.folder / "detectors").mkdir(parents=True, exist_ok=True)
        self.reused_batches = 0

    # -- capture batches --------------------------------------------------------------------
    def load_batches(self) -> dict:
        """{batch key: CallRecord} of every batch already on disk (unreadable files are dropped)."""
        import torch

        from .capture.replay import call_from_dict

        store = {}
        for f in (self.folder / "batches").glob("*.pt"):
            try:
                store[f.stem] = call_from_dict(torch.load(f, weights_only=True, map_location="cpu"))
            except Exception:
                f.unlink(missing_ok=True)
        self.reused_batches = len(store)
        return store

    def save_batch(self, key: str, call) -> None:
        import torch

        from .capture.replay import call_to_dict

        _atomic_write(self.folder / "batches" / f"{key}.pt", lambda p: torch.save(call_to_dict(call), p))

    # -- finished detectors -------------------------------------------------------------------
    def load_detector(self, name: str):
        """The saved DetectorOutput of ``name``, or None."""
        import pandas as pd

        from .detect.base import DetectorOutput

        folder = self.folder / "detectors" / name
        meta = folder / "result.json"
        if not meta.exists():
            return None
        info = json.loads(meta.read_text())
        tables = {t: pd.read_parquet(folder / f"{t}.parquet") for t in info["tables"]}
        heads = tables.pop("__heads__")
        return DetectorOutput(heads, tables, info["settings"], info["summary"])

    def save_detector(self, name: str, result) -> None:
        folder = self.folder / "detectors" / name
        tmp = folder.with_name(f".{name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tables = {"__heads__": result.heads, **result.tables}
        for t, df in tables.items():
            df.to_parquet(tmp / f"{t}.parquet", index=False)
        (tmp / "result.json").write_text(json.dumps({"tables": list(tables), "settings": result.settings,
                                                     "summary": result.summary}, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def done(self) -> None:
        """The report is written: the partial work is no longer needed."""
        shutil.rmtree(self.root, ignore_errors=True)


def open_checkpoint(out: Optional[Path], handle, prompts, detect, options, chat_template: bool, resume: bool):
    """A Checkpoint for a scan into ``out``; None without ``out`` or with ``resume=False`` (which also
    drops what an earlier killed run left)."""
    if out is None:
        return None
    if not resume:
        shutil.rmtree(partial_root(out), ignore_errors=True)
        return None
    return Checkpoint(Path(out), plan_id(handle, prompts, detect, options, chat_template))
