"""Where an eager decode step's host time goes inside the seam, per layer call, on the machine that runs it (GPU).

The random-init Llama-7B-shaped model of ``bench_e2e_table`` (8 layers), batch 1, a --prompt-token prompt, greedy
``generate`` (--new tokens) per variant (plain, HeadScale x2 on head 0 of every layer, ACT, VAR). A wrapper around
the registered seam function (``seam.probe_attention``) times every decode call (T = 1) on the host, no sync: the
function's own host cost, which on a host-bound eager step is what the step pays. Calls are grouped by whether the
layer carries a hook (ACT / VAR: layers 2..6; HeadScale: every layer) or not (plain: every layer through the seam
without one). Then a second generate runs with cProfile on only inside the wrapper, and the functions with the most
own time per hooked call are listed (relative: the profiler slows each Python call).

    PYTHONPATH=. python -m benchmarks.profile_seam_host --out benchmarks/results/seam_host_h200.json
    PYTHONPATH=. python -m benchmarks.profile_seam_host --stages --variants act,var --out $OUT/seam_stages.json
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import statistics
import sys
import time

import torch

from benchmarks.bench_e2e_table import _ctx, interventions_for, llama, sync


def _pcts(xs: list) -> dict:
    """{n, median_us, p10_us, p90_us} of host times xs (s)."""
    if not xs:
        return {"n": 0}
    st = sorted(xs)
    return {"n": len(st), "median_us": round(1e6 * statistics.median(st), 1), "p10_us": round(1e6 * st[len(st) // 10], 1),
            "p90_us": round(1e6 * st[(9 * len(st)) // 10], 1)}


def _top(prof: cProfile.Profile, calls: int, n: int) -> list:
    """The n functions with the most own time, µs per seam call (under the profiler: relative, not absolute)."""
    st = pstats.Stats(prof)
    rows = [(tt, cc, f"{fn[0].split('site-packages/')[-1].split('/work/main/')[-1]}:{fn[1]}({fn[2]})")
            for fn, (cc, nc, tt, ct, callers) in st.stats.items()]
    rows.sort(reverse=True)
    return [{"function": name, "own_us_per_seam_call": round(1e6 * tt / max(calls, 1), 2),
             "calls_per_seam_call": round(cc / max(calls, 1), 2)} for tt, cc, name in rows[:n]]


# (module, attribute) pairs timed by ``--stages`` (inclusive host µs per hooked decode call; each looked up by name at
# its call sites, so replacing the attribute for the run times every call)
STAGES = (("probe.capture.seam", "_output_only"), ("probe.capture.seam", "_merged_edits"),
          ("probe.capture.seam", "_kernel_decode"), ("probe.capture.seam", "_mask_to_key_start"),
          ("probe.capture.seam", "decode_attention"), ("kernels.attention.fused", "unsupported_reason"),
          ("kernels.attention.fused", "decode_validated"), ("kernels.attention.fused", "_decode_step"),
          ("kernels.attention.fused", "_prepared_edits"), ("kernels.attention.fused", "_launch_inputs"),
          ("kernels.attention.fused", "_step_partials"), ("kernels.attention.fused", "_alloc"),
          ("kernels.attention.launch.Launch", "__call__"), ("kernels.attention.launch.Launch", "_key"),
          ("kernels.attention.launch", "guards_hold"))


@contextlib.contextmanager
def timed_stages(acc: dict):
    """Replace each STAGES attribute by a wrapper adding its inclusive wall time to acc[name] (s) while acc["on"]."""
    import importlib

    saved = []
    for mod_name, attr in STAGES:
        if mod_name.endswith(".Launch"):
            owner = getattr(importlib.import_module(mod_name.rsplit(".", 1)[0]), "Launch")
        else:
            owner = importlib.import_module(mod_name)
        fn = getattr(owner, attr)
        name = f"{mod_name.split('.')[-1]}.{attr}"

        def wrap(*a, _fn=fn, _name=name, **kw):
            if not acc["on"]:
                return _fn(*a, **kw)
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                acc[_name] = acc.get(_name, 0.0) + time.perf_counter() - t0

        saved.append((owner, attr, fn))
        setattr(owner, attr, wrap)
    try:
        yield
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def run(device: str, prompt: int, new: int, variants: list, top: int, quick: bool, stages: bool = False) -> dict:
    from transformers import AttentionInterface

    from probe.capture import seam

    handle = llama(device, quick)
    model = handle.model
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(1)).to(device)
    inner = seam.probe_attention
    state = {"prof": None, "times": {}, "profiled": 0}
    acc = {"on": False}

    def timer(module, query, *a, **kw):
        if query.shape[2] != 1:
            return inner(module, query, *a, **kw)
        plan = getattr(module, seam._PLAN_ATTR, None)
        kind = "layer without a hook" if plan is None else "hooked layer"
        prof = state["prof"]
        if prof is not None:
            prof.enable()
        acc["on"] = state.get("stages", False) and kind == "hooked layer"
        t0 = time.perf_counter()
        out = inner(module, query, *a, **kw)
        dt = time.perf_counter() - t0
        if acc["on"]:
            acc["on"] = False
            acc["calls"] = acc.get("calls", 0) + 1
            acc["seam.probe_attention"] = acc.get("seam.probe_attention", 0.0) + dt
        if prof is not None:
            prof.disable()
            state["profiled"] += kind == "hooked layer"
        else:
            state["times"].setdefault(kind, []).append(dt)
        return out

    def generate(n: int):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False)

    rows = []
    for v in variants:
        ivs = interventions_for(v, handle, prompt)
        with torch.no_grad(), (_ctx(handle, ivs) if ivs else contextlib.nullcontext()):
            seam.register()
            AttentionInterface.register(seam.ATTN_NAME, timer)
            impl = model.config._attn_implementation
            if ivs is None:                       # plain: every layer through the seam with no hook
                model.config._attn_implementation = seam.ATTN_NAME
            try:
                generate(8)                                              # warm-up: JIT, allocator
                state["times"] = {}
                sync(device)
                t = time.perf_counter()
                generate(new)
                sync(device)
                wall = time.perf_counter() - t
                times = state["times"]
                state["prof"], state["profiled"] = cProfile.Profile(), 0
                generate(new)
                prof, state["prof"] = state["prof"], None
                st_row = {}
                if stages:
                    acc.clear()
                    acc["on"] = False
                    state["stages"] = True
                    with timed_stages(acc):
                        generate(new)
                    state["stages"] = False
                    n = acc.pop("calls", 0)
                    acc.pop("on")
                    st_row = {"hooked_calls": n, "us_per_hooked_call": {
                        k: round(1e6 * v / max(n, 1), 1) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}}
            finally:
                model.config._attn_implementation = impl
                AttentionInterface.register(seam.ATTN_NAME, inner)
        row = {"variant": v, "prompt": prompt, "new_tokens": new, "generate_s": round(wall, 4),
               "calls": {k: _pcts(x) for k, x in times.items()},
               "top_own_time": _top(prof, state["profiled"], top) if state["profiled"] else []}
        if st_row:
            row["stages"] = st_row
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("variant", "generate_s", "calls", "stages") if k in row}), flush=True)
    return {"rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--variants", default="plain,headscale,act,var")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--quick", action="store_true", help="tiny model and prompt (CPU dry run)")
    ap.add_argument("--stages", action="store_true",
                    help="a third generate per variant with the STAGES functions timed (inclusive µs per hooked call)")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt, args.new = min(args.prompt, 64), min(args.new, 8)
    doc = run(args.device, args.prompt, args.new, args.variants.split(","), args.top, args.quick, args.stages)
    doc["meta"] = {"argv": sys.argv, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                   "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
