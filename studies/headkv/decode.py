"""Decode speed and memory of one cache policy: prefill a prompt, then greedy steps (``run.py --parts decode``).

How a policy is timed (from the third H200 call on; the first two timed first-use costs inside their steps, Triton
compiles and SDPA work at cache lengths the warm-up had not met, see the README):
  1. a warm-up: the same prompt, the same number of steps, untimed. Every shape the timed runs meet (prompt
     length, split count of the decode kernel at that cache length, both residues of the length mod 16, the
     policy's KV-head counts per layer; for SDPA's cuDNN backend every cache length, see ``run.py``'s
     "full-nocudnn" row) has then been compiled or planned;
  2. ``repeats`` timed runs, each from its own prefill: the prefill and every step between CUDA events on the
     model's stream (host clock on a CPU), the loop also by the host clock around a synchronize. A step's time is
     what the GPU's stream sees between two steps, host launch gaps included (batch 1 decode is host-bound);
     tok/s = steps / the run's decode seconds; the row keeps the median run and the spread;
  3. on CUDA, synchronising calls per decode step (``torch.cuda.set_sync_debug_mode``, from the second step on) and one profiled step
     (torch.profiler, CPU + CUDA): the GPU kernels' own time, the number of kernel launches, the host time.
KV bytes come from the cache tensors, peak memory from the CUDA allocator (above what was allocated before the
prefill: the weights and the prompt ids).
"""
from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from typing import Callable, Optional

import torch

from interventions import intervene
from interventions.headkv_cache import kv_bytes


class _Clock:
    """Marks on the current CUDA stream (events) or on the host clock; ``seconds()`` between consecutive marks."""

    def __init__(self, cuda: bool):
        self.cuda, self.marks = cuda, []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _context(h, iv):
    return intervene(h, iv) if iv is not None else contextlib.nullcontext()


def _step(model, tok, cache):
    """One greedy step: tok [1, 1] -> the next token [1, 1] (no host read)."""
    return model(input_ids=tok, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)


def decode_once(h, ids, iv, steps: int) -> dict:
    """Prefill ``ids`` [1, N] under ``iv`` (None = the unmodified model), then ``steps`` greedy steps.

    Returns prefill_s, decode_s (CUDA events), decode_wall_s (host clock), step_s [steps], the cache's KV bytes
    after the prefill and at the end, its length, and the allocator's peaks during prefill and decode."""
    model, cuda = h.model, ids.is_cuda
    with torch.inference_mode(), _context(h, iv):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        clock = _Clock(cuda)
        clock.mark()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        clock.mark()
        prefill_s = clock.seconds()[0]
        peak_prefill = (torch.cuda.max_memory_allocated() - base) if cuda else 0
        after_prefill = kv_bytes(cache)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        clock = _Clock(cuda)
        t0 = time.perf_counter()
        clock.mark()
        for _ in range(steps):
            tok = _step(model, tok, cache)
            clock.mark()
        step_s = clock.seconds()                                   # synchronizes on CUDA
        wall = time.perf_counter() - t0
        peak_decode = (torch.cuda.max_memory_allocated() - base) if cuda else 0
        n = cache.get_seq_length()
        return {"prompt_tokens": int(ids.shape[1]), "decode_steps": steps, "prefill_s": prefill_s,
                "decode_s": sum(step_s), "decode_wall_s": wall, "step_s": step_s,
                "kv_bytes_after_prefill": after_prefill, "kv_bytes": kv_bytes(cache), "kv_bytes_per_token": kv_bytes(cache) / n,
                "seq_len": n, "base_bytes": base, "peak_prefill_bytes": peak_prefill, "peak_decode_bytes": peak_decode}


def syncs_per_step(h, ids, iv, steps: int = 4) -> Optional[float]:
    """Synchronising CUDA calls per decode step after a prefill of ``ids`` and one more step (None off CUDA).

    The step after the prefill is left out: a cache's per-sequence set-up (e.g. a streaming head's first rotation
    of its sinks copies RoPE frequencies to the device once per layer) is not a per-step cost."""
    if not ids.is_cuda:
        return None
    with torch.inference_mode(), _context(h, iv):
        out = h.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        tok = _step(h.model, tok, cache)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    tok = _step(h.model, tok, cache)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def _device_us(e) -> float:
    return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0) or 0.0)


def profile_step(h, ids, iv, label: str) -> tuple[dict, str]:
    """One profiled decode step after a prefill and two unprofiled steps: (numbers, the profiler's tables as text).

    numbers: profile_step_ms (host clock around the profiled step, profiler overhead included), profile_device_ms
    (the kernels' own time), profile_launches (kernel launches), profile_aten_ops."""
    from torch.profiler import ProfilerActivity, profile

    cuda = ids.is_cuda
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode(), _context(h, iv):
        out = h.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(2):
            tok = _step(h.model, tok, cache)
        sync()
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            tok = _step(h.model, tok, cache)
            sync()
            wall = time.perf_counter() - t0
    ka = prof.key_averages()
    launches = sum(e.count for e in ka if "LaunchKernel" in e.key)
    kernels = sum(_device_us(e) for e in ka if e.device_type is not None and "CUDA" in str(e.device_type))
    numbers = {"profile_step_ms": wall * 1e3, "profile_device_ms": kernels / 1e3 if cuda else None,
               "profile_launches": launches if cuda else None,
               "profile_aten_ops": sum(e.count for e in ka if e.key.startswith("aten::"))}
    text = [f"## {label}: one decode step  {numbers}", "### by self CPU time",
            ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)]
    if cuda:
        text += ["### by self device time", ka.table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=60)]
    return numbers, "\n".join(text) + "\n"


def decode_policy(h, ids, make: Callable, steps: int, repeats: int, profile: bool = True,
                  backend: Callable = contextlib.nullcontext) -> tuple[dict, str]:
    """Warm-up run, ``repeats`` timed runs, sync count and one profiled step of the policy ``make()`` (None = the
    unmodified model), all inside ``backend()`` (e.g. an SDPA backend choice): (the row, the profile text)."""
    with backend():
        return _decode_policy(h, ids, make, steps, repeats, profile)


def _decode_policy(h, ids, make: Callable, steps: int, repeats: int, profile: bool) -> tuple[dict, str]:
    warm = decode_once(h, ids, make(), steps)
    runs = [decode_once(h, ids, make(), steps) for _ in range(max(1, repeats))]
    tok_s = [r["decode_steps"] / r["decode_s"] for r in runs]
    mid = sorted(range(len(runs)), key=lambda i: tok_s[i])[len(runs) // 2]          # the median run
    row = {k: v for k, v in runs[mid].items() if k != "step_s"}
    row.update(decode_tok_s=tok_s[mid], decode_tok_s_min=min(tok_s), decode_tok_s_max=max(tok_s), repeats=len(runs),
               step_ms_median=1e3 * statistics.median(s for r in runs for s in r["step_s"]),
               step_ms_max=1e3 * max(s for r in runs for s in r["step_s"]),
               wall_tok_s=steps / runs[mid]["decode_wall_s"], warmup_decode_s=warm["decode_s"],
               warmup_prefill_s=warm["prefill_s"])
    text = ""
    try:                                       # diagnostics: a failure here must not lose the timed row
        row["syncs_per_step"] = syncs_per_step(h, ids, make())
        if profile:
            numbers, text = profile_step(h, ids, make(), f"{row['prompt_tokens']} tokens")
            row.update(numbers)
    except Exception as err:  # noqa: BLE001
        torch.cuda.set_sync_debug_mode("default") if ids.is_cuda else None
        row["diagnostics_error"] = f"{type(err).__name__}: {err}"[:300]
    return row, text
