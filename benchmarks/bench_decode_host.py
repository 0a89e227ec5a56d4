"""Host cost of an eager ACT / VAR decode step through the seam, per edited layer (CPU, no GPU needed).

A tiny random-init 8-layer Llama (fp32, H = KV = 4, head_dim 64), batch 1, a 48-token prompt, greedy
``generate`` inside ``intervene`` with ACT (layers 2..6, every head) or VAR (sink key 0 -> span [1, 32),
layers 2..6). The seam's kernel calls take the CUDA branch of ``kernels.attention.attention`` (session 9 on:
of ``kernels.attention.decode_attention``, ``decode_lane``; what runs on the GPU: validation, the Triton host
module, its launch plan) with the two decode kernels replaced by sinks
(``bench_host_path._Sink``: a launch returns at once) under TRITON_INTERPRET=1; prefills go to the PyTorch
reference (real sink sets). So the numbers are everything the seam, the hooks and ``kernels/attention/fused.py``
do on the host per decode step before Triton's launcher; Triton's own launcher (``JITFunction.run`` or the
direct launch of ``kernels/attention/launch.py``) and the GPU are not in them (device script:
``benchmarks/bench_launch.py``).

Per variant: ``python_calls_per_step`` = (cProfile calls of a 9-token generate - a 1-token one) / 8, the
whole model (plain included); ``extra_calls_per_edited_layer`` = (variant - plain) / 5; ``us_per_edited_layer``:
median / 10th percentile wall µs inside the seam's attention function (``seam.probe_attention``) per call of an
edited layer on decode steps (a timer around the function, no profiler), over --steps steps;
``us_isolated_call_min`` / ``_median``: one such call (its captured arguments) repeated, µs per call per batch of
200 calls, the fastest and the median of --batches batches (the minimum is the least disturbed by the load of a
shared machine); ``us_cpu_isolated_call_*`` the same in the thread's CPU time (``time.thread_time``: time-slicing
by other processes left out).

    git worktree add --detach /tmp/host_before <commit before the change>
    PYTHONPATH=. python benchmarks/bench_decode_host.py --code /tmp/host_before --label before \
        --out benchmarks/results/decode_host_cpu.json
    PYTHONPATH=. python benchmarks/bench_decode_host.py --label after --out benchmarks/results/decode_host_cpu.json
    PYTHONPATH=. python benchmarks/bench_decode_host.py --write-block kernels/BENCHMARKS.md     # the table, from the JSON
"""
from __future__ import annotations

import argparse
import cProfile
import contextlib
import json
import os
import pstats
import statistics
import sys
import time

from benchmarks import labelled_runs

EDITED = (2, 3, 4, 5, 6)
RESULT = "benchmarks/results/decode_host_cpu.json"
BLOCK = "decode-host"


def table(doc: dict) -> str:
    """Markdown: per variant, before / after: extra Python calls per edited layer and step, µs of one isolated
    call (fastest / median batch) and µs per call inside generate (median)."""
    rows = {(r["label"], r["variant"]): r for r in doc["rows"]}
    out = ["| variant | extra Python calls per edited layer, before | after | CPU µs per call isolated, before (min / "
           "median) | after | wall µs per call in generate, before (median) | after |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for v in ("act", "var"):
        b, a = rows.get(("before", v)), rows.get(("after", v))
        if b is None or a is None:
            continue
        out.append(f"| {v} | {b['extra_calls_per_edited_layer']:.0f} | {a['extra_calls_per_edited_layer']:.0f} | "
                   f"{b['us_cpu_isolated_call_min']:.1f} / {b['us_cpu_isolated_call_median']:.1f} | "
                   f"{a['us_cpu_isolated_call_min']:.1f} / {a['us_cpu_isolated_call_median']:.1f} | "
                   f"{b['us_per_edited_layer_median']:.1f} | {a['us_per_edited_layer_median']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    labelled_runs.add_args(ap, "import the project from this tree (default: the current one)", BLOCK, RESULT)
    ap.add_argument("--steps", type=int, default=400, help="decode steps timed per variant")
    ap.add_argument("--batches", type=int, default=40, help="batches of 200 isolated calls per variant")
    args = ap.parse_args(argv)
    if args.write_block:
        labelled_runs.write_block(args.write_block, BLOCK, RESULT, table)
        return 0
    os.environ.setdefault("TRITON_INTERPRET", "1")          # before the kernels are imported (no CUDA here)
    if args.code:
        sys.path.insert(0, os.path.abspath(args.code))
    here = os.path.dirname(os.path.abspath(__file__))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import kernels.attention as ka
    from interventions import ACT, Redistribute, intervene
    from kernels.attention import fused
    from probe.capture import seam
    from probe.models import Handle

    sys.path.insert(0, os.path.dirname(here))
    from benchmarks.bench_host_path import _Sink

    for name in ("decode_fwd_kernel", "decode_combine_kernel"):
        getattr(fused, name).fn = _Sink()

    def cuda_branch(q, k, v, **kw):            # kernels.attention.attention's CUDA branch for decode steps
        if q.shape[2] > 1:
            return ka.reference_attention(q, k, v, **kw)
        why = ka.fallback_reason(q, k, v, **kw)
        assert why is None, why
        return ka._KERNELS[0].attention_validated(q, k, v, **kw)

    def cuda_decode(q, k, v, **kw):            # kernels.attention.decode_attention's CUDA branch (session 9 on)
        if q.shape[2] > 1:
            return ka.reference_attention(q, k, v, **kw)
        return ka.decode_lane(q, k, v, **kw)

    seam.attention = cuda_branch
    if hasattr(seam, "decode_attention"):      # the seam's eager ACT / VAR decode entry since session 9
        seam.decode_attention = cuda_decode
    timed: list = []
    captured: list = []
    inner = seam.probe_attention

    def timer(module, *a, **kw):
        if a[0].shape[2] != 1 or module.layer_idx not in EDITED:
            return inner(module, *a, **kw)
        t0 = time.perf_counter()
        out = inner(module, *a, **kw)
        timed.append(time.perf_counter() - t0)
        if not captured:
            captured.append((module, a, kw))
        return out

    def isolated() -> list:
        """µs per call of the seam on one captured decode call of an edited layer, repeated: per batch of 200."""
        module, a, kw = captured[0]
        for _ in range(50):
            inner(module, *a, **kw)
        per, cpu = [], []
        for _ in range(args.batches):
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(200):
                inner(module, *a, **kw)
            per.append((time.perf_counter() - t0) / 200 * 1e6)
            cpu.append((time.thread_time() - c0) / 200 * 1e6)
        return sorted(per), sorted(cpu)

    cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=256, num_hidden_layers=8,
                      num_attention_heads=4, num_key_value_heads=4, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    h = Handle(model, None, "tiny", "object")
    ids = torch.randint(3, 256, (1, 48), generator=torch.Generator().manual_seed(1))
    variants = {"plain": None, "act": [ACT()],
                "var": [Redistribute(sink_keys=[0], span=(1, 32))]}

    def ctx(ivs):
        return contextlib.nullcontext() if ivs is None else intervene(h, *ivs)

    def generate(n: int):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False)

    from transformers import AttentionInterface

    rows = []
    load0 = os.getloadavg()[0]
    calls = {}
    for name, ivs in variants.items():
        with torch.no_grad(), ctx(ivs):
            if ivs is not None:
                AttentionInterface.register(seam.ATTN_NAME, timer)    # (use_seam registered probe_attention)
            generate(4)                                                      # warm-up
            counts = []
            for n in (1, 9):
                prof = cProfile.Profile()
                prof.enable()
                generate(n)
                prof.disable()
                counts.append(pstats.Stats(prof).total_calls)
            calls[name] = (counts[1] - counts[0]) / 8
            timed.clear()
            done = 0
            while done < args.steps:
                generate(min(64, args.steps - done) + 1)
                done += min(64, args.steps - done)
            ts = sorted(timed)
            iso, iso_cpu = isolated() if ivs is not None else (None, None)
            captured.clear()
        row = {"label": args.label, "variant": name, "python_calls_per_step": calls[name]}
        if ivs is not None:
            row.update({"extra_calls_per_edited_layer": round((calls[name] - calls["plain"]) / len(EDITED), 1),
                        "us_per_edited_layer_median": round(statistics.median(ts) * 1e6, 1),
                        "us_per_edited_layer_p10": round(ts[len(ts) // 10] * 1e6, 1), "timed_calls": len(ts),
                        "us_isolated_call_min": round(iso[0], 1), "us_isolated_call_median": round(iso[len(iso) // 2], 1),
                        "us_cpu_isolated_call_min": round(iso_cpu[0], 1),
                        "us_cpu_isolated_call_median": round(iso_cpu[len(iso_cpu) // 2], 1)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        labelled_runs.save(args, argv, rows, load0, note="seam + hooks + kernel host module up to Triton's launcher; "
                                                         "decode kernels are sinks, prefills run the reference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
