"""Where the time of one full statistics call goes (GPU): every kernel of ``fused.attention`` with lse, entropy,
key-0 mass, one span mass and received mass, against cuDNN SDPA at the same shape.

For each shape (``bench_sweep.SHAPES``, N = 65,536 by default, bf16, causal, batch 1, random tensors) it records
the whole call's time (median of ``--repeats`` ``do_bench`` runs), one profiled call's kernels (name, device
time, launches; ``torch.profiler``) and the time between them (the call's wall time minus its kernels' device
time), and the registers / spills of the compiled received-mass and prefill kernels. ``--parts`` adds what each
piece costs: the prefill kernel with lse only and with each statistic alone added (entropy, key-0 mass, span mass), the
received pass alone, the whole call from launches planned once (``fused.plan``; no host work inside the timed
call: if the plain call were slower, the difference would be host time the GPU waits for), and the median device
time per kernel over ``--repeats`` profiled calls. ``--dry`` runs the same on
the CPU under TRITON_INTERPRET=1 at a tiny N (plumbing only; no profile).

    python -m benchmarks.profile_stats --out benchmarks/results/profile_stats_h200.json
    python -m benchmarks.profile_stats --render benchmarks/results/profile_stats_parts_s11_h200.json \
        --write-block profile-stats-parts-s11          # the --parts table into kernels/BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from benchmarks.tables import render_file, write_json


def kernel_rows(prof) -> list[dict]:
    """[{name, device_ms, calls}] of the profiled CUDA kernels, longest first."""
    rows = {}
    for ev in prof.events():
        if ev.device_type.name != "CUDA":
            continue
        r = rows.setdefault(ev.name[:120], {"name": ev.name[:120], "device_ms": 0.0, "calls": 0})
        r["device_ms"] += ev.device_time / 1e3
        r["calls"] += 1
    return sorted(rows.values(), key=lambda r: -r["device_ms"])


def compiled_resources() -> list[dict]:
    """Registers, spills and shared memory of every compiled prefill / received kernel in this process."""
    from kernels.attention import prefill_kernel, received_kernel
    out = []
    for mod, name in ((prefill_kernel, "attention_fwd_kernel"), (received_kernel, "received_fwd_kernel")):
        fn = getattr(mod, name)
        fn = getattr(fn, "fn", fn)
        for caches in getattr(fn, "device_caches", {}).values():
            for ck in caches[0].values():
                out.append({"kernel": name, "n_regs": getattr(ck, "n_regs", None),
                            "n_spills": getattr(ck, "n_spills", None),
                            "shared": getattr(getattr(ck, "metadata", None), "shared", None),
                            "num_warps": getattr(getattr(ck, "metadata", None), "num_warps", None)})
    return out


def part_calls(case) -> dict:
    """{name: zero-argument call} of the pieces of the statistics call (``--parts``)."""
    from kernels.attention import fused, tiles
    from kernels.attention.api import StatsRequest
    q, k, v, s = case.q, case.k, case.v, case.scale
    fwd = lambda st: (lambda: fused.attention(q, k, v, scale=s, spans=case.spans, stats=st))  # noqa: E731
    out = {"fwd_lse": fwd(StatsRequest(lse=True)),
           "fwd_lse_entropy": fwd(StatsRequest(lse=True, entropy=True)),
           "fwd_lse_sink": fwd(StatsRequest(lse=True, sink_mass=True)),
           "fwd_lse_span": fwd(StatsRequest(lse=True, span_mass=True)),
           "received": case.call("received", {"r_" + n: x for n, x in tiles.received_switches(case.D).items()})}
    _, launches = fused.plan(q, k, v, scale=s, spans=case.spans, stats=case.full_stats)
    out["stats_planned"] = lambda: fused._run(launches)
    return out


def kernel_medians(fn, n: int) -> dict:
    """{kernel name: median device ms over n profiled calls} (each call after a sync)."""
    import torch
    per = {}
    for _ in range(n):
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        for r in kernel_rows(prof):
            per.setdefault(r["name"], []).append(r["device_ms"])
    return {name: statistics.median(v) for name, v in per.items() if statistics.median(v) > 0.01}


PARTS = (("sdpa", "cuDNN SDPA"), ("output", "prefill kernel, output only"), ("fwd_lse", "+ lse"),
         ("fwd_lse_sink", "+ lse, key-0 mass"), ("fwd_lse_span", "+ lse, one 576-key span mass"),
         ("fwd_lse_entropy", "+ lse, entropy"), ("stats_fwd", "+ lse, entropy, key-0 and span mass"),
         ("received", "received pass alone"), ("stats", "whole statistics call"),
         ("stats_planned", "whole call from launches planned once (no host work)"))


def render_parts(data: dict) -> str:
    """Markdown table of a ``--parts`` result: ms (median of do_bench runs) and x SDPA per piece and shape, then the
    profiled kernels' median device time."""
    rows = data["rows"]
    head = "| piece | " + " | ".join(f"{r['shape']} ms | × SDPA" for r in rows) + " |"
    out = [f"Device: {data['meta']['gpu']}, torch {data['meta']['torch']}, N = {data['meta']['N']}; "
           f"ms = median of {len(rows[0]['sdpa_runs_ms'])} `do_bench` runs", "", head,
           "|---|" + "---:|---:|" * len(rows)]
    for key, label in PARTS:
        if all(key + "_ms" in r for r in rows):
            out.append(f"| {label} | " + " | ".join(f"{r[key + '_ms']:.3f} | {r[key + '_ms'] / r['sdpa_ms']:.3f}"
                                                     for r in rows) + " |")
    names = sorted({n for r in rows for n in r.get("kernel_medians_ms", {})})
    for n in names:
        cells = (f"{r.get('kernel_medians_ms', {}).get(n, float('nan')):.3f} | –" for r in rows)
        out.append(f"| profiled `{n}`, device time (median of {len(rows[0]['sdpa_runs_ms'])} calls) | "
                   + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--shapes", nargs="+", default=["smollm", "llama"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--parts", action="store_true", help="the per-piece costs (see the module docstring)")
    ap.add_argument("--render", default=None, help="print the --parts table of this result file and stop")
    ap.add_argument("--write-block", default=None, help="with --render: write it into this block of BENCHMARKS.md")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.render:
        render_file(args.render, render_parts, args.write_block)
        return 0
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from benchmarks.bench_sweep import DRY, SHAPES, Case
    if args.dry:
        SHAPES.update(DRY["shapes"])
    dev = "cuda" if torch.cuda.is_available() and not args.dry else "cpu"
    N = 256 if args.dry else args.n
    out = {"meta": {"argv": sys.argv[1:], "torch": torch.__version__, "N": N,
                    "gpu": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}, "rows": []}
    for shape in args.shapes:
        case = Case(shape, N, dev)
        row = {"shape": shape, "N": N}
        calls = {"sdpa": case.sdpa(), "stats": case.call("stats", {}), "stats_fwd": case.call("stats_fwd", {}),
                 "output": case.call("output", {})}
        if args.parts:
            calls.update(part_calls(case))
        for name, fn in calls.items():
            fn()
            if dev == "cuda":
                from triton.testing import do_bench
                runs = [do_bench(fn, warmup=25, rep=100) for _ in range(args.repeats)]
                row[name + "_ms"] = statistics.median(runs)
                row[name + "_runs_ms"] = runs
        if dev == "cuda":
            row["stats_x_sdpa"] = row["stats_ms"] / row["sdpa_ms"]
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                calls["stats"]()
                torch.cuda.synchronize()
            row["kernels"] = kernel_rows(prof)
            row["kernels_device_ms"] = sum(r["device_ms"] for r in row["kernels"])
            if args.parts:
                row["kernel_medians_ms"] = kernel_medians(calls["stats"], args.repeats)
        out["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("runs_ms")}, default=str)[:1500], flush=True)
        del case
    out["compiled"] = compiled_resources()
    if args.out:
        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
