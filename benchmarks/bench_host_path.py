"""Host-side cost of one Triton attention call, up to the kernel launch (CPU, no GPU needed).

What the dispatcher runs on CUDA for a supported request (``fallback_reason`` + the Triton host module's entry),
with each kernel's JIT launch (``JITFunction.run``) replaced by a sink that returns at once: so the time and the
cProfile call count are everything the host does before Triton's own launcher (validation, edit conversion,
buffers, tiles, ``@triton.heuristics``, keyword arguments). Triton's launcher and the GPU are not in it: the GPU
effect of a change has to be measured on the device. Runs under TRITON_INTERPRET=1 (no CUDA here).

Cases: SmolLM2's attention shape (H 9, KV 3, d 64, bf16), batch 1; decode steps (T = 1) over a growing key
cache (S = 512 + step, the same edit object every step, as the seam passes it) with no edit, a uniform head,
ACT on every head, VAR; and one prefill (T = S = 512) with ACT. Per case: median and 10th-percentile µs per
call over ``--reps`` calls (after a warm-up that fills the per-sequence caches) and Python function calls per call (cProfile,
C methods included). The time is wall clock on a shared machine (the load average is recorded); the call
count is exact and repeatable.

    git worktree add --detach /tmp/hostpath_before b0a127a      # the code before the change
    PYTHONPATH=. python benchmarks/bench_host_path.py --code /tmp/hostpath_before --label before \
        --reps 5000 --out benchmarks/results/host_path_cpu.json
    PYTHONPATH=. python benchmarks/bench_host_path.py --label after --reps 5000 --out benchmarks/results/host_path_cpu.json
    PYTHONPATH=. python benchmarks/bench_host_path.py --write-block kernels/BENCHMARKS.md   # the table, from the JSON
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

from benchmarks import labelled_runs


class _Sink:
    """Stands in for a kernel's JITFunction: records the launch and returns (both launch styles)."""

    def __init__(self):
        self.launches = 0

    def __getitem__(self, grid):
        return self._launch

    def _launch(self, *args, **kwargs):
        self.launches += 1

    def run(self, *args, **kwargs):
        self.launches += 1


def _cases(torch, ka):
    B, H, KV, D, S0 = 1, 9, 3, 64, 512
    dt = torch.bfloat16
    g = torch.Generator().manual_seed(0)
    kbuf = torch.randn(B, KV, S0 + 4096, D, generator=g).to(dt)
    vbuf = torch.randn(B, KV, S0 + 4096, D, generator=g).to(dt)
    q1 = torch.randn(B, H, 1, D, generator=g).to(dt)
    qp = torch.randn(B, H, S0, D, generator=g).to(dt)
    uni = torch.zeros(H, dtype=torch.bool)
    uni[4] = True
    act = ka.AttentionEdits(col_idx=torch.tensor([0, 1, 7])[None, None].expand(B, H, 3).contiguous(),
                            col_scale=torch.full((B, H), 0.4))
    var = ka.AttentionEdits(redist_idx=torch.tensor([[0]]), redist_span=torch.tensor([[1, 256]]),
                            redist_from=torch.zeros(B, dtype=torch.long), redist_keep=torch.full((H,), 0.3))
    common = dict(scale=D ** -0.5, key_start=torch.zeros(B, dtype=torch.long), window=None, softcap=None)
    decode = {"decode, no edit": None, "decode, uniform head": ka.AttentionEdits(head_uniform=uni),
              "decode, ACT every head": act, "decode, VAR": var}
    for name, ed in decode.items():
        yield name, (lambda i, ed=ed: (q1, kbuf[:, :, :S0 + i], vbuf[:, :, :S0 + i], dict(common, edits=ed)))
    yield "prefill 512, ACT", (lambda i: (qp, kbuf[:, :, :S0], vbuf[:, :, :S0], dict(common, edits=act)))


RESULT = "benchmarks/results/host_path_cpu.json"
BLOCK = "host-path"


def table(doc: dict) -> str:
    """Markdown: per case, before and after (µs median / p10, Python calls per call, launches)."""
    rows = {(r["label"], r["case"]): r for r in doc["rows"]}
    cases = list(dict.fromkeys(r["case"] for r in doc["rows"]))
    out = ["| case | µs per call before (median / p10) | after | Python calls per call before | after | launches |",
           "|---|---:|---:|---:|---:|---:|"]
    for c in cases:
        b, a = rows.get(("before", c)), rows.get(("after", c))
        if b is None or a is None:
            continue
        out.append(f"| {c} | {b['us_per_call_median']:.1f} / {b['us_per_call_p10']:.1f} | "
                   f"{a['us_per_call_median']:.1f} / {a['us_per_call_p10']:.1f} | {b['python_calls_per_call']:.0f} | "
                   f"{a['python_calls_per_call']:.0f} | {a['launches_per_call']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    labelled_runs.add_args(ap, "import kernels/ from this tree (default: the current one)", BLOCK, RESULT)
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args(argv)
    os.environ.setdefault("TRITON_INTERPRET", "1")          # before the kernels are imported (no CUDA here)
    if args.write_block:
        labelled_runs.write_block(args.write_block, BLOCK, RESULT, table)
        return 0
    if args.code:
        sys.path.insert(0, os.path.abspath(args.code))
    import torch
    import triton

    import kernels.attention as ka
    from kernels.attention import fused

    sinks = {}
    for name in ("attention_fwd_kernel", "received_fwd_kernel", "decode_fwd_kernel", "decode_combine_kernel"):
        kernel = getattr(fused, name)
        sinks[name] = kernel.fn = _Sink()          # the Heuristics wrapper stays: its cost is host cost
    entry = getattr(fused, "attention_validated", fused.attention)

    def call(q, k, v, kw):      # kernels.attention.attention's CUDA branch
        assert ka.fallback_reason(q, k, v, **kw) is None
        return entry(q, k, v, **kw)

    load0 = os.getloadavg()[0]
    rows = []
    for name, make in _cases(torch, ka):
        for i in range(20):                         # warm-up: per-sequence caches, first-call imports
            call(*make(i))
        before = sum(s.launches for s in sinks.values())
        ts = []
        for i in range(args.reps):
            q, k, v, kw = make(20 + i % 2048)
            t0 = time.perf_counter()
            call(q, k, v, kw)
            ts.append(time.perf_counter() - t0)
        launches = (sum(s.launches for s in sinks.values()) - before) / args.reps
        prof = cProfile.Profile()
        n = 200
        inputs = [make(20 + i) for i in range(n)]
        prof.enable()
        for q, k, v, kw in inputs:
            call(q, k, v, kw)
        prof.disable()
        calls = pstats.Stats(prof).total_calls / n
        row = {"label": args.label, "case": name, "us_per_call_median": round(statistics.median(ts) * 1e6, 1),
               "us_per_call_p10": round(sorted(ts)[len(ts) // 10] * 1e6, 1),
               "python_calls_per_call": round(calls, 1), "launches_per_call": launches}
        rows.append(row)
        print(f"{args.label:7s} {name:24s} {row['us_per_call_median']:8.1f} µs (p10 {row['us_per_call_p10']:.1f})  "
              f"{calls:6.0f} calls  "
              f"{launches:.0f} launches", flush=True)
    if args.out:
        labelled_runs.save(args, argv, rows, load0, triton=triton.__version__,
                           note="host work up to Triton's JIT launcher only; the GPU effect is not measured here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
