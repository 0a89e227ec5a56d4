"""Does studio-vlm use the image? Held-out Fashion-MNIST accuracy with vs without the image.

    python -m studies.vlm.evaluate                   # 500 t10k images, writes studies/vlm/results/eval.json

Conditions (all through the stock `LlavaForConditionalGeneration` forward, summed log-prob over the
10 class names, argmax):
- image:     "[16 image tokens]What is this item of clothing? Answer:"
- no image:  the same question with the image placeholder removed (text only; a constant answer)
- blank:     the image tokens kept, but the picture is all black (tests that the *content* matters)
Plus greedy `generate()` on the first images for both trained prompts, counting answers/captions that
name the true class (a small captioning check).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]

from probe.data.images import FASHION_MNIST_CLASSES, fashion_subset  # noqa: E402
import probe  # noqa: E402
from probe.data import fashion  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402


def confusion(pred: np.ndarray, true: np.ndarray) -> list[list[int]]:
    m = np.zeros((10, 10), dtype=int)
    np.add.at(m, (true, pred), 1)
    return m.tolist()


@torch.no_grad()
def generate_check(vlm, processor, images, labels, question: str, max_new_tokens: int = 14) -> dict:
    """Greedy answers; a hit = the answer names the true class (caption nouns / class names, lower case)."""
    rows, hits = [], 0
    for img, y in zip(sv._as_pil(images), labels):
        enc = processor(text=[sv.IMAGE_TOKEN + question], images=[img], return_tensors="pt")
        out = vlm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        text = processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        keys = {FASHION_MNIST_CLASSES[y].lower(), fashion.FASHION_CAPTION_NOUNS[y].split(" ", 1)[1].lower()}
        if y == 0:
            keys |= {"t-shirt"}
        hit = any(k in text.lower() for k in keys)
        hits += hit
        rows.append({"label": FASHION_MNIST_CLASSES[y], "output": text, "names_true_class": bool(hit)})
    return {"n": len(rows), "names_true_class": hits, "examples": rows}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-generate", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--projector", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "studies" / "vlm" / "results" / "eval.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    images, labels, idx = fashion_subset("test", args.n, seed=args.seed)
    handle = probe.load("studio-vlm", device="cpu", dtype=torch.float32)
    vlm, processor = handle.model, handle.processor
    sv.load_projector(vlm, args.projector)
    res = {"split": "t10k (held out; training used the train split)", "n": args.n,
           "subset": f"numpy default_rng({args.seed}).choice(10000, {args.n}, replace=False)", "chance": 0.1}

    t0 = time.time()
    pred = fashion.classify_fashion(vlm, processor, images)
    res["eval_seconds_with_image"] = round(time.time() - t0, 1)
    pred_none = fashion.classify_fashion(vlm, processor, images, with_image=False)
    # an all-black picture is the same input for every row: score it once and repeat
    pred_blank = np.repeat(fashion.classify_fashion(vlm, processor, np.zeros_like(images[:1])), len(images))
    for name, p in [("image", pred), ("no_image", pred_none), ("blank_image", pred_blank)]:
        res[name] = {
            "accuracy": float((p == labels).mean()),
            "pred_counts": np.bincount(p, minlength=10).tolist(),
        }
    res["true_counts"] = np.bincount(labels, minlength=10).tolist()
    res["confusion_image"] = confusion(pred, labels)
    res["per_class_accuracy_image"] = {
        c: float((pred[labels == i] == i).mean()) for i, c in enumerate(FASHION_MNIST_CLASSES)
    }
    g = args.n_generate
    res["generate_question"] = generate_check(vlm, processor, images[:g], labels[:g], fashion.FASHION_QUESTION, 8)
    res["generate_caption"] = generate_check(vlm, processor, images[:g], labels[:g], fashion.CAPTION_QUESTION, 14)
    res["projector_metadata"] = sv.load_projector(vlm, args.projector)
    res["threads"] = args.threads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    for k in ("image", "no_image", "blank_image"):
        print(f"{k:12s} acc {res[k]['accuracy']:.3f}  preds {res[k]['pred_counts']}")
    print("true counts ", res["true_counts"])
    print("generate: question", res["generate_question"]["names_true_class"], "/", g,
          " caption", res["generate_caption"]["names_true_class"], "/", g)
    for r in res["generate_caption"]["examples"][:5]:
        print("  ", r)
    print(f"wrote {args.out}  (eval with image {res['eval_seconds_with_image']} s)")


if __name__ == "__main__":
    main()
