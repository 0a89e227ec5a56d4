"""Train studio-vlm's projector (vision tower and LM frozen) on Fashion-MNIST label answers.

    python -m studies.vlm.train_projector                 # the shipped recipe (CPU, 1 thread)
    python -m studies.vlm.train_projector --steps 5 --out /tmp/p.safetensors   # smoke run

The shipped weights are two stages (see studies/vlm/README.md):
    python -m studies.vlm.train_projector --out /tmp/stage1.safetensors
    python -m studies.vlm.train_projector --init /tmp/stage1.safetensors --steps 300 --lr 1e-3 \
        --warmup 0 --caption-frac 0.1

Recipe: frozen DINOv2 features are precomputed once through the LLaVA feature selection
(56x56 image -> 16 patch tokens of `hidden_states[-1]`, CLS dropped); each step embeds
`[16 image tokens] + question + answer + <|im_end|>`, puts the projected features at the image
positions, runs the frozen SmolLM2 and takes cross-entropy on the answer tokens only.
Two tasks are mixed: the Fashion-MNIST question (answer " {class name}") and, with probability
`--caption-frac`, "Describe the image." (answer " A small grayscale photo of {noun}.").
Only the projector (linear_1, linear_2: 554,112 params) gets gradients.
Training images come from the Fashion-MNIST *train* split; evaluation (evaluate.py) uses t10k.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch


from probe.data.images import FASHION_MNIST_CLASSES, fashion_subset  # noqa: E402
import probe  # noqa: E402
from probe.data import fashion  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402
from probe.models.cache import cache_root  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=6000, help="Fashion-MNIST train images (seeded subset)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--caption-frac", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=sv.PROJECTOR_ASSET)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these projector weights (a second stage) instead of a seeded random init")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default $PROBE_CACHE_DIR or ~/.cache/probe")
    return ap.parse_args(argv)


def precompute_features(vlm, processor, images: np.ndarray, cache_file: Path, chunk: int = 64) -> tuple[torch.Tensor, float]:
    """Frozen vision features [N, 16, 384] for uint8 images [N, 28, 28]; cached on disk. Returns (feats, seconds)."""
    if cache_file.is_file():
        return torch.load(cache_file), 0.0
    t0 = time.time()
    out = []
    for s in range(0, len(images), chunk):
        pil = sv._as_pil(images[s : s + chunk])
        pix = processor.image_processor(images=pil, return_tensors="pt")["pixel_values"]  # [b, 3, 56, 56]
        out.append(sv.vision_features(vlm, pix))  # [b, 16, 384]
    feats = torch.cat(out).contiguous()  # [N, 16, 384]
    secs = time.time() - t0
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(feats, cache_file)
    return feats, secs


def task_tokens(processor, eos_id: int):
    """Token ids of the two prompts (image placeholders expanded) and of every answer (+ eos)."""
    tok = processor.tokenizer
    n_img = processor.image_processor.size["height"] // sv.PATCH_SIZE
    n_img = n_img * n_img
    def prompt_ids(question: str) -> list[int]:
        return tok(sv.IMAGE_TOKEN * n_img + question, add_special_tokens=False).input_ids
    q_ids = prompt_ids(fashion.FASHION_QUESTION)
    c_ids = prompt_ids(fashion.CAPTION_QUESTION)
    q_ans = [tok(" " + c, add_special_tokens=False).input_ids + [eos_id] for c in FASHION_MNIST_CLASSES]
    c_ans = [tok(fashion.fashion_caption(i), add_special_tokens=False).input_ids + [eos_id] for i in range(10)]
    return (q_ids, q_ans), (c_ids, c_ans)


def make_batch(items, pad_id: int):
    """items: list of (prompt_ids, answer_ids). Returns input_ids [B,T], attention_mask [B,T], loss positions."""
    seqs = [p + a for p, a in items]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(seqs), T), dtype=torch.long)  # [B, T]
    rows, pos, tgt = [], [], []
    for b, ((p, a), s) in enumerate(zip(items, seqs)):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        for j in range(len(a)):  # the hidden state at position t predicts token t + 1
            rows.append(b)
            pos.append(len(p) + j - 1)
            tgt.append(a[j])
    return ids, mask, torch.tensor(rows), torch.tensor(pos), torch.tensor(tgt)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cache_dir = args.cache_dir or cache_root()
    t_all = time.time()

    lm = probe.load("smollm2", device="cpu", dtype=torch.float32)
    vlm, processor = sv.build_studio_vlm(lm.model, lm.tokenizer, projector_path=False)
    vlm.requires_grad_(False)
    proj = vlm.model.multi_modal_projector
    torch.manual_seed(args.seed)
    init_meta = None
    if args.init is not None:
        init_meta = sv.load_projector(vlm, args.init)
    else:
        proj.linear_1.reset_parameters()
        proj.linear_2.reset_parameters()
    proj.requires_grad_(True)
    n_params = sum(p.numel() for p in proj.parameters())

    images, labels, idx = fashion_subset("train", args.n_train, seed=args.seed)
    feat_file = cache_dir / f"studio_vlm_feats_train{args.n_train}_seed{args.seed}_{sv.IMAGE_SIZE}px.pt"
    feats, feat_secs = precompute_features(vlm, processor, images, feat_file)  # [N, 16, 384]
    print(f"features {tuple(feats.shape)} in {feat_secs:.1f} s", flush=True)

    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    (q_ids, q_ans), (c_ids, c_ans) = task_tokens(processor, eos_id)
    image_id = processor.image_token_id
    embed = vlm.get_input_embeddings()
    lm = vlm.model.language_model

    opt = torch.optim.AdamW(proj.parameters(), lr=args.lr, weight_decay=0.0)
    def lr_at(step):  # linear warm-up, then linear decay to 5 %
        if step < args.warmup:
            return (step + 1) / args.warmup
        return max(0.05, 1 - (step - args.warmup) / max(1, args.steps - args.warmup) * 0.95)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    rng = np.random.default_rng(args.seed + (1000 if args.init is not None else 0))  # a new sample order per stage
    losses, t_train = [], time.time()
    for step in range(args.steps):
        pick = rng.integers(len(labels), size=args.batch)  # [B]
        caption = rng.random(args.batch) < args.caption_frac  # [B]
        items = [(c_ids, c_ans[labels[i]]) if c else (q_ids, q_ans[labels[i]]) for i, c in zip(pick, caption)]
        ids, mask, rows, pos, tgt = make_batch(items, eos_id)
        emb = embed(ids)  # [B, T, 576]
        img = proj(feats[pick].float())  # [B, 16, 576]
        img_mask = (ids == image_id)[..., None].expand_as(emb)  # [B, T, 576]
        emb = emb.masked_scatter(img_mask, img.reshape(-1, img.shape[-1]))  # [B, T, 576]
        hidden = lm(inputs_embeds=emb, attention_mask=mask).last_hidden_state  # [B, T, 576]
        logits = vlm.lm_head(hidden[rows, pos])  # [n_answer_tokens, V]
        loss = torch.nn.functional.cross_entropy(logits, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0 or step == 0:
            el = time.time() - t_train
            print(f"step {step + 1:4d}  loss(last 25) {np.mean(losses[-25:]):.3f}  {el:.0f} s  {el / (step + 1):.2f} s/step", flush=True)
    train_secs = time.time() - t_train

    meta = {
        "model": "studio-vlm projector (LLaVA-1.5 MLP, linear_1 384->576, GELU, linear_2 576->576)",
        "recipe": {
            "data": f"Fashion-MNIST train split, seeded subset of {args.n_train} (numpy default_rng({args.seed}))",
            "image_size": sv.IMAGE_SIZE,
            "image_tokens": (sv.IMAGE_SIZE // sv.PATCH_SIZE) ** 2,
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default",
            "image_token": sv.IMAGE_TOKEN,
            "prompts": [fashion.FASHION_QUESTION, fashion.CAPTION_QUESTION],
            "caption_frac": args.caption_frac,
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "warmup": args.warmup,
            "optimizer": "AdamW wd 0, linear decay to 5%",
            "seed": args.seed,
        },
        "cost": {
            "threads": args.threads,
            "feature_seconds": round(feat_secs, 1),
            "train_seconds": round(train_secs, 1),
            "seconds_per_step": round(train_secs / max(1, args.steps), 2),
            "trainable_params": n_params,
            "machine": platform.processor() or platform.machine(),
        },
        "loss": {"first25": float(np.mean(losses[:25])), "last25": float(np.mean(losses[-25:]))},
        "init": None if init_meta is None else {"path": str(args.init), "metadata": init_meta},
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    sv.save_projector(vlm, args.out, meta)
    print(json.dumps(meta, indent=1))
    print(f"saved {args.out}  (total {time.time() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
