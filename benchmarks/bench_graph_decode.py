"""One layer's graph-mode decode step (a static cache under generate's compile / CUDA graphs), per variant.

What the seam runs on a static cache's compiled decode step, one layer, bf16, random tensors of the Llama-7B
shape over a 4,160-key static cache (``--filled`` keys written, the rest masked as transformers' dense mask
does): each variant is compiled with inductor (fullgraph, static shapes) and captured in a CUDA graph
(``triton.testing.do_bench_cudagraph``): device time of the replay, as generate's compiled step runs it;
``eager_graph_us`` is the same ops captured without inductor (no fusion). Variants (the seam's default: ATen's
memory-efficient kernel, batch 1 split into chunks; ":cudnn": cuDNN's kernel; ":nosplit": no chunks):
    plain       transformers' SDPA call with the dense bool mask (the unmodified model's decode attention)
    lse         the seam's attention call alone (bias from the mask, out + log-sum-exp, no edit): kernel vs plain
    act         seam._act_decode: ACT columns {0, 7, S // 2}, beta 0.4, every head
    var         seam._var_decode with Redistribute's SpanPlan: sinks {0}, span [1, 1024) (bench_e2e_table's VAR)
    var_noplan  the same without a plan: two calls over the whole cache (the cost of the session-6 form)
    act_op / var_op  the same edits through the Triton decode kernels as the custom op probe::decode_attention
                (seam._graph_kernel_decode: what the seam runs on CUDA now; act / var are its tensor-op forms)
``err_vs_fp64``: max |out - fp64 reference| over the filled keys (plain: the reference without edits);
``kernels``: inductor-compiled kernels of one call (torch.profiler, no graph): name -> device us.

    python -m benchmarks.bench_graph_decode --out $OUT/graph_decode_h200.json
    python -m benchmarks.bench_graph_decode --dry --out /tmp/gd.json     # CPU plumbing check, tiny sizes
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

T0 = time.time()
VARIANTS = ("plain", "act_op", "var_op", "lse", "lse:nosplit", "lse:cudnn", "act", "act:nosplit", "var", "var:nosplit",
            "var_noplan")
VARIANTS_B16 = ("plain", "act_op", "var_op", "act", "var")       # batch 16: no split either way


def inputs(B: int, H: int, KV: int, D: int, S: int, filled: int, dev: str, dtype=torch.bfloat16) -> dict:
    """One decode step's tensors (seed 0): q [B, H, 1, D], a static cache k / v [B, KV, S, D] with ``filled`` keys,
    the dense mask [B, 1, 1, S] transformers hands SDPA, ACT's and VAR's edits and VAR's SpanPlan."""
    from kernels.attention.api import AttentionEdits
    from probe.capture.seam import span_plan

    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, 1, D, device=dev, dtype=dtype, generator=g)
    k = torch.randn(B, KV, S, D, device=dev, dtype=dtype, generator=g)
    v = torch.randn(B, KV, S, D, device=dev, dtype=dtype, generator=g)
    k[:, :, 0] = 0.8 * q.view(B, KV, H // KV, D).mean(2)            # key 0: a sink (about half the mass)
    mask = (torch.arange(S, device=dev) < filled).view(1, 1, 1, S).expand(B, 1, 1, S)
    cols = torch.tensor([0, 7, filled // 2], device=dev).expand(B, H, 3).contiguous()
    act = AttentionEdits(col_idx=cols, col_scale=torch.full((B, H), 0.4, device=dev))
    hi = min(1024, filled - 1)
    var = AttentionEdits(redist_idx=torch.zeros(B, 1, dtype=torch.long, device=dev),
                         redist_span=torch.tensor([[1, hi]] * B, device=dev),
                         redist_from=torch.full((B,), hi, device=dev), redist_keep=torch.full((H,), 0.6, device=dev),
                         redist_min_mass=0.05)
    return dict(q=q, k=k, v=v, mask=mask, act=act, var=var, plan=span_plan(var.redist_idx, var.redist_span),
                scale=D ** -0.5, filled=filled)


def step(name: str, x: dict):
    """The variant's decode-step function of no arguments -> [B, 1, H, D] (sets the seam's attention kernel)."""
    from probe.capture import seam

    name, _, opt = name.partition(":")
    q = x["q"]
    seam._LSE_KERNEL[(q.device, q.dtype, q.shape[1] // x["k"].shape[1], q.shape[3])] = opt or "efficient"
    seam._SPLIT_CTAS.pop(q.device, None)
    if opt != "nosplit":
        seam.prepare_graph_decode(q.device)
        if not q.is_cuda:                                              # the dry run: the CPU split too
            seam._SPLIT_CTAS[q.device] = 8

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    k, v, mask, scale = x["k"], x["v"], x["mask"], x["scale"]
    B, S = q.shape[0], k.shape[2]
    module = SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], is_causal=True)

    def vis():
        return seam._visible_keys(mask, B, S, None, q.device)

    return {
        "plain": lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=scale)[0],
        "lse": lambda: seam._partial(q.view(B, k.shape[1], -1, q.shape[3]), k, v, vis(), 0, S, scale)[0],
        "act": lambda: seam._act_decode(q, k, v, vis(), x["act"].col_idx, x["act"].col_scale, scale),
        "var": lambda: seam._var_decode(q, k, v, vis(), x["var"], scale, x["plan"]),
        "var_noplan": lambda: seam._var_decode(q, k, v, vis(), x["var"], scale, None),
        "act_op": lambda: seam._graph_kernel_decode(q, k, v, vis(), x["act"], scale, None, None),
        "var_op": lambda: seam._graph_kernel_decode(q, k, v, vis(), x["var"], scale, None, None),
    }[name]


def error(name: str, x: dict, out: torch.Tensor) -> float:
    """max |out - the fp64 reference| on the filled keys."""
    from kernels.attention import reference_attention

    n = x["filled"]
    edits = {"plain": None, "lse": None, "act": x["act"], "act_op": x["act"]}.get(name.partition(":")[0], x["var"])
    if name.startswith("lse"):                                     # [B, KV, G, D] -> the [B, 1, H, D] layout
        out = out.reshape(out.shape[0], 1, -1, out.shape[-1])
    ref = reference_attention(x["q"].double(), x["k"][:, :, :n].double(), x["v"][:, :, :n].double(), scale=x["scale"],
                              edits=edits).out
    return float((out.double() - ref).abs().max())


def kernels(fn, dev: str) -> dict:
    """Device kernels of one call (mean of 5, torch.profiler): name -> us, and their count."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    try:
        with profile(activities=acts) as prof:
            for _ in range(5):
                fn()
            if dev == "cuda":
                torch.cuda.synchronize()
        out = {}
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", 0) if dev == "cuda" else 0
            if t > 0 and e.device_type.name == "CUDA":
                out[e.key[:90]] = round(t / 5, 2)
    except Exception as err:  # noqa: BLE001 - the timing row stands without its profile
        return {"n": None, "error": f"{type(err).__name__}: {str(err)[:200]}"}
    return {"n": len(out), "us": dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--cache", type=int, default=4160, help="static cache length (4,096 prompt + 64 new)")
    ap.add_argument("--filled", type=int, default=4128, help="keys written (the step's query is the last)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--rep", type=int, default=100, help="ms of each do_bench_cudagraph run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=100.0, help="no new row starts after this many seconds")
    ap.add_argument("--dry", action="store_true", help="CPU plumbing check: tiny sizes, one timed call")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    dev = "cpu" if args.dry else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        print("needs CUDA (or --dry)", file=sys.stderr)
        return 2
    H, KV, D = 32, 32, 128
    if args.dry:
        H, KV, D, args.cache, args.filled, args.batches = 4, 2, 16, 640, 600, [1]

        def bench(fn, rep):  # noqa: ARG001 - one timed call: plumbing only
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    else:
        from triton.testing import do_bench_cudagraph as bench
    from probe.capture import seam

    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
    meta = {"argv": sys.argv, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
            "torch": torch.__version__, "shape": dict(H=H, KV=KV, D=D, cache=args.cache, filled=args.filled)}
    doc = {"meta": meta, "rows": []}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for B in args.batches:
        x = inputs(B, H, KV, D, args.cache, args.filled, dev, torch.float32 if args.dry else torch.bfloat16)
        if dev == "cuda":
            meta["sms"] = torch.cuda.get_device_properties(0).multi_processor_count
        for name in (args.variants if B == 1 or args.dry else VARIANTS_B16):
            if time.time() - T0 > args.budget:
                doc["rows"].append({"batch": B, "variant": name, "status": "skipped: out of time budget"})
                continue
            row = {"batch": B, "variant": name}
            try:
                fn = step(name, x)
                with torch.no_grad():
                    eager = fn()
                    row["err_vs_fp64"] = error(name, x, eager)
                    t = time.time()
                    comp = torch.compile(fn, fullgraph=True, dynamic=False, backend="eager" if args.dry else "inductor")
                    row["err_compiled_vs_eager"] = float((comp().double() - eager.double()).abs().max())
                    row["compile_s"] = round(time.time() - t, 1)
                    row["graph_us"] = sorted(1e3 * bench(comp, rep=args.rep) for _ in range(args.repeats))
                    row["eager_graph_us"] = sorted(1e3 * bench(fn, rep=args.rep) for _ in range(args.repeats))
                    row["kernels"] = kernels(comp, dev)
                row["status"] = "ok"
            except Exception as err:  # noqa: BLE001 - recorded, the next variant runs
                row["status"] = f"{type(err).__name__}: {str(err).splitlines()[0][:240] if str(err) else ''}"
            row["t"] = round(time.time() - T0, 1)
            doc["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "kernels"}), flush=True)
            with open(args.out, "w") as f:
                json.dump(doc, f, indent=1)
    plain = {r["batch"]: r["graph_us"][len(r["graph_us"]) // 2] for r in doc["rows"]
             if r["variant"] == "plain" and r.get("status") == "ok"}
    for r in doc["rows"]:
        if r.get("status") == "ok" and r["batch"] in plain:
            med = r["graph_us"][len(r["graph_us"]) // 2]
            r["graph_us_median"], r["extra_us_vs_plain"] = round(med, 2), round(med - plain[r["batch"]], 2)
            print(f"B={r['batch']:2d} {r['variant']:10s} {med:8.1f} us  (+{med - plain[r['batch']]:6.1f})  "
                  f"eager-graph {r['eager_graph_us'][len(r['eager_graph_us']) // 2]:8.1f} us  err {r['err_vs_fp64']:.2e}"
                  f"  kernels {r['kernels']['n']}")
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
