"""GPU time of one decode step's attention with probability edits (ACT, VAR, uniform head), per layer.

One query over S cached keys, bf16, random tensors of a model's attention shape. Each variant is
captured in a CUDA graph and replayed (``triton.testing.do_bench_cudagraph``), so the numbers are
device time including every small host-issued op around the kernels, without Python launch cost;
median of --repeats runs. ``eager_ms``: the same call launched from Python each time (do_bench),
i.e. host-bound when the launch path costs more than the GPU work. Variants:
    sdpa            F.scaled_dot_product_attention (the unmodified model's decode attention)
    ours            split-KV decode, no edit
    act             ACT columns (key 0 and two more per head, beta 0.4, every head): split-KV decode
    act_prefill     the same through the prefill kernel at T = 1 (the path before session 3)
    var             Redistribute (sinks {0}, span [1, 33), keep 0.5 on every head): split-KV decode
    var_prefill     the same through the prefill kernel at T = 1
    uniform         HeadMask uniform on one head: split-KV decode
    ALTERNATIVES    the split kernel's other column modes / register caps, every setting explicit
                    (``fused.decode_edit_config`` gives the defaults that act / var use at each shape), among them
                    act_chunk_s4 / var_block_s4: session 4's defaults (no register cap)
Per-token estimate: the recorded unmodified per-token device time of the whole 32-layer Llama-7B
shape (benchmarks/results/bench_decode_gpu_h200.json) plus 32 x (variant - sdpa) per layer.

    python -m benchmarks.bench_decode_edits --out benchmarks/results/decode_edits_h200_s5.json
    python -m benchmarks.bench_decode_edits --render     # kernels/BENCHMARKS.md's decode-edits block from that file
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

CASES = [("llama", 32, 32, 128, 1, 4096), ("llama", 32, 32, 128, 16, 2048), ("smollm", 9, 3, 64, 1, 4096)]
BASELINE = os.path.join(os.path.dirname(__file__), "results", "bench_decode_gpu_h200.json")


VAR_SPAN = [1, 33]        # VAR's span in decode_inputs (--var-span: its end; bench_e2e_table's VAR spans [1, 1024))


def decode_inputs(H, KV, D, B, S, dev="cuda"):
    """One decode step's random bf16 tensors (seed 0) and its two probability edits, as every decode benchmark
    times them: q [B, H, 1, D], k / v [B, KV, S, D], scale, ACT (keys 0, 7, S // 2 at beta 0.4 on every head),
    VAR (sinks {0}, span ``VAR_SPAN`` = [1, 33) unless --var-span, keep 0.5 on every head)."""
    from kernels.attention.api import AttentionEdits

    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, 1, D, device=dev, dtype=torch.bfloat16, generator=g)
    k = torch.randn(B, KV, S, D, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn(B, KV, S, D, device=dev, dtype=torch.bfloat16, generator=g)
    cols = torch.tensor([0, 7, S // 2], device=dev).expand(B, H, 3).contiguous()
    act = AttentionEdits(col_idx=cols, col_scale=torch.full((B, H), 0.4, device=dev))
    var = AttentionEdits(redist_idx=torch.zeros(B, 1, dtype=torch.long, device=dev),
                         redist_span=torch.tensor([VAR_SPAN] * B, device=dev),
                         redist_from=torch.zeros(B, dtype=torch.long, device=dev),
                         redist_keep=torch.full((H,), 0.5, device=dev))
    return q, k, v, D ** -0.5, act, var


def _variants(H, KV, D, B, S, dev="cuda"):
    from kernels.attention import fused as tri
    from kernels.attention.api import AttentionEdits, AttentionResult

    q, k, v, scale, act, var = decode_inputs(H, KV, D, B, S, dev)
    uni = AttentionEdits(head_uniform=torch.arange(H, device=dev) == 3)

    def prefill_path(ed):
        def run():
            out = torch.empty(B, 1, H, D, dtype=q.dtype, device=dev)
            tri._run([tri._prefill(q, k, v, out, AttentionResult(out=out), tri._zeros_i64(B, q.device),
                                   tri._Edits(ed, B, H, q.device), tri.NO_STATS, None, None, {},
                                   dict(scale=scale, softcap=0.0, window=0))])
        return run

    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=KV != H),
        "ours": lambda: tri.attention(q, k, v, scale=scale),
        "act": lambda: tri.attention(q, k, v, scale=scale, edits=act),
        "act_prefill": prefill_path(act),
        "var": lambda: tri.attention(q, k, v, scale=scale, edits=var),
        "var_prefill": prefill_path(var),
        "uniform": lambda: tri.attention(q, k, v, scale=scale, edits=uni),
        **{name: (lambda ed=(act if kind == "act" else var), o=o: tri.attention(q, k, v, scale=scale, edits=ed, opts=o))
           for name, (kind, o) in ALTERNATIVES.items()},
    }


# the other configurations of decode_fwd_kernel, every setting explicit (``fused.decode_edit_config`` gives the
# defaults that "act" / "var" use at each shape): name -> (edit kind, opts)
ALTERNATIVES = {
    "act_bits": ("act", {"col_mode": "bits", "maxnreg": 128, "cols_out": True}),
    "var_bits": ("var", {"col_mode": "bits", "maxnreg": 128}),
    "act_split_gather": ("act", {"col_mode": "split", "maxnreg": 128, "cols_out": False}),
    "act_split_cols": ("act", {"col_mode": "split", "maxnreg": 128, "cols_out": True}),
    "var_split": ("var", {"col_mode": "split", "maxnreg": 128}),
    "var_split_nocap": ("var", {"col_mode": "split", "maxnreg": 0}),
    # session 7: split, with each run of span blocks that hold no sink as one pipelined loop of targets (the wide VAR
    # default since session 8)
    "var_span": ("var", {"col_mode": "span", "maxnreg": 128}),
    # session 4's defaults (before this session): ACT masks whole chunks, VAR tests each block; no register cap
    "act_chunk_s4": ("act", {"col_mode": "chunk", "maxnreg": 0}),
    "var_block_s4": ("var", {"col_mode": "block", "maxnreg": 0}),
}


def config(name: str, H: int, KV: int, D: int, B: int, sms: int) -> dict:
    """The split-kernel configuration of an ACT / VAR variant at one shape on a GPU with ``sms`` SMs ({} for the
    others): edit kind, column mode, register cap (None = none), whether ACT's columns come out of the split kernel."""
    from kernels.attention.fused import decode_edit_config, decode_slots

    if name in ("act", "var"):
        kind, opts = name, {}
    elif name in ALTERNATIVES:
        kind, opts = ALTERNATIVES[name]
    else:
        return {}
    c = decode_edit_config(kind, B, KV, D, decode_slots(D, 2, sms))
    mode = opts.get("col_mode", c["col_mode"])
    cap = opts["maxnreg"] if "maxnreg" in opts else c["maxnreg"]
    cols = opts.get("cols_out", c["cols_out"])
    return {"edit": kind, "col_mode": mode, "maxnreg": cap or None,
            "cols_out": kind == "act" and mode in ("split", "bits") and bool(cols)}


def _baseline() -> dict:
    """(B, S) -> recorded unmodified per-token device ms of the 32-layer Llama-7B shape, if present."""
    try:
        with open(BASELINE) as f:
            data = json.load(f)
    except OSError:
        return {}
    out = {}
    for r in (data["rows"] if isinstance(data, dict) else data):
        if isinstance(r, dict) and r.get("variant") in ("unmodified", "none", "sdpa") and "device_ms" in r:
            out[(r.get("batch"), r.get("prompt"))] = r["device_ms"]
    return out


DEFAULT_VARIANTS = ("sdpa", "ours", "act", "var", "uniform")
BLOCK = "decode-edits"          # the kernels/BENCHMARKS.md block that ``--render`` writes
RESULT = os.path.join(os.path.dirname(__file__), "results", "decode_edits_h200_s5.json")
BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "kernels", "BENCHMARKS.md")
TARGET, STRETCH = 1.05, 1.02


def default_rows(data: dict) -> dict:
    """(B, S, "act" / "var") -> the Llama-shape row of a result file measured with the configuration that is the
    default now at that shape (``fused.decode_edit_config``, on the file's GPU: meta "sms"), with a per-token
    estimate; the row named "act" / "var" when several match."""
    out, sms = {}, data["meta"]["sms"]
    for r in data["rows"]:
        for kind in ("act", "var"):
            if r["shape"] != "llama" or "token_x_est" not in r or "config" not in r:
                continue
            if (r["config"] == config(kind, r["H"], r["KV"], r["D"], r["B"], sms)
                    and ((r["B"], r["S"], kind) not in out or r["variant"] == kind)):
                out[(r["B"], r["S"], kind)] = r
    return out


def _describe(c: dict) -> str:
    return (f"{c['edit'].upper()}, column mode `{c['col_mode']}`, "
            f"{'register cap ' + str(c['maxnreg']) if c['maxnreg'] else 'no register cap'}"
            f"{', columns out of the split kernel' if c['cols_out'] else ''}")


def block(data: dict) -> str:
    """The ``decode-edits`` block of kernels/BENCHMARKS.md from a result file of this script: where it ran, the GPU
    kernel tests of the same call, the split-kernel configuration of each ACT / VAR row, the verdict per batch for
    the configuration that is the default now (``fused.DECODE_EDIT_CFG``; per-token estimate vs the target), the
    table."""
    from benchmarks.tables import decode

    meta, rows = data["meta"], data["rows"]
    lines = [f"Device: {meta.get('device')}, torch {meta.get('torch')}, Triton {meta.get('triton')}; "
             f"GPU kernel tests in the same call: {_tests_line(meta)}.", ""]
    alts = {r["variant"]: r["config"] for r in rows if "config" in r and r["variant"] not in ("act", "var")}
    for name, c in alts.items():
        lines.append(f"- `{name}`: {_describe(c)}")
    for (shape, B, S) in dict.fromkeys((r["shape"], r["B"], r["S"]) for r in rows):
        cs = {r["variant"]: r["config"] for r in rows if (r["shape"], r["B"], r["S"]) == (shape, B, S)
              and r["variant"] in ("act", "var") and "config" in r}
        if cs:
            lines.append(f"- {shape} {B} x {S}, the defaults when the call ran: "
                         + "; ".join(f"`{n}` = {_describe(c)}" for n, c in cs.items()))
    lines.append("")
    best = default_rows(data)
    for B in sorted({r["B"] for r in rows if r["shape"] == "llama"}):
        got, worst = [], 0.0
        for kind in ("act", "var"):
            want = next((r for (b, _, k), r in best.items() if b == B and k == kind), None)
            if want is not None:
                got.append(f"{kind.upper()} {want['token_x_est']:.3f}× (`{want['variant']}`)")
                worst = max(worst, want["token_x_est"])
        if got:
            verdict = "stretch met" if worst <= STRETCH else ("met" if worst <= TARGET else "missed")
            lines.append(f"- Llama shape, batch {B}, the default configuration: {', '.join(got)} per token "
                         f"(target ≤ {TARGET}×, stretch ≤ {STRETCH}×): **{verdict}**")
    return "\n".join(lines) + "\n\n" + decode(rows) + "\n"


def _tests_line(meta: dict) -> str:
    """The GPU test run's summary from the recorded pytest tail (its " passed" / " failed" lines; else the last two)."""
    tail = meta.get("pytest_tail", ["not recorded"])
    summary = [t for t in tail if " passed" in t or " failed" in t]
    return " / ".join(summary or tail[-2:])


def render(path: str = RESULT, page: str = BENCHMARKS, name: str = BLOCK) -> None:
    """Rewrite the block ``name`` (default ``decode-edits``) of kernels/BENCHMARKS.md from the result file."""
    from pathlib import Path

    from studies.tables import write_blocks
    with open(path) as f:
        write_blocks(Path(page), {name: block(json.load(f))})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", nargs="+", default=["llama", "smollm"])
    ap.add_argument("--rep", type=int, default=50, help="ms of each do_bench / do_bench_cudagraph run")
    ap.add_argument("--budget-s", type=float, default=1e9, help="no new row starts after this many seconds")
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                    help="of sdpa, ours, act, act_prefill, var, var_prefill, uniform and ALTERNATIVES' names")
    ap.add_argument("--pytest-log", default=None, help="the GPU test run's output (its summary goes in meta)")
    ap.add_argument("--render", nargs="?", const=RESULT, default=None, metavar="RESULT",
                    help="only rewrite kernels/BENCHMARKS.md's decode-edits block from this result file")
    ap.add_argument("--dry", action="store_true", help="CPU plumbing check under TRITON_INTERPRET=1, tiny sizes")
    ap.add_argument("--var-span", type=int, default=33, help="end of VAR's span [1, END) (session 5: 33)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--block", default=BLOCK, help="with --render: the block's name in kernels/BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.render:
        render(args.render, name=args.block)
        return 0
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        print("needs CUDA (or --dry)", file=sys.stderr)
        return 2
    if args.dry:
        def do_bench_cudagraph(fn, rep):  # noqa: ARG001 - one timed call: plumbing only
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        do_bench = do_bench_cudagraph
    else:
        from triton.testing import do_bench, do_bench_cudagraph
    dev = "cpu" if args.dry else "cuda"
    VAR_SPAN[1] = args.var_span
    rows = []
    meta = {"var_span": list(VAR_SPAN), "device": "cpu (dry run)" if args.dry else torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": __import__("triton").__version__, "argv": sys.argv, "baseline_file": BASELINE,
            "baseline_token_ms": {f"{b}x{s}": ms for (b, s), ms in _baseline().items()},
            "order": "sdpa / ours / act / var / uniform for every case first, then the alternatives",
            "sms": torch.cuda.get_device_properties(0).multi_processor_count if not args.dry else 4}
    if args.pytest_log and os.path.exists(args.pytest_log):
        with open(args.pytest_log) as f:
            meta["pytest_tail"] = [ln.strip() for ln in f.read().splitlines() if ln.strip()][-3:]

    def save():
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)

    t0 = time.time()
    cases, bases = [], {}
    for shape, H, KV, D, B, S in CASES:
        if shape in args.shapes:
            if args.dry:
                H, KV, B, S = max(2, H // 16), max(1, KV // 16), min(B, 2), 96
            cases.append((shape, H, KV, D, B, S, _variants(H, KV, D, B, S, dev)))
    core = [v for v in args.variants if v in DEFAULT_VARIANTS]
    for names in (core, [v for v in args.variants if v not in DEFAULT_VARIANTS]):   # the defaults first, every case
        for shape, H, KV, D, B, S, fns in cases:
            for name in names:
                row = {"shape": shape, "H": H, "KV": KV, "D": D, "B": B, "S": S, "variant": name}
                if config(name, H, KV, D, B, meta["sms"]):
                    row["config"] = config(name, H, KV, D, B, meta["sms"])
                if time.time() - t0 > args.budget_s:
                    row["skipped"] = "time budget"
                    rows.append(row)
                    continue
                fn = fns[name]
                try:
                    fn()
                    if not args.dry:
                        torch.cuda.synchronize()
                    runs = sorted(float(do_bench_cudagraph(fn, rep=args.rep)) for _ in range(args.repeats))
                    row["ms"] = runs[len(runs) // 2]
                    row["runs_ms"] = runs
                    eager = sorted(float(do_bench(fn, rep=args.rep)) for _ in range(args.repeats))
                    row["eager_ms"] = eager[len(eager) // 2]        # with Python launch cost (no graph)
                except Exception as e:  # noqa: BLE001 - a benchmark reports what failed
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                if name == "sdpa" and "ms" in row:
                    bases[(shape, B, S)] = row["ms"]
                base = bases.get((shape, B, S))
                if name != "sdpa" and base and "ms" in row:
                    row["x_sdpa"] = row["ms"] / base
                    row["extra_us_per_layer"] = (row["ms"] - base) * 1e3
                    tok = _baseline().get((B, S)) if shape == "llama" else None
                    if tok:  # 32 layers of the Llama-7B shape, each paying the per-layer difference
                        row["token_x_est"] = (tok + 32 * (row["ms"] - base)) / tok
                rows.append(row)
                print(json.dumps(row), flush=True)
                save()
    rows.sort(key=lambda r: [c[:6] for c in cases].index((r["shape"], r["H"], r["KV"], r["D"], r["B"], r["S"])))
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
