"""Markdown tables (and the winners' tile table) from the JSON that ``benchmarks.bench_sweep`` wrote.

    python -m benchmarks.sweep_report benchmarks/results/sweep_h200.json            # tables for BENCHMARKS.md
    python -m benchmarks.sweep_report benchmarks/results/sweep_h200.json --winners  # the tile table to record
    python -m benchmarks.sweep_report - --write    # session 5: the generated blocks of kernels/BENCHMARKS.md

Targets (issue #15, N = 65,536, × cuDNN SDPA in the same run): output only ≤ 1.12, ACT edit ≤ 1.15,
full statistics ≤ 1.7; decode step with ACT / VAR ≤ 1.05 per token (Llama shape, batch 1 and 16).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import defaultdict
from typing import Optional

from benchmarks import tables

TARGETS = {"output": 1.12, "edit": 1.15, "stats": 1.7}
DECODE_TARGET = 1.05
D_OF = {"llama": 128, "smollm": 64}
FLUSH_GIB = 0.25   # bench_sweep's L2-flush buffer (256 MiB), allocated for the whole run: not part of a call's peak


def _sw(opts: dict) -> str:
    on = [k for k in ("seg", "span_post", "reload_q", "tma", "fma", "rev", "tmax", "lsum") if opts.get(k)]
    on += [k for k in ("r_keymajor", "r_fma", "r_tma", "r_ltma", "r_lse2", "r_hmaj", "r_pipe", "r_lpre", "r_amma",
                       "r_rlanes", "r_gluon") if opts.get(k)]
    on += [f"{k}={opts[k]}" for k in ("p_maxnreg", "r_poly", "r_pmix", "r_maxnreg") if opts.get(k)]
    on += [f"r_unroll={opts['r_unroll']}" for _ in (0,) if (opts.get("r_unroll") or 1) > 1]
    if opts.get("gtile"):                                    # session 11's Gluon tile (BT, NBUF, WS)
        on.append("gtile=(" + ", ".join(str(x) for x in opts["gtile"]) + ")")
    if not opts:
        return "recorded defaults"
    return "+".join(on) if on else "none"


def _tile(opts: dict) -> str:
    parts = []
    if "tile" in opts:
        parts.append("(" + ", ".join(str(x) for x in opts["tile"]) + ")")
    if "rtile" in opts:
        parts.append("received (" + ", ".join(str(x) for x in opts["rtile"]) + ")")
    return " ".join(parts) if parts else "recorded"


def headline(rows) -> str:
    out = ["| shape | method | tile (BT, BS, warps, stages) | switches | ms (median of do_bench runs) | × SDPA | "
           "peak GiB − flush buffer | inputs+out GiB |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("kind") != "headline":
            continue
        if "ms" not in r:
            out.append(f"| {r['shape']} | {r['method']} | | | {r.get('error', r.get('skipped', ''))} | | | |")
            continue
        x = f"{r['x_sdpa']:.3f}" if "x_sdpa" in r else "1.000"
        o = r.get("resolved") or r["opts"]                 # the tile and switches the call ran with
        tile, sw = ("", "") if r["variant"] == "sdpa" else (_tile(o), _sw(o))
        out.append(f"| {r['shape']} | {r['method']} | {tile} | {sw} | {r['ms']:.3f} | {x} | "
                   f"{r['peak_gib'] - FLUSH_GIB:.3f} | {r['io_gib']:.3f} |")
    return "\n".join(out)


def sweep(rows) -> str:
    """Every sweep candidate, grouped by shape and variant, fastest first."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("kind") == "sweep":
            groups[(r["shape"], r["variant"])].append(r)
    out = ["| shape | variant | tile | switches | ms (median of 5) |", "|---|---|---|---|---:|"]
    not_run = defaultdict(int)
    for (shape, variant), rs in groups.items():
        for r in sorted(rs, key=lambda r: r.get("ms", float("inf"))):
            if "ms" in r or "error" in r:
                val = f"{r['ms']:.3f}" if "ms" in r else r["error"]
                out.append(f"| {shape} | {variant} | {_tile(r['opts'])} | {_sw(r['opts'])} | {val} |")
            else:
                not_run[f"{shape} {variant}"] += 1
    if not_run:
        out.append("\nNot run (time budget): " + ", ".join(f"{k} {n}" for k, n in not_run.items()) + " candidates.")
    return "\n".join(out)


def decode(rows) -> str:
    return tables.decode([r for r in rows if r.get("kind") == "decode"])


def _best_headline(rows, shape, variant):
    """The faster of the before / best headline rows of a variant (what the recorded table now gives)."""
    rs = [r for r in rows if r.get("kind") == "headline" and r["shape"] == shape and r["variant"] == variant
          and "ms" in r and r["method"] in (f"{variant}_before", f"{variant}_best", f"{variant}_default")]
    return min(rs, key=lambda r: r["ms"]) if rs else None


def targets(rows) -> str:
    out = ["| target | Llama-7B shape | SmolLM2 shape | verdict |", "|---|---|---|---|"]
    for variant, bound in TARGETS.items():
        cells, met = [], []
        for shape in ("llama", "smollm"):
            r = _best_headline(rows, shape, variant)
            if r is None or "x_sdpa" not in r:
                cells.append("not measured")
                met.append(False)
                continue
            cells.append(f"{r['x_sdpa']:.3f}× ({r['ms']:.2f} ms)")
            met.append(r["x_sdpa"] <= bound)
        verdict = "met" if all(met) else ("met on " + ", ".join(s for s, m in zip(("Llama", "SmolLM2"), met) if m)
                                          if any(met) else "missed")
        out.append(f"| {variant} ≤ {bound}× | {cells[0]} | {cells[1]} | {verdict} |")
    for B in (1, 16) if any(r.get("kind") == "decode" for r in rows) else ():
        rs = [r for r in rows if r.get("kind") == "decode" and r["shape"] == "llama" and r["B"] == B
              and "token_x_est" in r and r["variant"].split("_")[0] in ("act", "var")]
        if not rs:
            out.append(f"| decode ACT / VAR, batch {B} ≤ {DECODE_TARGET}× per token | not measured | | |")
            continue
        best = {}
        for r in rs:
            kind = r["variant"].split("_")[0]
            if kind not in best or r["token_x_est"] < best[kind]["token_x_est"]:
                best[kind] = r
        cell = ", ".join(f"{k.upper()} {r['token_x_est']:.3f}× ({r['variant']})" for k, r in best.items())
        ok = all(r["token_x_est"] <= DECODE_TARGET for r in best.values())
        out.append(f"| decode ACT / VAR, batch {B} ≤ {DECODE_TARGET}× per token | {cell} | (Llama shape only) | "
                   f"{'met' if ok else 'missed'} |")
    return "\n".join(out)


def winners(rows) -> dict:
    """{variant: {head_dim: opts}} of the fastest headline per variant and shape."""
    out = defaultdict(dict)
    for shape, D in D_OF.items():
        for variant in TARGETS:
            r = _best_headline(rows, shape, variant)
            if r is not None:
                out[variant][D] = {"from": r["method"], "ms": round(r["ms"], 3), **r["opts"]}
    dec = {}
    for B in (1, 16):
        for kind in ("act", "var"):
            rs = {r["variant"]: r["ms"] for r in rows if r.get("kind") == "decode" and r["shape"] == "llama"
                  and r["B"] == B and "ms" in r and r["variant"] in (kind, kind + "_block_test")}
            if len(rs) == 2:
                dec[f"{kind}_b{B}"] = {"block_test_us": round(rs[kind + "_block_test"] * 1e3, 1),
                                       "masked_chunks_us": round(rs[kind] * 1e3, 1)}
    out["decode"] = dec
    return dict(out)


RESULTS = "benchmarks/results"
# generated blocks of kernels/BENCHMARKS.md: name -> the bench_sweep result file it renders
BLOCKS = {"prefill-sweep-call1": f"{RESULTS}/prefill_sweep_h200_call1.json",
          "prefill-sweep-call2": f"{RESULTS}/prefill_sweep_h200_call2.json",
          "prefill-sweep-s6-call1": f"{RESULTS}/prefill_sweep_h200_s6.json",
          "prefill-sweep-s6-call2": f"{RESULTS}/prefill_sweep_h200_s6_call2.json",
          "prefill-sweep-s7": f"{RESULTS}/prefill_sweep_h200_s7.json",
          "prefill-sweep-s10": f"{RESULTS}/prefill_sweep_h200_s10.json",
          "prefill-sweep-s11-call1": f"{RESULTS}/prefill_sweep_h200_s11_call1.json",
          "prefill-sweep-s11-call2": f"{RESULTS}/prefill_sweep_h200_s11_call2_gluon.json",
          "prefill-sweep-s12-call1": f"{RESULTS}/prefill_sweep_h200_s12_call1.json",
          "ab-s12-call3": f"{RESULTS}/ab_h200_s12_call3.json",
          "ab-s12-call4": f"{RESULTS}/ab_h200_s12_call4.json",
          "ab-s13-call1": f"{RESULTS}/ab_h200_s13_call1.json",
          "ab-s13-call3": f"{RESULTS}/ab_h200_s13_call3.json",
          "ab-s14-call1": f"{RESULTS}/ab_h200_s14_call1.json",
          "ab-s14-call2": f"{RESULTS}/ab_h200_s14_call2.json",
          "ab-s14-call3": f"{RESULTS}/ab_h200_s14_call3.json"}


PLAIN_ARMS = ("received", "stats_fwd", "stats", "output", "edit")      # AB arms without a switch in their name


def _median_ci(xs: list, n: int = 2000, seed: int = 0) -> tuple:
    """(median, 2.5 %, 97.5 % bootstrap quantiles of the median) of xs, with a fixed seed."""
    rng = random.Random(seed)
    boot = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return statistics.median(xs), boot[int(0.025 * n)], boot[int(0.975 * n) - 1]


def ab_rounds(rows) -> dict:
    """{(shape, arm): {round: ms}} of the interleaved rounds (bench_sweep --ab / --ab-only), in the rows' order."""
    ms = defaultdict(dict)
    for r in rows:
        if r.get("kind") == "ab" and "ms" in r:
            ms[(r["shape"], r["method"])][r["round"]] = r["ms"]
    return dict(ms)


def ab_ratio(ms: dict, a: tuple, b: tuple) -> Optional[tuple]:
    """(median, 2.5 %, 97.5 %) of arm a's per-round ratio to arm b (``ab_rounds`` keys), None without shared rounds."""
    both = sorted(set(ms.get(a, {})) & set(ms.get(b, {})))
    return _median_ci([ms[a][i] / ms[b][i] for i in both]) if both else None


def ab(rows) -> str:
    """Interleaved rounds (bench_sweep --ab / --ab-only): per arm the median ms over rounds, its range, and two
    per-round ratios with 95 % bootstrap intervals of their medians: against SDPA in the same round, and against the
    plain arm it extends (``stats_tmax`` and ``stats_lazy_mix2`` against ``stats``) in the same round."""
    ms = ab_rounds(rows)
    order = list(ms)

    def ratio(a, b) -> str:
        r = ab_ratio(ms, a, b)
        return f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" if r else ""

    out = ["| shape | arm | rounds | ms (median) | min – max | × SDPA, same round (95 % CI) | "
           "× the plain arm, same round (95 % CI) |", "|---|---|---:|---:|---|---|---|"]
    for shape, arm in order:
        v = list(ms[(shape, arm)].values())
        plain = [p for p in PLAIN_ARMS if arm.startswith(p + "_")] if arm not in PLAIN_ARMS else []
        base = (shape, max(plain, key=len)) if plain else None
        vs_sdpa = ratio((shape, arm), (shape, "sdpa")) if arm != "sdpa" and (shape, "sdpa") in ms else ""
        vs_base = ratio((shape, arm), base) if base in ms else ""
        out.append(f"| {shape} | {arm} | {len(v)} | {statistics.median(v):.3f} | {min(v):.2f} – {max(v):.2f} | "
                   f"{vs_sdpa} | {vs_base} |")
    return "\n".join(out)


def render(data: dict) -> str:
    """The markdown of one bench_sweep result file: run line, targets, headlines, (decode,) every candidate."""
    rows, meta = data["rows"], data["meta"]
    warm = [r for r in rows if r.get("kind") == "warm"]
    out = [f"Device: {meta.get('device')}, torch {meta.get('torch')}, Triton {meta.get('triton')}, N = {meta.get('N')}; "
           f"GPU kernel tests in the same call: {' '.join(meta.get('pytest_tail', ['not recorded'])[-2:])}"]
    if warm:
        out.append("In-process warm-up before timing: " + "; ".join(
            f"{r['shape']} {r['kernels']} of {r['of']} launches in {r['s']} s" for r in warm) + ".")
    if any(r.get("kind") == "headline" for r in rows):
        out += ["", "Targets (the faster of the recorded-default and winner headlines of each variant):", "",
                targets(rows), "",
                f"Headlines (median of {meta.get('repeats', 3)} `do_bench`, cuDNN SDPA in the same run):", "",
                headline(rows)]
    if any(r.get("kind") == "decode" for r in rows):
        out += ["", "Decode step with edits, per layer (CUDA-graph replay):", "", decode(rows)]
    if any(r.get("kind") == "sweep" for r in rows):
        out += ["", "Every sweep candidate (median of 5 calls, L2 flushed):", "", sweep(rows)]
    if any(r.get("kind") == "ab" for r in rows):
        out += ["", "Interleaved rounds (one `do_bench` per arm per round, the arms in a fixed order):", "", ab(rows)]
    return "\n".join(out) + "\n"


def write(md: str = "kernels/BENCHMARKS.md") -> list:
    """Render every block of ``BLOCKS`` whose file exists into ``md``; returns the names written."""
    import os
    from pathlib import Path

    from studies.tables import write_blocks
    blocks = {}
    for name, path in BLOCKS.items():
        if os.path.exists(path):
            with open(path) as f:
                blocks[name] = render(json.load(f))
    return write_blocks(Path(md), blocks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--winners", action="store_true")
    ap.add_argument("--write", action="store_true", help="write the BLOCKS into kernels/BENCHMARKS.md (file ignored)")
    args = ap.parse_args(argv)
    if args.write:
        print("wrote", write())
        return 0
    with open(args.file) as f:
        data = json.load(f)
    rows = data["rows"]
    if args.winners:
        print(json.dumps(winners(rows), indent=1))
        return 0
    meta = data["meta"]
    print(f"Device: {meta.get('device')}, torch {meta.get('torch')}, Triton {meta.get('triton')}, N = {meta.get('N')}; "
          f"GPU kernel tests in the same call: {' '.join(meta.get('pytest_tail', ['not recorded'])[-2:])}")
    print("\n### Targets\n")
    print(targets(rows))
    print("\n### Headline (prefill, batch 1, causal, bf16)\n")
    print(headline(rows))
    print("\n### Decode step with edits, per layer (CUDA-graph replay)\n")
    print(decode(rows))
    print("\n### Every sweep candidate\n")
    print(sweep(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
