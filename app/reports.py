"""Find and read report directories for the app (read-only: nothing is ever written into them)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from probe.report import read_report
from probe.report.schema import MANIFEST

from probe.models import VLM_ALIASES

# What the assembled VLM is, wherever the app names it.
VLM_LABEL = "assembled VLM (DINOv2 ViT-S/14 vision encoder + SmolLM2-135M + a trained projector)"
# Tables the sinks detector writes; anything else in a report is another detector's table.
SINK_TABLES = ("heads", "tokens", "massive")


def list_reports(root: str | Path, depth: int = 2) -> list[Path]:
    """Report directories (holding a manifest.json) under ``root``, at most ``depth`` levels down, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    frontier = [root]
    for _ in range(depth + 1):
        nxt = []
        for folder in frontier:
            if (folder / MANIFEST).is_file():
                found.append(folder)
                continue
            try:
                nxt.extend(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        frontier = nxt
    return sorted(found)


def report_stamp(path: str | Path) -> float:
    """A cache key part that changes when the report is rewritten (manifest mtime; 0 when absent)."""
    try:
        return (Path(path) / MANIFEST).stat().st_mtime
    except OSError:
        return 0.0


def load(path: str | Path):
    """``probe.report.read_report`` (raises ProbeError for missing, corrupt or old-schema reports)."""
    return read_report(path)


def model_label(manifest: dict) -> str:
    """'smollm2 (30 layers x 9 heads, 3 kv heads)', naming the assembled VLM for what it is."""
    model = manifest.get("model", {})
    source = str(model.get("source"))
    shape = f"{model.get('n_layers')} layers x {model.get('n_heads')} heads, {model.get('n_kv_heads')} kv heads"
    if source in VLM_ALIASES:
        return f"{source} — {VLM_LABEL} ({shape})"
    return f"{source} ({shape})"


def loadable_model(manifest: dict) -> Optional[str]:
    """The model name the report was scanned with, if ``probe.load`` can load it again (else None)."""
    model = manifest.get("model", {})
    if model.get("kind") in ("alias", "dir", "gguf", "hub") and model.get("source"):
        return str(model["source"])
    return None


def head_tokens(report, layer: int, head: int, n: int = 10) -> pd.DataFrame:
    """The tokens that act as hidden sinks for one head: token, rows (prompt x position), mean and max mass."""
    tokens = report.table("tokens")
    cols = ["token", "rows", "mean_mass", "max_mass"]
    if tokens is None or not len(tokens):
        return pd.DataFrame(columns=cols)
    mine = tokens[(tokens["layer"] == layer) & (tokens["head"] == head)]
    if not len(mine):
        return pd.DataFrame(columns=cols)
    agg = mine.groupby("token")["received_mass"].agg(rows="count", mean_mass="mean", max_mass="max")
    agg = agg.sort_values(["rows", "mean_mass"], ascending=False).head(n).reset_index()
    agg["token"] = agg["token"].map(repr)
    return agg[cols]


def head_scores(report, layer: int, head: int) -> pd.DataFrame:
    """Every score of one head with its rank among all heads (1 = highest) and the mean over heads."""
    from probe.report import score_columns
    from probe.report.schema import HEAD_SCORES

    heads = report.heads
    row = heads[(heads["layer"] == layer) & (heads["head"] == head)]
    if not len(row):
        return pd.DataFrame(columns=["score", "value", "rank", "mean over heads", "meaning"])
    out = []
    for col in score_columns(heads):
        value = row[col].iloc[0]
        rank = int((heads[col] > value).sum()) + 1 if pd.notna(value) else None
        out.append({"score": col, "value": float(value), "rank": f"{rank} / {len(heads)}" if rank else "—",
                    "mean over heads": float(heads[col].mean()), "meaning": HEAD_SCORES.get(col, "")})
    return pd.DataFrame(out)


def extra_tables(report) -> dict[str, pd.DataFrame]:
    """Tables other detectors added (retrieval, arithmetic, masking curves, ...), by name."""
    return {name: df for name, df in report.tables.items() if name not in SINK_TABLES and df is not None}


def setting(manifest: dict, detector: str, key: str, default):
    """A detector setting recorded in the manifest (e.g. sinks.hidden_threshold), else ``default``."""
    value = manifest.get("settings", {}).get(detector, {}).get(key, default)
    return value if isinstance(value, (int, float)) else default
