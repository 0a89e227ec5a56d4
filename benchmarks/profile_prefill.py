"""Where a prefill's time goes under each intervention (GPU; issue #15, eager generate at batch 1).

Session 8's eager generate at batch 1 spent ~37 ms before the first decode step in plain, ~41 ms with ACT and
~51 ms with VAR (``benchmarks/results/e2e_gen_s8f_h200.json``: wall minus the decode steps). This times one
prefill forward (the model of ``bench_e2e_table.llama``: random-init Llama-7B shape, 8 layers, bf16; a
--prompt-token random prompt, batch 1) per variant of ``bench_e2e_table.interventions_for``, inside
``intervene`` (entered once per variant, outside the timed calls) as ``generate`` would run it (a fresh sequence
each call; the last call's wall includes its synchronisation):
    wall_ms       median of --repeats synchronised calls (after one warm-up call)
    cpu_ms        the host thread's CPU time of the same calls (time.thread_time)
    syncs         synchronising CUDA calls of one call (torch.cuda.set_sync_debug_mode)
    kernels_ms    CUDA kernel time of one profiled call (torch.profiler), and its top kernels by device time
    top_python    the functions with the most own time in one cProfiled call
Writes --out (JSON).

    python -m benchmarks.profile_prefill --out $OUT/prefill_profile_h200.json
"""
from __future__ import annotations

import argparse
import cProfile
import contextlib
import json
import os
import pstats
import statistics
import sys
import time
import warnings

import torch

from benchmarks.tables import write_json


def _kernels(prof, top: int) -> tuple[float, list]:
    rows = {}
    for ev in prof.events():
        if ev.device_type.name not in ("CUDA", "CPU") or (ev.device_type.name == "CPU" and ev.cpu_parent is not None):
            continue
        r = rows.setdefault(ev.name[:100], [0.0, 0])
        r[0] += ev.device_time / 1e3
        r[1] += 1
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0])
    return (round(sum(r[0] for r in rows.values()), 3),
            [{"kernel": n, "ms": round(ms, 3), "calls": c} for n, (ms, c) in ranked[:top]])


def _python(fn, top: int) -> list:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    st = pstats.Stats(pr)
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    return [{"function": f"{os.path.relpath(k[0]) if k[0].startswith('/') else k[0]}:{k[1]}({k[2]})"[-110:],
             "own_ms": round(v[2] * 1e3, 3), "calls": v[1]} for k, v in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="plain,seam_noop,act,var")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="CPU plumbing check: the tiny fp32 model")
    args = ap.parse_args(argv)
    from benchmarks.bench_e2e_table import _ctx, interventions_for, llama

    dev = "cpu" if args.quick else "cuda"
    handle = llama(dev, quick=args.quick)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    model = handle.model
    ids = torch.randint(3, model.config.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(1)).to(dev)
    am = torch.ones_like(ids)
    doc = {"meta": {"argv": sys.argv[1:], "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                    "prompt": args.prompt, "model": "llama7b-shape-8layers" if dev == "cuda" else "tiny llama (--quick)"}, "rows": []}
    for v in args.variants.split(","):
        ivs = interventions_for(v, handle, args.prompt)

        def call():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=am, use_cache=True, logits_to_keep=1)
            sync()

        with _ctx(handle, ivs):                  # entered once: the timed calls are the forwards alone
            call()
            walls, cpus = [], []
            for _ in range(args.repeats):
                sync()
                t, c = time.perf_counter(), time.thread_time()
                call()
                walls.append(1e3 * (time.perf_counter() - t))
                cpus.append(1e3 * (time.thread_time() - c))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if dev == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    call()
                finally:
                    if dev == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
            syncs = sum("synchroniz" in str(w.message) for w in caught)
            acts = [torch.profiler.ProfilerActivity.CUDA if dev == "cuda" else torch.profiler.ProfilerActivity.CPU]
            with torch.profiler.profile(activities=acts) as prof:
                call()
            kms, top = _kernels(prof, args.top)
            py = _python(call, args.top)
        row = {"variant": v, "wall_ms": round(statistics.median(walls), 3), "wall_ms_runs": [round(x, 3) for x in walls],
               "cpu_ms": round(statistics.median(cpus), 3), "syncs": syncs, "kernels_ms": kms, "top_kernels": top,
               "top_python": py}
        doc["rows"].append(row)
        print(json.dumps({k: row[k] for k in ("variant", "wall_ms", "cpu_ms", "syncs", "kernels_ms")}), flush=True)
        for t_ in top[:6]:
            print("   ", t_, flush=True)
        for t_ in row["top_python"][:8]:
            print("   ", t_, flush=True)
    if args.out:
        write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
