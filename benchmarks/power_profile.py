"""SM clock, board power and energy per call of each piece of the statistics call, against cuDNN SDPA (GPU).

Every piece (cuDNN SDPA; the prefill kernel output only; the prefill kernel with lse, entropy, key-0 and span mass; the
received-mass pass alone; the whole statistics call; plus ``--extra NAME=JSON`` variants of the whole call) runs back
to back for ``--seconds`` while ``nvidia-smi`` samples the SM clock, the power draw and the active throttle reasons
every ``--sample-ms``. The samples of the middle of the run (after the first quarter, before the last 0.1 s) give the
piece's steady clock and power; its time per call comes from CUDA events around the whole run, so the energy per call
is power x time. Where every piece runs at the board's power cap (throttle reason 0x4, SW power cap), a call's time
is its energy divided by the cap, and a kernel change speeds it up only by saving energy (instructions, data moved),
not by hiding latency.

    python -m benchmarks.power_profile --out benchmarks/results/power_profile_s13_h200.json
    python -m benchmarks.power_profile --render benchmarks/results/power_profile_s13_h200.json --write-block power-s13
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.tables import render_file, write_json

PIECES = ("sdpa", "output", "stats_fwd", "received", "stats")
LABELS = {"sdpa": "cuDNN SDPA", "output": "prefill kernel, output only",
          "stats_fwd": "prefill kernel, lse + entropy + key-0 + span mass", "received": "received-mass pass alone",
          "stats": "whole statistics call"}


def parse_smi(path: str) -> list[tuple]:
    """[(unix time, SM MHz, watts, throttle reasons)] of an ``nvidia-smi --format=csv,noheader`` log."""
    out = []
    with open(path) as f:
        for line in f:
            p = [x.strip() for x in line.split(",")]
            if len(p) < 4:
                continue
            try:
                t = datetime.datetime.strptime(p[0], "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
                out.append((t.timestamp(), int(p[1].split()[0]), float(p[2].split()[0]), p[3]))
            except ValueError:
                continue
    return out


def steady(fn, seconds: float, sample_ms: int) -> dict:
    """Run fn back to back for about ``seconds`` under an nvidia-smi sampler: ms per call (CUDA events), the median
    SM clock and power of the steady part, the throttle reasons seen there, and the energy per call."""
    import torch
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as tmp:
        path = tmp.name
    log = open(path, "w")
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw,clocks_throttle_reasons.active",
                            "--format=csv,noheader", f"-lms={sample_ms}"], stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.time()
    start.record()
    n = 0
    while time.time() - t0 < seconds:
        fn()
        n += 1
        if n % 4 == 0:
            torch.cuda.synchronize()                  # keeps the host at most 4 calls ahead
    end.record()
    torch.cuda.synchronize()
    t1 = time.time()
    smi.terminate()
    smi.wait()
    log.close()
    rows = parse_smi(path)
    os.unlink(path)
    mid = [r for r in rows if t0 + 0.25 * (t1 - t0) <= r[0] <= t1 - 0.1]
    ms = start.elapsed_time(end) / n
    out = {"calls": n, "ms": ms, "samples": len(mid)}
    if mid:
        watts = statistics.median(r[2] for r in mid)
        out.update(clock_mhz=statistics.median(r[1] for r in mid), clock_min=min(r[1] for r in mid),
                   power_w=watts, energy_j=watts * ms / 1e3, throttle=sorted({r[3] for r in mid}))
    return out


def render(data: dict) -> str:
    """Markdown table of a result file: per shape and piece, ms per call, x SDPA, clock, power, energy, x SDPA's."""
    m = data["meta"]
    out = [f"Device: {m['gpu']} (power limit {m.get('power_limit', '?')}), torch {m['torch']}, N = {m['N']}; each "
           f"piece back to back for {m['seconds']} s, nvidia-smi every {m['sample_ms']} ms; clock and power: median of "
           "the samples after the first quarter of the run", "",
           "| shape | piece | ms per call | × SDPA | SM MHz (median, min) | W | J per call | × SDPA's J | "
           "throttle reasons |", "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in data["rows"]:
        base = next((x for x in data["rows"] if x["shape"] == r["shape"] and x["piece"] == "sdpa"), None)
        xs = f"{r['ms'] / base['ms']:.3f}" if base else ""
        xe = f"{r['energy_j'] / base['energy_j']:.3f}" if base and "energy_j" in r and "energy_j" in base else ""
        label = LABELS.get(r["piece"], r["piece"])
        if "power_w" in r:
            out.append(f"| {r['shape']} | {label} | {r['ms']:.3f} | {xs} | {r['clock_mhz']:.0f} ({r['clock_min']}) | "
                       f"{r['power_w']:.0f} | {r['energy_j']:.3f} | {xe} | {' '.join(r['throttle'])} |")
        else:
            out.append(f"| {r['shape']} | {label} | {r['ms']:.3f} | {xs} | – | – | – | – | – |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--shapes", nargs="+", default=["smollm", "llama"])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sample-ms", type=int, default=20)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=JSON",
                    help="another whole statistics call with these fused.attention opts (repeatable)")
    ap.add_argument("--render", default=None, help="print the table of this result file and stop")
    ap.add_argument("--write-block", default=None, help="with --render: write it into this block of BENCHMARKS.md")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.render:
        render_file(args.render, render, args.write_block)
        return 0
    import torch
    from benchmarks.bench_sweep import Case
    from kernels.attention import tiles
    if not torch.cuda.is_available():
        print("power_profile: needs a CUDA GPU and nvidia-smi", file=sys.stderr)
        return 2
    limit = subprocess.run(["nvidia-smi", "--query-gpu=power.limit", "--format=csv,noheader"], capture_output=True,
                           text=True).stdout.strip()
    out = {"meta": {"argv": sys.argv[1:], "torch": torch.__version__, "N": args.n, "gpu": torch.cuda.get_device_name(),
                    "power_limit": limit, "seconds": args.seconds, "sample_ms": args.sample_ms}, "rows": []}
    extras = dict(x.split("=", 1) for x in args.extra)
    for shape in args.shapes:
        case = Case(shape, args.n, "cuda")
        rsw = {"r_" + n: v for n, v in tiles.received_switches(case.D).items()}
        calls = {"sdpa": case.sdpa(), "output": case.call("output", {}), "stats_fwd": case.call("stats_fwd", {}),
                 "received": case.call("received", {"rtile": tiles.received_tile(case.D, 2, False), **rsw}),
                 "stats": case.call("stats", {})}
        calls.update({name: case.call("stats", json.loads(o)) for name, o in extras.items()})
        for name, fn in calls.items():
            row = {"shape": shape, "piece": name, **steady(fn, args.seconds, args.sample_ms)}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
        del case
        torch.cuda.empty_cache()
    if args.out:
        write_json(args.out, out)
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
