"""The top-level README's results table: one row per study, generated from the studies' result files.

    python -m studies.summary          # rewrites the <!-- table:studies --> block of README.md

Each row is computed by a function below from files a study's script wrote. A study folder may also
provide its own row: a ``summary_row(folder) -> dict(study=..., result=..., interval=...)`` function in
its ``report.py`` (used when present, e.g. studies/headkv, studies/vlm_attention). A study whose files are
missing gets a row that says so instead of a number. tests/test_study_tables.py checks the committed
README against this function.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

from studies.tables import ci, markdown_table, pval, write_blocks  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent


def _act(folder: Path) -> dict:
    comp = pd.read_csv(folder / "comparisons.csv")
    m = pd.read_csv(folder / "metrics.csv")
    parts, ivs = [], []
    for task, c in comp.groupby("task", sort=False):
        s = c[(c.comparison == "searched vs baseline") & (c.effect == "accuracy gain")].iloc[0]
        a = c[(c.comparison == "all vs baseline") & (c.effect == "accuracy gain")].iloc[0]
        r = c[c.comparison == "searched vs same-layer random"]
        n = int(m[(m.task == task) & (m.condition == "baseline")].n.iloc[0])
        parts.append(f"{task} (n = {n}, 3 disjoint test folds): searched heads {s.estimate:+.3f} accuracy "
                     f"(Holm p {pval(s.p_holm)}), ACT on all heads {a.estimate:+.3f} (Holm p {pval(a.p_holm)})"
                     + (f", searched vs same-layer random heads: rank p {pval(r.p.iloc[0])}" if len(r) else ""))
        ivs.append(f"{task}: searched {ci(s.estimate, s.low, s.high)}, all {ci(a.estimate, a.low, a.high)}")
    missing = [t for t in ("sentiment", "topic", "capitals", "currencies") if t not in set(comp.task)]
    return dict(study="ACT head search (`probe calibrate`), pre-registered re-run", result="; ".join(parts)
                + (f". Not re-run: {', '.join(missing)} (see README)" if missing else ""), interval="; ".join(ivs))


def _arithmetic(folder: Path) -> dict:
    comp = pd.read_csv(folder / "comparisons.csv")
    abl = pd.read_csv(folder / "ablation.csv")
    base = abl[(abl.kind == "none") & (abl.operator == "all")].iloc[0]
    parts, ivs = [], []
    for k in sorted(comp.k.unique()):
        top = abl[(abl.kind == "top") & (abl.k == k) & (abl.operator == "all")].iloc[0]
        rnd = abl[(abl.kind == "layer_matched") & (abl.k == k) & (abl.operator == "all")]
        c = comp[(comp.k == k) & comp.comparison.str.endswith("vs none")].iloc[0]
        cr = comp[(comp.k == k) & comp.comparison.str.contains("random")].iloc[0]
        parts.append(f"top-{k} heads mean-ablated: {base.acc_estimate:.3f} → {top.acc_estimate:.3f} (Holm p {pval(c.p_holm)}); "
                     f"{rnd.draw.nunique()} layer-matched random sets {rnd.acc_estimate.min():.3f}–{rnd.acc_estimate.max():.3f} "
                     f"(rank p {pval(cr.p)}, Holm {pval(cr.p_holm)})")
        ivs.append(f"top-{k} drop {ci(c.effect, c.low, c.high)}")
    return dict(study=f"arithmetic heads, SmolLM2 (single-digit, {int(base.n)} held-out triples)",
                result="; ".join(parts), interval="; ".join(ivs))


def _retrieval(folder: Path) -> dict:
    h = pd.read_csv(folder / "heads.csv").sort_values("retrieval_score", ascending=False)
    res = (f"detection: {int(h.retrieval_head.sum())} of {len(h)} heads score > 0.1 "
           f"(top {', '.join(f'L{int(r.layer)}H{int(r.head)}' for r in h.head(3).itertuples())}); ")
    if (folder / "comparisons.csv").exists() and (folder / "masking.csv").exists():
        c, m = pd.read_csv(folder / "comparisons.csv"), pd.read_csv(folder / "masking.csv")
        parts, ivs, specific = [], [], True
        for length, g in m.groupby("length"):
            row = {r.condition: r for r in g.itertuples()}
            ctrl = g[g.condition.isin(["layer_matched", "sink_matched"])]
            # specific: recall below every control draw, ordinary-text NLL no worse than the controls' mean
            specific &= bool(row["top"].recall < ctrl.recall_min.min() and row["top"].nll <= ctrl.nll.mean())
            vs_none = c[(c.length == length) & (c.comparison == "top-5 vs none")].set_index("metric")
            ranks = c[(c.length == length) & c.comparison.str.contains("random") & (c.metric == "recall drop")]
            parts.append(f"{length} tokens: top-5 masked, NIAH recall {row['none'].recall:.3f} → {row['top'].recall:.3f} "
                         f"(Holm p {pval(vs_none.loc['recall drop'].p_holm)}); {int(ctrl.draws.sum())} layer-/sink-matched "
                         f"draws {ctrl.recall_min.min():.3f}–{ctrl.recall_max.max():.3f} (rank p "
                         f"{pval(ranks.p.max())}, Holm {pval(ranks.p_holm.max())}); ordinary-text NLL "
                         f"{row['none'].nll:.3f} → {row['top'].nll:.3f}, controls {ctrl.nll_min.min():.3f}–{ctrl.nll_max.max():.3f}")
            d = vs_none.loc["recall drop"]
            ivs.append(f"{length}: recall drop {ci(d.estimate, d.low, d.high)}")
        n = vs_none.loc["NLL increase"]
        res += "; ".join(parts) + (". Verdict: specific to retrieval (recall below every control draw, NLL no worse "
                                   "than the controls' mean)" if specific else ". Verdict: not specific to retrieval")
        iv = "; ".join(ivs) + f"; NLL increase {ci(n.estimate, n.low, n.high)}"
    else:
        res += "masking with layer- and sink-matched controls not completed; the earlier masking numbers are withdrawn"
        iv = "–"
    return dict(study="retrieval heads, SmolLM2 (NIAH on *Emma*)", result=res, interval=iv)


def _streaming(folder: Path) -> dict:
    d = json.loads((folder / "results_16k_h200.json").read_text())
    runs = d["runs"]
    res = ", ".join(f"{k} {v['ppl_past_context']:.1f}" for k, v in runs.items())
    iv = "; ".join(f"{k} {min(v['ppl_per_book']):.1f}–{max(v['ppl_per_book']):.1f}" for k, v in runs.items())
    return dict(study=f"StreamingLLM, SmolLM2, {len(d['books'])} Austen novels × {d['tokens']} tokens",
                result=f"perplexity past the {d['context']}-token context (sinks+window): {res}",
                interval=f"range of whole-run perplexity over the {len(d['books'])} books: {iv}")


def _vlm(folder: Path) -> dict:
    from probe import stats

    e = json.loads((folder / "results" / "eval.json").read_text())
    n = e["n"]
    w, wo = (stats.wilson_interval(round(e[k]["accuracy"] * n), n) for k in ("image", "no_image"))
    return dict(study="studio-vlm (DINOv2 ViT-S/14 + SmolLM2 + trained projector), Fashion-MNIST",
                result=f"{n} test-split images: {w.estimate:.3f} with the image, {wo.estimate:.3f} without (chance "
                       f"{e['chance']}). Not a clean held-out number: this set was used to choose the projector's stage 2",
                interval=f"{w.fmt()} / {wo.fmt()} (Wilson)")


def _vlm_attention(folder: Path) -> dict:
    from probe import stats

    a = json.loads((folder / "results" / "results_acc300.json").read_text())["accuracy"]
    n = a["n"]
    rows = {k: stats.wilson_interval(round(a[k]["accuracy"] * n), n) for k in ("baseline", "var_code", "vhr")}
    return dict(study="VAR / VHR on studio-vlm (Fashion-MNIST)",
                result=f"VAR is a no-op ({a['var_code']['changed_vs_baseline']} of {n} answers change: "
                       f"{rows['var_code'].estimate:.3f} = baseline {rows['baseline'].estimate:.3f}); VHR hurts: "
                       f"{rows['vhr'].estimate:.3f} ({a['vhr']['broken']} answers broken, {a['vhr']['fixed']} fixed)",
                interval=f"baseline {rows['baseline'].fmt()}, VHR {rows['vhr'].fmt()} (Wilson)")


def _classic_heads(folder: Path) -> dict:
    d = json.loads((folder / "tl_agreement.json").read_text())
    parts = [f"{a['detector']}{' (excl. BOS)' if a.get('exclude_bos') else ''} {a['max_abs_diff']:.1e}" for a in d["agreement"]]
    return dict(study="classic head detectors (previous-token, duplicate-token, induction) vs TransformerLens",
                result="largest absolute score difference per head vs TransformerLens detect_head on SmolLM2: " + ", ".join(parts),
                interval="– (exact agreement check)")


BUILTIN = {"act": _act, "arithmetic": _arithmetic, "retrieval": _retrieval, "streaming": _streaming, "vlm": _vlm,
           "vlm_attention": _vlm_attention, "classic_heads": _classic_heads}
ORDER = ("act", "arithmetic", "retrieval", "streaming", "vlm", "vlm_attention", "classic_heads", "headkv")


def _own_row(folder: Path):
    rep = folder / "report.py"
    if not rep.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_study_{folder.name}", rep)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, "summary_row", None)


def rows(root: Path = HERE) -> list[list[str]]:
    out = []
    names = [n for n in ORDER if (root / n).is_dir()] + sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name not in ORDER and (p / "README.md").exists()
        and _own_row(p) is not None)
    for name in names:
        folder = root / name
        fn = _own_row(folder) or BUILTIN.get(name)
        if fn is None:
            continue
        try:
            r = fn(folder)
        except FileNotFoundError as err:                     # no machine-specific path in the README
            r = dict(study=name, result=f"result file `{Path(err.filename).name}` not committed yet", interval="–")
        except (KeyError, IndexError) as err:
            r = dict(study=name, result=f"result files incomplete ({type(err).__name__}: {err})", interval="–")
        out.append([r["study"], r["result"], r["interval"], f"[`studies/{name}/`](studies/{name}/README.md)"])
    return out


def table(root: Path = HERE) -> str:
    return markdown_table(["study", "result", "interval (95% unless noted)", "where"], rows(root))


def _spans(layers) -> str:
    """[0, 1, 2, 10, 11] -> '0–2, 10–11'."""
    out, run = [], []
    for x in sorted(layers):
        if run and x != run[-1] + 1:
            out.append(run)
            run = []
        run.append(x)
    out += [run] if run else []
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in out)


def phenomena_table(folder: Path = HERE / "phenomena" / "smollm2") -> str:
    """The README's phenomena rows from the scan studies/phenomena/run.py wrote."""
    man = json.loads((folder / "manifest.json").read_text())
    summ, src = man["summary"]["sinks"], man["prompts"]["source"]
    heads = pd.read_parquet(folder / "heads.parquet")
    massive = pd.read_parquet(folder / "massive.parquet")
    per_layer = heads.groupby("layer").key0_mass.mean()                                   # [L]
    low = per_layer[per_layer < 0.2]
    top = heads.sort_values("key0_mass", ascending=False).head(3)
    hid = heads.sort_values("hidden_sink_mass", ascending=False).head(3)
    tok = summ["top_hidden_sink_tokens"][0]
    h = lambda r: f"L{int(r.layer)}H{int(r.head)}"  # noqa: E731
    dim = int(massive.loc[massive.max_value.idxmax(), "dim"])
    d = massive[massive.dim == dim]
    peak = d.loc[d.max_value.idxmax()]
    where = "`studies/phenomena/smollm2/` (`studies/phenomena/run.py`)"
    backends = json.loads((folder.parent / "backends.json").read_text())["max_abs_diff_vs_native"]
    return markdown_table(["phenomenon", f"result ({src}, CPU fp32)", "where"], [
        ["first-token sinks, SmolLM2",
         f"mean key-0 mass per layer below 0.2 in layers {_spans(low.index)} ({low.min():.3f}–{low.max():.3f}), "
         f"{per_layer[per_layer >= 0.2].min():.2f}–{per_layer.max():.2f} in the others; strongest heads "
         + ", ".join(f"{h(r)} {r.key0_mass:.2f}" for r in top.itertuples())
         + f"; sink rate (eps {summ['sink_rate_eps']:g}) {summ['sink_rate']:.0%} of (prompt, layer, head)", where],
        ["hidden sinks, SmolLM2",
         f"`{tok['token']!r}` is the most frequent hidden sink ({tok['count']:,} of {summ['hidden_sink_rows']:,} "
         f"(prompt, position, layer, head) rows above the threshold); most hidden-sink mass: "
         + ", ".join(f"{h(r)} {r.hidden_sink_mass:.2f}" for r in hid.itertuples()), where],
        ["massive activations, SmolLM2",
         f"sink dims found automatically: {', '.join(map(str, summ['sink_dims']))}; the largest, dim {dim}, reaches "
         f"{peak.max_value:,.0f} (ratio to the median {peak.max_ratio:,.0f}) at layer {int(peak.layer)}; Sun et al.'s "
         f"criterion holds in layers {_spans(d[d.sun_criterion].layer)}", where],
        ["backends, SmolLM2",
         "the same scan captured through " + " and ".join(backends) + ": largest absolute difference from probe's own "
         "seam over every heads-table column " + ", ".join(f"{b} {max(v.values()):.1e}" for b, v in backends.items()),
         "`studies/phenomena/backends.json`"],
    ])


def _rows_by(path: Path, **match) -> list[dict]:
    rows = json.loads(path.read_text())["rows"]
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def engineering_table(root: Path = ROOT) -> str:
    """The README's engineering checks from the GPU result files (scale-out, decode, prefill kernel, memory)."""
    scale = root / "studies" / "scale" / "results"
    shard = json.loads((scale / "scan_compare_h200x2.json").read_text())
    dmap = json.loads((scale / "device_map_h200x2.json").read_text())
    mem = _rows_by(root / "benchmarks" / "results" / "seam_memory_h200.json")
    # decode: session 5's call (the rows of the configuration that is the default now), else session 4's sweep
    dec_file = root / "benchmarks" / "results" / "decode_edits_h200_s5.json"
    if dec_file.exists():
        from benchmarks.bench_decode_edits import default_rows
        data = json.loads(dec_file.read_text())
        rows = data["rows"]
        dec = dict(default_rows(data))
        dec.update({(r["B"], r["S"], "sdpa"): r for r in rows if r["shape"] == "llama" and r["variant"] == "sdpa"})
    else:
        dec_file = root / "benchmarks" / "results" / "sweep_h200.json"
        dec = {(r["B"], r["S"], {"var_block_test": "var"}.get(r["variant"], r["variant"])): r
               for r in _rows_by(dec_file, kind="decode", shape="llama") if r["variant"] != "var"}

    def decode(b, s):
        """ACT (and VAR where the file measured today's VAR configuration at this shape) vs SDPA, one call."""
        act, var = dec[(b, s, "act")], dec.get((b, s, "var"))
        return (f"{b} × {s}: ACT {act['ms'] * 1e3:.1f} µs" + (f", VAR {var['ms'] * 1e3:.1f} µs" if var else "")
                + f" vs {dec[(b, s, 'sdpa')]['ms'] * 1e3:.1f} µs per layer (per token ≈ {act['token_x_est']:.3f}×"
                + (f" / {var['token_x_est']:.3f}×" if var else "") + ")")

    # VAR over a 1,023-key span (a whole image's tokens), today's defaults: session 8's call
    span_file = root / "benchmarks" / "results" / "decode_edits_span_s8_h200.json"
    long_span = ""
    if span_file.exists():
        from benchmarks.bench_decode_edits import default_rows
        data = json.loads(span_file.read_text())
        sd = {(r["B"], r["S"]): r for r in data["rows"] if r["variant"] == "sdpa"}
        long_span = "; VAR over a 1,023-key span (session 8): " + ", ".join(
            f"{b} × {s} {r['ms'] * 1e3:.1f} vs {sd[(b, s)]['ms'] * 1e3:.1f} µs (per token ≈ {r['token_x_est']:.3f}×)"
            for (b, s, kind), r in sorted(default_rows(data).items()) if kind == "var")

    # the kernels in interleaved rounds with the session 14 defaults (calls 2 and 3; call 1 timed an earlier build of
    # fixref) and the energy per call (call 3)
    res = root / "benchmarks" / "results"
    # call 2's arms that run today's defaults (the Llama shape's statistics and edits were fixref arms then)
    call2 = {"llama": {"stats": "stats_fixref", "edit": "edit_fixref"}}
    ab_files = [(res / "ab_h200_s14_call2.json", "call 2", call2), (res / "ab_h200_s14_call3.json", "call 3", {})]
    power_file = res / "power_profile_s14_h200.json"
    ab_rows = []
    if all(f.exists() for f, _, _ in ab_files):
        from benchmarks.sweep_report import ab_ratio, ab_rounds
        rounds = {w: ab_rounds(json.loads(f.read_text())["rows"]) for f, w, _ in ab_files}

        def x_sdpa(shape, variant):
            cells = []
            for _, w, arm_of in ab_files:
                r = ab_ratio(rounds[w], (shape, arm_of.get(shape, {}).get(variant, variant)), (shape, "sdpa"))
                if r:
                    cells.append(f"{r[0]:.3f}× [{r[1]:.3f}, {r[2]:.3f}] ({w})")
            return f"{variant} " + ", ".join(cells)
        energy = ""
        if power_file.exists():
            prow = {(r["shape"], r["piece"]): r for r in json.loads(power_file.read_text())["rows"]}
            watts = sorted(r["power_w"] for r in prow.values())
            energy = ("; statistics energy per call (call 3, every piece at the 700 W power cap, "
                      f"{watts[0]:.0f}–{watts[-1]:.0f} W): SmolLM2 "
                      f"{prow[('smollm', 'stats')]['energy_j'] / prow[('smollm', 'sdpa')]['energy_j']:.3f}× SDPA's, "
                      f"Llama-7B {prow[('llama', 'stats')]['energy_j'] / prow[('llama', 'sdpa')]['energy_j']:.3f}×")
        shapes = [("smollm", "SmolLM2 shape"), ("llama", "Llama-7B shape")]
        ab_rows = [["fused attention at 64K tokens vs cuDNN SDPA, interleaved rounds (one do_bench per arm per round, "
                    "median per-round ratio, 95 % bootstrap interval), H200, bf16, causal, session 14 defaults "
                    "(targets: output ≤ 1.12×, ACT edit ≤ 1.15×, full statistics ≤ 1.7×)",
                    "; ".join(f"{label}: " + ", ".join(x_sdpa(shape, v) for v in ("stats", "output", "edit"))
                              for shape, label in shapes) + energy
                    + f"; GPU kernel tests in call 3: {sweep_tests(ab_files[1][0])}",
                    "`benchmarks/results/ab_h200_s14_call{2,3}.json`, `power_profile_s14_h200.json` "
                    "(`kernels/BENCHMARKS.md`)"]]

    def memory(r):
        return (f"{r['shape']} {r['N'] // 1024}K {r['capture_peak_gib']:.2f} vs {r['plain_sdpa_peak_gib']:.2f} GiB")

    return markdown_table(["check", "result", "where"], [
        ["scale-out on 2 H200s",
         f"torchrun sharded sinks scan (heads {shard['heads']['rows'][0]} rows, tokens {shard['tokens']['rows'][0]:,} rows) "
         f"vs one GPU: max diff heads {shard['heads']['max_abs_diff']:g}, tokens {shard['tokens']['max_abs_diff']:g}, "
         f"massive {shard['massive']['max_abs_diff']:g}; sinks pass {shard['timings_one']['sinks_s']:.1f} s on one GPU vs "
         f"{shard['timings_two']['sinks_s']:.1f} s on two; `device_map=\"{dmap['device_map_arg']}\"` over "
         f"{dmap['gpus']} GPUs: heads max diff {dmap['heads_max_abs_diff']:g}, ACT generate same tokens "
         f"{dmap['act_generate_same_tokens']}", "`studies/scale/results/`"],
        ["decode with ACT / VAR inside the split-KV kernels, Llama-7B shape, H200, bf16",
         decode(1, 4096) + "; " + decode(16, 2048) + long_span + " (target ≤ 1.05× per token)",
         f"`benchmarks/results/{dec_file.name}`" + (f", `{span_file.name}`" if long_span else "")
         + " (`kernels/BENCHMARKS.md`)"],
        *ab_rows,
        ["capture memory at long context, H200, bf16 (random-init shapes)",
         "peak GPU memory of `probe.capture` vs a plain SDPA forward: " + "; ".join(memory(r) for r in mem),
         "`benchmarks/results/seam_memory_h200.json`"],
    ])


def sweep_tests(sweep: Path) -> str:
    """'57 passed, 1 skipped' from the pytest tail the sweep recorded."""
    tail = json.loads(sweep.read_text())["meta"]["pytest_tail"]
    line = next(t for t in tail if " passed" in t)
    return line.split(" in ")[0].replace(", 2 warnings", "").replace(", 3 warnings", "")


if __name__ == "__main__":
    write_blocks(ROOT / "README.md", {"studies": table(), "phenomena": phenomena_table(),
                                      "engineering": engineering_table()})
    print("README.md: regenerated the studies, phenomena and engineering tables")
