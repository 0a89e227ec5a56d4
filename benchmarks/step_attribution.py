"""Where an eager decode step's host time goes, per variant: the attention calls of layers with a hook, those of
layers without one, the rest of the model's forward, and ``generate``'s own work outside the forward.

The random-init Llama-7B-shaped model of ``bench_e2e_table`` (8 layers, bf16), batch --batch, a --prompt-token
prompt, greedy ``generate`` of --new tokens per variant, in --rounds rounds (each round runs every variant once, the
order rotated by one per round, so no variant always follows the same one). Host clocks only (``time.perf_counter``
and the thread's CPU time; no sync, no profiler): a pre-hook and a hook on the model's forward mark each step, and a
wrapper around the attention function the model calls (``seam.probe_attention`` under the seam; transformers'
``sdpa`` function for plain, put back after the run) times every decode call. Per variant the JSON holds the
medians over every timed step (the prefill and the first two decode steps of a run left out) and each round's
medians, and ``vs_*``: the variant's median minus plain's and minus the seam-with-no-edit's, per part.

    PYTHONPATH=. python -m benchmarks.step_attribution --out benchmarks/results/step_attribution_h200.json
    PYTHONPATH=. python -m benchmarks.step_attribution --quick --device cpu --out /tmp/attr.json     # CPU dry run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import torch

from benchmarks.bench_e2e_table import _ctx, interventions_for, llama

PARTS = ("step_ms", "thread_cpu_ms", "outside_forward_ms", "forward_ms", "attn_hooked_ms", "attn_unhooked_ms",
         "forward_other_ms")
HOOKED_LAYERS = {"act": (2, 3, 4, 5, 6), "var": (2, 3, 4, 5, 6), "headmask": (4,)}   # layers with a hook, per variant


class StepTimer:
    """Host timestamps of one ``generate``: forward starts / ends and the attention calls of each forward."""

    def __init__(self, hooked: tuple):
        self.hooked = set(hooked)
        self.steps: list = []          # per forward: [t0, cpu0, t1, attn_hooked_s, attn_unhooked_s, calls]
        self._cur = None

    def pre(self, module, args, kwargs):
        self._cur = [time.perf_counter(), time.thread_time(), None, 0.0, 0.0, 0]
        self.steps.append(self._cur)

    def post(self, module, args, kwargs, output):
        self._cur[2] = time.perf_counter()

    def wrap(self, fn):
        """fn (an attention function) timed per call into the current forward's sums."""
        def timed(module, query, *a, **kw):
            t0 = time.perf_counter()
            out = fn(module, query, *a, **kw)
            dt = time.perf_counter() - t0
            cur = self._cur
            if cur is not None:
                cur[3 if module.layer_idx in self.hooked else 4] += dt
                cur[5] += 1
            return out
        return timed

    def rows(self, skip: int = 3) -> list:
        """Per decode step (skip: the prefill and the first decode steps left out): the parts in ms."""
        out = []
        for a, b in zip(self.steps[skip:], self.steps[skip + 1:]):
            t0, c0, t1, ah, au, _ = a
            step, fwd = b[0] - t0, t1 - t0
            out.append({"step_ms": 1e3 * step, "thread_cpu_ms": 1e3 * (b[1] - c0), "outside_forward_ms": 1e3 * (step - fwd),
                        "forward_ms": 1e3 * fwd, "attn_hooked_ms": 1e3 * ah, "attn_unhooked_ms": 1e3 * au,
                        "forward_other_ms": 1e3 * (fwd - ah - au)})
        return out


@contextlib.contextmanager
def timed_attention(timer: StepTimer, seam_on: bool):
    """Wrap the attention function the model looks up by name for the duration (the seam's or transformers' sdpa)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from probe.capture import seam

    name, fn = (seam.ATTN_NAME, seam.probe_attention) if seam_on else ("sdpa", sdpa_attention_forward)
    AttentionInterface.register(name, timer.wrap(fn))
    try:
        yield
    finally:
        AttentionInterface.register(name, fn)


def _median(rows: list) -> dict:
    return {p: round(statistics.median(r[p] for r in rows), 4) for p in PARTS} if rows else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny model (CPU dry run)")
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--variants", default="plain,seam_noop,act,var,headmask")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    handle = llama(args.device, args.quick)
    model = handle.model
    prompt = min(args.prompt, 64) if args.quick else args.prompt
    g = torch.Generator().manual_seed(args.batch)
    ids = torch.randint(3, model.config.vocab_size, (args.batch, prompt), generator=g).to(args.device)

    def generate(n: int):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False)

    steps: dict = {v: [] for v in variants}
    rounds: dict = {v: [] for v in variants}
    t_start = time.time()
    with torch.no_grad():
        for v in variants:                                   # warm-up: compile, allocate, fill caches
            with _ctx(handle, interventions_for(v, handle, prompt)):
                generate(4)
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                timer = StepTimer(HOOKED_LAYERS.get(v, ()))
                with _ctx(handle, interventions_for(v, handle, prompt)), timed_attention(timer, v != "plain"):
                    h1 = model.register_forward_pre_hook(timer.pre, with_kwargs=True)
                    h2 = model.register_forward_hook(timer.post, with_kwargs=True)
                    try:
                        generate(args.new)
                    finally:
                        h1.remove()
                        h2.remove()
                rows = timer.rows()
                steps[v] += rows
                rounds[v].append(_median(rows))
    res = {}
    for v in variants:
        res[v] = {"steps": len(steps[v]), "median": _median(steps[v]), "rounds": rounds[v]}
    for v in variants:
        for ref in ("plain", "seam_noop"):
            if ref in res and v != ref:
                res[v][f"vs_{ref}"] = {p: round(res[v]["median"][p] - res[ref]["median"][p], 4) for p in PARTS}
                # per round: the difference of the two variants' medians in the same round (paired), then its median
                paired = [a["step_ms"] - b["step_ms"] for a, b in zip(rounds[v], rounds[ref])]
                res[v][f"vs_{ref}"]["step_ms_paired_rounds_median"] = round(statistics.median(paired), 4)
    meta = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor(),
            "torch": torch.__version__, "python": sys.version.split()[0], "argv": sys.argv[1:],
            "prompt": prompt, "new": args.new, "batch": args.batch, "rounds": args.rounds,
            "loadavg": os.getloadavg(), "seconds": round(time.time() - t_start, 1),
            "note": "host clocks per decode step; attention calls timed by a wrapper (every layer)"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"variants": res, "meta": meta}, f, indent=1)
    for v in variants:
        print(v, json.dumps(res[v]["median"]), json.dumps(res[v].get("vs_seam_noop", {})), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
