"""Sharded scan over processes (torchrun): each rank captures its share of the batches, rank 0 merges.

How it stays exactly equal to an unsharded scan: detectors batch prompts themselves and read only
captured statistics. A shard session sits between a detector and ``probe.capture``:

  record (every rank): the detector runs over ALL prompts; batch k's forward is really run (on the
      chosen backend) only when k % world == rank, and its per-call statistics (``CallRecord``:
      small per-head tensors, never maps unless asked) are kept under a hash of the batch's token
      ids; other batches get shape-correct zero statistics and the detector's output is thrown
      away. Each rank writes one shard file ``<out>.shards/<plan>/rank{r}-of{w}.pt`` atomically.
  replay (rank 0, after a barrier): the detector runs again over all prompts; every forward is
      answered from the shards. Same batches, same numbers, same code path -> the report (same
      format: heads.parquet, tokens.parquet, massive.parquet, manifest.json) equals the unsharded one.

Resumable: a rank whose shard file for this plan (model, prompts, detectors, options, world size)
exists skips its forwards; a merge with a missing shard fails with one ProbeError naming it.

Run:  torchrun --nproc_per_node 2 -m probe.backends.shard --model smollm2 --out reports/x
      (= probe scan --shard-by-rank ...; all of probe scan's options apply).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..capture.recorder import CallRecord, HiddenSummary, LayerStats, Recorder
from ..errors import ProbeError

_SESSION: contextvars.ContextVar = contextvars.ContextVar("probe_shard_session", default=None)


class ShardSession:
    """mode "record" (compute batches k with k % world == rank) or "replay" (answer from ``store``)."""

    def __init__(self, mode: str, rank: int = 0, world: int = 1, store: Optional[dict] = None, on_compute=None):
        self.mode, self.rank, self.world = mode, rank, world
        self.store: dict = store if store is not None else {}
        self.on_compute = on_compute      # called (key, CallRecord) after each batch computed here (checkpoints)
        self.batch = 0
        self.computed = 0


def active() -> Optional[ShardSession]:
    return _SESSION.get()


@contextlib.contextmanager
def session(sess: ShardSession):
    token = _SESSION.set(sess)
    try:
        yield sess
    finally:
        _SESSION.reset(token)


def batch_key(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> str:
    h = hashlib.sha256(input_ids.detach().cpu().long().numpy().tobytes())
    if attention_mask is not None:
        h.update(attention_mask.detach().cpu().long().numpy().tobytes())
    h.update(str(tuple(input_ids.shape)).encode())
    return h.hexdigest()


class ShardRecorder(Recorder):
    """What a detector gets inside a shard session: ``run`` records, fakes or replays one call."""

    def __init__(self, sess: ShardSession, handle, inner_backend: str, capture_kwargs: dict, request, layers, hidden,
                 spans, sink_pos):
        super().__init__(request, layers, hidden, spans, sink_pos)
        self.sess, self.handle, self.inner_backend, self.capture_kwargs = sess, handle, inner_backend, capture_kwargs
        self.backend = inner_backend

    def run(self, input_ids, attention_mask=None, **kwargs):
        from ..capture import capture

        key = batch_key(input_ids, attention_mask)
        k = self.sess.batch
        self.sess.batch += 1
        if self.sess.mode == "replay":
            if key not in self.sess.store:
                raise ProbeError(f"batch {k} is in no shard file", "rerun every rank of the sharded scan (same prompts and options)")
            call = self.sess.store[key]
        elif key in self.sess.store or k % self.sess.world == self.sess.rank:
            if key not in self.sess.store:
                kw = dict(self.capture_kwargs, spans=self._spans, sink_pos=self._sink_pos)
                with session(None), capture(self.handle, backend=self.inner_backend, **kw) as rec:
                    rec.run(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                self.sess.store[key] = rec.calls[-1]
                self.sess.computed += 1
                if self.sess.on_compute is not None:
                    self.sess.on_compute(key, rec.calls[-1])
            call = self.sess.store[key]
        else:
            call = _zero_call(self.handle, self.request, self.layers_wanted, self.hidden_mode, attention_mask,
                              input_ids.shape, self._sink_pos, self._spans)
        self.calls.append(CallRecord(len(self.calls), dict(call.layers), dict(call.hidden)))
        return None


def _zero_call(handle, request, layers_wanted, hidden_mode, attention_mask, shape, sink_pos, spans) -> CallRecord:
    """Shape-correct zero statistics for a batch another rank computes (record mode only; discarded)."""
    from .reduce import key_start_from_mask

    B, S = shape
    T, H, D = S, handle.n_heads, handle.hidden_size
    key_start = key_start_from_mask(attention_mask, B, S)
    z = lambda *s: torch.zeros(*s)  # noqa: E731
    call = CallRecord(0)
    for layer in range(handle.n_layers):
        if layers_wanted is not None and layer not in layers_wanted:
            continue
        P = 1 if sink_pos is None else sink_pos.shape[1]
        call.layers[layer] = LayerStats(
            layer, T, S, key_start, z(B, H, T) if request.lse else None, z(B, H, T) if request.entropy else None,
            z(B, H, T, P) if request.sink_mass else None,
            z(B, H, T, spans.shape[1]) if request.span_mass and spans is not None else None,
            z(B, H, S) if request.received else None, z(B, S) if request.received else None,
            torch.zeros(B, H, request.topk_rows, request.topk, dtype=torch.long) if request.topk else None,
            z(B, H, request.topk_rows, request.topk) if request.topk else None,
            z(B, H, T, S) if request.full else None)
        if hidden_mode:
            long = lambda *s: torch.zeros(*s, dtype=torch.long)  # noqa: E731
            call.hidden[layer] = HiddenSummary(layer, z(B, D), long(B, D), z(B, D), z(B), z(B, T), long(B, T), z(B, T),
                                               z(B, T, D) if hidden_mode == "full" else None)
    return call


# -- the scan ---------------------------------------------------------------------------------
def plan_id(handle, prompts: Sequence[str], detect: Sequence[str], options: dict, chat_template: bool, world: int) -> str:
    """Hash of what a shard depends on. Not the device: each rank holds the model on its own GPU."""
    model = {k: v for k, v in handle.describe().items() if k != "device"}
    blob = json.dumps({"model": model, "prompts": list(prompts), "detect": list(detect),
                       "options": options, "chat": chat_template, "world": world}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and dist.is_available():
        if not dist.is_initialized():
            dist.init_process_group("gloo")  # CPU barrier only: no tensors travel, shards go through files
        dist.barrier()


def sharded_scan(handle, prompts: Sequence[str], *, out, detect: Sequence[str] = ("sinks",), options: Optional[dict] = None,
                 chat_template: bool = False, overwrite: bool = False, rank: Optional[int] = None,
                 world: Optional[int] = None, prompt_source: str = "given", barrier: bool = True):
    """Run this rank's shard; on rank 0 merge all shards into the report at ``out``.

    Returns (report or None on ranks > 0, number of forwards this rank computed now).
    """
    from ..scanner import scan

    env_rank, env_world = rank_world()
    rank = env_rank if rank is None else rank
    world = env_world if world is None else world
    options = options or {}
    pid = plan_id(handle, prompts, detect, options, chat_template, world)
    folder = Path(f"{out}.shards") / pid
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f"rank{rank}-of{world}.pt"
    computed = 0
    if not mine.exists():
        partial = folder / f"rank{rank}-of{world}.partial"     # per-batch progress: a killed rank resumes here
        partial.mkdir(exist_ok=True)
        store = {}
        for f in partial.glob("*.pt"):
            try:
                store[f.stem] = _from_dict(torch.load(f, weights_only=True, map_location="cpu"))
            except Exception:
                f.unlink(missing_ok=True)

        def keep(key, call):
            tmp = partial / f".{key}.tmp{os.getpid()}"
            torch.save(_to_dict(call), tmp)
            os.replace(tmp, partial / f"{key}.pt")

        sess = ShardSession("record", rank, world, store=store, on_compute=keep)
        with session(sess):
            scan(handle, prompts, detect=detect, out=None, chat_template=chat_template, options=_copy(options),
                 resume=False)
        tmp = mine.with_suffix(f".tmp{os.getpid()}")
        torch.save({k: _to_dict(c) for k, c in sess.store.items() if _owned(sess, k)}, tmp)
        os.replace(tmp, mine)
        shutil.rmtree(partial, ignore_errors=True)
        computed = sess.computed
    if barrier:
        _barrier(world)
    if rank != 0:
        return None, computed
    store = {}
    for r in range(world):
        path = folder / f"rank{r}-of{world}.pt"
        if not path.exists():
            raise ProbeError(f"shard {path} is missing", "run every rank (torchrun --nproc_per_node WORLD ...)")
        store.update({k: _from_dict(v) for k, v in torch.load(path, weights_only=False, map_location="cpu").items()})
    with session(ShardSession("replay", 0, world, store)):
        report = scan(handle, prompts, detect=detect, out=out, overwrite=overwrite, chat_template=chat_template,
                      prompt_source=prompt_source, options=_copy(options), resume=False)
    return report, computed


def _owned(sess: ShardSession, key: str) -> bool:
    return True  # the store holds only batches this rank computed


def _copy(options: dict) -> dict:
    return {k: dict(v) for k, v in options.items()}


def _to_dict(call: CallRecord) -> dict:
    return {"layers": {l: vars(s) for l, s in call.layers.items()}, "hidden": {l: vars(s) for l, s in call.hidden.items()}}


def _from_dict(d: dict) -> CallRecord:
    return CallRecord(0, {l: LayerStats(**s) for l, s in d["layers"].items()},
                      {l: HiddenSummary(**s) for l, s in d["hidden"].items()})


def cli_scan(*, model: str, detect, out: Path, inputs_for, chat_template: bool, options: dict, overwrite: bool,
             device: str) -> None:
    """``probe scan --shard-by-rank``: load on this rank's device, scan the shard, merge on rank 0.

    ``inputs_for(handle)`` -> ({detector: prompts}, {detector: source}) (the CLI's defaults)."""
    import typer

    from ..models import load
    from ..report import summary_text

    rank, world = rank_world()
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    handle = load(model, device=device)
    texts, source = inputs_for(handle)
    report, computed = sharded_scan(handle, texts, out=out, detect=detect, options=options, chat_template=chat_template,
                                    overwrite=overwrite, prompt_source=source)
    typer.echo(f"rank {rank}/{world}: {computed} batch forwards run now", err=True)
    if report is not None:
        typer.echo(summary_text(report))
        typer.echo(f"wrote {report.path}/ (merged {world} shards)")


def main(argv: Optional[list] = None) -> None:
    """``python -m probe.backends.shard ARGS`` == ``probe scan --shard-by-rank ARGS``."""
    from ..cli import main as cli_main

    cli_main(["scan", "--shard-by-rank", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
