"""Where the time of one decode step with ACT / VAR goes (GPU): the split-KV kernel vs the combine kernel vs the
host-side prep, per column mode, split count and tile, against SDPA at the same shape.

For each case (Llama-7B shape 32 / 32 heads, d 128 at batch 1 x 4,096 and batch 16 x 2,048 keys; SmolLM2 shape
9 / 3 heads, d 64 at 1 x 4,096; bf16, random tensors and the edits of ``bench_decode_edits.decode_inputs``) and
each configuration it records:

* ``ms``: the whole call (``fused.attention``) replayed from a CUDA graph (``do_bench_cudagraph``, 10 ms), median
  of ``--repeats`` runs: device time including the small ops the call issues, no Python;
* ``fwd_ms`` / ``combine_ms``: each of the two launches alone, replayed the same way once (from ``fused.plan``);
* ``host_us``: ``fused.plan`` alone on the host (mean of 200 calls after a warm-up: allocation, the cached edit
  preparation, argument building; no launch), and ``eager_ms``: the whole call launched from Python (do_bench);
* the compiled split kernel's registers, spills and shared memory, the CTAs per SM they allow (registers,
  shared memory, warps) and the number of waves of the grid on this GPU; nsplit, chunk and grid.

SDPA's kernels at each case (names and device time from ``torch.profiler``) are recorded once per case.
``--dry`` runs everything on the CPU under TRITON_INTERPRET=1 at tiny sizes (plumbing only).

    python -m benchmarks.profile_decode_kernels --out benchmarks/results/decode_kernels_profile_h200.json
    python -m benchmarks.profile_decode_kernels --render   # kernels/BENCHMARKS.md's block from that file
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

CASES = [("llama", 32, 32, 128, 16, 2048), ("llama", 32, 32, 128, 1, 4096), ("smollm", 9, 3, 64, 1, 4096)]
DRY = {"llama": (2, 2, 128), "smollm": (3, 1, 64)}
MODES = ("chunk", "block", "split", "bits")


def configs(B: int) -> list[tuple[str, str, dict]]:
    """[(name, edit kind, opts)] of one case, most important first (a run cut by its budget loses the tail).
    ``_rN``: the split kernel compiled with at most N registers per thread (ptxas ``maxnreg``): 168 lets three
    4-warp CTAs share an SM's 64K registers, 128 four."""
    out = [("ours", "none", {})]
    for kind, m in (("act", "chunk"), ("act", "bits"), ("act", "split"), ("var", "block"), ("var", "bits"),
                    ("var", "split")):
        out += [(f"{kind}_{m}", kind, {"col_mode": m}), (f"{kind}_{m}_r168", kind, {"col_mode": m, "maxnreg": 168})]
    out += [("act_block", "act", {"col_mode": "block"}), ("var_chunk", "var", {"col_mode": "chunk"}),
            ("ours_r128", "none", {"maxnreg": 128}),
            ("act_chunk_r128", "act", {"col_mode": "chunk", "maxnreg": 128}),
            ("act_split_r128", "act", {"col_mode": "split", "maxnreg": 128})]
    if B > 1:  # the batch-16 questions: warps, split count and tile
        out += [("ours_w8_r128", "none", {"dtile": (64, 8, 2), "maxnreg": 128}),
                ("act_chunk_w8_r128", "act", {"col_mode": "chunk", "dtile": (64, 8, 2), "maxnreg": 128})]
        for n in (2, 3):
            out += [(f"ours_nsplit{n}", "none", {"nsplit": n}),
                    (f"act_chunk_r168_nsplit{n}", "act", {"col_mode": "chunk", "maxnreg": 168, "nsplit": n})]
        for t in ((32, 4, 3), (64, 4, 3)):
            tag = "x".join(map(str, t))
            out += [(f"ours_tile{tag}", "none", {"dtile": t}),
                    (f"act_chunk_r168_tile{tag}", "act", {"col_mode": "chunk", "maxnreg": 168, "dtile": t})]
    return out


def occupancy(kernel, num_warps: int) -> dict:
    """Registers / spills / shared memory of a compiled kernel and the CTAs per SM they allow (H100 / H200 limits:
    64K registers, 228 KiB shared memory with 1 KiB reserved per CTA, 64 warps, 32 CTAs)."""
    try:
        regs, spills, smem = int(kernel.n_regs), int(kernel.n_spills), int(kernel.metadata.shared)
    except Exception as e:  # noqa: BLE001 - the interpreter has no compiled kernel
        return {"meta_error": type(e).__name__}
    per_warp = -(-regs * 32 // 256) * 256
    by_regs = 65536 // max(1, per_warp * num_warps)
    by_smem = (228 * 1024) // (smem + 1024)
    ctas = max(0, min(32, 64 // num_warps, by_regs, by_smem))
    return {"regs": regs, "spills": spills, "smem": smem, "ctas_per_sm": ctas,
            "limit": min((("regs", by_regs), ("smem", by_smem), ("warps", 64 // num_warps)), key=lambda x: x[1])[0]}


class Timer:
    def __init__(self, cuda: bool, repeats: int):
        self.cuda, self.repeats = cuda, repeats

    def graph(self, fn, repeats: int = 0) -> list[float]:
        if not self.cuda:
            t = time.perf_counter()
            fn()
            return [(time.perf_counter() - t) * 1e3]
        from triton.testing import do_bench_cudagraph
        return sorted(float(do_bench_cudagraph(fn, rep=10)) for _ in range(repeats or self.repeats))

    def eager(self, fn) -> float:
        if not self.cuda:
            return float("nan")
        from triton.testing import do_bench
        return float(do_bench(fn, rep=10))


def sdpa_kernels(fn, cuda: bool) -> list:
    """[(kernel name, device µs)] of one SDPA call (torch.profiler), or [] on the CPU."""
    if not cuda:
        return []
    import torch
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    out = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            out.append([e.key[:120], round(t / max(1, e.count), 2), e.count])
    return out


BLOCK = "decode-kernels-profile"    # the kernels/BENCHMARKS.md block that ``--render`` writes
RESULT = os.path.join(os.path.dirname(__file__), "results", "decode_kernels_profile_h200.json")
BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "kernels", "BENCHMARKS.md")


def table(data: dict) -> str:
    """The ``decode-kernels-profile`` block: one row per case and configuration of a result file of this script."""
    meta = data["meta"]
    out = [f"Device: {meta.get('device')}, torch {meta.get('torch')}, Triton {meta.get('triton')}, {meta.get('sms')} SMs; "
           f"µs per layer = median of {meta.get('repeats')} CUDA-graph replays of the whole call; split / combine: each "
           "launch alone, one replay; CTAs per SM from the compiled split kernel's registers and shared memory "
           "(the limiting one named); waves = grid / (CTAs per SM x SMs); plan µs: ``fused.plan`` on the host.", "",
           "| case | variant | µs per layer | × SDPA | split kernel µs | combine µs | nsplit | registers (spills) "
           "| shared B | CTAs / SM | waves | plan µs |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in data["rows"]:
        case = f"{r['shape']} {r['B']} x {r['S']}"
        if r["variant"] == "sdpa":
            names = ", ".join(k[0].split("_kernel")[0][:48] for k in r.get("kernels", []))
            out.append(f"| {case} | sdpa ({names}) | {r['ms'] * 1e3:.1f} | 1.00 | | | | | | | | |")
            continue
        if "ms" not in r:
            out.append(f"| {case} | {r['variant']} | {r.get('skipped', r.get('error', ''))} | | | | | | | | | |")
            continue
        out.append(f"| {case} | {r['variant']} | {r['ms'] * 1e3:.1f} | {r['x_sdpa']:.3f} | {r['fwd_ms'] * 1e3:.1f} | "
                   f"{r['combine_ms'] * 1e3:.1f} | {r['nsplit']} | {r.get('regs', '')} ({r.get('spills', '')}) | "
                   f"{r.get('smem', '')} | {r.get('ctas_per_sm', '')} ({r.get('limit', '')}) | {r.get('waves', '')} | "
                   f"{r['host_us']:.0f} |")
    return "\n".join(out) + "\n"


def render(path: str = RESULT, page: str = BENCHMARKS) -> None:
    """Rewrite the ``decode-kernels-profile`` block of kernels/BENCHMARKS.md from the result file."""
    from pathlib import Path

    from studies.tables import write_blocks
    with open(path) as f:
        write_blocks(Path(page), {BLOCK: table(json.load(f))})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--render", nargs="?", const=RESULT, default=None, metavar="RESULT",
                    help="only rewrite kernels/BENCHMARKS.md's decode-kernels-profile block from this result file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=70.0, help="no new configuration starts after this")
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.render:
        render(args.render)
        return 0
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import torch.nn.functional as F
    cuda = torch.cuda.is_available() and not args.dry
    if not cuda and not args.dry:
        print("needs CUDA (or --dry)", file=sys.stderr)
        return 2
    dev = "cuda" if cuda else "cpu"
    from benchmarks.bench_decode_edits import decode_inputs
    from kernels.attention import fused as tri
    t0 = time.time()
    timer = Timer(cuda, args.repeats)
    meta = {"device": torch.cuda.get_device_name() if cuda else "cpu (dry run)", "torch": torch.__version__,
            "triton": __import__("triton").__version__, "argv": sys.argv, "repeats": args.repeats,
            "sms": tri._sm_count(torch.device(dev))}
    rows = []

    def save():
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)

    for shape, H, KV, D, B, S in CASES:
        if args.dry:
            H, KV, D = DRY[shape]
            B, S = min(B, 2), 96
        q, k, v, scale, act, var = decode_inputs(H, KV, D, B, S, dev)
        edits = {"none": None, "act": act, "var": var}
        case = {"shape": shape, "H": H, "KV": KV, "D": D, "B": B, "S": S}
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=KV != H)  # noqa: E731
        runs = timer.graph(sdpa)
        base = statistics.median(runs)
        rows.append({**case, "variant": "sdpa", "ms": base, "runs_ms": runs, "kernels": sdpa_kernels(sdpa, cuda)})
        print(json.dumps(rows[-1]), flush=True)
        for name, kind, opts in configs(B):
            if time.time() - t0 > args.budget_s:
                rows.append({**case, "variant": name, "skipped": "time budget"})
                continue
            row = {**case, "variant": name, "edit": kind, "opts": {k_: list(v_) if isinstance(v_, tuple) else v_
                                                                    for k_, v_ in opts.items()}}
            kw = dict(scale=scale, edits=edits[kind], opts=opts or None)
            try:
                tc = time.time()
                call = lambda: tri.attention(q, k, v, **kw)  # noqa: E731
                call()
                if cuda:
                    torch.cuda.synchronize()
                row["first_call_s"] = round(time.time() - tc, 2)        # compile (or the cache) included
                res, launches = tri.plan(q, k, v, **kw)
                (ffn, fgrid, fkw), (cfn, cgrid, ckw) = launches
                kern = ffn.run(grid=fgrid, warmup=False, **fkw)
                cfn.run(grid=cgrid, warmup=False, **ckw)
                row.update(nsplit=fkw["NSPLIT"], chunk=fkw["chunk"], grid=list(fgrid), BS=fkw["BS"],
                           num_warps=fkw["num_warps"], num_stages=fkw["num_stages"],
                           col_mode=fkw.get("COL_MODE"), **occupancy(kern, fkw["num_warps"]))
                if "ctas_per_sm" in row and row["ctas_per_sm"]:
                    row["waves"] = round(fgrid[0] * fgrid[1] / (row["ctas_per_sm"] * meta["sms"]), 3)
                r = timer.graph(call)
                row.update(ms=statistics.median(r), runs_ms=r, x_sdpa=statistics.median(r) / base)
                row["fwd_ms"] = timer.graph(lambda: ffn.run(grid=fgrid, warmup=False, **fkw), 1)[0]
                row["combine_ms"] = timer.graph(lambda: cfn.run(grid=cgrid, warmup=False, **ckw), 1)[0]
                n, th = (200, time.perf_counter()) if cuda else (2, time.perf_counter())
                for _ in range(n):
                    tri.plan(q, k, v, **kw)
                row["host_us"] = (time.perf_counter() - th) / n * 1e6
                row["eager_ms"] = timer.eager(call)
            except Exception as e:  # noqa: BLE001 - a profile reports what failed and goes on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            rows.append(row)
            print(json.dumps(row), flush=True)
            save()
    meta["wall_s"] = round(time.time() - t0, 1)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
