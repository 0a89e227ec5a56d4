"""Tables of the end-to-end benchmark (``benchmarks/bench_e2e_table.py``) for kernels/BENCHMARKS.md and the
README's headline line, computed only from the JSON files that script wrote.

Blocks (``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->``):
  kernels/BENCHMARKS.md: e2e-generate, e2e-capture, e2e-static, e2e-capture-cpu, e2e-python-calls
  README.md:             e2e-headline
``tests/test_study_tables.py`` recomputes them and fails when a committed file drifts from its results.

    PYTHONPATH=. python benchmarks/e2e_report.py        # rewrite the blocks from benchmarks/results/
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from studies.tables import read_blocks, write_blocks  # noqa: F401 (read_blocks: the drift test)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GPU, OLD, CPU = "e2e_h200.json", "e2e_old_h200.json", "e2e_cpu.json"

LABELS = {
    "plain": "plain `generate` (SDPA, no probe)",
    "seam_noop": "seam on every layer, no edit (HeadScale α=1, every head)",
    "scale1_onehead": "HeadScale α=1 on one head (L4H7)",
    "headscale": "HeadScale ×2, head 0 of every layer",
    "headmask": "HeadMask uniform, one head (L4H7)",
    "act": "ACT (layers 2..6, every head)",
    "var": "VAR: Redistribute key 0 → span [1, 1024), layers 2..6",
}
METHODS = [("native", "probe native"), ("nnsight", "nnsight backend"), ("transformer_lens", "TransformerLens backend"),
           ("eager_output_attentions", "eager `output_attentions=True`"), ("sdpa_forward", "plain SDPA forward (no statistics)")]


def _load(folder: Path, name: str) -> dict:
    p = Path(folder) / name
    return json.loads(p.read_text()) if p.exists() else {"meta": {}, "rows": []}


def _md(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def _gen_rows(doc: dict) -> dict:
    return {(r["batch"], r["variant"]): r for r in doc["rows"] if r.get("part") == "gen" and "tokens_per_s" in r}


def generate_table(folder: Path) -> str:
    new, old = _gen_rows(_load(folder, GPU)), _gen_rows(_load(folder, OLD))
    variants = [v for v in LABELS if any(k[1] == v for k in new)]
    plain = new.get((1, "plain"))
    rows = []
    for v in variants:
        cells = [LABELS[v]]
        for B in (1, 16):
            r = new.get((B, v))
            cells += [f"{r['tokens_per_s']:.1f}", f"{r['x_slower']:.3f}"] if r else ["–", "–"]
        r = new.get((1, v))
        cells.append(f"{r['syncs_per_step']:.2f}" if r and "syncs_per_step" in r else "–")
        cells.append(f"{1e3 / r['tokens_per_s'] - 1e3 / plain['tokens_per_s']:+.2f}" if r and plain else "–")
        if old:
            o = old.get((1, v))
            cells += [f"{o['tokens_per_s']:.1f} ({o['x_slower']:.3f})" if o else "–",
                      f"{o['syncs_per_step']:.2f}" if o and "syncs_per_step" in o else "–"]
        rows.append(cells)
    header = ["variant", "batch 1 tok/s", "× plain", "batch 16 tok/s per row", "× plain", "syncs / step (b1)",
              "b1 ms per token vs plain"]
    if old:
        header += ["before (main): b1 tok/s (× plain)", "before: syncs / step"]
    return _md(header, rows)


def _cell(r: dict) -> str:
    if r is None:
        return "–"
    st = r.get("status", "")
    if st == "ok":
        peak = r.get("peak_gib_over_weights")
        return f"{r['wall_s']:.3f} s" + (f", {peak:.2f} GiB" if peak is not None else "")
    if st.startswith("not run") or st.startswith("not importable"):
        return "not run"
    if st == "out of memory":
        return "**out of memory**"
    if "PROBE_MAX_MAP_BYTES" in st:
        return "refused (map > limit)"
    return f"failed: {st[:60]}"


def capture_table(folder: Path, name: str = GPU) -> str:
    doc = _load(folder, name)
    rows = [r for r in doc["rows"] if r.get("part") == "table"]
    keys = []
    for r in rows:
        if (r["model"], r["tokens"]) not in keys:
            keys.append((r["model"], r["tokens"]))
    have = [(m, lab) for m, lab in METHODS if any(r["method"] == m for r in rows)]
    by = {(r["model"], r["tokens"], r["method"]): r for r in rows}
    out = [[DISPLAY.get(model.split(" (")[0], model), f"{n:,}"] + [_cell(by.get((model, n, m))) for m, _ in have] for model, n in keys]
    return _md(["model", "tokens"] + [lab for _, lab in have], out)


def static_table(folder: Path) -> str:
    rows = [r for r in _load(folder, GPU)["rows"] if r.get("part") == "static"]
    if not rows:
        return "Not measured on the H200: the call's time budget ran out before this part (CPU: tested equal to the dynamic cache).\n"
    out = [[LABELS.get(r["variant"], r["variant"]), "yes" if r.get("compile") else "no (disable_compile)",
            f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else r.get("status", "")[:80],
            {True: "yes", False: "**no**"}.get(r.get("same_tokens_as_dynamic"), "–")] for r in rows]
    return _md(["variant", "compiled", "tok/s", "same tokens as the dynamic cache"], out)


DISPLAY = {"llama7b-shape-8layers": "Llama-7B shape, 8 layers (random init)", "SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct (real weights)"}
NAMES = {"llama7b-shape-8layers": "a random-init Llama-7B-shaped model, 8 layers", "SmolLM2-135M-Instruct": "SmolLM2"}


def _short(r: dict) -> str:
    if r is None:
        return "–"
    if r.get("status") == "ok":
        mem = r.get("peak_gib_over_weights")
        return f"{r['wall_s']:.2f} s" + (f" / {mem:.1f} GiB" if mem is not None else "")
    return "out of memory" if r.get("status") == "out of memory" else "not run"


def headline(folder: Path) -> str:
    doc = _load(folder, GPU)
    cap = {(r["model"].split(" (")[0], r["tokens"], r["method"]): r for r in doc["rows"] if r.get("part") == "table"}
    gen = _gen_rows(doc)
    parts = []
    for model in ("SmolLM2-135M-Instruct", "llama7b-shape-8layers"):
        ok = [k for k in cap if k[0] == model and k[2] == "native" and cap[k].get("status") == "ok"]
        if not ok:
            continue
        n = max(k[1] for k in ok)
        others = "; ".join(f"{lab} {_short(cap.get((model, n, m)))}" for m, lab in
                           (("eager_output_attentions", "eager `output_attentions`"), ("nnsight", "nnsight"))
                           if (model, n, m) in cap)
        parts.append(f"sink capture of one {n:,}-token prompt on {NAMES[model]}: probe {_short(cap[(model, n, 'native')])}"
                     + (f" ({others})" if others else ""))
    spans = []
    for B in (1, 16):
        xs = [gen[k]["x_slower"] for k in gen if k[0] == B and k[1] != "plain"]
        if xs:
            spans.append(f"{min(xs):.2f}–{max(xs):.2f}× at batch {B}")
    if spans:
        parts.append("`generate` inside `intervene` (no-op seam, HeadScale, HeadMask, ACT, VAR; 4,096-token prompt) takes "
                     + ", ".join(spans) + " the plain model's time")
    if not parts:
        return ""
    return ("On one H200 (wall time / peak memory over the weights): " + "; ".join(parts)
            + ". Tables: `kernels/BENCHMARKS.md`, end-to-end section.\n")


def python_calls_table(folder: Path) -> str:
    now = {r["case"]: r["python_calls_per_step"] for r in _load(folder, "seam_python_calls_cpu.json")["rows"]}
    before = {r["case"]: r["python_calls_per_step"]
              for r in _load(folder, "seam_python_calls_cpu_before_plan.json")["rows"]}
    rows = [[c, f"{before[c]:.0f}" if c in before else "–", f"{now[c]:.0f}"] for c in now]
    return _md(["case", "Python calls per decode step, before the plan", "now"], rows)


def tables(folder: Path = RESULTS) -> dict:
    """{file: {block name: markdown}} from the result files in ``folder``."""
    return {
        "kernels/BENCHMARKS.md": {"e2e-generate": generate_table(folder), "e2e-capture": capture_table(folder),
                                  "e2e-static": static_table(folder), "e2e-capture-cpu": capture_table(folder, CPU),
                                  "e2e-python-calls": python_calls_table(folder)},
        "README.md": {"e2e-headline": headline(folder)},
    }


def main() -> int:
    for rel, blocks in tables().items():
        write_blocks(ROOT / rel, blocks)
        print(f"wrote {', '.join(blocks)} in {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
