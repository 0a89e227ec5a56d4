"""VAR and VHR on studio-vlm: visual sinks, vision-aware heads, held-out accuracy, a captioning check.

    python -m studies.vlm_attention.run                     # all parts, writes studies/vlm_attention/results/
    python -m studies.vlm_attention.run --n-acc 300 --n-gen 50 --threads 2

Parts:
1. detectors (probe.detect.vision) on the fashion question and the caption prompt x (8 Fashion-MNIST
   test images + 4 scikit-image photos): sink dims, phi distribution, visual sinks per layer/patch,
   image-centric heads, VHD per head -> results/heads.parquet, visual_tokens.parquet, figures/*.html;
2. held-out Fashion-MNIST accuracy (t10k, numpy default_rng(seed) subset; the projector trained on the
   train split): the summed log-prob of each class name after "<image>What is this item of clothing?
   Answer:", argmax; conditions baseline, VAR (code conventions: keep 0.6, rho 0.5), VAR paper preset
   (transfer 0.6 = keep 0.4, nonsink_share 0.5), VHR (alpha 2, heads chosen per image at the answer
   position), and the question without the image;
3. captioning check: greedy answers to the trained question (8 new tokens) and to "Describe the
   image." (14); an answer that names a Fashion-MNIST class other than the true one counts as a
   hallucination (right / hallucinated / none).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch


import probe  # noqa: E402
from interventions import VAR, VHR, intervene  # noqa: E402
from probe.data.images import FASHION_MNIST_CLASSES, fashion_subset  # noqa: E402
from probe.detect import vision as vd  # noqa: E402
from probe.data import fashion  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
QUESTION = fashion.FASHION_QUESTION          # "What is this item of clothing? Answer:"
GEN_PROMPTS = {"question": (QUESTION, 8), "caption": (fashion.CAPTION_QUESTION, 14)}   # the two trained prompts

# class mentions in free text; "t-shirt" / "tee" are removed before "shirt" is looked for
CLASS_PATTERNS = [
    (0, r"\bt-?shirts?\b|\btees?\b|\btops?\b"), (1, r"\btrousers?\b|\bpants\b|\bjeans\b"),
    (2, r"\bpullovers?\b|\bsweaters?\b|\bjumpers?\b"), (3, r"\bdress(es)?\b"), (4, r"\bcoats?\b|\bjackets?\b"),
    (5, r"\bsandals?\b"), (6, r"\bshirts?\b"), (7, r"\bsneakers?\b|\btrainers?\b"),
    (8, r"\bbags?\b|\bhandbags?\b|\bpurses?\b"), (9, r"\bboots?\b"),
]


def classes_named(text: str) -> set[int]:
    """Fashion-MNIST classes a free-text answer names (T-shirt is matched before shirt)."""
    t = text.lower()
    found = set()
    for label, pat in CLASS_PATTERNS:
        if re.search(pat, t):
            found.add(label)
            if label == 0:
                t = re.sub(r"\bt-?shirts?\b", " ", t)
    return found


@torch.no_grad()
def class_scores(handle, images, conditions: dict, batch_size: int = 8) -> tuple[dict, dict]:
    """Summed log-prob of each class name after the fashion prompt, per condition
    (``studio_vlm.class_logprobs``: prompt prefill once, the 10 names on the repeated KV cache).

    VAR edits the prefill rows after the image and every name row (its sink sets follow the repeated
    cache); VHR's heads are chosen per image on the prompt (the answer position), so it runs batch 1.
    Returns ({condition: float [N, 10]}, {condition: per-image counts (VHR heads / VAR sink entries)}).
    """
    prompt = fashion.fashion_prompt()
    out, stats = {}, {}
    for cond, make in conditions.items():
        rows, counts = [], []
        if cond.startswith("vhr"):
            for img in images:
                (v,) = make(handle, vd.encode_images(handle, [prompt], [img]))
                with intervene(handle, v):
                    rows.append(sv.class_logprobs(handle.model, handle.processor, prompt, FASHION_MNIST_CLASSES,
                                                  images=[img], batch_size=1))
                counts.append(len(v.heads))
        else:
            for s in range(0, len(images), batch_size):
                chunk = images[s:s + batch_size]
                ivs = make(handle, None) if make is not None else ()
                with intervene(handle, *ivs) if ivs else _null():
                    rows.append(sv.class_logprobs(handle.model, handle.processor, prompt, FASHION_MNIST_CLASSES,
                                                  images=chunk, batch_size=batch_size))
                for iv in ivs:
                    counts += [sum(len(v[b]) for v in iv.found_sinks.values()) for b in range(len(chunk))]
        out[cond], stats[cond] = torch.cat(rows).numpy(), counts
        print(f"  {cond}: done", flush=True)
    return out, stats


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _vhr(alpha: float = 2.0, layers=None):
    def make(handle, enc):
        v = VHR(alpha=alpha, layers=layers(handle.n_layers) if layers else None)
        if enc is not None:
            v.select(handle, enc)
        return (v,)
    return make


CONDITIONS = {
    "baseline": None,
    "var_code": lambda h, e: (VAR(),),                      # keep 0.6, rho 0.5, min_mass 0.2, tau 20
    "var_paper": lambda h, e: (VAR.paper_preset(),),        # transfer 0.6 (keep 0.4), nonsink_share 0.5
    "var_tau6": lambda h, e: (VAR(tau=6.0),),               # exploratory: tau near the image tokens' p99 phi
    "vhr": _vhr(),                                          # alpha 2, layers 1 + last 13
    "vhr_a1.5": _vhr(1.5),
    "vhr_a1.25": _vhr(1.25),
    "vhr_layer1": _vhr(2.0, lambda L: [1]),                 # Table 5-style ablations
    "vhr_last": _vhr(2.0, lambda L: list(range(L - round(14 / 32 * L), L))),
}


@torch.no_grad()
def generate_check(handle, images, labels, conditions: dict) -> dict:
    """Greedy answers to the trained question (8 new tokens) and caption prompt (14); per condition
    and prompt: right (names only the true class), hallucinated (names another class), none."""
    res = {}
    for cond, make in conditions.items():
        res[cond] = {}
        for key, (prompt, max_new) in GEN_PROMPTS.items():
            rows, counts = [], {"right": 0, "hallucinated": 0, "none": 0}
            for img, y in zip(images, labels):
                enc = vd.encode_images(handle, [sv.IMAGE_TOKEN + prompt], [img])
                ivs = make(handle, None) if make is not None else ()   # VHR: heads chosen at the prefill
                with intervene(handle, *ivs) if ivs else _null():
                    gen = handle.model.generate(**enc, max_new_tokens=max_new, do_sample=False)
                text = handle.tokenizer.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                named = classes_named(text)
                kind = "hallucinated" if named - {int(y)} else ("right" if named else "none")
                counts[kind] += 1
                rows.append({"label": FASHION_MNIST_CLASSES[y], "answer": text, "kind": kind})
            res[cond][key] = {**counts, "n": len(rows), "examples": rows}
        print(f"  {cond}: " + ", ".join(f"{k} {v['right']}/{v['hallucinated']}/{v['none']}" for k, v in res[cond].items()),
              flush=True)
    return res


def detectors(handle, out: Path) -> dict:
    prompts = [QUESTION, fashion.CAPTION_QUESTION]
    t0 = time.time()
    det = vd.run(handle, prompts)
    secs = time.time() - t0
    det.heads.to_parquet(out / "heads.parquet")
    table = det.tables["visual_tokens"]
    table.to_parquet(out / "visual_tokens.parquet")
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    images, names = vd.default_images()
    for item in (0, 6, 8):                                          # prompt 0 x Pullover, Trouser, astronaut
        name = table[table["item"] == item]["image"].iloc[0]
        img = images[names.index(name)]
        img = img[:: max(1, img.shape[0] // 128), :: max(1, img.shape[1] // 128)]   # <= ~128 px in the HTML
        fig = vd.visual_sink_figure(table, item, img)
        fig.write_html(figs / f"visual_sinks_item{item}_{name.split(':')[-1].replace('/', '-')}.html",
                       include_plotlyjs="cdn")
    h = det.heads
    late = table[table.layer >= 12]
    summary = {
        **det.summary,
        "seconds": round(secs, 1),
        "phi_by_layer_max": table.groupby("layer")["phi"].max().round(2).to_dict(),
        "phi_quantiles_image_tokens_layers_12_plus": late["phi"].quantile([0.5, 0.9, 0.99, 1.0]).round(2).tolist(),
        "visual_sinks_by_image_pos_layers_12_plus": late[late.is_visual_sink].groupby("image_pos").size().to_dict(),
        "visual_sink_items_with_any": int(table.groupby("item")["is_visual_sink"].any().sum()),
        "vision_norm_top_positions": table[table.layer == table.layer.min()].groupby("image_pos")["vision_norm"]
        .mean().sort_values(ascending=False).head(4).round(1).to_dict(),
        "image_attention_mass_mean": round(float(h.image_attention_mass.mean()), 4),
        "visual_sink_mass_mean": round(float(h.visual_sink_mass.mean()), 4),
        "image_centric_head_rate_mean_layers_2_plus": round(float(h[h.layer >= 2].image_centric_rate.mean()), 4),
        "heads_image_centric_in_half_of_items": int((h.image_centric_rate >= 0.5).sum()),
    }
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-acc", type=int, default=100)
    ap.add_argument("--n-gen", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy 2-core box")
    ap.add_argument("--parts", default="detect,acc,gen")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--tag", default="", help="write results_<tag>.json (parallel runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    handle = probe.load("studio-vlm", device="cpu")
    parts = args.parts.split(",")
    conds = {c: CONDITIONS[c] for c in args.conditions.split(",")}
    res_file = OUT / (f"results_{args.tag}.json" if args.tag else "results.json")
    res = json.loads(res_file.read_text()) if res_file.exists() else {}
    res["projector"] = sv.load_projector(handle.model)
    if "detect" in parts:
        res["detectors"] = detectors(handle, OUT)
        print(json.dumps(res["detectors"], indent=1)[:3000])
        res_file.write_text(json.dumps(res, indent=1, default=str))
    if "acc" in parts:
        images, labels, idx = fashion_subset("test", args.n_acc, seed=args.seed)
        acc = res.get("accuracy", {}) if res.get("accuracy", {}).get("n") == args.n_acc else {}
        acc.update({"n": args.n_acc, "split": "t10k (held out)", "subset": f"default_rng({args.seed})",
                    "true_counts": np.bincount(labels, minlength=10).tolist()})
        for c in conds:                                     # one condition at a time, saved as it finishes
            t0 = time.time()
            scores, stats = class_scores(handle, images, {c: conds[c]})
            np.save(OUT / f"scores_{c}_n{args.n_acc}.npy", scores[c])
            pred = scores[c].argmax(1)
            acc[c] = {"accuracy": float((pred == labels).mean()), "pred_counts": np.bincount(pred, minlength=10).tolist(),
                      "seconds": round(time.time() - t0, 1)}
            base_file = OUT / f"scores_baseline_n{args.n_acc}.npy"
            if c != "baseline" and base_file.exists():
                bp = np.load(base_file).argmax(1)
                acc[c]["changed_vs_baseline"] = int((pred != bp).sum())
                acc[c]["fixed"] = int(((pred == labels) & (bp != labels)).sum())
                acc[c]["broken"] = int(((pred != labels) & (bp == labels)).sum())
            if stats[c]:
                acc[c]["mean_count_per_image"] = float(np.mean(stats[c]))  # VHR heads / VAR (layer, sink) pairs
            res["accuracy"] = acc
            print(c, json.dumps(acc[c]), flush=True)
            res_file.write_text(json.dumps(res, indent=1, default=str))
        if "no_image" not in acc:
            pred_none = fashion.classify_fashion(handle.model, handle.processor, images, with_image=False)
            acc["no_image"] = {"accuracy": float((pred_none == labels).mean())}
            res_file.write_text(json.dumps(res, indent=1, default=str))
    if "gen" in parts:
        images, labels, _ = fashion_subset("test", args.n_gen, seed=args.seed)
        t0 = time.time()
        gen = generate_check(handle, images, labels, conds)
        gen["seconds"] = round(time.time() - t0, 1)
        res["captioning"] = gen
        res_file.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {res_file}")


if __name__ == "__main__":
    main()
