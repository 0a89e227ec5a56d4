"""studio-vlm2 results from the per-item files the device run wrote (``device_run.py``).

    python -m studies.vlm2.report                    # studies/vlm2/results -> metrics + README tables
    python -m studies.vlm2.report DIR --no-readme    # any run folder (e.g. a CPU dry run)

``main`` computes, from ``pope_items.jsonl.gz`` / ``captions.jsonl.gz`` / ``questions.json`` (settings in
``settings.json``'s "analysis", fixed before the run):
- ``benchmark.json``: per condition, POPE per split (accuracy, precision, recall, F1, yes-ratio; Wilson
  intervals, percentile bootstrap for F1) and CHAIR (CHAIR_i, CHAIR_s, object recall; Wilson);
- ``comparisons.csv``: each condition vs baseline (snapshot conditions vs the snapshot's baseline) on the
  same items: accuracy per split (exact McNemar) and CHAIR_s (exact McNemar on "caption has a
  hallucination"), CHAIR_i (bootstrap interval only), differences with paired-bootstrap intervals, Holm
  over all McNemar tests of the non-random conditions, and a verdict (helps / hurts: Holm p < 0.05 in that
  direction; otherwise no effect);
- ``random_controls.csv``: each VHR condition's accuracy change vs its matched random-head draws
  (``draws_p_value``; with k draws the smallest p is 1 / (k + 1)).
``tables(folder)`` turns those files (and the phenomena / training JSONs) into the README's tables.
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

from probe.data import scenes as sc  # noqa: E402
from probe.stats import draws_p_value, holm, mcnemar_exact, paired_bootstrap, wilson_interval  # noqa: E402

SPLITS = ("random", "popular", "adversarial")
RESULTS = HERE / "results"


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def _ci(k: int, n: int) -> dict:
    if not n:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    iv = wilson_interval(int(k), int(n))
    return {"value": k / n if n else float("nan"), "low": float(iv.low), "high": float(iv.high), "n": int(n)}


def _f1(gold: np.ndarray, pred: np.ndarray) -> float:
    gold, pred = np.asarray(gold), np.asarray(pred)
    tp = float(((gold == 1) & (pred == 1)).sum())
    fp = float(((gold == 0) & (pred == 1)).sum())
    fn = float(((gold == 1) & (pred == 0)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def pope_metrics(rows: list[dict]) -> dict:
    """rows: {"answer": "yes"/"no", "pred": "yes"/"no"} -> accuracy, precision, recall, f1, yes_ratio (intervals)."""
    gold = np.array([r["answer"] == "yes" for r in rows], dtype=int)
    pred = np.array([r["pred"] == "yes" for r in rows], dtype=int)
    tp = int(((gold == 1) & (pred == 1)).sum())
    f1_iv = paired_bootstrap(_f1, gold, pred, seed=0)
    return {
        "questions": len(rows),
        "accuracy": _ci(int((gold == pred).sum()), len(rows)),
        "precision": _ci(tp, int(pred.sum())),
        "recall": _ci(tp, int(gold.sum())),
        "f1": {"value": _f1(gold, pred), "low": float(f1_iv.low), "high": float(f1_iv.high)},
        "yes_ratio": _ci(int(pred.sum()), len(rows)),
    }


def _scenes(rows: list[dict]) -> list:
    return [sc.Scene(np.zeros((1, 1), np.uint8), [tuple(o) for o in r["objects"]], "") for r in rows]


def chair_metrics(rows: list[dict]) -> dict:
    scenes = _scenes(rows)
    m = sc.chair([r["caption"] for r in rows], scenes)
    present = sum(len(s.classes) for s in scenes)
    return {**m, "chair_i": _ci(m["hallucinated"], m["mentions"]),
            "chair_s": _ci(m["captions_with_hallucination"], m["captions"]),
            "recall": _ci(int(round(m["recall"] * present)), present),
            "exact_reference": sum(r["caption"].strip() == r["reference"].strip() for r in rows) / max(1, len(rows))}


def per_caption(rows: list[dict]) -> pd.DataFrame:
    """scene, mentions, hallucinated, has_hallucination per caption (rows sorted by scene)."""
    out = []
    for r, s in zip(rows, _scenes(rows)):
        said = sc.mentioned(r["caption"])
        wrong = [c for c in said if c not in s.classes]
        out.append({"scene": r["scene"], "mentions": len(said), "hallucinated": len(wrong),
                    "has_hallucination": bool(wrong)})
    return pd.DataFrame(out).sort_values("scene", ignore_index=True)


# ---------------------------------------------------------------------------------------------
# reading the run
# ---------------------------------------------------------------------------------------------


def _jsonl(folder: Path, stem: str) -> list[dict]:
    for name, opener in ((f"{stem}.jsonl.gz", gzip.open), (f"{stem}.jsonl", open)):
        if (folder / name).exists():
            with opener(folder / name, "rt") as f:
                return [json.loads(line) for line in f if line.strip()]
    raise FileNotFoundError(folder / f"{stem}.jsonl.gz")


def split_rows(pope: list[dict], questions: dict) -> dict[str, dict[str, list[dict]]]:
    """{condition: {split: rows in the split's question order}} from unique-question rows."""
    by = {}
    for r in pope:
        by.setdefault(r["condition"], {})[(r["scene"], r["cls"])] = r
    out = {}
    for cond, table in by.items():
        out[cond] = {}
        for split, qs in questions["splits"].items():
            rows = [table.get((s, c)) for s, c, _ in qs]
            if all(r is not None for r in rows):
                out[cond][split] = [{**r, "split": split} for r in rows]
    return out


def _baseline_of(cond: str) -> str:
    return cond.split("_", 1)[0] + "_baseline" if cond.startswith("snap") else "baseline"


def _is_random(cond: str) -> bool:
    return cond.startswith("random_")


def compare(pope: dict, caps: dict) -> pd.DataFrame:
    """Condition vs its baseline on the same items (see the module doc)."""
    rows = []
    diff = lambda a, b: float(np.mean(a) - np.mean(b))  # noqa: E731
    for cond in pope:
        base = _baseline_of(cond)
        if cond == base or base not in pope or cond == "no_image":
            continue
        for split in SPLITS:
            if split not in pope[cond] or split not in pope[base]:
                continue
            c = np.array([r["pred"] == r["answer"] for r in pope[cond][split]])
            b = np.array([r["pred"] == r["answer"] for r in pope[base][split]])
            iv = paired_bootstrap(diff, c, b, seed=0)
            mc = mcnemar_exact(c, b)
            rows.append({"condition": cond, "baseline": base, "metric": f"accuracy {split}", "n": len(c),
                         "baseline_value": b.mean(), "value": c.mean(), "delta": iv.estimate, "low": iv.low,
                         "high": iv.high, "fixed": mc.only_a, "broken": mc.only_b, "p": mc.p_value,
                         "better": "higher"})
    for cond in caps:
        base = _baseline_of(cond)
        if cond == base or base not in caps:
            continue
        c, b = per_caption(caps[cond]), per_caption(caps[base])
        n = min(len(c), len(b))
        c, b = c.iloc[:n], b.iloc[:n]
        hc, hb = c.has_hallucination.to_numpy(), b.has_hallucination.to_numpy()
        iv = paired_bootstrap(diff, hc, hb, seed=0)
        mc = mcnemar_exact(~hc, ~hb)                          # "correct" = caption without a hallucination
        rows.append({"condition": cond, "baseline": base, "metric": "CHAIR_s", "n": n, "baseline_value": hb.mean(),
                     "value": hc.mean(), "delta": iv.estimate, "low": iv.low, "high": iv.high, "fixed": mc.only_a,
                     "broken": mc.only_b, "p": mc.p_value, "better": "lower"})
        ratio = lambda h1, m1, h0, m0: h1.sum() / max(1, m1.sum()) - h0.sum() / max(1, m0.sum())  # noqa: E731
        iv = paired_bootstrap(ratio, c.hallucinated.to_numpy(), c.mentions.to_numpy(), b.hallucinated.to_numpy(),
                              b.mentions.to_numpy(), seed=0)
        rows.append({"condition": cond, "baseline": base, "metric": "CHAIR_i", "n": n,
                     "baseline_value": b.hallucinated.sum() / max(1, b.mentions.sum()),
                     "value": c.hallucinated.sum() / max(1, c.mentions.sum()), "delta": iv.estimate, "low": iv.low,
                     "high": iv.high, "fixed": np.nan, "broken": np.nan, "p": np.nan, "better": "lower"})
    df = pd.DataFrame(rows)
    if not len(df):
        return df
    fam = ~df.condition.map(_is_random) & df.p.notna()
    df["p_holm"] = np.nan
    df.loc[fam, "p_holm"] = holm(df.loc[fam, "p"].to_numpy())

    def verdict(r) -> str:
        if _is_random(r.condition) or np.isnan(r.p_holm):
            return ""
        good = r.delta > 0 if r.better == "higher" else r.delta < 0
        if r.p_holm < 0.05 and r.delta != 0:
            return "helps" if good else "hurts"
        return "no effect"
    df["verdict"] = [verdict(r) for r in df.itertuples()]
    return df


def random_controls(comp: pd.DataFrame) -> pd.DataFrame:
    """Each VHR condition's accuracy / CHAIR_s change vs the changes of its matched random draws."""
    rows = []
    if not len(comp):
        return pd.DataFrame(rows)
    for (cond, metric), g in comp[~comp.condition.map(_is_random)].groupby(["condition", "metric"], sort=False):
        draws = comp[comp.condition.str.startswith(f"random_{cond}_d") & (comp.metric == metric)]
        if not len(draws) or metric == "CHAIR_i":
            continue
        obs = float(g.delta.iloc[0])
        d = draws.delta.to_numpy()
        better_is_higher = g.better.iloc[0] == "higher"
        rows.append({"condition": cond, "metric": metric, "delta": obs, "draws": len(d), "draws_mean": d.mean(),
                     "draws_min": d.min(), "draws_max": d.max(),
                     "p_better_than_random": draws_p_value(obs, d, "greater" if better_is_higher else "less"),
                     "p_worse_than_random": draws_p_value(obs, d, "less" if better_is_higher else "greater")})
    return pd.DataFrame(rows)


def main(folder: Path = RESULTS, readme: bool = True) -> dict:
    folder = Path(folder)
    questions = json.loads((folder / "questions.json").read_text())
    pope = split_rows(_jsonl(folder, "pope_items"), questions)
    caps_rows = _jsonl(folder, "captions")
    caps: dict[str, list] = {}
    for r in caps_rows:
        caps.setdefault(r["condition"], []).append(r)
    caps = {k: sorted(v, key=lambda r: r["scene"]) for k, v in caps.items()}
    bench = {"pope": {c: {s: pope_metrics(rows) for s, rows in v.items()} for c, v in pope.items()},
             "chair": {c: chair_metrics(v) for c, v in caps.items()}}
    (folder / "benchmark.json").write_text(json.dumps(bench, indent=1))
    comp = compare(pope, caps)
    comp.to_csv(folder / "comparisons.csv", index=False, float_format="%.6g")
    random_controls(comp).to_csv(folder / "random_controls.csv", index=False, float_format="%.6g")
    if readme:
        from studies.tables import write_blocks

        write_blocks(HERE / "README.md", tables(folder))
        print(f"wrote {folder}/benchmark.json, comparisons.csv, random_controls.csv and the README tables")
    return bench


# ---------------------------------------------------------------------------------------------
# README tables (from the files main wrote and the run's JSONs)
# ---------------------------------------------------------------------------------------------


def _load(folder: Path, name: str):
    p = folder / name
    return json.loads(p.read_text()) if p.exists() else None


def _sinks_by_layer_table(res: Path, markdown_table, num) -> str:
    """phi over image tokens per layer: v2's distribution (visual_tokens_v2.parquet) next to v1's max and both
    models' visual sinks per item (phenomena_v1.json for v1)."""
    tok = pd.read_parquet(res / "visual_tokens_v2.parquet")
    v1 = _load(res, "phenomena_v1.json") or {}
    n2, n1 = tok["item"].nunique(), v1.get("items") or 1
    rows = []
    for layer, g in tok.groupby("layer"):
        q = g.phi.quantile([0.5, 0.9, 0.99]).tolist()
        key = str(int(layer))
        rows.append([int(layer), " / ".join(num(x, 2) for x in q + [g.phi.max()]),
                     num(g.is_visual_sink.sum() / n2, 2), num(v1.get("phi_max_by_layer", {}).get(key), 2),
                     num(v1.get("visual_sinks_by_layer", {}).get(key, 0) / n1, 2)])
    return markdown_table(["layer", "v2: phi over image tokens p50 / p90 / p99 / max", "v2: visual sinks per item",
                           "v1: max phi over image tokens", "v1: visual sinks per item"], rows)


def tables(folder: Path = HERE) -> dict[str, str]:
    from studies.tables import ci, markdown_table, num, pval

    folder = Path(folder)
    res = folder / "results" if (folder / "results").is_dir() else folder
    out = {}
    bench = json.loads((res / "benchmark.json").read_text())
    comp = pd.read_csv(res / "comparisons.csv")
    rand = pd.read_csv(res / "random_controls.csv") if (res / "random_controls.csv").stat().st_size > 1 else pd.DataFrame()
    train = _load(res, "train.json") or {}
    from safetensors import safe_open

    proj = REPO / "probe" / "assets" / "studio_vlm2_projector.safetensors"
    meta = {}
    if proj.exists():
        with safe_open(str(proj), framework="pt") as f:
            meta = {k: json.loads(v) if v[:1] in "[{" else v for k, v in (f.metadata() or {}).items()}
    cost = meta.get("cost", {})
    recipe = meta.get("recipe", {})
    out["train"] = markdown_table(
        ["device", "steps (cap)", "batch", "feature s", "train s", "loss first 100", "loss last 100", "trainable params"],
        [[cost.get("device", "–"), f"{train.get('steps_run', '–')} ({recipe.get('steps_cap', '–')})", recipe.get("batch", "–"),
          cost.get("feature_seconds", "–"), cost.get("train_seconds", "–"), num(train.get("first100")),
          num(train.get("last100")), cost.get("trainable_params", "–")]])

    def pope_row(cond, split):
        m = bench["pope"][cond][split]
        return [cond, split, m["questions"], ci(m["accuracy"]["value"], m["accuracy"]["low"], m["accuracy"]["high"]),
                num(m["precision"]["value"]), num(m["recall"]["value"]),
                ci(m["f1"]["value"], m["f1"]["low"], m["f1"]["high"]), num(m["yes_ratio"]["value"])]
    main_conds = [c for c in bench["pope"] if not _is_random(c) and not c.startswith("snap")]
    out["pope_baseline"] = markdown_table(
        ["condition", "split", "questions", "accuracy", "precision", "recall", "F1", "yes-ratio"],
        [pope_row(c, s) for c in ("baseline", "no_image") if c in bench["pope"] for s in SPLITS if s in bench["pope"][c]])
    out["pope_all"] = markdown_table(
        ["condition", "split", "questions", "accuracy", "precision", "recall", "F1", "yes-ratio"],
        [pope_row(c, s) for c in main_conds for s in SPLITS if s in bench["pope"][c]])
    out["chair"] = markdown_table(
        ["condition", "captions", "CHAIR_i", "CHAIR_s", "object recall", "mentions", "= reference caption"],
        [[c, m["captions"], ci(m["chair_i"]["value"], m["chair_i"]["low"], m["chair_i"]["high"]),
          ci(m["chair_s"]["value"], m["chair_s"]["low"], m["chair_s"]["high"]),
          ci(m["recall"]["value"], m["recall"]["low"], m["recall"]["high"]), m["mentions"], num(m["exact_reference"])]
         for c, m in bench["chair"].items() if not _is_random(c)])
    fam = comp[~comp.condition.map(_is_random)]
    out["comparisons"] = markdown_table(
        ["condition", "metric", "baseline", "condition value", "difference [95% CI]", "fixed / broken", "p", "Holm p", "verdict"],
        [[r.condition, r.metric, num(r.baseline_value), num(r.value), ci(r.delta, r.low, r.high),
          "–" if pd.isna(r.fixed) else f"{int(r.fixed)} / {int(r.broken)}", pval(r.p), pval(r.p_holm),
          r.verdict if isinstance(r.verdict, str) else ""] for r in fam.itertuples()])
    if len(rand):
        out["random"] = markdown_table(
            ["VHR condition", "metric", "VHR difference", "random draws: mean [min, max]", "draws",
             "p (better than random)", "p (worse than random)"],
            [[r.condition, r.metric, f"{r.delta:+.3f}", f"{r.draws_mean:+.3f} [{r.draws_min:+.3f}, {r.draws_max:+.3f}]",
              int(r.draws), pval(r.p_better_than_random), pval(r.p_worse_than_random)] for r in rand.itertuples()])
    else:
        out["random"] = "no random-control draws were run\n"
    cs = _load(res, "conditions_summary.json") or {"pope": {}}
    out["var_activity"] = markdown_table(
        ["VAR condition (POPE)", "visual-sink entries per question (summed over layers)",
         "all sink entries per question", "share of eligible (head, query) rows edited"],
        [[c, num(v["visual_sink_entries"]["mean"], 1), num(v["sink_entries"]["mean"], 1),
          num(v["selected_fraction"]["mean"], 3)] for c, v in cs["pope"].items() if "var" in c and v])
    out["sinks"] = _sink_table(res, markdown_table, num)
    out["landing"] = _landing_table(res, markdown_table)
    out["sinks_by_layer"] = _sinks_by_layer_table(res, markdown_table, num)
    out["vhd"] = _vhd_table(res, markdown_table, num)
    for rr_dir in (res.parent / "results_resolution", res.parent / "results_final"):   # the session-5 calls
        if (rr_dir / "benchmark.json").exists():
            from studies.vlm2 import resolution_report

            out.update(resolution_report.tables(rr_dir))
    stages = _load(res, "stages.json") or {}
    skipped = [k for k, v in stages.items() if v.get("status") != "done"]
    parity = _load(res, "vhr_parity.json") or {}
    out["run"] = markdown_table(
        ["stages done", "not run / failed", "batched VHR vs interventions.VHR: questions, largest difference of lp(Yes) − lp(No), identical head sets"],
        [[sum(v.get("status") == "done" for v in stages.values()), ", ".join(skipped) or "none",
          f"{parity.get('n', '–')}, {parity.get('max_abs_diff_yes_minus_no', float('nan')):.2g}, "
          f"{parity.get('identical_head_sets', float('nan')):.2f}"]])
    return out


def _sink_table(res: Path, markdown_table, num) -> str:
    rows = []
    for label, name in (("v2 (112 px, 64 tokens), test scenes", "phenomena_v2.json"),
                        ("v1 (56 px, 16 tokens), test items", "phenomena_v1.json")):
        d = _load(res, name)
        if d:
            q = d["phi_quantiles_p50_p90_p99_max"]
            rows.append([label, d["items"], " / ".join(num(x, 2) for x in q), d["visual_sink_rows"],
                         num(d["visual_sinks_per_item_layer_mean"], 3), d["items_with_any_visual_sink"],
                         num(d["image_centric_fraction"], 3), num(d["image_attention_mass_mean"], 3),
                         num(d["vision_norm_max_over_median"], 2)])
    snaps = _load(res, "phenomena_snapshots.json") or {}
    for step, d in snaps.items():
        q = d["phi_quantiles_p50_p90_p99_max"]
        rows.append([f"v2 projector after {step} steps", d["items"], " / ".join(num(x, 2) for x in q), d["visual_sink_rows"],
                     num(d["visual_sinks_per_item_layer_mean"], 3), d["items_with_any_visual_sink"],
                     num(d["image_centric_fraction"], 3), num(d["image_attention_mass_mean"], 3),
                     num(d["vision_norm_max_over_median"], 2)])
    return markdown_table(["model", "items", "phi over image tokens p50 / p90 / p99 / max", "visual-sink rows (phi > 20)",
                           "visual sinks per item-layer", "items with any", "image-centric heads", "image attention mass",
                           "tower norm max/median"], rows)


def _landing_table(res: Path, markdown_table) -> str:
    rows = []
    for label, name in (("v2", "phenomena_v2.json"), ("v1", "phenomena_v1.json")):
        d = _load(res, name)
        if not d:
            continue
        ml = d["massive_landing"]
        tot = sum(ml["argmax_role_all_layers"].values())
        share = {k: v / tot for k, v in ml["argmax_role_all_layers"].items()}
        layers = ml["by_layer"]
        late = [v for k, v in layers.items() if int(k) >= 12]
        rows.append([label, ml["items"], ", ".join(f"{k} {v:.2f}" for k, v in sorted(share.items(), key=lambda t: -t[1])),
                     f"{np.mean([v['phi_image_max_mean'] for v in late]):.2f}",
                     f"{max(v['phi_image_max_max'] for v in layers.values()):.2f}",
                     f"{np.mean([v['phi_first_text_mean'] for v in late if v['phi_first_text_mean'] is not None]):.2f}"])
    return markdown_table(["model", "prompts", "where the largest phi of a prompt sits (share of item-layers, layers 2+)",
                           "max phi over image tokens, mean over items (layers 12+)", "max phi over image tokens (any)",
                           "phi of the first text token after the image (layers 12+)"], rows)


def _vhd_table(res: Path, markdown_table, num) -> str:
    p = res / "heads_v2.csv"
    if not p.exists():
        return "no VHD file\n"
    h = pd.read_csv(p)
    by_layer = h.groupby("layer")["vhd"].mean()
    top = h.sort_values("vhd", ascending=False).head(8)
    rows = [["mean VHD by layer (0, 1, 5, 10, 15, 20, 25, 29)",
             ", ".join(num(by_layer.get(l, float("nan")), 2) for l in (0, 1, 5, 10, 15, 20, 25, 29))],
            ["top heads", ", ".join(f"L{int(r.layer)}H{int(r.head)} {r.vhd:.2f}" for r in top.itertuples())],
            ["share of items where VHR's rule picks the head, mean over heads in layers 1, 17-29",
             num(h[h.layer.isin([1, *range(17, 30)])]["vhr_rate"].mean(), 3)]]
    return markdown_table(["VHD (L2 norm of head output with image minus without, last prompt token)", "value"], rows)


def summary_row(folder: Path) -> dict:
    """The top-level README row (studies/summary.py)."""
    res = Path(folder) / "results"
    bench = json.loads((res / "benchmark.json").read_text())
    comp = pd.read_csv(res / "comparisons.csv")
    b = bench["pope"]["baseline"]
    acc = ", ".join(f"{s} {b[s]['accuracy']['value']:.3f}" for s in SPLITS if s in b)
    above = [b[s]["accuracy"]["low"] > 0.5 for s in SPLITS if s in b]
    pope_word = ("above chance in every split (95 % intervals)" if all(above) else
                 "chance: the yes/no answers ignore the image" if not any(above) else
                 f"above chance in {sum(above)} of {len(above)} splits")
    ch = bench["chair"]
    main = comp[~comp.condition.map(_is_random) & ~comp.condition.str.startswith("snap")]
    pope_ = main[main.metric.str.startswith("accuracy")]
    n_sig = int((pope_.p_holm < 0.05).sum())
    d = _load(res, "phenomena_v2.json") or {}

    def cap(c):
        return (f"{c} CHAIR_s {ch[c]['chair_s']['value']:.3f}, CHAIR_i {ch[c]['chair_i']['value']:.3f}, "
                f"recall {ch[c]['recall']['value']:.3f}")
    helps = main[(main.metric == "CHAIR_s") & (main.verdict == "helps")].condition.tolist()
    var_v = set(main[(main.metric == "CHAIR_s") & main.condition.str.startswith("var")].verdict)
    var_word = "no effect" if var_v == {"no effect"} else ", ".join(sorted(var_v))
    return dict(study="studio-vlm2 (64 image tokens, multi-object scenes): POPE / CHAIR, VAR, VHR",
                result=f"baseline POPE accuracy {acc} ({pope_word}), "
                       f"{cap('baseline')}; visual sinks in {d.get('items_with_any_visual_sink')} of {d.get('items')} items "
                       f"({d.get('visual_sinks_per_item_layer_mean', float('nan')):.2f} per item-layer); POPE accuracy vs baseline: {n_sig} of {len(pope_)} VAR/VHR comparisons "
                       f"significant (Holm); VAR on CHAIR_s: {var_word}; VHR "
                       f"{', '.join(helps)} lower CHAIR_s only by breaking captions ({cap('vhr_a2')}), as matched random heads do",
                interval="per split and method in studies/vlm2/README.md (Wilson, paired bootstrap, exact McNemar + Holm)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", type=Path, default=RESULTS)
    ap.add_argument("--no-readme", action="store_true")
    a = ap.parse_args()
    main(a.folder, readme=not a.no_readme)
