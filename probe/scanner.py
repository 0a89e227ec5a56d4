"""``probe.scan``: run detectors over a prompt set and write one head report."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from .detect import get_detector, head_frame
from .errors import ProbeError
from .report import Report, check_out_dir, to_html, write_report

VERSIONED = ("probe-workbench", "torch", "transformers", "triton", "pandas", "pyarrow", "plotly", "gguf",
             "transformer-lens", "nnsight", "datasets")


def package_versions() -> dict:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def prompts_sha256(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()


def scan(handle, prompts: Sequence[str], *, detect: Sequence[str] = ("sinks",), out: Optional[str | Path] = None,
         overwrite: bool = False, chat_template: bool = False, prompt_source: str = "given",
         options: Optional[dict] = None, progress: bool = False) -> Report:
    """Run each detector on ``prompts`` and build (and, with ``out``, write) the report.

    Args:
        handle: a loaded model (``probe.load``).
        prompts: raw text prompts (the chat template is applied when ``chat_template``).
        detect: detector names (see ``probe.detect.DETECTORS``).
        out: report directory; refused if it exists unless ``overwrite``.
        options: {detector: {option: value}} passed to each detector.
    Returns:
        Report with tables {"heads", ...} and the manifest.
    """
    if not prompts:
        raise ProbeError("no prompts to scan", "give --prompts FILE with at least one prompt")
    if out is not None:
        check_out_dir(Path(out), overwrite)  # fail before the slow part
    runners = {name: get_detector(name) for name in detect}  # unknown names fail before any work
    for i, p in enumerate(prompts):
        handle.encode(p, chat_template=chat_template)  # empty / too long prompts fail before any work
    options = options or {}
    t0 = time.perf_counter()
    heads = head_frame(handle.n_layers, handle.n_heads, handle.n_kv_heads)
    tables: dict[str, pd.DataFrame] = {}
    settings, summary, timings = {}, {}, {"load_s": round(handle.load_seconds, 2)}
    for name, run in runners.items():
        t = time.perf_counter()
        bar = _progress_bar(len(prompts), name) if progress else None
        result = run(handle, list(prompts), chat_template=chat_template, progress=bar.update if bar else None,
                     **options.get(name, {}))
        if bar:
            bar.close()
        timings[f"{name}_s"] = round(time.perf_counter() - t, 2)
        new_cols = [c for c in result.heads.columns if c not in ("layer", "head", "kv_head")]
        heads = heads.merge(result.heads[["layer", "head", *new_cols]], on=["layer", "head"], how="left")
        tables.update(result.tables)
        settings[name], summary[name] = result.settings, result.summary
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    manifest = {
        "model": handle.describe(),
        "prompts": {"count": len(prompts), "sha256": prompts_sha256(prompts), "source": prompt_source,
                    "chat_template": chat_template},
        "detectors": list(detect),
        "settings": settings,
        "summary": summary,
        "versions": package_versions(),
        "timings": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report = Report({"heads": heads, **tables}, manifest)
    report.html = to_html(report)
    if out is not None:
        report.path = write_report(report, out, overwrite=overwrite)
    return report


def _progress_bar(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"scan {name}", unit="prompt", file=sys.stderr)
