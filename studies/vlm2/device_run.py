"""studio-vlm2 on one GPU call: train the projector, then the benchmark, the phenomena and the interventions.

    python -m studies.vlm2.device_run --dinov2 .dev_vision/dinov2_q8.safetensors --pools .dev_vision/pools.npz \\
        --work /tmp/vlm2 --out "$OUT" --deadline 420                                   # the device run
    python -m studies.vlm2.device_run ... --device cpu --quick --work /tmp/q --out /tmp/q_out   # CPU dry run

Everything follows ``studies/vlm2/settings.json`` (pre-registered; ``--quick`` shrinks sizes only).
Each stage writes its files into ``--work`` and then re-packs ``--out``:
  OUT/studio_vlm2_projector.safetensors   (as soon as training ends)
  OUT/vlm2_results.tar.gz                 (every per-item and summary file so far)
  OUT/log.txt
so a kill keeps the projector and whatever was evaluated. Stages that do not fit ``--deadline`` seconds
(counted from the start) are skipped and listed in ``stages.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

T_START = time.time()
HERE = Path(__file__).resolve().parent

import numpy as np  # noqa: E402
import torch  # noqa: E402

from studies.vlm2 import conditions as cn  # noqa: E402
from studies.vlm2 import phenomena as ph  # noqa: E402
from studies.vlm2 import train as tr  # noqa: E402
from probe.data import fashion  # noqa: E402
from probe.data import scenes as sc  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402


def device_call_parser(doc: str, settings: Path, deadline: float) -> argparse.ArgumentParser:
    """The arguments every vlm2 device script takes (carry paths, work / out folders, time budget)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", type=Path, default=settings)
    ap.add_argument("--dinov2", type=Path, required=True)
    ap.add_argument("--pools", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline", type=float, default=deadline, help="seconds from start; later stages are skipped")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a CPU dry run (numbers meaningless)")
    return ap


def parse_args(argv=None):
    ap = device_call_parser(__doc__, HERE / "settings.json", 420.0)
    ap.add_argument("--projector", type=Path, default=None,
                    help="an already trained projector (same recipe): measured instead of the one trained here; the "
                         "training then only runs up to the last snapshot step, for the snapshot stages")
    return ap.parse_args(argv)


def quick(settings: dict) -> dict:
    s = json.loads(json.dumps(settings))
    s["train"].update(n_train=64, steps_cap=3, batch=2, max_train_seconds=None, snapshots=[1, 2])
    s["benchmark"].update(n_test=4, pope_batch=8, n_caption=3, caption_batch=2, caption_tokens=4)
    s["phenomena"].update(n_scenes=2, batch=2, snapshot_scenes=1)
    s["random_controls"].update(draws=2, caption_draws=1, match=["vhr_a2"])
    keep = ("baseline", "no_image", "var_code", "vhr_a2", "vhr_a2_last")          # one of each code path
    s["conditions"] = {k: v for k, v in s["conditions"].items() if k in keep}
    s["caption_conditions"] = ["baseline", "var_code", "vhr_a2"]
    return s


class Run:
    def __init__(self, args):
        self.args = args
        self.work, self.out = args.work, args.out
        self.work.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logf = open(self.work / "log.txt", "a")
        self.stages: dict = {}
        self.last_pack = 0.0

    def log(self, msg: str) -> None:
        line = f"[{time.time() - T_START:6.1f} s] {msg}"
        print(line, flush=True)
        self.logf.write(line + "\n")
        self.logf.flush()

    def left(self) -> float:
        return self.args.deadline - (time.time() - T_START)

    def stage(self, name: str, need: float, fn, *a, **kw):
        """Run ``fn`` if ``need`` seconds are left; record its time or why it was skipped; then pack."""
        if self.left() < need:
            self.stages[name] = {"status": "skipped (time)", "left_s": round(self.left(), 1)}
            self.log(f"skip {name}: {self.left():.0f} s left, needs ~{need:.0f}")
            return None
        t0 = time.time()
        try:
            res = fn(*a, **kw)
            self.stages[name] = {"status": "done", "seconds": round(time.time() - t0, 1)}
        except Exception as err:                 # keep going: one failed stage must not lose the others
            import traceback

            self.stages[name] = {"status": f"failed: {type(err).__name__}: {err}"[:300]}
            self.log(f"FAILED {name}: {traceback.format_exc()[-1500:]}")
            res = None
        self.log(f"{name}: {self.stages[name]}")
        self.pack(force=name == "train")
        return res

    def write_json(self, name: str, obj) -> None:
        (self.work / name).write_text(json.dumps(obj, indent=1, default=str))

    def append_jsonl(self, name: str, rows: list[dict]) -> None:
        with open(self.work / name, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def pack(self, force: bool = False) -> None:
        """Re-pack OUT (at most every 20 s unless forced: a kill loses at most the last 20 s of stages)."""
        self.write_json("stages.json", self.stages)
        if not force and time.time() - self.last_pack < 20:
            return
        self.last_pack = time.time()
        tmp = self.out / "vlm2_results.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz", compresslevel=3) as tar:
            for p in sorted(self.work.rglob("*")):
                if p.is_file():
                    tar.add(p, arcname=str(p.relative_to(self.work)))
        os.replace(tmp, self.out / "vlm2_results.tar.gz")
        shutil.copyfile(self.work / "log.txt", self.out / "log.txt")


def main(argv=None):
    args = parse_args(argv)
    settings = json.loads(args.settings.read_text())
    if args.quick:
        settings = quick(settings)
    run = Run(args)
    run.write_json("settings_used.json", {**settings, "quick": args.quick, "device": args.device,
                                          "deadline_s": args.deadline})
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.device.startswith("cuda"):
        run.log(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    T, B, P = settings["train"], settings["benchmark"], settings["phenomena"]
    if args.projector is not None and sv.projector_image_size(args.projector) != T.get("image_size", sv.IMAGE_SIZE_V2):
        raise SystemExit(f"{args.projector} was trained at {sv.projector_image_size(args.projector)} px, settings say "
                         f"{T.get('image_size', sv.IMAGE_SIZE_V2)}")
    vlm, processor, lm, vision = tr.fresh_vlm(args.device, args.dinov2, T.get("image_size", sv.IMAGE_SIZE_V2))
    proj = vlm.model.multi_modal_projector
    pools = tr.pools(args.pools)
    train_scenes = sc.make_scenes(pools["train_x"], pools["train_y"], T["n_train"], T["seed"])
    freq, co = sc.statistics(train_scenes)          # objects only: backgrounds do not change them
    bg = T.get("backgrounds")
    if bg:
        from probe.data.photos import with_backgrounds

        train_scenes = with_backgrounds(train_scenes, tr.photo_set(pools, "train"), bg["p"], bg["seed"],
                                        tuple(bg["contrast"]))
    tests = tr.test_scenes(pools, B["n_test"])
    questions = sc.pope_questions(tests, freq, co, B["pope_seed"])
    unique = sorted({(q["scene"], q["cls"]): q for split in questions.values() for q in split}.values(),
                    key=lambda q: (q["scene"], q["cls"]))
    unique = [{k: q[k] for k in ("scene", "cls", "noun", "answer")} for q in unique]
    run.write_json("questions.json", {"splits": {k: [[q["scene"], q["cls"], q["answer"]] for q in v]
                                                 for k, v in questions.items()},
                                      "train_frequency": freq.tolist(), "train_cooccurrence": co.tolist()})
    run.log(f"loaded; {len(train_scenes)} train scenes, {len(tests)} test scenes, {len(unique)} unique POPE questions")

    # -- 1. train ------------------------------------------------------------------------------------
    def fit():
        given = args.projector is not None
        given_meta = sv.load_projector(vlm, args.projector) if given else {}
        # with a given projector: the same schedule as its run (its step count), stopped after the last snapshot
        targs = SimpleNamespace(steps=int(given_meta["recipe"]["steps"]) if given else T["steps_cap"],
                                stop_after=max(T["snapshots"]) if given else None, batch=T["batch"], lr=T["lr"],
                                warmup=T["warmup"], seed=T["seed"],
                                max_train_seconds=None if given else T["max_train_seconds"], timing_steps=T["timing_steps"],
                                device=args.device, n_train=T["n_train"],
                                loss_weighting=T.get("loss_weighting", "token"), task_mix=T.get("task_mix"),
                                tf32=T.get("tf32", False), image_size=T.get("image_size", sv.IMAGE_SIZE_V2),
                                backgrounds=bg)
        t0 = time.time()
        feats = tr.features(vlm, processor, train_scenes, args.device)               # [N, n_img, 384]
        feat_secs = time.time() - t0
        run.log(f"features {tuple(feats.shape)} in {feat_secs:.1f} s")
        torch.manual_seed(T["seed"])
        proj.linear_1.reset_parameters()
        proj.linear_2.reset_parameters()
        proj.requires_grad_(True)
        torch.backends.cuda.matmul.allow_tf32 = bool(targs.tf32)                       # training only
        try:
            result = tr.train(vlm, processor, feats, train_scenes, targs, run.log, snapshots=tuple(T["snapshots"]))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
            proj.requires_grad_(False)
        del feats
        path = run.work / "studio_vlm2_projector.safetensors"
        if given:                          # measure the carried projector; this run only made the snapshots
            sv.load_projector(vlm, args.projector)
            shutil.copyfile(args.projector, path)
            result = {"steps_run": int(given_meta["recipe"]["steps"]), **given_meta["loss"],
                      "seconds": given_meta["cost"]["train_seconds"], "snapshots": result["snapshots"],
                      "note": f"measured projector: {args.projector.name} (trained in an earlier call; its metadata "
                              f"holds recipe, cost and loss); this call re-ran its schedule for "
                              f"{result['steps_run']} steps only, for the snapshots",
                      "snapshot_run": {k: result[k] for k in ("seconds", "steps_run", "first100", "losses_every_10")}}
        else:
            meta = tr.projector_metadata(targs, result, feat_secs, proj)
            meta["recipe"]["steps_rule"] = T["rule"]
            sv.save_projector(vlm, path, meta)
        shutil.copyfile(path, run.out / "studio_vlm2_projector.safetensors")
        from safetensors.torch import save_file

        for step, sd in result.pop("snapshots").items():
            save_file(sd, str(run.work / f"snapshot_step{step}.safetensors"))
        run.write_json("train.json", {k: v for k, v in result.items()})
        return result

    if run.stage("train", 0, fit) is None:
        run.log("training failed: stopping")
        return
    vlm.eval()
    handle = cn.make_handle(vlm, processor)
    runner = cn.Runner(handle, tests, seed=settings["random_controls"]["seed"])
    conds = settings["conditions"]
    summary: dict = {"pope": {}, "captions": {}}

    def pope(name, cond):
        rows, stats = runner.pope(name, cond, unique, batch=B["pope_batch"])
        run.append_jsonl("pope_items.jsonl", rows)
        summary["pope"][name] = stats
        acc = np.mean([r["pred"] == r["answer"] for r in rows])
        run.log(f"  POPE {name}: accuracy over unique questions {acc:.3f} {stats}")
        run.write_json("conditions_summary.json", summary)

    def captions(name, cond):
        rows, stats = runner.captions(name, cond, B["n_caption"], batch=B["caption_batch"],
                                      max_new_tokens=B["caption_tokens"])
        run.append_jsonl("captions.jsonl", rows)
        summary["captions"][name] = stats
        m = sc.chair([r["caption"] for r in rows], tests[:len(rows)])
        run.log(f"  captions {name}: CHAIR_i {m['chair_i']:.3f} CHAIR_s {m['chair_s']:.3f}; e.g. {rows[0]['caption']!r}")
        run.write_json("conditions_summary.json", summary)

    # -- 2. baseline benchmark -----------------------------------------------------------------------
    run.stage("pope:baseline", 10, pope, "baseline", conds["baseline"])
    run.stage("pope:no_image", 5, pope, "no_image", conds["no_image"])
    run.stage("captions:baseline", 10, captions, "baseline", conds["baseline"])

    # -- 3. phenomena on v2 ---------------------------------------------------------------------------
    pscenes = tests[:P["n_scenes"]]
    pimages = [s.image for s in pscenes]
    pnames = [f"test_scene:{i}" for i in range(len(pscenes))]

    def phenomena_v2():
        out = ph.detect(handle, P["prompts"], pimages, pnames, batch_size=P["batch"])
        out.heads.to_csv(run.work / "heads_v2.csv", index=False)
        out.tables["visual_tokens"].to_csv(run.work / "visual_tokens_v2.csv.gz", index=False)
        summ = ph.sink_summary(out)
        summ["massive_landing"] = ph.massive_landing(handle, P["prompts"], pimages, out.settings["sink_dims"],
                                                     batch_size=P["batch"])
        run.write_json("phenomena_v2.json", summ)
        run.log(f"  v2 sinks: phi quantiles {summ['phi_quantiles_p50_p90_p99_max']}, visual sink rows "
                f"{summ['visual_sink_rows']}, argmax roles {summ['massive_landing']['argmax_role_all_layers']}")
        return summ

    run.stage("phenomena:v2", 20, phenomena_v2)

    def phenomena_v1():
        """v1 (56 px, 16 tokens, the shipped Fashion-MNIST projector) on single test items, same tower / LM."""
        v1, proc1 = sv.build_studio_vlm(lm.model, lm.tokenizer, projector_path=sv.PROJECTOR_ASSET, vision_model=vision)
        h1 = cn.make_handle(v1.eval(), proc1, "studio-vlm")
        items = list(pools["test_x"][:P["n_scenes"]])
        prompts = [fashion.FASHION_QUESTION, fashion.CAPTION_QUESTION]
        out = ph.detect(h1, prompts, items, [f"test_item:{i}" for i in range(len(items))], batch_size=P["batch"])
        summ = ph.sink_summary(out)
        summ["prompts"] = prompts
        summ["massive_landing"] = ph.massive_landing(h1, prompts, items, out.settings["sink_dims"], batch_size=P["batch"])
        run.write_json("phenomena_v1.json", summ)
        run.log(f"  v1 sinks: phi quantiles {summ['phi_quantiles_p50_p90_p99_max']}, argmax roles "
                f"{summ['massive_landing']['argmax_role_all_layers']}")

    run.stage("phenomena:v1", 15, phenomena_v1)

    # -- 4. a projector with visual sinks? sink statistics of the early snapshots (cheap) ---------------
    from safetensors.torch import load_file

    final = {k: v.clone() for k, v in proj.state_dict().items()}

    def use_snapshot(step):
        proj.load_state_dict({k: v.float() for k, v in
                              load_file(str(run.work / f"snapshot_step{step}.safetensors")).items()})

    snap_found: dict = {}

    def snapshot_sinks():
        n = P["snapshot_scenes"]
        try:
            for step in T["snapshots"]:
                use_snapshot(step)
                out = ph.detect(handle, P["prompts"], pimages[:n], pnames[:n], batch_size=P["batch"])
                snap_found[step] = ph.sink_summary(out)
                run.log(f"  snapshot {step}: visual sinks per item-layer {snap_found[step]['visual_sinks_per_item_layer_mean']},"
                        f" phi max {snap_found[step]['phi_quantiles_p50_p90_p99_max'][-1]}")
            run.write_json("phenomena_snapshots.json", snap_found)
        finally:
            proj.load_state_dict(final)

    run.stage("snapshots:sinks", 15, snapshot_sinks)

    def parity():
        res = cn.check_vhr_parity(handle, tests, unique[:8 if not args.quick else 2])
        run.write_json("vhr_parity.json", res)
        run.log(f"  VHR parity vs interventions.VHR: {res}")

    run.stage("vhr_parity", 15, parity)

    # -- 5. interventions on POPE (cheap: one batched forward per 256 questions) --------------------------
    var_names = [n for n in ("var_code", "var_paper") if n in conds]
    vhr_names = [n for n, c in conds.items() if c["method"] == "vhr"]
    for name in var_names + vhr_names:
        run.stage(f"pope:{name}", 10, pope, name, conds[name])
    R = settings["random_controls"]

    def random_cond(match, draw):
        return {"method": "random", "match": match, "alpha": conds[match]["alpha"], "layers": conds[match]["layers"],
                "draw": draw, "seed": R["seed"]}

    for draw in range(R["draws"]):
        for match in R["match"]:
            if run.stages.get(f"pope:{match}", {}).get("status") == "done":
                run.stage(f"pope:random_{match}_d{draw}", 8, pope, f"random_{match}_d{draw}", random_cond(match, draw))

    # -- 6. VAR where its precondition holds: the snapshot with the most visual sinks -------------------
    def snapshot_var():
        best = max(snap_found, key=lambda st: snap_found[st]["visual_sinks_per_item_layer_mean"])
        if snap_found[best]["visual_sinks_per_item_layer_mean"] <= 0:
            run.log("  no snapshot has visual sinks: VAR on a snapshot not run")
            return
        try:
            use_snapshot(best)
            vr = cn.Runner(handle, tests)
            for name in ["baseline"] + var_names:
                if run.left() < 8:
                    break
                rows, stats = vr.pope(f"snap{best}_{name}", conds[name], unique, batch=B["pope_batch"])
                run.append_jsonl("pope_items.jsonl", rows)
                summary["pope"][f"snap{best}_{name}"] = stats
                run.log(f"  snapshot {best} POPE {name}: {np.mean([r['pred'] == r['answer'] for r in rows]):.3f} {stats}")
            run.write_json("conditions_summary.json", summary)
        finally:
            proj.load_state_dict(final)

    if snap_found:
        run.stage("snapshots:var", 20, snapshot_var)

    # -- 7. captions under the interventions (a generate per batch: the costly part) ---------------------
    for name in var_names + vhr_names:
        if name in settings["caption_conditions"]:
            run.stage(f"captions:{name}", 15, captions, name, conds[name])
    for draw in range(R["caption_draws"]):
        for match in R["match"]:
            if run.stages.get(f"captions:{match}", {}).get("status") == "done":
                run.stage(f"captions:random_{match}_d{draw}", 12, captions, f"random_{match}_d{draw}",
                          random_cond(match, draw))
    run.log(f"done; total {time.time() - T_START:.1f} s")
    run.pack(force=True)


if __name__ == "__main__":
    main()
