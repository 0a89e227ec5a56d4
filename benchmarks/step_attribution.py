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
HOOKED_LAYERS = {"act": (2, 3, 4, 5, 6), "var": (2, 3, 4, 5, 6), "headmask": (4,), "headscale": tuple(range(8))}   # layers with a hook, per variant


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


STORED = ("step_ms", "forward_other_ms", "attn_hooked_ms", "attn_unhooked_ms", "outside_forward_ms")   # per step in the JSON


def _median(rows: list) -> dict:
    return {p: round(statistics.median(r[p] for r in rows), 4) for p in PARTS if p in rows[0]} if rows else {}


def stored_rounds(per_step: dict) -> dict:
    """The JSON's per-step lists ({variant: [[STORED values of a step, ...] per round]}) as part dicts per round."""
    out = {}
    for v, rounds in per_step.items():
        out[v] = [[dict(zip(STORED, x), forward_ms=x[0] - x[4]) for x in rs] for rs in rounds]
    return out


def _p5(rows: list, part: str) -> float:
    """The 5th percentile of one part over rows."""
    xs = sorted(r[part] for r in rows)
    return xs[len(xs) // 20]


def _speed_ratio(rows: list) -> float:
    """Median over steps of step time / the model's own host work in that step (``forward_other_ms``): the step's
    cost in units of the host's speed at that moment (the same model code runs in every variant)."""
    return statistics.median(r["step_ms"] / r["forward_other_ms"] for r in rows)


def summarize(rounds: dict, ref: str = "plain", draws: int = 2000, seed: int = 0) -> dict:
    """Per variant: medians of the parts, and against ``ref``
    * ``x_ref_speed_normalized``: the variant's ``_speed_ratio`` over ref's (pooled steps), with a 95 % bootstrap
      interval over rounds (rounds drawn with replacement, the same draw for both variants: paired);
    * ``x_ref_step_median``: the raw median step over ref's (host-speed changes between runs included);
    * ``x_ref_paired_rounds``: the median over rounds of the variant's median step over ref's in the same round;
    * ``forward_other_x_ref_paired``: the same for the model's own host work -- near 1 unless the variant slows the
      code around it (a cost the normalisation would hide); ``forward_other_p5_x_ref``: the 5th percentile of that work
      over ref's, the fast host's floor (less disturbed by the host's state than the per-round pairing);
    * ``x_ref_fastest_round``: the variant's fastest round (median step) over ref's fastest: where the GPU, not the
      host, sets a step's time (batch 16 on a fast host), the normalisation does not apply and this does.
    rounds[v]: a list of per-round lists of per-step part dicts."""
    import random

    rng = random.Random(seed)
    out = {}
    steps = {v: [r for rs in x for r in rs] for v, x in rounds.items()}
    base = steps.get(ref, [])
    for v, rs in rounds.items():
        row = {"steps": len(steps[v]), "rounds": len(rs), "median": _median(steps[v])}
        if ref in rounds and v != ref and base:
            n = min(len(rs), len(rounds[ref]))
            point = _speed_ratio(steps[v]) / _speed_ratio(base)
            boots = []
            for _ in range(draws):
                pick = [rng.randrange(n) for _ in range(n)]
                a = [r for i in pick for r in rs[i]]
                b = [r for i in pick for r in rounds[ref][i]]
                boots.append(_speed_ratio(a) / _speed_ratio(b))
            boots.sort()
            med = lambda xs, p: statistics.median(r[p] for r in xs)   # noqa: E731
            row.update({
                "x_ref_speed_normalized": round(point, 4),
                "x_ref_speed_normalized_ci95": [round(boots[int(0.025 * draws)], 4), round(boots[int(0.975 * draws)], 4)],
                "x_ref_step_median": round(med(steps[v], "step_ms") / med(base, "step_ms"), 4),
                "x_ref_paired_rounds": round(statistics.median(
                    med(rs[i], "step_ms") / med(rounds[ref][i], "step_ms") for i in range(n)), 4),
                "forward_other_x_ref_paired": round(statistics.median(
                    med(rs[i], "forward_other_ms") / med(rounds[ref][i], "forward_other_ms") for i in range(n)), 4),
                "extra_ms_at_ref_speed": round((point - 1) * med(base, "step_ms"), 4),
                "x_ref_fastest_round": round(min(med(x, "step_ms") for x in rs) / min(med(x, "step_ms") for x in rounds[ref]),
                                             4),
                "forward_other_p5_x_ref": round(_p5(steps[v], "forward_other_ms") / _p5(base, "forward_other_ms"), 4),
            })
        out[v] = row
    return out


LABELS = {"plain": "plain `generate` (SDPA, no probe)", "seam_noop": "seam active, no edit (HeadScale α=1: no layer hooked)",
          "headscale": "HeadScale ×2, head 0 of every layer", "headmask": "HeadMask uniform, one head (L4H7)",
          "act": "ACT (layers 2..6, every head)", "var": "VAR: Redistribute key 0 → span [1, 1024), layers 2..6"}


def table(doc: dict) -> str:
    """Markdown: per batch and variant, × plain at the host's speed (95 % interval), the raw ratios, the model's own
    work paired, and the median parts of a step (ms)."""
    out = ["| batch | variant | × plain at equal host speed (95 % CI) | × plain, fastest round | × plain, median step (raw) | × plain, per round "
           "(median) | model's own work, × plain per round | model's own work, 5th percentile × plain's | × plain, generate wall per round (prefill included) | step ms | attention, hooked layers ms | attention, "
           "other layers ms | rest of forward ms | outside forward ms |",
           "|---|---|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for batch, res in summaries(doc).items():
        for v, r in res.items():
            m = r["median"]
            if "x_ref_speed_normalized" in r:
                lo, hi = r["x_ref_speed_normalized_ci95"]
                x = f"{r['x_ref_speed_normalized']:.3f} ({lo:.3f}–{hi:.3f}) | {r['x_ref_fastest_round']:.3f}"
                raw = (f"{r['x_ref_step_median']:.3f} | {r['x_ref_paired_rounds']:.3f} | {r['forward_other_x_ref_paired']:.3f}"
                       f" | {r['forward_other_p5_x_ref']:.3f}")
            else:
                x, raw = "1.000 | 1.000", "1.000 | 1.000 | 1.000 | 1.000"
            raw += f" | {r.get('x_ref_generate_paired_rounds', 1.0):.3f}"
            out.append(f"| {batch} | {LABELS.get(v, v)} | {x} | {raw} | {m['step_ms']:.2f} | {m['attn_hooked_ms']:.2f} | "
                       f"{m['attn_unhooked_ms']:.2f} | {m['forward_other_ms']:.2f} | {m['outside_forward_ms']:.2f} |")
    meta = doc["meta"]
    out.append("")
    out.append(f"(`{meta.get('file', 'benchmarks/results/step_attribution_h200.json')}`, code at "
               f"{meta.get('commit') or '?'}; {meta['device']}; eager `generate`, dynamic cache, {meta['prompt']}-token "
               f"prompt, {meta['new']} new tokens, {meta['rounds']} rounds in rotated order; host clocks.)")
    return "\n".join(out)


def summaries(doc: dict) -> dict:
    """{batch: ``summarize`` of its stored per-step data, with the generate walls' paired ratio}."""
    out = {}
    for batch, per_step in doc["per_step"].items():
        res = out[batch] = summarize(stored_rounds(per_step))
        walls = doc.get("generate_s", {}).get(batch) or {     # (the first files kept them in "batches")
            v: r.get("generate_s") for v, r in doc.get("batches", {}).get(batch, {}).items()}
        for v in res:          # tokens/s as generate gives it (prefill included), raw: paired per round
            if v != "plain" and walls.get(v) and walls.get("plain"):
                res[v]["x_ref_generate_paired_rounds"] = round(statistics.median(
                    a / b for a, b in zip(walls[v], walls["plain"])), 4)
    return out


def run_batch(handle, args, batch: int, variants: list) -> tuple:
    """(rounds, walls) of every variant at one batch size: per-step part dicts per round, and each generate's wall
    time (s, prefill included)."""
    model = handle.model
    prompt = min(args.prompt, 64) if args.quick else args.prompt
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), generator=g).to(args.device)

    def generate(n: int):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False)

    rounds: dict = {v: [] for v in variants}
    walls: dict = {v: [] for v in variants}                  # s per generate (prefill + every step)
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
                        w0 = time.perf_counter()
                        generate(args.new)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        walls[v].append(time.perf_counter() - w0)
                    finally:
                        h1.remove()
                        h2.remove()
                rounds[v].append(timer.rows())
    return rounds, walls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny model (CPU dry run)")
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batches", default="1")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--variants", default="plain,seam_noop,act,var,headmask")
    ap.add_argument("--commit", default=None, help="the code's commit, recorded in the JSON (the device has no git)")
    ap.add_argument("--write-block", nargs=3, metavar=("PAGE", "BLOCK", "RESULT"), default=None,
                    help="only render RESULT's table into the <!-- table:BLOCK --> block of PAGE")
    args = ap.parse_args(argv)
    if args.write_block:
        from studies.tables import write_blocks
        page, block, result = args.write_block
        with open(result) as f:
            doc = json.load(f)
        doc["meta"]["file"] = result
        write_blocks(page, {block: table(doc) + "\n"})
        return 0
    variants = args.variants.split(",")
    handle = llama(args.device, args.quick)
    t_start = time.time()
    doc = {"per_step": {}, "generate_s": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        rounds, walls = run_batch(handle, args, batch, variants)
        # every step's STORED parts (ms), per variant and round; each generate's wall (s)
        doc["per_step"][str(batch)] = {v: [[[round(r[p], 4) for p in STORED] for r in rs] for rs in rounds[v]]
                                       for v in variants}
        doc["generate_s"][str(batch)] = {v: [round(w, 4) for w in walls[v]] for v in variants}
    doc["batches"] = summaries(doc)
    for batch, res in doc["batches"].items():
        for v, r in res.items():
            print(batch, v, json.dumps({k: r[k] for k in r if k.startswith(("x_", "forward_other", "extra"))}),
                  json.dumps(r["median"]), flush=True)
    doc["meta"] = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor(),
                   "torch": torch.__version__, "python": sys.version.split()[0], "argv": sys.argv[1:],
                   "commit": args.commit, "prompt": min(args.prompt, 64) if args.quick else args.prompt,
                   "new": args.new, "rounds": args.rounds, "loadavg": os.getloadavg(),
                   "seconds": round(time.time() - t_start, 1),
                   "note": "host clocks per decode step; attention calls timed by a wrapper (every layer); "
                           "x_ref_speed_normalized = median(step / forward_other) over plain's"}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
