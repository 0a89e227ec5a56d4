"""Tables of the end-to-end benchmark (``benchmarks/bench_e2e_table.py``) for kernels/BENCHMARKS.md and the
README's headline line, computed only from the JSON files that script wrote.

Blocks (``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->``):
  kernels/BENCHMARKS.md: e2e-generate, e2e-capture, e2e-static, e2e-capture-cpu, e2e-python-calls,
                         e2e-profile, e2e-profile-extra, e2e-ties (profile_decode_h200.json)
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
# session 5: generate / static / profile measured in their own calls (e2e_h200.json keeps session 4's capture table)
GEN, PROFILE = "e2e_gen_h200.json", "profile_decode_h200.json"
# session 6: the capture table's own call (Gemma-3-270M rows, TransformerLens on the device); session 4's before
CAPTURE = "e2e_capture_h200.json"
# session 8: the SmolLM2 and Llama-shape rows again, after the hook backends' map-reduction fix (b57415b); the Gemma
# rows stay session 6's (its weights did not travel this time)
CAPTURE8 = "e2e_capture_s8_h200.json"

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
    """Session 5 layout when e2e_gen_h200.json exists (decode ms per step next to tokens/s), else session 4's."""
    if (Path(folder) / GEN).exists():
        return _generate_table_steps(folder)
    return generate_table_s4(folder)


def generate_table_s4(folder: Path) -> str:
    """Session 4's table (e2e_h200.json: tokens/s, median of 3 wall times)."""
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


LABELS5 = {**LABELS, "seam_noop": "seam active, no edit (HeadScale α=1: no layer hooked)"}
# What code each session-5 device file measured (main's commit when the call started; from the call times).
CODE = {PROFILE: "4b80f29", "e2e_gen_window1_h200.json": "4b80f29", GEN: "d39a368"}   # (+ GEN8 / GEN9 below)
# session 6: generate (eager) and the static cache with CUDA graphs in one call per file
GEN6 = {"e2e_gen_s6_h200.json": "fcc9f08"}
CODE.update(GEN6)
# session 6, second call: the static part alone (graph-mode ACT / VAR as lse-combined calls, cuDNN's kernel)
STATIC6 = {"e2e_static_s6c2_h200.json": "2cd70c8",
           # calls 3 and 4 (the session's last device seconds): the rewrite after call 2, plain + VAR, then plain + ACT
           "e2e_static_s6c3_h200.json": "6c6763d", "e2e_static_s6c4_h200.json": "6c6763d"}
CODE.update(STATIC6)
# session 7, last call: eager generate, plain / ACT / VAR at batch 1 and 16 (run from c488611's working tree before
# its commit: the wide VAR decode in column mode split)
GEN7 = {"e2e_gen_s7_h200.json": "c488611"}
CODE.update(GEN7)
# session 7: graph-mode ACT / VAR on the Triton decode kernels (custom op probe::decode_attention); call 2 ran plain
# before and after the edited variants (the host drifts within a call), batch 1 and 16
STATIC7 = {"e2e_static_s7c1_h200.json": "6c619b4", "e2e_static_s7c2_h200.json": "6c619b4",
           # the last call: the op without index deduplication (549c3b0; run at 2c05334), VAR also in column mode split
           "e2e_static_s7c3_h200.json": "2c05334"}
CODE.update(STATIC7)
# session 8: VAR's span column mode (call 1: static; the "var" rows at batch 16 ran split, the default then), eager
# batch 1 with the host thread's CPU time (call 2), and the closing call with today's defaults (static + eager)
STATIC8 = {"e2e_static_s8_h200.json": "64cf88f", "e2e_static_s8f_h200.json": "62abf1e",
           "e2e_static_s8g_h200.json": "dceb048"}     # the last call: HeadMask's KV-head fix, ACT / VAR again
GEN8 = {"e2e_gen_s8_h200.json": "64cf88f", "e2e_gen_s8f_h200.json": "62abf1e"}
CODE.update(STATIC8)
CODE.update(GEN8)
# the column mode a file's plain "var" rows ran where it is not today's default: file -> {batch: mode}
VAR_MODE_THEN = {"e2e_static_s8_h200.json": {16: "split"}}
# Rows of e2e_gen_h200.json that measured a path the code has left since (not re-measured: no device time left).
GEN_NOTES = {"act": "ACT's decode steps ran its tensor-op form (one SDPA with log-sum-exp + ~45 small ops per layer); "
                    "eager steps are back on the Triton kernel since, measured only in the first call's profile"}


def _generate_table_steps(folder: Path, name: str = GEN) -> str:
    """Decode ms per step (median over every step) and tokens/s per variant at batch 1 and 16, from ``name``."""
    gen = _gen_rows(_load(folder, name))
    notes_of = GEN_NOTES if name == GEN else {}
    rows = []
    for v in [v for v in LABELS5 if any(k[1] == v for k in gen)]:
        cells = [LABELS5[v] + (" †" if v in notes_of else "")]
        for B in (1, 16):
            r, p = gen.get((B, v)), gen.get((B, "plain"))
            if r is None:
                cells += ["–"] * 4
                continue
            step = r.get("step_ms_median")
            cells += [f"{r['tokens_per_s']:.1f}", f"{r['x_slower']:.3f}", f"{step:.2f}" if step else "–",
                      f"{step / p['step_ms_median']:.3f}" if step and p and p.get("step_ms_median") else "–"]
        r = gen.get((1, v))
        cells.append({True: "yes", False: "**no**"}.get(r.get("same_tokens_every_run") if r else None, "–"))
        rows.append(cells)
    notes = "".join(f"\n† {notes_of[v]}.\n" for v in notes_of if any(k[1] == v for k in gen))
    return _md(["variant", "b1 tok/s", "× plain", "b1 decode ms / step", "× plain", "b16 tok/s per row", "× plain",
                "b16 decode ms / step", "× plain", "b1 same tokens every run"], rows) + notes + \
        f"\n(`benchmarks/results/{name}`, code at {CODE[name]}.)\n"


def _profile_rows(folder: Path) -> dict:
    return {r["variant"]: r for r in _load(folder, PROFILE)["rows"] if "variant" in r and "profile" in r}


def profile_table(folder: Path) -> str:
    """One decode step per variant (batch 1): step times, the profiled step's GPU / launch / sync numbers, cProfile."""
    rows = []
    for v, r in _profile_rows(folder).items():
        st, pr, py = r.get("steps", {}), r["profile"], r.get("python", {})
        ms = lambda us: f"{us / 1e3:.2f}" if us is not None else "–"  # noqa: E731
        rows.append([LABELS5.get(v, v),
                     f"{st['median_ms']:.2f} ({st['p10_ms']:.2f}–{st['p90_ms']:.2f})" if st else "–",
                     ms(pr.get("step_wall_us")), ms(pr.get("gpu_busy_us")), pr.get("gpu_kernels", "–"),
                     pr.get("launch_calls", "–"), ms(pr.get("host_sync_wait_us")),
                     f"{py['calls_per_step']:.0f}" if py else "–", ms(py.get("tottime_us_per_step")) if py else "–"])
    if not rows:
        return _md(["variant"], [])
    return _md(["variant", "decode ms / step: median (p10–p90)", "profiled step ms", "GPU busy ms", "GPU kernels",
                "launch calls", "host waiting in syncs ms", "Python calls / step", "Python own time ms / step (cProfile)"], rows) + \
        f"\n(`benchmarks/results/{PROFILE}`, code at {CODE[PROFILE]}; the variants run one after another in one process, " \
        "so every variant after the first is timed after a profiler session: compare the step column within the table " \
        "with care, the generate table above is the clean one.)\n"


def profile_extra_table(folder: Path, top: int = 6) -> str:
    """Per variant, the functions whose own time per decode step (cProfile) exceeds the plain model's most."""
    prof = _profile_rows(folder)
    plain = {name: us for name, _, us, _ in prof.get("plain", {}).get("python", {}).get("all", [])}
    rows = []
    for v, r in prof.items():
        if v == "plain" or "python" not in r:
            continue
        mine = {name: (calls, us) for name, calls, us, _ in r["python"].get("all", [])}
        extra = sorted(((us - plain.get(name, 0.0), name, calls) for name, (calls, us) in mine.items()), reverse=True)
        total = r["python"]["tottime_us_per_step"] - prof["plain"]["python"]["tottime_us_per_step"]
        rows.append([LABELS5.get(v, v), f"{total / 1e3:+.2f}",
                     "; ".join(f"`{name}` {d:+.0f} µs ({calls:g}×)" for d, name, calls in extra[:top] if d > 0)])
    return _md(["variant", "Python own time vs plain, ms / step", f"largest extra own time per step (top {top}; calls per step)"], rows)


def ties_text(folder: Path) -> str:
    """Plain vs plain vs the no-edit seam (tokens, logits, hidden states, attention kernels), from the profile file."""
    rows = [r for r in _load(folder, PROFILE)["rows"] if r.get("part") == "ties" and "plain_again" in r]
    later = [r for r in _load(folder, GEN)["rows"] if r.get("part") in ("ties", "ties_no_cudnn") and "plain_again" in r]
    if not rows:
        return "Not measured.\n"
    r = rows[0]

    def one_of(row, name):
        x = row[name]
        s = f"tokens {'identical' if x['same_tokens'] else 'differ from step ' + str(x['first_diff_step'])}"
        if "logits_identical_before_first_diff" in x:
            s += (", every step's logits bit-identical" if x["same_tokens"] and x["logits_identical_before_first_diff"]
                  else "" if x["same_tokens"] else
                  f", logits before that step {'bit-identical' if x['logits_identical_before_first_diff'] else 'already different'}")
        return s

    def one(name):
        x = r[name]
        s = f"tokens {'identical' if x['same_tokens'] else 'differ from step ' + str(x['first_diff_step'])}"
        s += f"; first-step logits {'bit-identical' if x['step0_logits_identical'] else 'differ by up to ' + format(x['step0_max_abs_logit_diff'], '.3g')}"
        if x.get("plain_top1_minus_top2_at_first_diff") is not None:
            s += (f"; at the first differing step plain's top-1 − top-2 logit gap is {x['plain_top1_minus_top2_at_first_diff']:.3g}"
                  f" and the logits differ by up to {x['max_abs_logit_diff_at_first_diff']:.3g}")
        return s

    gap = r["plain_top1_top2_gap"]
    hid = r["prefill_hidden_max_abs_diff_per_layer"]
    lines = [f"- plain vs plain again: {one('plain_again')}.",
             f"- plain vs the seam without edit: {one('seam_noop')}.",
             f"- the seam vs plain, a second seam run: {one('seam_noop_again')}.",
             f"- plain's top-1 − top-2 logit gap over the {r['new_tokens']} steps: median {gap['median']:.3g}, "
             f"min {gap['min']:.3g} (logit standard deviation {gap['logit_std']:.3g}).",
             "- prefill hidden states, plain vs seam, max |difference| after the embedding and each layer: "
             + ", ".join(f"{x:.3g}" for x in hid) + "."]
    for x in later:                  # the second call: a fresh prompt-run of the same check, then cuDNN attention off
        if x["part"] == "ties":
            lines.append(f"- again in the second call: plain vs plain {one_of(x, 'plain_again')}; plain vs seam {one_of(x, 'seam_noop')}.")
        else:
            lines.append(f"- with cuDNN attention off (SDPA limited to {', '.join(x['backends'])}): plain vs plain "
                         f"{one_of(x, 'plain_again')}; plain vs seam {one_of(x, 'seam_noop')}; plain with cuDNN vs without "
                         f"{one_of(x, 'plain_with_cudnn_vs_without')}.")
    kern = r.get("attention_kernels_prefill_plus_2_steps")
    if kern:
        for v, names in kern.items():
            lines.append(f"- attention kernels ({v}, the prefill and one decode step of 8 layers): " + ("; ".join(f"`{k[:90]}` ×{n}" for k, n in names.items()) or "none matched") + ".")
    return "\n".join(lines) + "\n"


def _cell(r: dict) -> str:
    if r is None:
        return "–"
    st = r.get("status", "")
    if st == "ok":
        peak = r.get("peak_gib_over_weights")
        one = " (1 run)" if len(r.get("wall_s_runs") or []) == 1 else ""
        return f"{r['wall_s']:.3f} s{one}" + (f", {peak:.2f} GiB" if peak is not None else "")
    if st.startswith("stopped"):
        return f"stopped after {r['warmup_s']:.0f} s (the row's cap)"
    if st.startswith("skipped: predicted"):
        return f"not run: ≈{r['predicted_s']:.0f} s per run predicted"
    if st.startswith("not run") or st.startswith("not importable") or st.startswith("skipped"):
        return "not run"
    if st == "out of memory":
        return "**out of memory**"
    if "PROBE_MAX_MAP_BYTES" in st:
        return "refused (map > limit)"
    return f"failed: {st[:60]}"


def _capture_file(folder: Path) -> str:
    """Session 6's capture call when its file exists, else session 4's (e2e_h200.json)."""
    return CAPTURE if (Path(folder) / CAPTURE).exists() else GPU


def _capture_rows(folder: Path, name: str | None = None) -> list:
    """The capture table's rows: ``name``'s, or the newest call's per model (session 8's file replaces every row of
    the models it measured, each row tagged with its file as "file")."""
    files = [name] if name else [_capture_file(folder)] + ([CAPTURE8] if (Path(folder) / CAPTURE8).exists() else [])
    by_model: dict = {}
    for f in files:
        rows = [dict(r, file=f) for r in _load(folder, f)["rows"] if r.get("part") == "table"]
        for model in dict.fromkeys(r["model"] for r in rows):
            by_model[model] = [r for r in rows if r["model"] == model]
    return [r for rows in by_model.values() for r in rows]


def capture_table(folder: Path, name: str | None = None) -> str:
    rows = _capture_rows(folder, name)
    keys = []
    for r in rows:
        if (r["model"], r["tokens"]) not in keys:
            keys.append((r["model"], r["tokens"]))
    have = [(m, lab) for m, lab in METHODS if any(r["method"] == m for r in rows)]
    by = {(r["model"], r["tokens"], r["method"]): r for r in rows}
    out = [[DISPLAY.get(model.split(" (")[0], model), f"{n:,}"] + [_cell(by.get((model, n, m))) for m, _ in have]
           + ([f"`{by[(model, n, have[0][0])]['file']}`"] if name is None else []) for model, n in keys]
    return _md(["model", "tokens"] + [lab for _, lab in have] + (["file"] if name is None else []), out)


def findings(folder: Path) -> str:
    """The numbers the prose of the session-5 section rests on, computed from the files (bullets)."""
    prof = _profile_rows(folder)
    w1 = _gen_rows(_load(folder, "e2e_gen_window1_h200.json"))
    out = []
    if "plain" in prof and (1, "plain") in w1:
        a, b = prof["plain"]["steps"]["median_ms"], w1[(1, "plain")]["step_ms_median"]
        out.append(f"- **The profiler slows every later launch of its process.** Plain decode steps: {a:.2f} ms (median) "
                   f"before the call's first torch.profiler session, {b:.2f} ms in the same call after it "
                   f"(`e2e_gen_window1_h200.json`, all variants measured after it); timed runs now go before any profiling.")
    if "plain" in prof:
        p = prof["plain"]["profile"]
        out.append(f"- **Plain `generate` is host-bound at batch 1:** one profiled decode step launches {p['gpu_kernels']} "
                   f"kernels (≈{p['gpu_kernels'] / 8:.0f} per layer) that keep the GPU busy {p['gpu_busy_us'] / 1e3:.2f} ms, "
                   f"while the unprofiled step takes {prof['plain']['steps']['median_ms']:.2f} ms; the host waits "
                   f"{p['host_sync_wait_us'] / 1e3:.2f} ms in synchronising calls. Every µs of Python per layer shows.")
    if "seam_noop" in prof and "plain" in prof:
        n, p = prof["seam_noop"], prof["plain"]
        out.append(f"- **The seam without an edit costs {n['profile']['gpu_kernels'] - p['profile']['gpu_kernels']:+d} kernel "
                   f"and {n['python']['calls_per_step'] - p['python']['calls_per_step']:+.0f} Python calls per step** "
                   f"({(n['python']['tottime_us_per_step'] - p['python']['tottime_us_per_step']) / 1e3:+.2f} ms of cProfile own "
                   f"time): the mask function once per forward and a plan lookup per layer.")
    for v in ("act", "var"):
        if v in prof and "plain" in prof:
            r, p = prof[v], prof["plain"]
            tri = sum(us for name, _, us, _ in r["python"]["all"] if "triton" in name)
            fused = sum(us for name, _, us, _ in r["python"]["all"] if "fused.py" in name)
            out.append(f"- **{LABELS5[v].split(' (')[0].split(':')[0]} on the kernel path (this profile):** "
                       f"{r['profile']['gpu_kernels']} kernels per step, as plain, GPU busy "
                       f"{r['profile']['gpu_busy_us'] / 1e3:.2f} ms, but {r['python']['calls_per_step'] - p['python']['calls_per_step']:+.0f} "
                       f"Python calls per step; cProfile own time in Triton's launcher {tri / 1e3:.2f} ms and in the host side of "
                       f"the kernels (fused.py) {fused / 1e3:.2f} ms per step, for five layers.")
    if (1, "act") in w1 and (1, "plain") in w1:
        r = {B: w1[(B, "act")]["step_ms_median"] / w1[(B, "plain")]["step_ms_median"] for B in (1, 16) if (B, "act") in w1}
        out.append("- **ACT on the kernel path, timed:** only in the first call, after its profiler session (every launch "
                   "slower, plain included): decode ms per step vs plain "
                   + ", ".join(f"{x:.3f}× at batch {B}" for B, x in r.items()) + " (`e2e_gen_window1_h200.json`).")
    gen = _gen_rows(_load(folder, GEN))
    if gen:
        for B in (1, 16):
            p = gen.get((B, "plain"))
            if not p:
                continue
            ratio = {v: gen[(B, v)]["step_ms_median"] / p["step_ms_median"] for (b, v) in gen if b == B and v != "plain"}
            met = [v for v, r in ratio.items() if r <= (1.05 if v == "seam_noop" else 1.10) and v not in GEN_NOTES]
            miss = [v for v in ratio if v not in met]
            out.append(f"- **Batch {B}, decode ms per step vs plain (second call, no profiler in the process):** "
                       + ", ".join(f"{LABELS5[v].split(' (')[0].split(':')[0].split(',')[0]} {ratio[v]:.3f}×" for v in ratio)
                       + f". Within the targets (≤ 1.05× without edit, ≤ 1.10× with one): "
                       + (", ".join(LABELS5[v].split(' (')[0].split(':')[0].split(',')[0] for v in met) or "none")
                       + "; missed: " + (", ".join(LABELS5[v].split(' (')[0].split(':')[0].split(',')[0] for v in miss) or "none") + ".")
        p = gen.get((1, "plain"))
        if p:
            w = p["wall_s_runs"]
            out.append(f"- **Why the wall-clock ratios mislead at batch 1:** plain's own {len(w)} runs took {min(w):.3f}–{max(w):.3f} s "
                       f"(decode steps p10–p90 {p['step_ms_p10_p90'][0]:.2f}–{p['step_ms_p10_p90'][1]:.2f} ms); a median of "
                       f"3–4 such runs moves by more than the seam's cost (session 4's batch-1 ratios were medians of 3 such runs, "
                       f"with its no-edit variant still hooking every layer); in this call the wall times even put the "
                       f"seam variants ahead of plain. The decode-step median over every step of every run is the "
                       f"measure used here.")
        same = [v for (b, v), r in gen.items() if b == 1 and r.get("same_tokens_every_run") is False]
        if "plain" in same:
            out.append("- **Plain `generate` is not repeatable on this GPU:** plain's own timed runs did not all produce "
                       "the warm-up run's tokens (column \"same tokens every run\"); see the token check below.")
    return "\n".join(out) + "\n" if out else "Not measured.\n"


def static_table(folder: Path, name: str = GEN) -> str:
    """generate(cache_implementation="static") per variant from ``name`` (session 5's file: why it is missing)."""
    rows = [r for r in _load(folder, name)["rows"] if r.get("part") == "static"]
    if not rows and name == GEN and (Path(folder) / GEN).exists():
        return ("Not measured on the H200: session 5's second (last) call ran its parts in the order gen, ties, static and "
                "stopped starting parts at its 125 s budget after ties "
                f"(`{GEN}`: finished at {_load(folder, GEN)['meta'].get('finished_s')} s, no static row). On the CPU, "
                "dynamo traces the static-cache decode step of plain, the seam without edit, HeadScale, HeadMask "
                "(uniform, zero), ACT and VAR into one graph without breaks or per-step recompiles, with the dynamic "
                "cache's tokens (`tests/test_seam_fast_path.py`).\n")
    if not rows:
        rows = [r for r in _load(folder, GPU)["rows"] if r.get("part") == "static"]
    if not rows:
        return "Not measured on the H200: the call's time budget ran out before this part (CPU: tested equal to the dynamic cache).\n"
    if "compile_allowed" not in rows[0]:
        out = [[LABELS.get(r["variant"], r["variant"]), "yes" if r.get("compile") else "no (disable_compile)",
                f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else r.get("status", "")[:80],
                {True: "yes", False: "**no**"}.get(r.get("same_tokens_as_dynamic"), "–")] for r in rows]
        return _md(["variant", "compiled", "tok/s", "same tokens as the dynamic cache"], out)
    plain = next((r for r in rows if r["variant"] == "plain" and r.get("status") == "ok"), None)
    out = []
    for r in rows:
        if r.get("status") == "ok" and r.get("tokens_per_s") is None:      # compiled, then out of time before a timed run
            d = r.get("dynamo", {})
            out.append([LABELS5.get(r["variant"], r["variant"]), "yes (CUDA graphs)", f"{r['first_run_s']:.1f}",
                        "not timed: the call's budget ended after the compile run", "–", "–", "–", "–",
                        f"{d.get('graphs', '–')} / {d.get('graph_breaks', '–')}"])
            continue
        if r.get("status") != "ok":
            out.append([LABELS5.get(r["variant"], r["variant"]), "–", "–", r.get("status", "")[:80], "–", "–", "–", "–", "–"])
            continue
        d = r.get("dynamo", {})
        out.append([LABELS5.get(r["variant"], r["variant"]),
                    "yes (CUDA graphs)" if r["compile_allowed"] else "no: eager (Triton kernel path)",
                    f"{r['first_run_s']:.1f}", f"{r['tokens_per_s']:.1f}",
                    f"{plain['tokens_per_s'] / r['tokens_per_s']:.3f}" if plain else "–",
                    f"{r['step_ms_median']:.2f}", f"{r['step_ms_median'] / plain['step_ms_median']:.3f}" if plain else "–",
                    {True: "yes", False: "**no**"}.get(r.get("same_tokens_as_dynamic"), "–"),
                    f"{d.get('graphs', '–')} / {d.get('graph_breaks', '–')}"])
    return _md(["variant", "compiled decode", "first run s (compile + capture)", "tok/s", "× plain (compiled)",
                "decode ms / step", "× plain", "same tokens as the dynamic cache", "dynamo graphs / breaks"], out)


def _static7(folder: Path, name: str) -> dict:
    """{batch: (plain step ms runs in call order, {variant: row})} of a session-7 static file (ok rows)."""
    out: dict = {}
    for r in _load(folder, name)["rows"]:
        if r.get("part") != "static" or r.get("status") != "ok" or not r.get("step_ms_median"):
            continue
        plains, rows = out.setdefault(r["batch"], ([], {}))
        if r["variant"] == "plain":
            plains.append(r["step_ms_median"])
        else:
            rows[r["variant"]] = r
    return out


def static_table_s7(folder: Path, name: str) -> str:
    """Session 7's graph-mode generate per batch and variant: decode ms per step (median over every step of 3 runs)
    and its ratio to plain's -- plain ran first and, in call 2, again last: the ratio to the mean of the two, with
    the range over the two."""
    rows = []
    for B, (plains, vs) in sorted(_static7(folder, name).items()):
        if not plains:
            continue
        mean = sum(plains) / len(plains)
        rows.append([f"{B}", "plain", " / ".join(f"{p:.3f}" for p in plains), "1.000", "–"])
        for v, r in vs.items():
            st = r["step_ms_median"]
            rng = "–" if len(plains) < 2 else f"{st / max(plains):.3f}–{st / min(plains):.3f}"
            mode = v.split("@")[1] if "@" in v else VAR_MODE_THEN.get(name, {}).get(B) if v == "var" else None
            label = LABELS5.get(v.split("@")[0], v) + (f" (column mode {mode})" if mode else "")
            rows.append([f"{B}", label, f"{st:.3f}", f"{st / mean:.3f}", rng])
    return _md(["batch", "variant", "decode ms / step", "× plain (mean of its runs)", "× plain, range over its runs"],
               rows) + f"\n(`benchmarks/results/{name}`, code at {CODE[name]}; generate with a static cache, compiled, " \
        "CUDA graphs; ACT / VAR through the Triton decode kernels as one custom op per layer.)\n"


def host_gen_table(folder: Path, name: str) -> str:
    """Eager generate per batch and variant with the host's clocks (session 8): tokens/s and the median decode step
    over plain's, the step's wall ms (median, 10th-90th percentile), the host thread's CPU ms per step (wall = CPU:
    the step is host work, not the host waiting) and the scheduler's involuntary switches per step."""
    gen = _gen_rows(_load(folder, name))
    paired = any("x_slower_paired_median" in r for r in gen.values())
    rows = []
    for (B, v), r in sorted(gen.items(), key=lambda kv: (kv[0][0], list(LABELS5).index(kv[0][1]))):
        p = gen.get((B, "plain"), {}).get("step_ms_median")
        lo, hi = r["step_ms_p10_p90"]
        pr = r.get("x_slower_paired_runs") or []
        fast = gen.get((B, "plain"), {}).get("wall_s_runs")
        rows.append([f"{B}", LABELS5[v], f"{r['x_slower']:.3f}"] +
                    ([f"{min(r['wall_s_runs']) / min(fast):.3f}" if fast else "–"] if paired else []) +
                    ([f"{r['x_slower_paired_median']:.3f} ({min(pr):.3f}–{max(pr):.3f})" if pr else "–"] if paired else [])
                    + [f"{r['step_ms_median'] / p:.3f}" if p else "–",
                       f"{r['step_ms_median']:.2f} ({lo:.2f}–{hi:.2f})", f"{r['step_cpu_ms_median']:.2f}",
                       f"{r['preempted_per_step']:.2f}"])
    n = len(next(iter(gen.values()))["wall_s_runs"])
    return _md(["batch", "variant", f"× plain, tokens/s (median of {n} runs)"] +
               (["× plain, fastest run over plain's fastest", "× plain, per round (median; range)"] if paired else []) +
               ["× plain, median step", "decode ms / step (p10–p90)", "host thread CPU ms / step",
                "involuntary switches / step"], rows) + \
        f"\n(`benchmarks/results/{name}`, code at {CODE[name]}; eager `generate`, dynamic cache.)\n"


def seam_host_table(folder: Path, name: str = "seam_host_h200.json") -> str:
    """Host µs per seam decode call on the GPU's host (benchmarks/profile_seam_host.py): hooked layers vs layers
    without a hook in the same generate, and the own time of the hooked calls' top functions under cProfile."""
    doc = _load(folder, name)
    rows, tops = [], []
    for r in doc["rows"]:
        base = r["calls"].get("layer without a hook", {}).get("median_us")
        for kind, c in r["calls"].items():
            extra = f"{c['median_us'] - base:+.1f}" if base and kind == "hooked layer" else "–"
            rows.append([LABELS5.get(r["variant"], r["variant"]) if r["variant"] != "plain" else
                         "plain model, every layer through the seam (no hook)", kind, f"{c['n']}", f"{c['median_us']:.1f}",
                         f"{c['p10_us']:.1f}–{c['p90_us']:.1f}", extra])
        if r["variant"] == "act" and r["top_own_time"]:
            tops = [[t["function"], f"{t['own_us_per_seam_call']:.1f}", f"{t['calls_per_seam_call']:.2f}"]
                    for t in r["top_own_time"][:12]]
    out = _md(["variant", "layer", "decode calls", "host µs per call (median)", "p10–p90", "µs over the same run's "
               "layers without a hook"], rows)
    if tops:
        out += "\nACT's hooked decode calls under cProfile (own time per hooked call; the profiler's own cost inflates " \
               "every Python call, and calls of unhooked layers fall in the same profile):\n\n" + \
               _md(["function", "own µs per hooked call", "calls per hooked call"], tops)
    return out + f"\n(`benchmarks/results/{name}`; {doc['meta'].get('device')}, torch {doc['meta'].get('torch')}.)\n"


# session 9: the decode combine inside the split kernel (one launch) and the seam's decode entry (decode_attention)
GEN9 = {"e2e_gen_s9_h200.json": "2f9716d", "e2e_gen_s9b_h200.json": "8154225", "e2e_gen1_s9_h200.json": "8154225",
        "e2e_gen_s9f_b1_h200.json": "b90618b", "e2e_gen_s9f_b16_h200.json": "b90618b"}
STATIC9 = {"e2e_static_s9f_h200.json": "b90618b"}
CODE.update(STATIC9)
HEADLINE_GEN = ("e2e_gen_s9f_b1_h200.json", "e2e_gen_s9f_b16_h200.json")     # the README's eager rows (merged)
STAGES9 = ("seam_stages_s9_before_h200.json", "seam_stages_s9_h200.json")      # before (29256dc), after (8cd88c3)
LAUNCH9 = ("decode_launch_s9_before_h200.json", "decode_launch_s9_h200.json")
PREFILL9 = ("prefill_profile_s9_h200.json", "prefill_profile2_s9_h200.json")   # intervene inside / outside the timing
CODE.update(GEN9)


ATTR10 = {"step_attribution_s10b_h200.json": "3c09591", "step_attribution_s10c_h200.json": "fd7b72f"}
STATIC10 = {"e2e_static_s10_b1_h200.json": "2dc92c8"}       # batch 1 with HeadMask (session 9's ran out of time)
CODE.update(STATIC10)   # benchmarks/step_attribution.py, batch 1 and 16
HEADLINE_ATTR = "step_attribution_s10b_h200.json"           # the README's eager rows from session 10 on
HOST9 = "decode_host_cpu_s9.json"     # benchmarks/bench_decode_host.py on the CPU: 29256dc ("before") vs this session


def decode_host_table(folder: Path, name: str = HOST9) -> str:
    """``bench_decode_host.table`` of session 9's CPU run (the seam's host path up to Triton's launcher)."""
    from benchmarks.bench_decode_host import table
    doc = _load(folder, name)
    return table(doc) + f"\n\n(`benchmarks/results/{name}`: before = {doc['meta']['before'].get('commit', '')[:7]}, " \
        f"after = {doc['meta']['after'].get('commit', '')[:7]}; {doc['meta']['after'].get('machine', '')}.)\n"


def attribution_table(folder: Path, name: str) -> str:
    """``benchmarks/step_attribution.py``'s table of one result file."""
    from benchmarks.step_attribution import table

    doc = _load(folder, name)
    doc["meta"]["file"] = f"benchmarks/results/{name}"
    return table(doc) + "\n"


def _attribution_spans(folder: Path) -> list:
    """(the headline's eager decode-step ratios from ``HEADLINE_ATTR``: batch 1 at equal host speed (the host's speed
    drifted between runs), batch 16 by the fastest round (there the GPU sets a fast host's step); the range of the raw
    median-step ratios)."""
    from benchmarks.step_attribution import LABELS, summaries

    res = summaries(_load(folder, HEADLINE_ATTR))
    raw = [r["x_ref_step_median"] for b in res.values() for r in b.values() if "x_ref_step_median" in r]
    short = lambda v: LABELS[v].split(' (')[0].split(':')[0].split(',')[0]  # noqa: E731
    spans = []
    for B, key, how in (("1", "x_ref_speed_normalized", "at equal host speed"),
                        ("16", "x_ref_fastest_round", "fastest of its rounds")):
        if B in res:
            spans.append(f"eager, batch {B}, {how}: " + ", ".join(
                f"{short(v)} {r[key]:.2f}×" for v, r in res[B].items() if key in r))
    return spans, (min(raw), max(raw))


def stages_table(folder: Path, names: tuple = STAGES9) -> str:
    """Inclusive host µs per hooked decode call, per stage (benchmarks/profile_seam_host.py --stages), before and
    after session 9's change, for ACT and VAR (each stage's wrapper adds ~0.5 µs to every stage around it)."""
    docs = [_load(folder, n) for n in names]
    by = [{r["variant"]: r for r in d["rows"]} for d in docs]
    rows = []
    for v in ("act", "var"):
        st = [b.get(v, {}).get("stages", {}).get("us_per_hooked_call", {}) for b in by]
        med = [b.get(v, {}).get("calls", {}).get("hooked layer", {}).get("median_us") for b in by]
        rows.append([LABELS5[v], "hooked decode call, untimed (median)"] + [f"{m:.1f}" if m else "–" for m in med])
        for stage in dict.fromkeys(list(st[0]) + list(st[1])):
            rows.append(["", f"`{stage}`"] + [f"{x[stage]:.1f}" if stage in x else "–" for x in st])
    for v in ("headscale",):
        med = [b.get(v, {}).get("calls", {}).get("hooked layer", {}).get("median_us") for b in by]
        rows.append([LABELS5[v], "hooked decode call, untimed (median): SDPA + the scale"] +
                    [f"{m:.1f}" if m else "–" for m in med])
    return _md(["variant", "stage (inclusive µs per hooked decode call)", "before (29256dc)", "after (8cd88c3)"], rows) + \
        f"\n(`benchmarks/results/{names[0]}`, `{names[1]}`; {docs[1]['meta'].get('device')}; eager generate, batch 1, " \
        "4,096-token prompt; `seam.decode_attention` replaced `seam.attention` and `fused.decode_validated` " \
        "`fused.attention_validated` on this path.)\n"


def launch_table9(folder: Path, names: tuple = LAUNCH9) -> str:
    """Host µs of one decode call of the Triton kernels (benchmarks/bench_launch.py), before and after the fused launch."""
    docs = [{r["case"]: r for r in _load(folder, n)["rows"]} for n in names]
    rows = [[c] + [f"{d[c][k]:.1f}" for d in docs for k in ("step_direct_us",)] +
            [f"{docs[0][c]['step_direct_us'] / docs[1][c]['step_direct_us']:.2f}×"] for c in docs[1]]
    return _md(["case (Llama-7B attention shape, S = 4,096)", "two launches (29256dc), µs", "one launch (8cd88c3), µs",
                "before / after"], rows) + \
        f"\n(`benchmarks/results/{names[0]}`, `{names[1]}`: `fused._decode_step` with the direct launch, median of 5 " \
        "loops of 200 calls; the two files come from two calls of the same session, whose host speed differs.)\n"


def prefill_table(folder: Path, names: tuple = PREFILL9) -> str:
    """One prefill forward per variant (benchmarks/profile_prefill.py): wall, host CPU, syncs, CUDA kernel time."""
    rows = []
    for n in names:
        if not (Path(folder) / n).exists():
            continue
        for r in _load(folder, n)["rows"]:
            rows.append([f"`{n}`", LABELS5[r["variant"]], f"{r['wall_ms']:.1f}", f"{r['cpu_ms']:.1f}", f"{r['syncs']}",
                         f"{r['kernels_ms']:.1f}"])
    return _md(["file", "variant", "wall ms (median of 5)", "host CPU ms", "synchronising calls", "CUDA kernel ms"], rows) \
        + "\n(Random-init Llama-7B shape, 8 layers, bf16, a 4,096-token prompt, batch 1. The first file timed " \
          "`intervene`'s entry and exit with each forward (HeadScale on every head installs 256 hooks), the second " \
          "the forwards alone.)\n"


# session 7: one layer's graph-mode step (benchmarks/bench_graph_decode.py): file -> code
GRAPH7 = {"graph_decode_s7_h200.json": "6c619b4", "graph_decode_s7c3_h200.json": "2c05334"}
GRAPH_LABELS = {"plain": "plain SDPA (the unmodified model)", "act_op": "ACT, decode kernels (custom op)",
                "var_op": "VAR, decode kernels (custom op)", "act": "ACT, tensor-op form", "var": "VAR, tensor-op form"}


def graph_decode_table(folder: Path, name: str) -> str:
    """One layer's compiled graph-mode decode step per batch and variant: µs per replay (median of 3), over plain."""
    doc = _load(folder, name)
    rows = [[str(r["batch"]), GRAPH_LABELS.get(r["variant"], r["variant"]), f"{r['graph_us_median']:.1f}",
             f"{r['extra_us_vs_plain']:+.1f}", f"{r['graph_us_median'] / p:.2f}", f"{r['err_vs_fp64']:.1e}"]
            for r in doc["rows"] if r.get("status") == "ok"
            for p in [next(x["graph_us_median"] for x in doc["rows"] if x["batch"] == r["batch"] and x["variant"] == "plain")]]
    return _md(["batch", "variant", "µs per layer (CUDA-graph replay)", "µs over plain", "× plain", "max |err| vs fp64"],
               rows) + (f"\n(`benchmarks/results/{name}`, code at {GRAPH7[name]}; {doc['meta'].get('device')}, "
                        f"torch {doc['meta'].get('torch')}.)\n")


DISPLAY = {"llama7b-shape-8layers": "Llama-7B shape, 8 layers (random init)", "SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct (real weights)",
           "Gemma-3-270M": "Gemma-3-270M (real weights)"}
NAMES = {"llama7b-shape-8layers": "a random-init Llama-7B-shaped model, 8 layers", "SmolLM2-135M-Instruct": "SmolLM2",
         "Gemma-3-270M": "Gemma-3-270M"}


def _short(r: dict) -> str:
    if r is None:
        return "–"
    if r.get("status") == "ok":
        mem = r.get("peak_gib_over_weights")
        return f"{r['wall_s']:.2f} s" + (f" / {mem:.1f} GiB" if mem is not None else "")
    if r.get("status", "").startswith("skipped: predicted"):
        return f"not run, ≈{r['predicted_s']:.0f} s predicted"
    return "out of memory" if r.get("status") == "out of memory" else "not run"


def headline(folder: Path) -> str:
    """The README's one-paragraph summary: the largest capture row per model and session 6's decode-step ratios."""
    cap = {(r["model"].split(" (")[0], r["tokens"], r["method"]): r for r in _capture_rows(folder)}
    parts = []
    for model in ("SmolLM2-135M-Instruct", "Gemma-3-270M", "llama7b-shape-8layers"):
        ok = [k for k in cap if k[0] == model and k[2] == "native" and cap[k].get("status") == "ok"]
        if not ok:
            continue
        n = max(k[1] for k in ok)
        others = [f"eager `output_attentions` {_short(cap.get((model, n, 'eager_output_attentions')))}"] \
            if (model, n, "eager_output_attentions") in cap else []
        hooks = [(lab, cap[(model, n, m)]) for m, lab in (("nnsight", "nnsight"), ("transformer_lens", "TransformerLens"))
                 if (model, n, m) in cap and cap[(model, n, m)].get("status") in ("ok", "out of memory")]
        old = any(r.get("status") == "ok" and r["file"] != CAPTURE8 for _, r in hooks)
        if hooks:     # before session 8 their times were measured with probe's former O(N^3) map reduction (b57415b)
            others.append(", ".join(f"{lab} {_short(r).split(' / ')[-1] if old else _short(r)}" for lab, r in hooks)
                          + (" (their times predate a fix of probe's map reduction)" if old else ""))
        others = "; ".join(others)
        parts.append(f"sink capture of one {n:,}-token prompt on {NAMES[model]}: probe {_short(cap[(model, n, 'native')])}"
                     + (f" ({others})" if others else ""))
    final9 = all((Path(folder) / n).exists() for n in HEADLINE_GEN)
    latest = HEADLINE_GEN[0] if final9 else next(
        (n for n in reversed(list(GEN6) + list(GEN7) + ["e2e_gen_s8f_h200.json"])   # (s8: batch 1 and 16)
         if (Path(folder) / n).exists()), None)
    if latest:             # session 6: eager and static (CUDA graphs) decode ms per step vs plain, one call
        gen = _gen_rows(_load(folder, latest))
        if final9:         # session 9: batch 1 and batch 16 in two files of one call
            gen.update(_gen_rows(_load(folder, HEADLINE_GEN[1])))
        short = lambda v: LABELS5[v].split(' (')[0].split(':')[0].split(',')[0]  # noqa: E731
        spans = []
        attr = (Path(folder) / HEADLINE_ATTR).exists()
        for B in () if attr else (1, 16):
            p = gen.get((B, "plain"), {}).get("step_ms_median")
            x = {v: gen[(B, v)]["step_ms_median"] / p for (b, v) in gen if b == B and v != "plain" and p}
            if x:
                spans.append(f"eager, batch {B}: " + ", ".join(f"{short(v)} {r:.2f}×" for v, r in x.items()))
        if attr:
            more, raw = _attribution_spans(folder)
            spans += more
        st = {r["variant"]: r for r in _load(folder, latest)["rows"] if r.get("part") == "static" and r.get("step_ms_median")}
        s7 = next((n for n in reversed(list(STATIC7) + list(STATIC8) + list(STATIC9)) if (Path(folder) / n).exists()),
                  None)
        if "plain" in st and gen.get((1, "plain"), {}).get("step_ms_median") and not s7:
            fast = gen[(1, "plain")]["step_ms_median"] / st["plain"]["step_ms_median"]
            spans.append(f"static cache + CUDA graphs, batch 1 (plain {fast:.1f}× faster than eager): " + ", ".join(
                f"{short(v)} {r['step_ms_median'] / st['plain']['step_ms_median']:.2f}×" for v, r in st.items() if v != "plain"))
        # rows that ran today's defaults in session 7's last static call: at batch 16 VAR's column mode became split
        # after it (benchmarks/results/decode_edits_span1024_h200.json), and the call timed that mode as "var@split"
        today = {16: {"var": "var@split"}} if s7 == "e2e_static_s7c3_h200.json" else {}
        if s7:             # session 7: graph mode with ACT / VAR on the decode kernels, batch 1 and 16
            for B, (plains, vs) in sorted(_static7(folder, s7).items()):
                mean = sum(plains) / len(plains) if plains else None
                if mean:
                    drift = f"; plain's own runs {min(plains):.2f}–{max(plains):.2f} ms" if len(plains) > 1 else ""
                    pick = {v: vs.get(today.get(B, {}).get(v, v), r) for v, r in vs.items() if "@" not in v}
                    spans.append(f"static cache + CUDA graphs, batch {B} (`{s7}`{drift}): " + ", ".join(
                        f"{short(v)} {r['step_ms_median'] / mean:.2f}×" for v, r in pick.items()))
        if spans:
            parts.append("a `generate` decode step inside `intervene` (4,096-token prompt, random-init Llama-7B shape, "
                         "8 layers) takes, relative to the plain model's: " + "; ".join(spans)
                         + (f" (eager: `{HEADLINE_ATTR}`; the raw median-step ratios on that host, whose speed "
                            f"drifted between runs, ranged {raw[0]:.2f}–{raw[1]:.2f}×; " if attr else
                            f" (eager: `{HEADLINE_GEN[0]}` / `{HEADLINE_GEN[1]}`, on a host whose speed drifted "
                            "between runs all that session; " if final9 else f" (eager: `{latest}`; ")
                         + "other calls, per-layer GPU times and the noise of these steps in BENCHMARKS.md)")
        return ("On one H200 (wall time / peak memory over the weights): " + "; ".join(parts)
                + ". Tables: `kernels/BENCHMARKS.md`, end-to-end section.\n")
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
        "kernels/BENCHMARKS.md": {"e2e-generate": generate_table(folder), "e2e-generate-s4": generate_table_s4(folder),
                                  "e2e-capture": capture_table(folder),
                                  "e2e-profile": profile_table(folder), "e2e-profile-extra": profile_extra_table(folder),
                                  "e2e-ties": ties_text(folder), "e2e-findings": findings(folder),
                                  "e2e-static": static_table(folder), "e2e-capture-cpu": capture_table(folder, CPU),
                                  "e2e-python-calls": python_calls_table(folder),
                                  **{f"e2e-generate-s6-{i}": _generate_table_steps(folder, n) + "\n" + static_table(folder, n)
                                     for i, n in enumerate(GEN6, 1) if (Path(folder) / n).exists()},
                                  **{f"e2e-static-s6-{i}": static_table(folder, n) + f"\n(`benchmarks/results/{n}`, code at "
                                     f"{c}.)\n" for i, (n, c) in enumerate(STATIC6.items(), 2) if (Path(folder) / n).exists()},
                                  **{f"e2e-generate-s7{'' if i == 1 else f'-{i}'}": _generate_table_steps(folder, n)
                                     for i, n in enumerate(GEN7, 1) if (Path(folder) / n).exists()},
                                  **{f"e2e-static-s7-{i}": static_table_s7(folder, n)
                                     for i, n in enumerate(STATIC7, 1) if (Path(folder) / n).exists()},
                                  **{f"graph-decode-s7{'' if i == 1 else f'-{i}'}": graph_decode_table(folder, n)
                                     for i, n in enumerate(GRAPH7, 1) if (Path(folder) / n).exists()},
                                  **{f"e2e-static-s8-{i}": static_table_s7(folder, n)
                                     for i, n in enumerate(STATIC8, 1) if (Path(folder) / n).exists()},
                                  **{f"e2e-generate-s8-{i}": host_gen_table(folder, n)
                                     for i, n in enumerate(GEN8, 1) if (Path(folder) / n).exists()},
                                  **({"seam-host-s8": seam_host_table(folder)}
                                     if (Path(folder) / "seam_host_h200.json").exists() else {}),
                                  **{f"e2e-generate-s9-{i}": host_gen_table(folder, n)
                                     for i, n in enumerate(GEN9, 1) if (Path(folder) / n).exists()},
                                  **{f"e2e-static-s9-{i}": static_table_s7(folder, n)
                                     for i, n in enumerate(STATIC9, 1) if (Path(folder) / n).exists()},
                                  **({"seam-stages-s9": stages_table(folder), "decode-launch-s9": launch_table9(folder)}
                                     if all((Path(folder) / n).exists() for n in STAGES9 + LAUNCH9) else {}),
                                  **({"prefill-profile-s9": prefill_table(folder)}
                                     if (Path(folder) / PREFILL9[0]).exists() else {}),
                                  **({"decode-host-s9": decode_host_table(folder)}
                                     if (Path(folder) / HOST9).exists() else {}),
                                  **{f"e2e-attribution-s10-{i}": attribution_table(folder, n)
                                     for i, n in enumerate(ATTR10, 1) if (Path(folder) / n).exists()},
                                  **{f"e2e-static-s10-{i}": static_table_s7(folder, n)
                                     for i, n in enumerate(STATIC10, 1) if (Path(folder) / n).exists()}},
        "README.md": {"e2e-headline": headline(folder)},
    }


def main() -> int:
    for rel, blocks in tables().items():
        write_blocks(ROOT / rel, blocks)
        print(f"wrote {', '.join(blocks)} in {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
