"""The retraining call's results (``resolution_run.py``): cost and benchmark per resolution, vs the shipped projector.

    python -m studies.vlm2.resolution_report --unpack RUN_OUT   # RUN_OUT/vlm2_results.tar.gz -> results_resolution/
    python -m studies.vlm2.resolution_report                    # metrics, comparisons, decision + README tables

Models: ``r224`` / ``r112`` (the new recipe at 224 px / 112 px; 112 px was to run the 224 px run's step count)
and ``old`` (the projector shipped
before this call: its test rows are copied from ``studies/vlm2/results`` at unpack time, its validation and
photo-background rows come from the call). Sets: ``baseline`` (the held-out test benchmark), ``no_image``,
``photo_baseline`` (the same test scenes on held-out photo backgrounds), ``val_baseline`` (validation: the
resolution choice for the final call, ``settings_resolution.json`` "selection").
Writes ``results_resolution/benchmark.json``, ``comparisons.csv``, ``decision.json`` and the README blocks
``resolution_*``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from studies.vlm2 import report as rp
from probe.stats import holm, mcnemar_exact, paired_bootstrap

HERE = Path(__file__).resolve().parent
RES = HERE / "results_resolution"
MODELS = ("r224", "r112", "old")
LABEL = {"r224": "new recipe, 224 px (256 tokens)", "r112": "new recipe, 112 px (64 tokens)",
         "old": "shipped v2 (112 px)"}
SPLITS = rp.SPLITS


def unpack(src: Path, dest: Path = RES, old_results: Path = rp.RESULTS) -> None:
    """Copy the call's tarball into ``dest`` (JSONL gzipped; projectors not kept: they are in the call's OUT and,
    when shipped, in probe/assets) and add the shipped projector's test rows from ``old_results``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(Path(src) / "vlm2_results.tar.gz") as tar:
            tar.extractall(tmp, filter="data")
        for p in tmp.rglob("*"):
            if not p.is_file() or p.suffix == ".safetensors":
                continue
            rel = p.relative_to(tmp)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            if p.suffix == ".jsonl":
                with open(p, "rb") as f, gzip.open(dest / f"{rel}.gz", "wb", 9) as g:
                    shutil.copyfileobj(f, g)
            else:
                shutil.copyfile(p, dest / rel)
    (dest / "old").mkdir(exist_ok=True)
    for stem in ("pope_items", "captions"):
        rows = [r for r in rp._jsonl(old_results, stem) if r["condition"] in ("baseline", "no_image")]
        have = rp._jsonl(dest / "old", stem) if (dest / "old" / f"{stem}.jsonl.gz").exists() else []
        with gzip.open(dest / "old" / f"{stem}.jsonl.gz", "wt", 9) as g:
            for r in have + rows:
                g.write(json.dumps(r) + "\n")


def labels(res: Path) -> dict[str, str]:
    """Model labels for a results folder: the recipe ("new" or "v2") read from the call's settings_used.json."""
    used = json.loads((Path(res) / "settings_used.json").read_text())
    recipe = "v2 recipe" if used["train"].get("loss_weighting") == "token" else "new recipe"
    return {**LABEL, "r224": f"{recipe}, 224 px (256 tokens)", "r112": f"{recipe}, 112 px (64 tokens)"}


def _load(res: Path):
    qs = {"test": json.loads((res / "questions.json").read_text()),
          "val": json.loads((res / "val_questions.json").read_text())}
    pope, caps = {}, {}
    for m in MODELS:
        if not (res / m / "pope_items.jsonl.gz").exists():
            continue
        rows = rp._jsonl(res / m, "pope_items")
        pope[m] = {**rp.split_rows([r for r in rows if not r["condition"].startswith("val_")], qs["test"]),
                   **rp.split_rows([r for r in rows if r["condition"].startswith("val_")], qs["val"])}
        c: dict = {}
        for r in rp._jsonl(res / m, "captions"):
            c.setdefault(r["condition"], []).append(r)
        caps[m] = {k: sorted(v, key=lambda r: r["scene"]) for k, v in c.items()}
    return pope, caps


def _correct(rows):
    return np.array([r["pred"] == r["answer"] for r in rows])


def compare(pope: dict, caps: dict) -> pd.DataFrame:
    """New vs shipped and 224 vs 112 on the same test questions / captions (Holm within each family)."""
    diff = lambda a, b: float(np.mean(a) - np.mean(b))  # noqa: E731
    out = []
    for a, b in (("r224", "old"), ("r112", "old"), ("r224", "r112")):
        if a not in pope or b not in pope:
            continue
        fam = []
        for cond in ("baseline", "photo_baseline"):
            for split in SPLITS:
                if split not in pope[a].get(cond, {}) or split not in pope[b].get(cond, {}):
                    continue
                ca, cb = _correct(pope[a][cond][split]), _correct(pope[b][cond][split])
                iv, mc = paired_bootstrap(diff, ca, cb, seed=0), mcnemar_exact(ca, cb)
                fam.append({"a": a, "b": b, "set": cond, "metric": f"accuracy {split}", "value_a": ca.mean(),
                            "value_b": cb.mean(), "delta": iv.estimate, "low": iv.low, "high": iv.high,
                            "a_only": mc.only_a, "b_only": mc.only_b, "p": mc.p_value, "better": "higher"})
            if cond in caps.get(a, {}) and cond in caps.get(b, {}):
                pa, pb = rp.per_caption(caps[a][cond]), rp.per_caption(caps[b][cond])
                n = min(len(pa), len(pb))
                ha, hb = pa.has_hallucination.to_numpy()[:n], pb.has_hallucination.to_numpy()[:n]
                iv, mc = paired_bootstrap(diff, ha, hb, seed=0), mcnemar_exact(~ha, ~hb)
                fam.append({"a": a, "b": b, "set": cond, "metric": "CHAIR_s", "value_a": ha.mean(), "value_b": hb.mean(),
                            "delta": iv.estimate, "low": iv.low, "high": iv.high, "a_only": mc.only_a,
                            "b_only": mc.only_b, "p": mc.p_value, "better": "lower"})
        for cond in ("baseline", "photo_baseline"):          # Holm within (pair, set): 3 splits + CHAIR_s
            idx = [i for i, r in enumerate(fam) if r["set"] == cond]
            if idx:
                adj = holm([fam[i]["p"] for i in idx])
                for i, q in zip(idx, adj):
                    fam[i]["p_holm"] = float(q)
        out += fam
    return pd.DataFrame(out)


def decision(bench: dict, comp: pd.DataFrame, settings: dict) -> dict:
    """The pre-registered choice of resolution (validation) and whether each new projector would pass the
    ship rule (test; the rule is applied to the final call's projector, these are for the record)."""
    val = {m: float(np.mean([bench["pope"][m]["val_baseline"][s]["accuracy"]["value"] for s in SPLITS]))
           for m in ("r224", "r112") if "val_baseline" in bench["pope"].get(m, {})}
    choice = None
    if len(val) == 2:
        choice = 224 if val["r224"] - val["r112"] >= 0.02 else 112
    ship = {}
    for m in ("r224", "r112"):
        if "baseline" not in bench["pope"].get(m, {}):
            continue
        above = all(bench["pope"][m]["baseline"][s]["accuracy"]["low"] > 0.5 for s in SPLITS)
        c = comp[(comp.a == m) & (comp.b == "old") & (comp.set == "baseline") & comp.metric.str.startswith("accuracy")] \
            if len(comp) else comp
        better = bool(len(c) == 3 and all((c.delta > 0) & (c.p_holm < 0.05)))
        ship[m] = {"above_chance_all_splits": above, "better_than_shipped_all_splits": better, "passes": above and better}
    return {"validation_pope_accuracy_mean": val, "chosen_image_size": choice, "rule": settings["selection"]["rule"],
            "ship_rule": settings["ship"]["rule"], "ship_check": ship}


def ship_check(final: Path, res: Path = RES) -> dict:
    """The pre-registered ship rule (``settings_resolution.json`` "ship") on a final call's results folder
    ``final`` (its baseline POPE rows) against the shipped projector's rows (``res/old``), on the same questions.

    Returns per split: accuracy with its Wilson interval, the difference to the shipped projector (paired
    bootstrap), exact McNemar p and Holm p over the three splits; "passes" = every split's interval above 0.5
    and every split better than the shipped projector at Holm p < 0.05.
    """
    questions = json.loads((final / "questions.json").read_text())
    new = rp.split_rows([r for r in rp._jsonl(final, "pope_items") if r["condition"] == "baseline"], questions)["baseline"]
    old = rp.split_rows([r for r in rp._jsonl(res / "old", "pope_items") if r["condition"] == "baseline"], questions)["baseline"]
    diff = lambda a, b: float(np.mean(a) - np.mean(b))  # noqa: E731
    rows = {}
    for split in SPLITS:
        cn_, co_ = _correct(new[split]), _correct(old[split])
        m = rp.pope_metrics(new[split])
        iv, mc = paired_bootstrap(diff, cn_, co_, seed=0), mcnemar_exact(cn_, co_)
        rows[split] = {"accuracy": m["accuracy"], "shipped_accuracy": float(co_.mean()), "delta": iv.estimate,
                       "low": iv.low, "high": iv.high, "new_only": mc.only_a, "shipped_only": mc.only_b, "p": mc.p_value}
    for split, q in zip(SPLITS, holm([rows[s]["p"] for s in SPLITS])):
        rows[split]["p_holm"] = float(q)
    above = all(rows[s]["accuracy"]["low"] > 0.5 for s in SPLITS)
    better = all(rows[s]["delta"] > 0 and rows[s]["p_holm"] < 0.05 for s in SPLITS)
    return {"splits": rows, "above_chance_all_splits": above, "better_than_shipped_all_splits": better,
            "passes": above and better}


def main(res: Path = RES, readme: bool = True) -> dict:
    pope, caps = _load(res)
    bench = {"pope": {m: {c: {s: rp.pope_metrics(rows) for s, rows in v.items()} for c, v in d.items()}
                      for m, d in pope.items()},
             "chair": {m: {c: rp.chair_metrics(v) for c, v in d.items()} for m, d in caps.items()}}
    (res / "benchmark.json").write_text(json.dumps(bench, indent=1))
    comp = compare(pope, caps)
    comp.to_csv(res / "comparisons.csv", index=False, float_format="%.6g")
    settings = json.loads((res / "settings_used.json").read_text())
    dec = decision(bench, comp, settings) if "selection" in settings else {}
    if dec:
        (res / "decision.json").write_text(json.dumps(dec, indent=1))
    if readme:
        from studies.tables import write_blocks

        write_blocks(HERE / "README.md", tables(res))
        print(f"wrote {res}/benchmark.json, comparisons.csv, decision.json and the README's resolution tables")
    return dec


def tables(res: Path = RES) -> dict[str, str]:
    """README blocks PREFIX_cost, _pope, _val, _chair, _comparisons (+ _choice, _text_control where the files
    exist); PREFIX is "final" for ``results_final`` (the last call), else "resolution"."""
    from studies.tables import ci, markdown_table, num, pval

    res = Path(res)
    pre = "final" if res.name == "results_final" else "resolution"
    LABEL = labels(res)
    bench = json.loads((res / "benchmark.json").read_text())
    comp = pd.read_csv(res / "comparisons.csv") if (res / "comparisons.csv").stat().st_size > 1 else pd.DataFrame()
    out = {}
    rows = []
    runs = {size: json.loads((res / f"train_{size}.json").read_text()) for size in (224, 112)
            if (res / f"train_{size}.json").exists()}
    for size, t in runs.items():
        gib = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
        rule = t["steps_rule"]
        if rule != "time budget" and 224 in runs and t["steps_run"] < runs[224]["steps_run"]:
            rule = f"{rule} ({runs[224]['steps_run']}), cut by the call's time guard"
        rows.append([f"{size} px", t["image_tokens"], f"{t['steps_run']} ({rule})", num(t["feature_seconds"], 1),
                     num(t["ms_per_step"], 1), num(t["seconds"], 1), gib(t["peak_gib_features"]), gib(t["peak_gib_train"]),
                     num(t["first100"]), num(t["last100"])])
    if pre == "final":                        # the shipped v2 (112 px) for reference: its run's train.json + asset
        from safetensors import safe_open

        v2 = json.loads((rp.RESULTS / "train.json").read_text())
        with safe_open(str(rp.REPO / "probe" / "assets" / "studio_vlm2_projector.safetensors"), framework="pt") as f:
            cost = json.loads((f.metadata() or {})["cost"])
        rows.append(["shipped v2, 112 px (fp32, no TF32; earlier call)", 64, v2["steps_run"],
                     num(cost["feature_seconds"], 1), num(1000 * cost["train_seconds"] / v2["steps_run"], 1),
                     num(cost["train_seconds"], 1), "–", "–", num(v2["first100"]), num(v2["last100"])])
    out[f"{pre}_cost"] = markdown_table(
        ["input", "image tokens", "steps", "features s (8,000 scenes)", "ms / step", "train s", "peak GiB (features)",
         "peak GiB (train)", "loss first 100", "loss last 100"], rows)

    def pope_rows(sets):
        rows = []
        for m in MODELS:
            for cond in sets:
                d = bench["pope"].get(m, {}).get(cond)
                for s in SPLITS:
                    if not d or s not in d:
                        continue
                    x = d[s]
                    rows.append([LABEL[m], cond, s, x["questions"],
                                 ci(x["accuracy"]["value"], x["accuracy"]["low"], x["accuracy"]["high"]),
                                 num(x["precision"]["value"]), num(x["recall"]["value"]),
                                 ci(x["f1"]["value"], x["f1"]["low"], x["f1"]["high"]), num(x["yes_ratio"]["value"])])
        return rows
    head = ["model", "set", "split", "questions", "accuracy", "precision", "recall", "F1", "yes-ratio"]
    out[f"{pre}_pope"] = markdown_table(head, pope_rows(("baseline", "no_image", "photo_baseline")))
    out[f"{pre}_val"] = markdown_table(head, pope_rows(("val_baseline",)))
    rows = []
    for m in MODELS:
        for cond in ("baseline", "photo_baseline"):
            c = bench["chair"].get(m, {}).get(cond)
            if c:
                rows.append([LABEL[m], cond, c["captions"], ci(c["chair_i"]["value"], c["chair_i"]["low"], c["chair_i"]["high"]),
                             ci(c["chair_s"]["value"], c["chair_s"]["low"], c["chair_s"]["high"]),
                             ci(c["recall"]["value"], c["recall"]["low"], c["recall"]["high"]), c["mentions"],
                             num(c["exact_reference"])])
    out[f"{pre}_chair"] = markdown_table(["model", "set", "captions", "CHAIR_i", "CHAIR_s", "object recall", "mentions",
                                              "= reference caption"], rows)
    rows = [[f"{LABEL[r.a]} vs {LABEL[r.b]}", r.set, r.metric, num(r.value_a), num(r.value_b), ci(r.delta, r.low, r.high),
             f"{int(r.a_only)} / {int(r.b_only)}", pval(r.p), pval(r.p_holm)] for r in comp.itertuples()] if len(comp) else []
    out[f"{pre}_comparisons"] = markdown_table(
        ["comparison", "set", "metric", "first", "second", "difference [95% CI]", "only first / only second right", "p",
         "Holm p"], rows)
    if (res / "decision.json").exists():
        dec = json.loads((res / "decision.json").read_text())
        v = dec["validation_pope_accuracy_mean"]
        out[f"{pre}_choice"] = markdown_table(
            ["validation POPE accuracy (mean of 3 splits): 224 px", "112 px", "chosen by the rule"],
            [[num(v.get("r224")), num(v.get("r112")), f"{dec['chosen_image_size']} px" if dec["chosen_image_size"] else "–"]])
    if (res / "text_control.jsonl.gz").exists():         # text_control.py: the frozen LM told the caption
        qs = json.loads((res / "questions.json").read_text())
        tc = rp.split_rows(rp._jsonl(res, "text_control"), qs)
        rows = []
        for cond, d in tc.items():
            for s in SPLITS:
                x = rp.pope_metrics(d[s])
                rows.append([cond, s, x["questions"], ci(x["accuracy"]["value"], x["accuracy"]["low"], x["accuracy"]["high"]),
                             num(x["precision"]["value"]), num(x["recall"]["value"]), num(x["yes_ratio"]["value"])])
        out[f"{pre}_text_control"] = markdown_table(
            ["frozen SmolLM2 given the reference caption as text", "split", "questions", "accuracy", "precision",
             "recall", "yes-ratio"], rows)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--unpack", type=Path, default=None, help="the call's OUT folder (vlm2_results.tar.gz)")
    ap.add_argument("--folder", type=Path, default=RES)
    ap.add_argument("--no-readme", action="store_true")
    a = ap.parse_args()
    if a.unpack:
        unpack(a.unpack, a.folder)
    print(json.dumps(main(a.folder, readme=not a.no_readme), indent=1))
