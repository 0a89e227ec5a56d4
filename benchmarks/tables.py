"""Markdown tables for kernels/BENCHMARKS.md from the JSON files the benchmark scripts wrote.

    python -m benchmarks.tables decode benchmarks/results/decode_edits_h200.json
    python -m benchmarks.tables attention benchmarks/results/attention_64k_h200_call1.json
    python -m benchmarks.tables memory benchmarks/results/seam_memory_h200.json
    python -m benchmarks.tables mask benchmarks/results/mask_memory_cpu.json
    python -m benchmarks.tables tiles benchmarks/results/tiles_h200.json
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "kernels" / "BENCHMARKS.md"


def write_json(path: str, doc) -> None:
    """A benchmark's result document to path (its folder made), indented."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)


def render_file(path: str, render, block=None) -> str:
    """render(the JSON document at path) -> markdown; with block, also written into that block of
    kernels/BENCHMARKS.md (``studies.tables.write_blocks``). Printed and returned."""
    with open(path) as f:
        table = render(json.load(f))
    if block:
        from studies.tables import write_blocks
        write_blocks(BENCHMARKS_MD, {block: table})
    print(table)
    return table


def decode(rows) -> str:
    """Decode-step rows (bench_decode_edits, or bench_sweep's kind == "decode"): µs per layer, × SDPA
    (1.00 where the row is SDPA itself), estimated per-token factor; a failed or skipped row says why."""
    n = max((len(r.get("runs_ms") or ()) for r in rows), default=0) or 3          # the call's runs per row
    out = [f"| shape | batch x keys | variant | µs per layer (median of {n}) | × SDPA | est. per token × unmodified |",
           "|---|---|---|---:|---:|---:|"]
    for r in rows:
        if "ms" not in r:
            out.append(f"| {r['shape']} | {r['B']} x {r['S']} | {r['variant']} | {r.get('error', r.get('skipped', ''))} | | |")
            continue
        tok = f"{r['token_x_est']:.3f}" if "token_x_est" in r else ""
        x = f"{r['x_sdpa']:.2f}" if "x_sdpa" in r else "1.00"
        out.append(f"| {r['shape']} | {r['B']} x {r['S']} | {r['variant']} | {r['ms'] * 1e3:.1f} | {x} | {tok} |")
    return "\n".join(out)


def attention(rows) -> str:
    out = ["| shape | N | method | ms (median of 3) | × SDPA | peak GiB |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        if "ms" in r:
            out.append(f"| {r['shape']} | {r['N']} | {r['method']} | {r['ms']:.3f} | {r.get('x_sdpa', float('nan')):.2f} "
                       f"| {r['peak_gib']:.2f} |")
    return "\n".join(out)


def memory(rows) -> str:
    out = ["| model shape | tokens | left pad | weights GiB | plain SDPA peak GiB | capture peak GiB | plain s | capture s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = lambda k: f"{r[k]:.2f}" if isinstance(r.get(k), float) else r.get(k.replace('_peak_gib', '_error').replace('_s', '_error'), "")  # noqa: E731
        out.append(f"| {r['shape']} | {r['N']} | {r['left_pad']} | {f('weights_gib')} | {f('plain_sdpa_peak_gib')} | "
                   f"{f('capture_peak_gib')} | {f('plain_sdpa_s')} | {f('capture_s')} |")
    return "\n".join(out)


def mask(rows) -> str:
    out = ["| case | tokens | dense N x N mask (analytic) MiB | SDPA mask: extra peak MiB | largest tensor MiB | s "
           "| compact: extra peak MiB | largest tensor MiB | s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    g = lambda r, k: f"{r[k]:.1f}" if k in r else "not run"  # noqa: E731
    for r in rows:
        out.append(f"| {r['case']} | {r['N']} | {r['dense_mask_bytes_analytic'] / 2 ** 20:.0f} | "
                   f"{g(r, 'dense_extra_peak_mib')} | {g(r, 'dense_largest_tensor_mib')} | {g(r, 'dense_s')} | "
                   f"{g(r, 'compact_extra_peak_mib')} | {g(r, 'compact_largest_tensor_mib')} | {g(r, 'compact_s')} |")
    return "\n".join(out)


def tiles(rows) -> str:
    best = defaultdict(list)
    for r in rows:
        if "ms" in r:
            best[(r["shape"], r["D"], r["tune"])].append((r["ms"], tuple(r["cfg"])))
    out = ["| shape | d | variant | best tile (BT, BS, warps, stages) | ms | runner-up | ms |", "|---|---:|---|---|---:|---|---:|"]
    for (shape, D, var), v in best.items():
        v.sort()
        out.append(f"| {shape} | {D} | {var} | {v[0][1]} | {v[0][0]:.3f} | {v[1][1]} | {v[1][0]:.3f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = argv or sys.argv[1:]
    kind, path = argv[0], argv[1]
    with open(path) as f:
        rows = json.load(f)["rows"]
    print({"decode": decode, "attention": attention, "memory": memory, "mask": mask, "tiles": tiles}[kind](rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
