"""Where one decode step of ``generate`` spends its time, per seam variant (issue #15, "wall-clock generate speed").

On the random-init Llama-7B shape of ``bench_e2e_table`` (8 layers, bf16, batch 1, a PROMPT-token random prompt),
inside ``intervene`` for each variant (plain, seam_noop, headmask, headscale, act, var):

* ``steps``: wall time of every decode step of a NEW-token greedy ``generate`` (a stopping criterion records the
  time at the end of each step; HF's loop syncs once per step on CUDA, so the interval is the step's wall time),
  over --runs runs: median / 10th / 90th percentile ms.
* ``profile``: ``torch.profiler`` (CPU + CUDA activities, record_shapes off) of exactly one decode step (the
  profiler's schedule advances at the same stopping criterion: wait 4, warm-up 2, active 1). From its trace:
  the step's wall time, GPU kernels (count, busy time = union of kernel intervals, top kernels by time),
  runtime / driver calls (launch counts, synchronising calls and the time the host waited in them), and the
  top host operators by self CPU time (``key_averages``).
* ``python``: cProfile over 8 decode steps (enabled and disabled by the same criterion): Python function calls
  per step and the top functions by own time and by cumulative time, per step.
* ``ties`` (part of the same run): plain vs plain again vs the no-edit seam, greedy with scores: are the tokens
  and the logits bit-identical, where do tokens first differ, the top-1 / top-2 logit gap there, the per-layer
  max |difference| of the prefill hidden states, and which SDPA kernels the prefill and a decode step launch.

    python -m benchmarks.profile_decode --out $OUT/profile_h200.json --traces $OUT/traces     # the device call
    python -m benchmarks.profile_decode --device cpu --quick --out /tmp/profile_cpu.json      # CPU dry run
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import os
import pstats
import statistics
import resource
import sys
import time

import torch

from benchmarks.bench_e2e_table import _ctx, interventions_for, llama

VARIANTS = ("plain", "seam_noop", "headmask", "headscale", "act", "var")
T0 = time.time()
_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)    # Linux: this thread only


class StepClock:
    """A stopping criterion that never stops: records at the end of every step the wall clock (perf_counter),
    the calling thread's CPU time (thread_time: what the host itself spent, whatever else the machine ran) and
    its involuntary context switches (the scheduler took the CPU away), and calls ``on_step(step_index)``
    (profiler schedule, cProfile switch)."""

    def __init__(self, on_step=None):
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.preempted: list[int] = []
        self.on_step = on_step
        self._false = None

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        self.preempted.append(resource.getrusage(_RUSAGE_THREAD).ru_nivcsw)
        if self.on_step is not None:
            self.on_step(len(self.times) - 1)
        if self._false is None or self._false.shape[0] != input_ids.shape[0]:
            self._false = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self._false


def _generate(model, ids, new: int, clock: StepClock, **extra):
    from transformers import StoppingCriteriaList

    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                          min_new_tokens=new, do_sample=False, stopping_criteria=StoppingCriteriaList([clock]), **extra)


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]


def step_times(model, ids, new: int, runs: int) -> dict:
    """ms per decode step (intervals between consecutive step ends; the prefill step excluded)."""
    steps = []
    for _ in range(runs):
        clock = StepClock()
        _generate(model, ids, new, clock)
        steps += [1e3 * (b - a) for a, b in zip(clock.times, clock.times[1:])]
    return {"n": len(steps), "median_ms": round(statistics.median(steps), 3), "p10_ms": round(_pct(steps, 0.1), 3),
            "p90_ms": round(_pct(steps, 0.9), 3), "min_ms": round(min(steps), 3)}


def _union(intervals) -> float:
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


RUNTIME_SYNC = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy ",
                "cuStreamSynchronize", "cuEventSynchronize")


def summarize_trace(path: str, top: int = 15) -> dict:
    """Kernel / runtime / step numbers from a chrome trace of one profiled step."""
    with open(path) as f:
        ev = json.load(f)["traceEvents"]
    steps = [e for e in ev if e.get("ph") == "X" and str(e.get("name", "")).startswith("ProfilerStep#")]
    kern = [e for e in ev if e.get("ph") == "X" and e.get("cat") == "kernel"]
    mem = [e for e in ev if e.get("ph") == "X" and e.get("cat") in ("gpu_memcpy", "gpu_memset")]
    rt = [e for e in ev if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")]
    by_k: dict = {}
    for e in kern:
        d = by_k.setdefault(e["name"][:120], [0, 0.0])
        d[0] += 1
        d[1] += e.get("dur", 0)
    by_rt: dict = {}
    for e in rt:
        d = by_rt.setdefault(e["name"], [0, 0.0])
        d[0] += 1
        d[1] += e.get("dur", 0)
    sync_us = sum(e.get("dur", 0) for e in rt if any(e["name"].startswith(s.strip()) and (s.strip() != "cudaMemcpy" or e["name"] == "cudaMemcpy")
                                                      for s in RUNTIME_SYNC))
    gpu = [(e["ts"], e["ts"] + e.get("dur", 0)) for e in kern + mem]
    launches = sum(v[0] for k, v in by_rt.items() if "Launch" in k)
    step = steps[0] if steps else None
    return {
        "step_wall_us": round(step["dur"], 1) if step else None,
        "gpu_kernels": len(kern), "gpu_memcpy_memset": len(mem),
        "gpu_busy_us": round(_union(gpu), 1),
        "gpu_first_to_last_us": round(max(e for _, e in gpu) - min(s for s, _ in gpu), 1) if gpu else None,
        "launch_calls": launches,
        "host_sync_wait_us": round(sync_us, 1),
        "runtime_calls": {k: [v[0], round(v[1], 1)] for k, v in sorted(by_rt.items(), key=lambda kv: -kv[1][1])},
        "top_kernels": [[k, v[0], round(v[1], 1)] for k, v in sorted(by_k.items(), key=lambda kv: -kv[1][1])[:top]],
    }


def host_ops(prof, top: int = 20) -> list:
    """Top host operators of the profiled step by self CPU time: [name, count, self µs, total µs]."""
    from torch.autograd import DeviceType

    rows = [a for a in prof.key_averages() if a.device_type == DeviceType.CPU and not a.key.startswith("ProfilerStep")]
    rows.sort(key=lambda a: -a.self_cpu_time_total)
    return [[a.key[:100], a.count, round(a.self_cpu_time_total, 1), round(a.cpu_time_total, 1)] for a in rows[:top]]


def profile_step(model, ids, device: str, trace: str) -> dict:
    from torch.profiler import ProfilerActivity, profile, schedule

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    prof = profile(activities=acts, record_shapes=False, schedule=schedule(wait=4, warmup=2, active=1, repeat=1),
                   on_trace_ready=lambda p: p.export_chrome_trace(trace))
    with prof:
        _generate(model, ids, 10, StepClock(lambda i: prof.step()))
    out = summarize_trace(trace)
    out["host_ops"] = host_ops(prof)
    return out


def _fn_name(key) -> str:
    file, line, name = key
    if file == "~":
        return name[:90]
    parts = file.replace("\\", "/").split("/")
    short = "/".join(parts[-2:]) if "site-packages" not in file else "/".join(parts[parts.index("site-packages") + 1:][-3:])
    return f"{short}:{line}({name})"


def python_profile(model, ids, steps: int = 8, top: int = 40) -> dict:
    """cProfile over ``steps`` decode steps (steps 4 .. 4 + steps of a generate)."""
    prof = cProfile.Profile()

    def on_step(i):
        if i == 4:
            prof.enable()
        elif i == 4 + steps:
            prof.disable()

    _generate(model, ids, 6 + steps, StepClock(on_step))
    st = pstats.Stats(prof)
    rows = [(k, v[1], v[2], v[3]) for k, v in st.stats.items()]            # (key, ncalls, tottime, cumtime)
    per = lambda x: round(1e6 * x / steps, 1)  # noqa: E731  µs per step
    return {"steps": steps, "calls_per_step": round(st.total_calls / steps, 1),
            "tottime_us_per_step": per(sum(r[2] for r in rows)),
            "top_self": [[_fn_name(k), round(n / steps, 1), per(t)] for k, n, t, _ in sorted(rows, key=lambda r: -r[2])[:top]],
            "top_cumulative": [[_fn_name(k), round(n / steps, 1), per(c)] for k, n, _, c in sorted(rows, key=lambda r: -r[3])[:top]],
            # every function with >= 0.5 µs own time per step: [name, calls, own µs, cumulative µs] per step
            "all": [[_fn_name(k), round(n / steps, 1), per(t), per(c)] for k, n, t, c in sorted(rows, key=lambda r: -r[2])
                    if 1e6 * t / steps >= 0.5]}


def _greedy(handle, v: str, ids, new: int, backends=None):
    """Greedy tokens [B, new] and scores [B, new, V] of variant ``v`` (SDPA limited to ``backends`` if given)."""
    from torch.nn.attention import sdpa_kernel

    model = handle.model
    with torch.no_grad(), _ctx(handle, interventions_for(v, handle, ids.shape[1])), \
            (sdpa_kernel(backends) if backends else contextlib.nullcontext()):
        o = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, return_dict_in_generate=True, output_scores=True)
    return o.sequences[:, ids.shape[1]:].cpu(), torch.stack(o.scores, 1).float().cpu()


def _compare(a, b) -> dict:
    (tok, sc), (ref_tok, ref_sc) = a, b
    diff = (tok != ref_tok).any(0).nonzero()
    first = int(diff[0]) if len(diff) else None
    r = {"same_tokens": bool(torch.equal(tok, ref_tok)), "first_diff_step": first,
         "step0_logits_identical": bool(torch.equal(sc[:, 0], ref_sc[:, 0])),
         "step0_max_abs_logit_diff": float((sc[:, 0] - ref_sc[:, 0]).abs().max())}
    if first is not None:
        top2 = ref_sc[:, first].topk(2, -1).values                                   # [B, 2]
        r["plain_top1_minus_top2_at_first_diff"] = float((top2[:, 0] - top2[:, 1]).min())
        r["max_abs_logit_diff_at_first_diff"] = float((sc[:, first] - ref_sc[:, first]).abs().max())
    # decode-step logits identical up to the first token difference?
    upto = first if first is not None else sc.shape[1]
    r["logits_identical_before_first_diff"] = bool(torch.equal(sc[:, :upto], ref_sc[:, :upto]))
    return r


def ties_without_cudnn(out, handle, ids, new: int) -> None:
    """The same comparison with SDPA limited to flash / efficient / math (cuDNN attention off)."""
    from torch.nn.attention import SDPBackend

    b = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    ref = _greedy(handle, "plain", ids, new, b)
    row = {"part": "ties_no_cudnn", "new_tokens": new, "backends": [x.name for x in b],
           "plain_again": _compare(_greedy(handle, "plain", ids, new, b), ref),
           "seam_noop": _compare(_greedy(handle, "seam_noop", ids, new, b), ref),
           "plain_with_cudnn_vs_without": _compare(_greedy(handle, "plain", ids, new), ref)}
    out.append(row)


def ties(out, handle, ids, new: int, device: str, trace_dir: str, kernels: bool = True) -> None:
    """Plain vs plain vs the no-edit seam: tokens, logits, hidden states, and (``kernels``, CUDA) the attention kernels
    of a short generate, from a profiler trace (the profiler slows every later launch of the process)."""
    model = handle.model
    runs = {name: _greedy(handle, v, ids, new) for name, v in
            (("plain", "plain"), ("plain_again", "plain"), ("seam_noop", "seam_noop"), ("seam_noop_again", "seam_noop"))}
    ref_tok, ref_sc = runs["plain"]
    row = {"part": "ties", "new_tokens": new}
    for name in ("plain_again", "seam_noop", "seam_noop_again"):
        row[name] = _compare(runs[name], runs["plain"])
    gaps = (lambda t: t[..., 0] - t[..., 1])(ref_sc.topk(2, -1).values)                 # [B, new]
    row["plain_top1_top2_gap"] = {"median": float(gaps.median()), "min": float(gaps.min()),
                                  "logit_std": float(ref_sc.std())}
    # the prefill's hidden states, layer by layer: where does the seam's forward first differ?
    hs = {}
    for v in ("plain", "seam_noop"):
        with torch.no_grad(), _ctx(handle, interventions_for(v, handle, ids.shape[1])):
            hs[v] = [h.float() for h in model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                                               output_hidden_states=True).hidden_states]
    row["prefill_hidden_max_abs_diff_per_layer"] = [float((a - b).abs().max()) for a, b in zip(hs["plain"], hs["seam_noop"])]
    hs = None
    # which attention kernels run in the prefill and in one decode step (plain vs seam)
    if kernels and device.startswith("cuda"):
        from torch.profiler import ProfilerActivity, profile

        kernels = {}
        for v in ("plain", "seam_noop"):
            path = os.path.join(trace_dir, f"ties_{v}.json")
            with torch.no_grad(), _ctx(handle, interventions_for(v, handle, ids.shape[1])):
                with profile(activities=[ProfilerActivity.CUDA]) as p:
                    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, min_new_tokens=2,
                                   do_sample=False)
                p.export_chrome_trace(path)
            with open(path) as f:
                ev = json.load(f)["traceEvents"]
            names = {}
            for e in ev:
                if e.get("cat") == "kernel" and any(s in e["name"].lower() for s in ("attn", "attention", "flash", "fmha", "sdpa", "cudnn")):
                    names[e["name"][:140]] = names.get(e["name"][:140], 0) + 1
            kernels[v] = names
            os.remove(path)
        row["attention_kernels_prefill_plus_2_steps"] = kernels
    out.append(row)


def run(handle, device: str, prompt: int, new: int, runs: int, variants, parts, out_path: str, traces: str,
        budget: float) -> dict:
    """Every part for every variant on ``handle``'s model; the document is rewritten to ``out_path`` after each
    variant (a killed run keeps what it had). ``budget``: seconds after this module's import past which no new
    variant starts."""
    os.makedirs(traces, exist_ok=True)
    model = handle.model
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(1)).to(device)
    doc = {"meta": {"argv": sys.argv, "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                    "model": handle.source, "prompt": prompt, "new_tokens": new, "batch": 1,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": os.getloadavg()},
           "rows": []}

    def flush():
        with open(out_path + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(out_path + ".tmp", out_path)

    for v in variants:
        if time.time() - T0 > budget:
            doc["rows"].append({"variant": v, "skipped": "time budget"})
            break
        gc.collect()
        row = {"variant": v}
        try:
            with torch.no_grad(), _ctx(handle, interventions_for(v, handle, prompt)):
                _generate(model, ids, 12, StepClock())                      # warm-up: JIT, allocator, cuDNN plans
                if "steps" in parts:
                    row["steps"] = step_times(model, ids, new, runs)
                if "profile" in parts:
                    row["profile"] = profile_step(model, ids, device, os.path.join(traces, f"step_{v}.json"))
                if "python" in parts:
                    row["python"] = python_profile(model, ids)
        except Exception as err:  # noqa: BLE001 - a benchmark records what failed
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        row["t"] = round(time.time() - T0, 1)
        doc["rows"].append(row)
        short = {k: x for k, x in row.items() if k not in ("profile", "python")}
        short.update(profile_step_us=row.get("profile", {}).get("step_wall_us"), kernels=row.get("profile", {}).get("gpu_kernels"),
                     python_calls=row.get("python", {}).get("calls_per_step"))
        print(json.dumps(short), flush=True)
        flush()
    if "ties" in parts and time.time() - T0 < budget + 15:
        try:
            ties(doc["rows"], handle, ids, new, device, traces)
        except Exception as err:  # noqa: BLE001
            doc["rows"].append({"part": "ties", "error": f"{type(err).__name__}: {str(err)[:300]}"})
        print(json.dumps(doc["rows"][-1])[:3000], flush=True)
    doc["meta"]["finished_s"] = round(time.time() - T0, 1)
    flush()
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--traces", default=None, help="folder for the chrome traces of the profiled steps")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU dry run)")
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--parts", default="steps,profile,python,ties")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds; no new variant starts past it")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt, args.new, args.runs = min(args.prompt, 64), min(args.new, 16), 1
    traces = args.traces or os.path.join(os.path.dirname(os.path.abspath(args.out)), "traces")
    run(llama(args.device, args.quick), args.device, args.prompt, args.new, args.runs, args.variants.split(","),
        args.parts.split(","), args.out, traces, args.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
