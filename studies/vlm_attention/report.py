"""Tables for studies/vlm_attention/README.md from the files run.py wrote in results/ (and studies/vlm's sinks.json).

    python -m studies.vlm_attention.report

Rewrites the README's ``<!-- table:v1_* -->`` blocks (``studies/tables.py``); ``tables(folder)`` is what
tests/test_study_tables.py recomputes. The top-level README row for this study stays in studies/summary.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


from probe.data.images import FASHION_MNIST_CLASSES  # noqa: E402
from probe.stats import holm, mcnemar_exact, wilson_interval  # noqa: E402
from studies.tables import main_for, markdown_table, num, pval  # noqa: E402

# condition key in results_acc300*.json -> what it is (settings only; every number comes from the files)
CONDITIONS = {
    "baseline": "baseline",
    "no_image": "no image (question only)",
    "var_code": "VAR, code conventions (keep 0.6, rho 0.5, min_mass 0.2, tau 20)",
    "var_paper": "VAR, paper preset (transfer 0.6 = keep 0.4, nonsink_share 0.5)",
    "var_tau6": "VAR, tau 6 (exploratory, not the paper's rule)",
    "vhr": "VHR, alpha 2 (layers 1 + 17..29)",
    "vhr_a1.5": "VHR, alpha 1.5",
    "vhr_a1.25": "VHR, alpha 1.25",
    "vhr_last": "VHR, alpha 2, last 13 layers only",
}
GEN = {"baseline": "baseline", "var_code": "VAR (code conventions)", "vhr": "VHR, alpha 2", "vhr_a1.25": "VHR, alpha 1.25"}


def _accuracy(res: Path) -> dict:
    acc = {}
    for name in ("results_acc300.json", "results_acc300c.json"):
        a = json.loads((res / name).read_text())["accuracy"]
        acc.setdefault("n", a["n"])
        acc.update({k: v for k, v in a.items() if isinstance(v, dict)})
    return acc


def tables(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    res = folder / "results"
    out = {}

    det = json.loads((res / "results_detect.json").read_text())["detectors"]
    tok = pd.read_parquet(res / "visual_tokens.parquet")
    heads = pd.read_parquet(res / "heads.parquet")
    first_layer = tok[tok.layer == tok.layer.min()]
    norm_ratio = first_layer.groupby("item").vision_norm.agg(lambda s: s.max() / s.median())
    received = tok[tok.layer >= 12].groupby("image_pos").received_mass.mean()
    by_layer_max = {int(k): v for k, v in det["phi_by_layer_max"].items()}
    top_layer = max(by_layer_max, key=by_layer_max.get)
    img_mass = heads.groupby("layer").image_attention_mass.mean().nlargest(3)
    sinks_v1 = json.loads((folder.parent / "vlm" / "results" / "sinks.json").read_text())["image_first"]
    span_end = sinks_v1["span"][1]
    massive = sinks_v1["massive_position_per_layer"]
    q = det["phi_quantiles_p50_p90_p99_max"]
    rows = [
        ["items (prompts x images)", f"{det['items']} ({det['prompts']} x {det['images']})"],
        ["sink dims found automatically", ", ".join(str(d) for d in det["sink_dims"])],
        ["phi over image tokens, layers 2+: p50 / p90 / p99 / max", " / ".join(f"{x:.1f}" for x in q)],
        [f"visual sinks (phi > {det['tau']:g}): rows / items with any", f"{det['visual_sink_rows']} / {det['visual_sink_items_with_any']}"],
        ["max phi over image tokens per layer: range (highest layer)",
         f"{min(by_layer_max.values()):.1f}-{max(by_layer_max.values()):.1f} (layer {top_layer})"],
        ["image-centric heads (VAR's rule)", f"{det['image_centric_fraction']:.3f}"],
        ["(layer, head) pairs with >= 0.2 of the last query's attention on the image", f"{(heads.image_attention_mass >= 0.2).mean():.3f}"],
        ["mean image attention mass; highest layers",
         f"{det['image_attention_mass_mean']:.3f}; " + ", ".join(f"L{int(k)} {v:.2f}" for k, v in img_mass.items())],
        ["vision-tower token norm max / median, per image (range)", f"{norm_ratio.min():.2f}-{norm_ratio.max():.2f}"],
        ["mean received attention, layers 12+: image token 0 / last image token",
         f"{received.iloc[0]:.3f} / {received.iloc[-1]:.3f}"],
        [f"layers whose massive activation sits on position {span_end} (first text token after the image), "
         f"studies/vlm sinks.json ({sinks_v1['n_images']} images)", f"{sum(p == span_end for p in massive)} of {len(massive)}"],
        ["largest abs(x) of the sink dim on an image token, any layer (sinks.json `max_abs_x_dim_image`)",
         f"{max(layer['max_abs_x_dim_image'] for layer in sinks_v1['per_layer']):.0f}"],
    ]
    out["v1_sinks"] = markdown_table(["visual sinks on studio-vlm (v1)", "value"], rows)

    vhd = det["vhd_by_layer"]
    show = [0, 1, 5, 10, 15, 20, 21, 25, len(vhd) - 1]
    out["v1_vhd"] = markdown_table(
        ["VHD (head output with image minus without, last prompt token)", "value"],
        [[f"mean VHD by layer ({', '.join(str(i) for i in show)})", ", ".join(num(vhd[i], 2) for i in show)],
         ["mean VHD, layers 1-10: range", f"{min(vhd[1:11]):.2f}-{max(vhd[1:11]):.2f}"],
         ["top heads", ", ".join(h.replace(":", "") for h in det["top_vhd_heads"][:6])]])

    acc = _accuracy(res)
    n = acc["n"]
    keys = [k for k in CONDITIONS if k in acc]
    tested = [k for k in keys if "changed_vs_baseline" in acc[k]]
    # exact McNemar vs baseline from the discordant counts each condition recorded (fixed = only the condition
    # right, broken = only the baseline right); Holm over every condition tested
    mc = {k: mcnemar_exact([True] * acc[k]["broken"] + [False] * acc[k]["fixed"],
                           [False] * acc[k]["broken"] + [True] * acc[k]["fixed"]).p_value for k in tested}
    adj = dict(zip(tested, holm([mc[k] for k in tested])))
    rows = []
    for key in keys:
        a = acc[key]
        pc = a.get("pred_counts")
        top = (f"{FASHION_MNIST_CLASSES[max(range(len(pc)), key=pc.__getitem__)]} ({max(pc)})" if pc else "–")
        changed = (f"{a['changed_vs_baseline']} ({a['fixed']} / {a['broken']})" if key in tested else "–")
        per_img = num(a.get("mean_count_per_image"), 1) if "mean_count_per_image" in a else "–"
        rows.append([CONDITIONS[key], wilson_interval(round(a["accuracy"] * n), n).fmt(), changed,
                     pval(mc[key]) if key in tested else "–", pval(adj[key]) if key in tested else "–",
                     top, per_img, num(a.get("seconds"), 0)])
    out["v1_accuracy"] = markdown_table(
        [f"condition (n = {n})", "accuracy [95% Wilson CI]", "predictions changed vs baseline (fixed / broken)",
         "exact McNemar p vs baseline", "p (Holm)", "most-predicted class (count)",
         "VAR sink entries / VHR heads per image", "seconds (1 thread)"], rows)

    gen = json.loads((res / "results_gen.json").read_text())["captioning"]
    rows = []
    for key, label in GEN.items():
        g = gen[key]
        rows.append([label] + [f"{g[p]['right']} / {g[p]['hallucinated']} / {g[p]['none']} (n {g[p]['n']})"
                               for p in ("question", "caption")])
    out["v1_captions"] = markdown_table(
        ["condition", "question \"...? Answer:\": right / hallucinated / none", "caption \"Describe the image.\": right / hallucinated / none"],
        rows)
    return out


def main() -> None:
    main_for(Path(__file__).parent, tables)


if __name__ == "__main__":
    main()
