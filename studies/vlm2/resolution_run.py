"""studio-vlm2 retraining on one GPU call: the new recipe at two input resolutions, cost and benchmark of each.

    python -m studies.vlm2.resolution_run --dinov2 .dev_vision/dinov2_q8.safetensors \\
        --pools .dev_vision/pools.npz --work /tmp/vres --out "$OUT" --deadline 290      # the device run
    python -m studies.vlm2.resolution_run ... --device cpu --quick --work /tmp/q --out /tmp/q_out   # CPU dry run

Everything follows ``studies/vlm2/settings_resolution.json`` (pre-registered; ``--quick`` shrinks sizes only):
1. the first resolution of "resolutions" (224 px, 256 image tokens) is trained for a fixed time budget,
   which fixes the step count N; the other (112 px, 64 tokens) is trained for the same N steps (same
   data order, same initial projector): equal optimisation, so the measured cost and the benchmark
   differ only by the resolution;
2. after each training: POPE on the validation scenes (train-split items outside the training pool,
   training photos; used only to choose the resolution for the final run), the held-out test benchmark
   (POPE with and without the image, CHAIR captions; the same test scenes and questions as the shipped
   studio-vlm2 benchmark), and the same test scenes on held-out photo backgrounds (opencv-doc);
3. the shipped projector (``probe/assets/studio_vlm2_projector.safetensors``) on the validation and
   photo-background scenes, for reference (its plain test results are in ``studies/vlm2/results``).
OUT: studio_vlm2_projector_{size}.safetensors per resolution, vlm2_results.tar.gz, log.txt.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from studies.vlm2 import conditions as cn
from studies.vlm2 import device_run as dr
from studies.vlm2 import train as tr
from probe.data import photos as ph
from probe.data import scenes as sc
from probe.models import studio_vlm as sv

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    return dr.device_call_parser(__doc__, HERE / "settings_resolution.json", 290.0).parse_args(argv)


def quick(settings: dict) -> dict:
    s = json.loads(json.dumps(settings))
    s["train"].update(n_train=48, steps_cap=3, batch=2, max_train_seconds=None, warmup=1)
    s["benchmark"].update(n_val=3, n_test=3, pope_batch=8, n_caption=2, caption_batch=2, caption_tokens=4)
    return s


def scene_sets(settings: dict, pools: dict) -> dict:
    """Training, validation, test and photo-test scenes plus the POPE questions (unique per scene and class)."""
    T, B = settings["train"], settings["benchmark"]
    bg = T["backgrounds"] or {"p": 0.0, "seed": 0, "contrast": [0.3, 0.7]}      # None: no photos in training / val
    train = sc.make_scenes(pools["train_x"], pools["train_y"], T["n_train"], T["seed"])
    freq, co = sc.statistics(train)              # objects only: backgrounds do not change them
    train = ph.with_backgrounds(train, tr.photo_set(pools, "train"), bg["p"], bg["seed"], tuple(bg["contrast"]))
    val = sc.make_scenes(pools["val_x"], pools["val_y"], B["n_val"], B["val_scene_seed"])
    val = ph.with_backgrounds(val, tr.photo_set(pools, "train"), bg["p"], B["val_background_seed"], tuple(bg["contrast"]))
    test = tr.test_scenes(pools, B["n_test"])
    tp = B["test_photo"]
    photo = ph.with_backgrounds(test, tr.photo_set(pools, "test"), tp["p"], tp["seed"], tuple(tp["contrast"]))

    def unique(qs):
        u = sorted({(q["scene"], q["cls"]): q for split in qs.values() for q in split}.values(),
                   key=lambda q: (q["scene"], q["cls"]))
        return [{k: q[k] for k in ("scene", "cls", "noun", "answer")} for q in u]
    q_test = sc.pope_questions(test, freq, co, B["pope_seed"])
    q_val = sc.pope_questions(val, freq, co, B["pope_seed"])
    return {"train": train, "val": val, "test": test, "photo": photo, "freq": freq, "co": co,
            "q_test": q_test, "q_val": q_val, "u_test": unique(q_test), "u_val": unique(q_val)}


def main(argv=None):
    args = parse_args(argv)
    settings = json.loads(args.settings.read_text())
    if args.quick:
        settings = quick(settings)
    run = dr.Run(args)
    run.write_json("settings_used.json", {**settings, "quick": args.quick, "device": args.device,
                                          "deadline_s": args.deadline})
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda = args.device.startswith("cuda")
    if cuda:
        run.log(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    T, B = settings["train"], settings["benchmark"]
    sizes = settings["resolutions"]
    vlm0, proc0, lm, vision = tr.fresh_vlm(args.device, args.dinov2, sizes[0])
    pools = tr.pools(args.pools)
    S = scene_sets(settings, pools)
    run.write_json("questions.json", {"splits": {k: [[q["scene"], q["cls"], q["answer"]] for q in v]
                                                 for k, v in S["q_test"].items()},
                                      "train_frequency": S["freq"].tolist(), "train_cooccurrence": S["co"].tolist()})
    run.write_json("val_questions.json", {"splits": {k: [[q["scene"], q["cls"], q["answer"]] for q in v]
                                                     for k, v in S["q_val"].items()}})
    run.write_json("backgrounds.json", {"train": [s.background for s in S["train"]],
                                        "val": [s.background for s in S["val"]],
                                        "photo_test": [s.background for s in S["photo"]]})
    run.log(f"loaded; {len(S['train'])} train scenes ({sum(s.background is not None for s in S['train'])} with a photo), "
            f"{len(S['val'])} val, {len(S['test'])} test; {len(S['u_test'])} unique test POPE questions")

    def vlm_at(size):
        if size == sizes[0]:
            return vlm0, proc0
        return sv.build_studio_vlm(lm.model, lm.tokenizer, projector_path=False, vision_model=vision, image_size=size)

    def evaluate(tag: str, handle, old: bool = False):
        """POPE on test (+ no image) / val / photo test and CHAIR captions on test / photo test, in that order;
        OUT is re-packed after each part, and a part is skipped once fewer than 6 s are left."""
        out = run.work / tag
        out.mkdir(exist_ok=True)
        jobs = [] if old else [("pope", "baseline", S["test"], S["u_test"], "baseline"),
                               ("pope", "no_image", S["test"], S["u_test"], "no_image"),
                               ("captions", "baseline", S["test"], None, None)]
        jobs += [("pope", "val_baseline", S["val"], S["u_val"], "baseline"),
                 ("pope", "photo_baseline", S["photo"], S["u_test"], "baseline"),
                 ("captions", "photo_baseline", S["photo"], None, None)]
        for kind, name, scenes, qs, method in jobs:
            if run.left() < 6:
                run.log(f"  {tag} {kind} {name}: skipped (time)")
                run.stages[f"{tag}:{kind}:{name}"] = {"status": "skipped (time)"}
                continue
            if kind == "pope":
                rows, _ = cn.Runner(handle, scenes).pope(name, {"method": method}, qs, batch=B["pope_batch"])
                run.append_jsonl(f"{tag}/pope_items.jsonl", rows)
                run.log(f"  {tag} POPE {name}: accuracy over unique questions "
                        f"{np.mean([r['pred'] == r['answer'] for r in rows]):.3f}")
            else:
                rows, _ = cn.Runner(handle, scenes).captions(name, {"method": "baseline"}, B["n_caption"],
                                                             batch=B["caption_batch"], max_new_tokens=B["caption_tokens"])
                for r in rows:
                    r["background"] = scenes[r["scene"]].background
                run.append_jsonl(f"{tag}/captions.jsonl", rows)
                m = sc.chair([r["caption"] for r in rows], scenes[:len(rows)])
                run.log(f"  {tag} captions {name}: CHAIR_i {m['chair_i']:.3f} CHAIR_s {m['chair_s']:.3f} "
                        f"recall {m['recall']:.3f}; e.g. {rows[0]['caption']!r}")
            run.pack(force=True)

    steps_fixed: dict = {}

    def fit(size):
        vlm, proc = vlm_at(size)
        proj = vlm.model.multi_modal_projector
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        feats = tr.features(vlm, proc, S["train"], args.device)                    # [N, n_img, 384]
        feat_secs = time.time() - t0
        feat_mem = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
        run.log(f"{size} px: features {tuple(feats.shape)} in {feat_secs:.1f} s")
        first = not steps_fixed
        targs = SimpleNamespace(
            steps=T["steps_cap"] if first else steps_fixed["steps"], batch=T["batch"], lr=T["lr"], warmup=T["warmup"],
            seed=T["seed"], max_train_seconds=T["max_train_seconds"] if first else T["max_train_seconds_second"],
            timing_steps=T["timing_steps"], device=args.device, n_train=T["n_train"], loss_weighting=T["loss_weighting"],
            task_mix=T["task_mix"], tf32=T["tf32"], image_size=size, backgrounds=T["backgrounds"])
        torch.manual_seed(T["seed"])
        proj.linear_1.reset_parameters()
        proj.linear_2.reset_parameters()
        proj.requires_grad_(True)
        torch.backends.cuda.matmul.allow_tf32 = bool(T["tf32"])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            result = tr.train(vlm, proc, feats, S["train"], targs, run.log)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
            proj.requires_grad_(False)
        train_mem = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
        del feats
        result.pop("snapshots", None)
        if first:
            steps_fixed["steps"] = result["steps_run"]
        meta = tr.projector_metadata(targs, result, feat_secs, proj)
        path = run.work / f"studio_vlm2_projector_{size}.safetensors"
        sv.save_projector(vlm, path, meta)
        shutil.copyfile(path, run.out / path.name)
        n_img = (size // sv.PATCH_SIZE) ** 2
        run.write_json(f"train_{size}.json", {
            **result, "image_size": size, "image_tokens": n_img, "feature_seconds": round(feat_secs, 2),
            "ms_per_step": round(1000 * result["seconds"] / max(1, result["steps_run"]), 1),
            "peak_gib_features": feat_mem, "peak_gib_train": train_mem,
            "steps_rule": "time budget" if first else f"the {sizes[0]} px run's step count"})
        vlm.eval()
        evaluate(f"r{size}", cn.make_handle(vlm, proc))
        return True

    for size in sizes:              # if the first training fails, the next one trains for the time budget instead
        run.stage(f"train+eval:{size}", 30, fit, size)

    def old():
        vlm, proc = vlm_at(sv.IMAGE_SIZE_V2)
        sv.load_projector(vlm, sv.PROJECTOR_ASSET_V2)
        evaluate("old", cn.make_handle(vlm.eval(), proc), old=True)
        return True

    if settings.get("eval_old_projector", True):
        run.stage("eval:old_projector", 10, old)
    run.log(f"done; total {time.time() - dr.T_START:.1f} s")
    run.pack(force=True)


if __name__ == "__main__":
    main()
