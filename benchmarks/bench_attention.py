"""Benchmark of the fused attention kernels against SDPA, FlexAttention and eager capture (GPU).

Run from the repository root:

    python -m benchmarks.bench_attention --out benchmarks/results/attention_h200.json
    python -m benchmarks.bench_attention --tune --n 16384 --out benchmarks/results/tiles_h200.json

Batch 1, causal, bf16. Shapes: Llama-7B-like (32 heads, 32 kv, d=128), SmolLM2-like (9 heads,
3 kv, d=64). Methods (ms, TFLOP/s on the causal forward's nominal 2 * N^2 * D * H FLOPs, ratio
to SDPA, peak memory by torch.cuda.max_memory_allocated):
    sdpa           F.scaled_dot_product_attention, cuDNN backend
    flex           torch.compile'd flex_attention with a causal block mask and a trivial score_mod
    eager          materialized softmax (Hugging Face eager: scores, fp32 softmax, P @ V); skipped
                   when its maps would not fit
    chunked        the query-blocked PyTorch reference with the full statistics (capture path)
    ours           Triton kernel, output only
    ours_stats     output + received mass + key-0 mass + entropy + span mass
    ours_edit      ACT columns (key 0, beta 0.5, every head) + head scale
    decode_sdpa    one query over N keys, SDPA (its own backend choice)
    decode_ours    one query over N keys, split-KV Triton decode
    decode_*_graph the two decode steps replayed from CUDA graphs (no Python launch overhead)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {"llama": (32, 32, 128), "smollm": (9, 3, 64)}
GiB = 1024 ** 3


REPEATS = [3]


def _bench(fn, quick: bool) -> float:
    """Median ms over REPEATS runs of Triton's do_bench (each: warm-up, L2 flush between calls;
    at 60-120 ms per call one do_bench is about one sample, hence the repeats)."""
    from triton.testing import do_bench
    runs = sorted(float(do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100))
                  for _ in range(REPEATS[0]))
    return runs[len(runs) // 2]


def _peak(fn) -> float:
    """Peak allocated GiB during one call of fn (inputs included)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GiB


def _methods(H, KV, D, N, args):
    """name -> (callable, nominal FLOPs) for one shape and length."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.attention import fused as tri
    from kernels.attention.api import AttentionEdits, StatsRequest
    from kernels.attention.reference import attention as reference_attention

    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, H, N, D, device=dev, dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, KV, N, D, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, KV, N, D, device=dev, dtype=torch.bfloat16, generator=g)
    scale = D ** -0.5
    flops = 2.0 * N * N * D * H          # causal: half of 4 N^2 D H
    dflops = 4.0 * N * D * H
    m = {}

    def sdpa():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=KV != H)
    m["sdpa"] = (sdpa, flops)

    if "flex" in args.methods:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
        bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, N, N, device=dev)

        def score_mod(score, b, h, qi, ki):
            return score

        m["flex"] = (lambda: flex(q, k, v, score_mod=score_mod, block_mask=bm, scale=scale,
                                  enable_gqa=KV != H), flops)

    eager_bytes = H * N * N * 8 + N * N * 2
    if "eager" in args.methods and eager_bytes < args.eager_limit_gib * GiB:
        mask = torch.full((N, N), float("-inf"), device=dev, dtype=torch.bfloat16).triu(1)
        kr = k.repeat_interleave(H // KV, 1)
        vr = v.repeat_interleave(H // KV, 1)

        def eager():
            s = torch.matmul(q, kr.transpose(2, 3)) * scale + mask
            p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
            return torch.matmul(p, vr), p
        m["eager"] = (eager, flops)

    spans = torch.tensor([[[N // 4, N // 4 + min(576, N // 4)]]], device=dev)
    full = StatsRequest(entropy=True, sink_mass=True, span_mass=True, received=True)
    if "chunked" in args.methods:
        m["chunked"] = (lambda: reference_attention(q, k, v, scale=scale, spans=spans, stats=full), flops)
    m["ours"] = (lambda: tri.attention(q, k, v, scale=scale), flops)
    m["ours_stats"] = (lambda: tri.attention(q, k, v, scale=scale, spans=spans, stats=full), flops)
    ed = AttentionEdits(col_idx=torch.zeros(1, H, 1, dtype=torch.long, device=dev),
                        col_scale=torch.full((1, H), 0.5, device=dev),
                        head_scale=torch.ones(H, device=dev))
    m["ours_edit"] = (lambda: tri.attention(q, k, v, scale=scale, edits=ed), flops)

    q1 = q[:, :, -1:].contiguous()
    m["decode_sdpa"] = (lambda: F.scaled_dot_product_attention(q1, k, v, scale=scale, enable_gqa=KV != H), dflops)
    m["decode_ours"] = (lambda: tri.attention(q1, k, v, scale=scale), dflops)
    # the same decode steps replayed from CUDA graphs: kernel time without Python launch overhead
    m["decode_sdpa_graph"] = (_graphed(m["decode_sdpa"][0]), dflops)
    m["decode_ours_graph"] = (_graphed(m["decode_ours"][0]), dflops)
    return m, (q, k, v)


def _graphed(fn):
    """A zero-argument replay of fn captured in a CUDA graph (captured lazily, on first call)."""
    state = {}

    def replay():
        if "g" not in state:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                fn()
                fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            state["g"] = g
        state["g"].replay()
    return replay


def run(args) -> list[dict]:
    rows = []
    for shape in args.shapes:
        H, KV, D = SHAPES[shape]
        for N in args.n:
            methods, (q, k, v) = _methods(H, KV, D, N, args)
            io = (q.numel() + k.numel() + v.numel() + q.numel()) * 2 / GiB   # inputs + output
            base = dbase = gbase = None
            for name, (fn, fl) in methods.items():
                if name not in args.methods and not name.startswith(("sdpa", "decode")):
                    continue
                row = {"shape": shape, "H": H, "KV": KV, "D": D, "N": N, "method": name}
                try:
                    t0 = time.time()
                    fn()                                   # compile / warm up
                    torch.cuda.synchronize()
                    row["first_call_s"] = round(time.time() - t0, 2)
                    ms = _bench(fn, args.quick or name in ("chunked", "eager"))
                    peak = _peak(fn)
                    row.update(ms=ms, tflops=fl / ms / 1e9, peak_gib=peak, io_gib=io)
                except torch.cuda.OutOfMemoryError as e:  # report, keep going
                    row["error"] = f"OOM: {str(e).splitlines()[0][:120]}"
                except Exception as e:  # noqa: BLE001 - a benchmark reports what failed
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                gc.collect()
                torch.cuda.empty_cache()
                if name == "sdpa" and "ms" in row:
                    base = row["ms"]
                if name == "decode_sdpa" and "ms" in row:
                    dbase = row["ms"]
                if name == "decode_sdpa_graph" and "ms" in row:
                    gbase = row["ms"]
                ref = (gbase if name.endswith("_graph") else dbase) if name.startswith("decode") else base
                if "ms" in row and ref:
                    row["x_sdpa"] = row["ms"] / ref
                rows.append(row)
                print(json.dumps(row), flush=True)
            del methods, q, k, v
            gc.collect()
            torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    out = ["| shape | N | method | ms | TFLOP/s | × SDPA | peak GiB | inputs+out GiB |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['shape']} | {r['N']} | {r['method']} | {r['error']} | | | | |")
            continue
        out.append(f"| {r['shape']} | {r['N']} | {r['method']} | {r['ms']:.3f} | {r['tflops']:.1f} | "
                   f"{r.get('x_sdpa', float('nan')):.2f} | {r['peak_gib']:.2f} | {r['io_gib']:.2f} |")
    return "\n".join(out)


TUNE_TILES = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (64, 128, 4, 3),
              (64, 128, 8, 3), (64, 32, 4, 3), (128, 32, 4, 4)]


def tune(args) -> list[dict]:
    """Time the prefill kernel of each variant (output, stats, edit) under candidate tiles."""
    from kernels.attention import fused as tri
    from kernels.attention.api import AttentionEdits, StatsRequest
    rows = []
    for shape in args.shapes:
        H, KV, D = SHAPES[shape]
        N = args.n[-1]
        q = torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, KV, N, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, KV, N, D, device="cuda", dtype=torch.bfloat16)
        spans = torch.tensor([[[N // 4, N // 4 + min(576, N // 4)]]], device="cuda")
        ed = AttentionEdits(col_idx=torch.zeros(1, H, 1, dtype=torch.long, device="cuda"),
                            col_scale=torch.full((1, H), 0.5, device="cuda"), head_scale=torch.ones(H, device="cuda"))
        variants = {"output": {}, "stats": dict(spans=spans, stats=StatsRequest(entropy=True, sink_mass=True,
                                                                               span_mass=True, received=True)),
                    "edit": dict(edits=ed)}
        for variant, kw in variants.items():
            for cfg in TUNE_TILES:
                row = {"tune": variant, "shape": shape, "D": D, "N": N, "cfg": list(cfg)}
                try:
                    row["ms"] = _bench(lambda: tri.attention(q, k, v, scale=D ** -0.5, tile=cfg, **kw), True)
                except Exception as e:  # noqa: BLE001 - a tuning run reports what failed
                    row["error"] = f"{type(e).__name__}: {str(e)[:100]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--n", nargs="+", type=int, default=[1024, 4096, 16384, 65536])
    ap.add_argument("--methods", nargs="+",
                    default=["flex", "eager", "chunked", "ours", "ours_stats", "ours_edit"])
    ap.add_argument("--eager-limit-gib", type=float, default=100.0,
                    help="skip eager capture when its score / probability maps exceed this")
    ap.add_argument("--quick", action="store_true", help="short timing windows")
    ap.add_argument("--tune", action="store_true", help="time tile configs instead")
    ap.add_argument("--repeats", type=int, default=3, help="do_bench runs per number (the median is kept)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench needs CUDA", file=sys.stderr)
        return 2
    REPEATS[0] = args.repeats
    rows = tune(args) if args.tune else run(args)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": __import__("triton").__version__, "argv": sys.argv}
    if not args.tune:
        print()
        print(table(rows))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
