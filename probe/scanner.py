"""``probe.scan``: run detectors over a prompt set and write one head report."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import pandas as pd

from .detect import get_detector, head_frame
from .errors import ProbeError
from .report import Report, check_out_dir, to_html, write_report

if TYPE_CHECKING:
    from .sharding import Shard

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


def _per_detector(value, detect: Sequence[str]) -> dict:
    return dict(value) if isinstance(value, dict) else {d: value for d in detect}


def _describe_inputs(prompts: Sequence[str], source: str, chat_template: bool) -> dict:
    return {"count": len(prompts), "sha256": prompts_sha256(prompts), "source": source, "chat_template": chat_template}


def scan(handle, prompts, *, detect: Sequence[str] = ("sinks",), out: Optional[str | Path] = None,
         overwrite: bool = False, chat_template: bool = False, prompt_source="given",
         options: Optional[dict] = None, progress: bool = False, resume: bool = True,
         shard: Optional["Shard"] = None) -> Optional[Report]:
    """Run each detector on its prompts and build (and, with ``out``, write) the report.

    Args:
        handle: a loaded model (``probe.load``).
        prompts: raw text prompts for every detector, or {detector: prompts} (detectors that build
            their own inputs, such as retrieval and arithmetic, may get []). The chat template is
            applied when ``chat_template``.
        detect: detector names (see ``probe.detect.SPECS``).
        out: report directory; refused if it exists unless ``overwrite``.
        prompt_source: where the prompts came from (a string, or {detector: string}).
        options: {detector: {option: value}} passed to each detector.
        resume: with ``out``: keep each finished capture batch and detector next to ``out`` and
            reuse what a killed run of the same plan left (``probe.checkpoint``).
        shard: the sharded strategy (``probe.sharding.Shard(rank, world)``): this process captures its
            share of the batches into ``<out>.shards/``; rank 0 merges all shards into the report.
    Returns:
        Report with tables {"heads", ...} and the manifest (None on a shard of rank > 0).
    """
    if shard is not None:
        return _scan_sharded(handle, prompts, shard, detect=detect, out=out, overwrite=overwrite,
                             chat_template=chat_template, prompt_source=prompt_source, options=options)
    from .checkpoint import open_checkpoint
    from .detect.registry import OWN, spec

    detect = list(detect)
    inputs = {d: list(p) for d, p in _per_detector(prompts, detect).items()}
    sources = _per_detector(prompt_source, detect)
    for name in detect:                                      # unknown names fail before any work
        spec(name)
        if not inputs.get(name) and spec(name).inputs != OWN:
            raise ProbeError(f"no prompts to scan for detector '{name}'", "give --prompts FILE with at least one prompt")
    if out is not None:
        check_out_dir(Path(out), overwrite)  # fail before the slow part
    runners = {name: get_detector(name) for name in detect}
    for name in detect:
        if spec(name).inputs != OWN:
            for p in inputs[name]:
                handle.encode(p, chat_template=chat_template)  # empty / too long prompts fail before any work
    options = options or {}
    for name in detect:
        spec(name).check_options(options.get(name, {}))
    ckpt = open_checkpoint(None if out is None else Path(out), handle, inputs, detect, options, chat_template,
                           resume and _native_capture(handle))
    t0 = time.perf_counter()
    heads = head_frame(handle.n_layers, handle.n_heads, handle.n_kv_heads)
    tables: dict[str, pd.DataFrame] = {}
    settings, summary, timings = {}, {}, {"load_s": round(handle.load_seconds, 2)}
    resumed = {"detectors": [], "batches": 0}
    for name, run in runners.items():
        t = time.perf_counter()
        result = ckpt.load_detector(name) if ckpt is not None else None
        if result is not None:
            resumed["detectors"].append(name)
        else:
            bar = _progress_bar(len(inputs[name]), name) if progress and inputs[name] else None
            with _batch_checkpoints(ckpt, name, resumed):
                result = run(handle, inputs[name], chat_template=chat_template,
                             progress=bar.update if bar else None, **dict(options.get(name, {})))
            if bar:
                bar.close()
            if ckpt is not None:
                ckpt.save_detector(name, result)
        timings[f"{name}_s"] = round(time.perf_counter() - t, 2)
        new_cols = [c for c in result.heads.columns if c not in ("layer", "head", "kv_head")]
        heads = heads.merge(result.heads[["layer", "head", *new_cols]], on=["layer", "head"], how="left")
        tables.update(result.tables)
        settings[name], summary[name] = result.settings, result.summary
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    first = next((d for d in detect if spec(d).inputs != OWN), detect[0])
    manifest = {
        "model": handle.describe(),
        "prompts": _describe_inputs(inputs[first], str(sources.get(first, "given")), chat_template),
        "inputs": {d: _describe_inputs(inputs[d], str(sources.get(d, "given")), chat_template) for d in detect},
        "detectors": detect,
        "settings": settings,
        "summary": summary,
        "versions": package_versions(),
        "timings": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if resumed["detectors"] or resumed["batches"]:
        manifest["resumed"] = resumed
    report = Report({"heads": heads, **tables}, manifest)
    report.html = to_html(report)
    if out is not None:
        report.path = write_report(report, out, overwrite=overwrite)
        if ckpt is not None:
            ckpt.done()
    return report


def _native_capture(handle) -> bool:
    """Batch checkpoints replay native captures; hook backends and shard sessions manage their own."""
    from .capture.replay import active

    return active() is None and not (getattr(handle, "extra", None) or {}).get("backend")


def _scan_sharded(handle, prompts, shard, *, detect, out, overwrite, chat_template, prompt_source, options):
    """``scan`` with the ``Shard`` strategy (``probe.sharding``): record this rank's batches, then merge on rank 0."""
    from .capture.replay import ReplaySession, session
    from .sharding import ShardFiles, plan_id

    if out is None:
        raise ProbeError("a sharded scan needs an output folder", "give out=DIR (--out DIR)")
    detect = list(detect)
    inputs = {d: list(p) for d, p in _per_detector(prompts, detect).items()}
    options = options or {}
    files = ShardFiles(out, plan_id(handle, inputs, detect, options, chat_template, shard.world), shard)
    shard.computed = 0
    if not files.done():
        sess = ReplaySession("record", shard.rank, shard.world, store=files.load_partial(), on_compute=files.keep)
        with session(sess):
            scan(handle, inputs, detect=detect, out=None, chat_template=chat_template, options=_copy(options),
                 resume=False)
        files.finish(sess.store)
        shard.computed = sess.computed
    shard.wait()
    if shard.rank != 0:
        return None
    with session(ReplaySession("replay", 0, shard.world, files.merged())):
        return scan(handle, inputs, detect=detect, out=out, overwrite=overwrite, chat_template=chat_template,
                    prompt_source=prompt_source, options=_copy(options), resume=False)


def _copy(options: dict) -> dict:
    return {k: dict(v) for k, v in options.items()}


class _batch_checkpoints:
    """Inside: each capture batch of a resumable detector is saved when computed, answered from disk
    when a killed run already computed it. Detectors whose forwards do not go through
    ``rec.run`` (their own hooks, generation) rerun whole; they are saved when they finish."""

    RESUMABLE = ("sinks",)

    def __init__(self, ckpt, name: str, resumed: dict):
        self.ckpt, self.name, self.resumed, self.ctx = ckpt, name, resumed, None

    def __enter__(self):
        if self.ckpt is None or self.name not in self.RESUMABLE:
            return self
        from .capture.replay import ReplaySession, session

        store = self.ckpt.load_batches()
        self.resumed["batches"] += self.ckpt.reused_batches
        self.ctx = session(ReplaySession("record", 0, 1, store=store, on_compute=self.ckpt.save_batch))
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


def plan_defaults(handle, detect: Sequence[str], options: dict, log=print) -> None:
    """Fill in device-sized defaults for the detectors that build their own inputs and print the plan."""
    from .detect.plans import plan_for

    for name in detect:
        line = plan_for(handle, name, options.setdefault(name, {}))
        if line:
            log(line)


def _progress_bar(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"scan {name}", unit="prompt", file=sys.stderr, disable=False)
