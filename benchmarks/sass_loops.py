"""The instruction mix of the received-mass kernel's loops in an sm_90 build, made offline (no GPU needed).

Compiles ``received_kernel.received_fwd_kernel`` for sm_90 (H100 / H200) with the installed Triton -- or another one
put first on ``sys.path`` with ``--triton`` (the device runs Triton 3.6: ``pip download triton==3.6.0`` and unzip the
wheel) -- at the recorded d 64 defaults (``tiles.RECEIVED_TILES`` / ``RECEIVED_SWITCHES``: bf16, key-major, FMA, TMA
Q loads, LSE2, the register cap) unless overridden, disassembles it with the Triton wheel's ``cuobjdump`` and, per
loop (a backward branch), counts the SASS opcodes: how many instructions a thread issues per exp2 (``MUFU.EX2``).
The fully visible query blocks' loop is the one without ``FSEL`` (no masking).

``--kernel prefill`` builds the prefill kernel instead (``--variant stats``: lse, entropy, key-0 mass and one span with
the recorded statistics switches, as the statistics call launches it; ``--variant output``), ``--set NAME=VALUE``
overriding any of its constexprs; SASS_DUMP=FILE also writes the whole listing.

    PYTHONPATH=. python -m benchmarks.sass_loops --triton /tmp/t36 --out benchmarks/results/sass_received_d64.json
    PYTHONPATH=. python -m benchmarks.sass_loops --triton /tmp/t36 --kernel prefill --set TMAX=false
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile


def loops(sass: str) -> list:
    """[{start, end, instructions, mufu_ex2, ops}] per backward branch of a cuobjdump -sass listing."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    at = {a: i for i, (a, _) in enumerate(ins)}
    out = []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"BRA (0x[0-9a-f]+)", text)
        if not m or int(m.group(1), 16) >= a or int(m.group(1), 16) not in at:
            continue
        body = ins[at[int(m.group(1), 16)]:i + 1]
        if len(body) < 8:                    # barrier spin loops
            continue
        ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for _, t in body)
        out.append({"start": hex(body[0][0]), "end": hex(a), "instructions": len(body),
                    "mufu_ex2": sum("MUFU.EX2" in t for _, t in body), "ops": dict(ops.most_common())})
    return out


def _jit(kernel):
    """The JITFunction under a kernel's ``triton.heuristics`` wrapper."""
    while type(kernel).__name__ != "JITFunction":
        kernel = kernel.fn
    return kernel


def _compile_sm90(fn, sig: dict, cx: dict, aligned: tuple, tile: tuple, maxnreg: int) -> tuple:
    """(cubin bytes, Triton version) of JITFunction fn for sm_90: runtime arguments typed by sig, constexprs cx, the
    ``aligned`` arguments marked 16-divisible, num_warps / num_stages from tile (BT, BS, warps, stages), an optional
    register cap."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {**sig, **dict.fromkeys(cx, "constexpr")}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if n in aligned}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in cx.items()}, attrs=attrs)
    opts = dict(num_warps=tile[2], num_stages=tile[3], **({"maxnreg": maxnreg} if maxnreg else {}))
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["cubin"], triton.__version__


def build(tile: tuple, maxnreg: int, extra: dict) -> tuple:
    """(cubin bytes, Triton version) of the received kernel for sm_90 at tile (BT, BS, warps, stages), D = 64, bf16."""
    from kernels.attention import received_kernel

    BT, BS = tile[:2]
    D = 64
    sig = dict(q="*bf16", k="*bf16", lse="*fp32", rsum="*fp32", key_start="*i64", qd=f"tensordesc<bf16[{BT},{D}]>",
               s_qb="i32", s_qh="i32", s_qt="i32", s_kb="i32", s_kh="i32", s_ks="i32", scale="fp32", softcap="fp32",
               window="i32", T="i32", S="i32")
    amma = bool(extra.get("AMMA"))
    if amma:
        sig["ad"] = f"tensordesc<bf16[{BT},16]>"
    cx = dict(ld=None, **({} if amma else {"ad": None}), H=9, G=3, D=D, BT=BT, BS=BS, KEYMAJOR=True, FMA=True,
              NPOLY=0, PMIX=0, HMAJ=False, LSE2=True, PIPE=False, USE_WINDOW=False, USE_SOFTCAP=False, USE_TMA=True,
              USE_LTMA=False, NQ=1, PREC="tf32", UPCAST=False, LPRE=False, UNROLL=1, AMMA=False, RLANES=False,
              RL=False)
    cx.update(extra)
    aligned = ("q", "k", "lse", "rsum", "key_start", "s_qb", "s_qh", "s_qt", "s_kb", "s_kh", "s_ks", "T", "S")
    return _compile_sm90(_jit(received_kernel.received_fwd_kernel), sig, cx, aligned, tile, maxnreg)


def build_prefill(tile: tuple, maxnreg: int, variant: str, extra: dict, D: int = 64) -> tuple:
    """(cubin bytes, Triton version) of the prefill kernel for sm_90 at tile (BT, BS, warps, stages), head_dim D, bf16,
    with the recorded switches of ``variant`` ("stats": lse, entropy, key-0 mass and one span, as the statistics call
    launches it; "output": output only); ``extra`` overrides constexprs (e.g. {"TMAX": False})."""
    from kernels.attention import prefill_kernel, tiles

    BT, BS = tile[:2]
    sw = tiles.prefill_switches(variant, D)
    stats = variant == "stats"
    f32, none = "*fp32", None
    sig = dict(q="*bf16", k="*bf16", v="*bf16", kd=f"tensordesc<bf16[{BS},{D}]>", vd=f"tensordesc<bf16[{BS},{D}]>",
               o="*bf16", lse=f32, key_start="*i64")
    if stats:
        sig.update(ent=f32, spm=f32, snk=f32, sink_pos="*i64", spans="*i64")
    for n in ("s_qb", "s_qh", "s_qt", "s_kb", "s_kh", "s_ks", "s_vb", "s_vh", "s_vs", "s_ob", "s_ot", "s_oh"):
        sig[n] = "i32"
    sig.update(scale="fp32", softcap="fp32", window="i32", T="i32", S="i32")
    cx = {n: none for n in ("adq", "col_idx", "col_scale", "head_uniform", "head_mean", "head_mean_on", "head_scale",
                            "redist_span", "redist_from", "redist_keep", "redist_rho", "redist_min_mass")}
    if not stats:
        cx.update(ent=none, spm=none, snk=none, sink_pos=none, spans=none)
    cx.update(D=D, BT=BT, BS=BS, NS=1 if stats else 0, NSP=2, P=1 if stats else 0, C=0, CP=2,
              USE_WINDOW=False, USE_SOFTCAP=False, STORE_LSE=True, USE_ENTROPY=stats, USE_SPAN=stats, USE_SINK=stats,
              USE_COLS=False, USE_UNIFORM=False, USE_HMEAN=False, USE_HSCALE=False, USE_VAR=False, USE_TMA=True,
              SEG=sw["seg"], SPAN_POST=sw["span_post"], RELOAD_Q=sw["reload_q"], FMA=sw["fma"], REV=sw["rev"],
              LSE_NEG2=stats, LOOP_SPAN=stats and not sw["span_post"], SEG_ON=False, PREC="tf32", UPCAST=False,
              STORE_AD=False, TMAX=sw["tmax"], LSUM=sw["lsum"], LS=sw["lsum"], FIXREF=sw["fixref"],
              H=32 if D > 64 else 9, G=1 if D > 64 else 3)
    cx.update(extra)
    aligned = ("q", "k", "v", "o", "lse", "ent", "spm", "snk", "key_start", "sink_pos", "spans", "s_qb", "s_qh",
               "s_qt", "s_kb", "s_kh", "s_ks", "s_vb", "s_vh", "s_vs", "s_ob", "s_ot", "s_oh", "T", "S")
    return _compile_sm90(_jit(prefill_kernel.attention_fwd_kernel), sig, cx, aligned, tile, maxnreg)


def _constexpr(text: str):
    """NAME=VALUE of --set: VALUE as a bool, int or the string itself."""
    name, val = text.split("=", 1)
    lo = val.lower()
    return name, (lo == "true") if lo in ("true", "false") else (int(val) if val.lstrip("-").isdigit() else val)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--triton", default=None, help="a folder holding another Triton package (put first on sys.path)")
    ap.add_argument("--kernel", choices=("received", "prefill"), default="received")
    ap.add_argument("--variant", default="stats", help="prefill: the tile table's variant (stats / output)")
    ap.add_argument("--tile", default=None, help="BT,BS,warps,stages (default: the recorded tile of the head_dim)")
    ap.add_argument("--head-dim", type=int, default=64, help="prefill: 64 (SmolLM2 shape, 9 / 3 heads) or 128 (Llama "
                    "shape, 32 / 32)")
    ap.add_argument("--maxnreg", type=int, default=None, help="register cap (default: the recorded switch)")
    ap.add_argument("--lpre", action="store_true", help="the received kernel's lpre switch")
    ap.add_argument("--unroll", type=int, default=1, help="the received kernel's unroll switch")
    ap.add_argument("--amma", action="store_true", help="the received kernel's amma switch")
    ap.add_argument("--rlanes", action="store_true", help="the received kernel's rlanes switch")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="prefill: override one constexpr of the build (repeatable)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.triton:
        sys.path.insert(0, os.path.abspath(args.triton))
    from kernels.attention import tiles

    given = tuple(int(x) for x in args.tile.split(",")) if args.tile else None
    if args.kernel == "prefill":
        tile = given or tiles.PREFILL_TILES[args.variant][args.head_dim]
        cap = tiles.prefill_switches(args.variant, args.head_dim)["maxnreg"] if args.maxnreg is None else args.maxnreg
        sets = dict(_constexpr(x) for x in args.set)
        cubin, version = build_prefill(tile, cap, args.variant, sets, args.head_dim)
        about = {"kernel": "attention_fwd_kernel", "variant": args.variant, "set": sets}
    else:
        tile = given or tiles.RECEIVED_TILES[64]
        cap = tiles.RECEIVED_SWITCHES[64]["maxnreg"] if args.maxnreg is None else args.maxnreg
        cubin, version = build(tile, cap, {"LPRE": args.lpre, "UNROLL": args.unroll, "AMMA": args.amma,
                                          "RLANES": args.rlanes, "RL": args.rlanes})
        about = {"kernel": "received_fwd_kernel", "lpre": args.lpre, "unroll": args.unroll, "amma": args.amma,
                 "rlanes": args.rlanes}
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    if os.environ.get("SASS_DUMP"):
        with open(os.environ["SASS_DUMP"], "w") as f:
            f.write(sass)
    usage = res.strip().splitlines()[-1].strip()
    found = loops(sass)
    doc = {**about, "target": "sm_90", "triton": version, "tile": tile, "maxnreg": cap,
           "head_dim": args.head_dim if args.kernel == "prefill" else 64,
           "dtype": "bf16", "resource_usage": usage, "loops": found,
           "command": "PYTHONPATH=. python -m benchmarks.sass_loops " + " ".join(sys.argv[1:] if argv is None else argv)}
    for lp in found:
        per = lp["instructions"] / lp["mufu_ex2"] if lp["mufu_ex2"] else float("nan")
        print(f"loop {lp['start']}..{lp['end']}: {lp['instructions']} instructions, {lp['mufu_ex2']} MUFU.EX2 "
              f"({per:.2f} per exp2); masked: {'FSEL' in lp['ops']}")
    print(usage)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
