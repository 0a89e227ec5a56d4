"""Checks on a report's output folder, done before any model loads (no pandas needed)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ProbeError
from .schema import MANIFEST


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a plain file, an existing report without ``overwrite``, and non-report folders."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ProbeError(f"--out {out} is a file, not a folder", "choose a folder path for the report")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ProbeError(f"--out {out}: {parent} is a file", "choose a folder path for the report")
            break
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ProbeError(f"{out} already holds files", "pass --overwrite or choose another --out")
        if not (out / MANIFEST).exists():
            raise ProbeError(f"{out} is not a probe report (no {MANIFEST}); refusing to overwrite it", "choose another --out")
