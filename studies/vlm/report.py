"""Tables for studies/vlm/README.md from the files in results/ (written by evaluate.py and sinks.py; the training
recipe, cost and losses come from the projector metadata evaluate.py copies into eval*.json).

    python -m studies.vlm.report

Rewrites the README's ``<!-- table:vlm_* -->`` blocks (``studies/tables.py``); ``tables(folder)`` is what
tests/test_study_tables.py recomputes. The top-level README row stays in studies/summary.py.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


from probe.data.images import FASHION_MNIST_CLASSES as CLASSES  # noqa: E402
from probe.stats import wilson_interval  # noqa: E402
from studies.tables import main_for, markdown_table  # noqa: E402


def _preds(counts) -> str:
    used = [c for c in counts if c]
    if len(used) == 1:
        return f"always \"{CLASSES[counts.index(used[0])]}\""
    lo, hi = min(counts), max(counts)
    return f"{len(used)} classes, {lo}–{hi} each (most: {CLASSES[counts.index(hi)]})"


def _train_row(name: str, meta: dict) -> list:
    r, c, loss = meta["recipe"], meta["cost"], meta["loss"]
    warm = f", {r['warmup']} warm-up" if r.get("warmup") else ""
    return [name, f"{r['steps']} × {r['batch']}", f"{r['lr']:g}{warm}, {r['optimizer']}", f"{r['caption_frac']:.0%}",
            f"{loss['first25']:.2f} → {loss['last25']:.2f}", f"{c['train_seconds']:,.0f} s ({c['seconds_per_step']:.1f} s/step)"]


def _sinks_row(name: str, layout: str, s: dict) -> list:
    start, end = s["span"]
    massive = Counter(s["massive_position_per_layer"]).most_common(1)[0]
    late = s["late_mean_abs_x_dim_per_position"]
    where = ("image token %d" % (massive[0] - start) if start <= massive[0] < end
             else f"position {massive[0]}" + (" (first text token after the image)" if massive[0] == end else ""))
    return [name, layout, f"{s['input_rms_image_tokens']:.2f} / {s['input_rms_text_tokens']:.2f}",
            sum(layer["n_visual_sinks"] for layer in s["per_layer"]),
            f"{s['late_visual_sink_tokens_per_image']:.2f}",
            f"{where}, {massive[1]} of {len(s['massive_position_per_layer'])} layers",
            f"{max(late):,.0f}", f"{max(late[start:end]):,.0f}",
            f"{s['late_attention_to_image_span']:.3f}", f"{s['late_answer_attention_to_image_span']:.3f}"]


def tables(folder: Path) -> dict[str, str]:
    res = Path(folder) / "results"
    ev = json.loads((res / "eval.json").read_text())
    ev1 = json.loads((res / "eval_stage1.json").read_text())
    n = ev["n"]
    out = {}
    meta2 = ev["projector_metadata"]
    meta1 = meta2["init"]["metadata"]
    out["vlm_train"] = markdown_table(
        ["stage", "steps × batch", "lr (AdamW, wd 0)", "caption share", "loss, first → last 25 steps",
         "train wall time (1 thread, shared machine)"],
        [["features", "–", "–", "–", "–", f"{meta1['cost']['feature_seconds']:.0f} s"],
         _train_row("1: from a seeded random init", meta1), _train_row("2: from stage 1", meta2)])

    rows = []
    for label, e, key in (("**image** (`[16 image tokens]What is this item of clothing? Answer:`)", ev, "image"),
                          ("no image (same question, image placeholder removed)", ev, "no_image"),
                          ("blank image (16 image tokens of an all-black picture)", ev, "blank_image"),
                          ("stage 1 projector only, image", ev1, "image")):
        k = round(e[key]["accuracy"] * e["n"])
        rows.append([label, wilson_interval(k, e["n"]).fmt(), f"{k}/{e['n']}", _preds(e[key]["pred_counts"])])
    out["vlm_eval"] = markdown_table([f"condition ({n} t10k images)", "accuracy [95% Wilson CI]", "correct",
                                      "predictions"], rows)
    pc = sorted(ev["per_class_accuracy_image"].items(), key=lambda kv: -kv[1])
    gq, gc = ev["generate_question"], ev["generate_caption"]
    out["vlm_per_class"] = (
        "Per-class accuracy with the image: " + ", ".join(f"{c} {a:.0%}" for c, a in pc)
        + f" (confusion matrix in `results/eval.json`). Evaluating {n} images took {ev['eval_seconds_with_image']:.0f} s "
        f"on {ev['threads']} thread. Greedy `generate()` on the first {gq['n']} images: the question is answered with "
        f"the right class name {gq['names_true_class']}/{gq['n']} times; \"Describe the image.\" names the true class "
        f"{gc['names_true_class']}/{gc['n']} times.\n")

    rows = []
    for fname, name in (("sinks.json", "shipped (stage 2)"), ("sinks_stage1.json", "stage 1"),
                        ("sinks_smoke10.json", "10 training steps")):
        s = json.loads((res / fname).read_text())
        for layout in ("image_first", "text_prefix"):
            if layout in s and "per_layer" in s[layout]:
                rows.append(_sinks_row(name, layout.replace("_", " "), s[layout]))
    out["vlm_sinks"] = markdown_table(
        ["projector", "layout", "input RMS image / text tokens", "visual sinks (phi > 20), all layers and images",
         "visual sink tokens per image, late layers", "where the massive activation sits (most layers)",
         "largest late mean abs(x) of the sink dim at any position", "… at an image token",
         "late attention to the image span", "… from the answer position"], rows)
    return out


def main() -> None:
    main_for(Path(__file__).parent, tables)


if __name__ == "__main__":
    main()
