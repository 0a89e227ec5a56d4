"""Host µs of one decode call of the Triton kernels (two launches), three ways (GPU; issue #15 host path).

Per case (Llama-7B attention shape: H = KV = 32, d 128, bf16, S = 4096; batch 1 and 16; ACT columns on every
head, a VAR edit, no edit), the wall time the host spends per call, launches included, GPU work not waited for
(a loop of --n calls between two synchronizations, median of --loops loops; the queue of at most 2 x n launches
never fills):
    plan_run      ``fused.plan`` + ``JITFunction.run`` per launch: the dispatcher's path before the decode lane
    step_run      ``fused._decode_step`` (cached launches) with the direct launch off: ``JITFunction.run``
    step_direct   ``fused._decode_step`` with the direct launch (``kernels/attention/launch.py``) on
and whether the three outputs are bit for bit equal. Writes --out (JSON).

    python -m benchmarks.bench_launch --out $OUT/launch_h200.json        # the device call
    python -m benchmarks.bench_launch --write-block benchmarks/results/decode_launch_h200.json kernels/BENCHMARKS.md
    python -m benchmarks.bench_launch --write-gen-block benchmarks/results/e2e_gen_host_h200_call1.json \
        kernels/BENCHMARKS.md decode-host-gen-call1          # (and call2): part gen's decode steps
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def _cases(dev):
    from kernels.attention import AttentionEdits

    H, KV, D, S = 32, 32, 128, 4096
    for B in (1, 16):
        g = torch.Generator().manual_seed(B)
        q = torch.randn(B, H, 1, D, generator=g).to(torch.bfloat16).to(dev)
        k, v = (torch.randn(B, KV, S, D, generator=g).to(torch.bfloat16).to(dev) for _ in range(2))
        ks = torch.zeros(B, dtype=torch.long, device=dev)
        act = AttentionEdits(col_idx=torch.tensor([[[1, 2, -1]] * H] * B, device=dev),
                             col_scale=torch.full((B, H), 0.4, device=dev))
        var = AttentionEdits(redist_idx=torch.zeros(B, 1, dtype=torch.long, device=dev),
                             redist_span=torch.tensor([[1, 1024]] * B, device=dev),
                             redist_from=torch.zeros(B, dtype=torch.long, device=dev),
                             redist_keep=torch.full((H,), 0.6, device=dev), redist_rho=0.5, redist_min_mass=0.2)
        for name, ed in (("none", None), ("act", act), ("var", var)):
            yield f"B{B} {name}", q, k, v, dict(scale=D ** -0.5, key_start=ks, edits=ed)


BLOCK = "decode-launch"


def table(doc: dict) -> str:
    """Markdown: host µs per decode call (two launches) per case, the three ways, and bitwise equality."""
    out = ["| case | plan + JITFunction.run (µs) | cached launches, JITFunction.run | cached launches, direct | "
           "outputs bit for bit equal |", "|---|---:|---:|---:|---|"]
    for r in doc["rows"]:
        d = r.get("step_direct_us")
        out.append(f"| {r['case']} | {r['plan_run_us']:.1f} | {r['step_run_us']:.1f} | "
                   f"{'off' if d is None else f'{d:.1f}'} | {'yes' if r['bitwise_equal'] else 'NO'} |")
    return "\n".join(out)


GEN_BLOCK = "decode-host-gen"


def table_gen(doc: dict) -> str:
    """Markdown from a ``bench_e2e_table`` part-gen result: decode ms per step (median, p10-p90) per batch and
    variant, and the ratio to plain's step (the issue's target: <= 1.10 for ACT and VAR)."""
    rows = [r for r in doc["rows"] if r.get("part") == "gen"]
    out = ["| batch | variant | decode ms per step (median) | p10 - p90 | x plain (step) | same tokens every run |",
           "|---:|---|---:|---|---:|---|"]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['batch']} | {r['variant']} | failed: {r['error'][:80]} | | | |")
            continue
        plain = next((p for p in rows if p["batch"] == r["batch"] and p["variant"] == "plain" and not p.get("error")), None)
        x = r["step_ms_median"] / plain["step_ms_median"] if plain else None
        p10, p90 = r["step_ms_p10_p90"]
        out.append(f"| {r['batch']} | {r['variant']} | {r['step_ms_median']:.2f} | {p10:.2f} - {p90:.2f} | "
                   f"{'' if x is None else f'{x:.3f}'} | {r.get('same_tokens_every_run')} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-block", nargs=2, default=None, metavar=("RESULT", "PAGE"),
                    help=f"only replace the <!-- table:{BLOCK} --> block of PAGE with the table from RESULT")
    ap.add_argument("--write-gen-block", nargs=3, default=None, metavar=("RESULT", "PAGE", "BLOCK"),
                    help=f"only replace the <!-- table:BLOCK --> block of PAGE (e.g. {GEN_BLOCK}-call1) with the gen "
                         "table from RESULT")
    ap.add_argument("--out")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--loops", type=int, default=5)
    args = ap.parse_args(argv)
    if args.write_block:
        from studies.tables import write_blocks

        with open(args.write_block[0]) as f:
            write_blocks(args.write_block[1], {BLOCK: table(json.load(f)) + "\n"})
        return 0
    if args.write_gen_block:
        from studies.tables import write_blocks

        with open(args.write_gen_block[0]) as f:
            write_blocks(args.write_gen_block[1], {args.write_gen_block[2]: table_gen(json.load(f)) + "\n"})
        return 0
    if not args.out:
        ap.error("--out is required")
    import triton

    from kernels.attention import fused, launch

    dev = "cuda"
    direct = launch.DIRECT

    def plan_run(q, k, v, kw):
        res, launches = fused.plan(q, k, v, **kw)
        fused._run(launches)
        return res.out

    def step(q, k, v, kw):
        return fused._decode_step(q, k, v, **kw).out

    ways = {"plan_run": (plan_run, False), "step_run": (step, False), "step_direct": (step, True)}
    rows = []
    for name, q, k, v, kw in _cases(dev):
        row = {"case": name}
        outs = {}
        for way, (fn, on) in ways.items():
            if on and not direct:
                row[way] = None
                continue
            launch.DIRECT = on and direct
            for _ in range(10):
                outs[way] = fn(q, k, v, kw)
            torch.cuda.synchronize()
            loops = []
            for _ in range(args.loops):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.n):
                    fn(q, k, v, kw)
                loops.append((time.perf_counter() - t0) / args.n * 1e6)
                torch.cuda.synchronize()
            row[way + "_us"] = round(statistics.median(loops), 2)
            row[way + "_us_loops"] = [round(x, 2) for x in loops]
        launch.DIRECT = direct
        base = outs["plan_run"]
        row["bitwise_equal"] = all(torch.equal(o, base) for o in outs.values())
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"argv": sys.argv, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__, "direct_launch": direct, "direct_off_reason": launch.DIRECT_OFF,
            "n": args.n, "loops": args.loops}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
