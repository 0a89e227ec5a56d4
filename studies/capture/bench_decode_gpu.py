"""Decode time per token with each intervention vs the unmodified model, GPU, host overhead separated.

The earlier H200 decode numbers (kernels/BENCHMARKS.md, "end to end") were wall clock at batch 1 on
SmolLM2's shape: host-bound (Python per layer), +-20 %. This script separates the two costs on a
Llama-7B-shaped random model (bf16, 32 layers, 32 heads, d=128; weights do not matter for timing):

- ``device_ms``: the sum of the GPU kernels' own times per decode step (torch.profiler, CUDA
  activity), i.e. what the step costs the GPU with no host overhead at all;
- ``wall_ms``: wall clock per step of a manual greedy loop with no host sync inside the loop (one
  ``cuda.synchronize`` at the end), at batch 1 (latency, host-bound) and at a batch large enough to
  make the GPU the bottleneck (throughput).

Every variant decodes from its own fresh prefill of the same prompt (prefill not timed), with
transformers' DynamicCache (whose per-step ``torch.cat`` is part of every variant's step).

    python -m studies.capture.bench_decode_gpu --out benchmarks/results/bench_decode_gpu_h200.json
    python -m studies.capture.bench_decode_gpu --shape tiny --device cpu        # plumbing check
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


from interventions import ACT, HeadMask, HeadScale, Redistribute, intervene  # noqa: E402
from probe.models import Handle  # noqa: E402

SHAPES = {
    "llama7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2),
}


def random_model(shape: str, device: str, dtype: torch.dtype) -> Handle:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=32768)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    return Handle(model, None, shape, "object")


def variants(n_layers: int) -> dict:
    mid = n_layers // 2
    return {
        "none": None,                                   # unmodified model: SDPA, no probe at all
        "seam": [HeadScale([(mid, 0)], alpha=1.0)],     # session 2: the seam + kernel, an identity edit (since session 4
                                                        # alpha 1 attaches no hook: every layer falls through to SDPA)
        "act": [ACT()],
        "mask_zero": [HeadMask([(mid, 1)], mode="zero")],
        "mask_uniform": [HeadMask([(mid, 1)], mode="uniform")],
        "scale": [HeadScale([(mid, 2)], alpha=2.0)],
        "redistribute": [Redistribute(sink_keys=[0], span=(1, 32))],
        "act+mask+scale": [ACT(), HeadMask([(mid, 1)], mode="zero"), HeadScale([(mid, 2)], alpha=2.0)],
    }


def decode_loop(model, cache, nxt: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy steps with no host sync: nxt [B, 1] -> last tokens [B, 1]."""
    for _ in range(steps):
        logits = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1]   # [B, V]
        nxt = logits.argmax(-1, keepdim=True)
    return nxt


def prefill(model, ids: torch.Tensor):
    out = model(input_ids=ids, use_cache=True)
    return out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)


def device_ms_per_step(model, cache, nxt, steps: int) -> float:
    """Sum of CUDA kernel self-times per step (profiler), host overhead excluded."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        decode_loop(model, cache, nxt, steps)
        torch.cuda.synchronize()
    total_us = sum(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0)
                   for e in prof.key_averages())
    return total_us / 1000.0 / steps


def wall_ms_per_step(model, cache, nxt, steps: int, sync) -> float:
    sync()
    t0 = time.perf_counter()
    decode_loop(model, cache, nxt, steps)
    sync()
    return (time.perf_counter() - t0) * 1000.0 / steps


def run_case(h: Handle, name: str, ivs, batch: int, prompt: int, steps: int, profile_steps: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, h.model.config.vocab_size, (batch, prompt), generator=g).to(device)
    row = {"variant": name, "batch": batch, "prompt": prompt, "steps": steps}
    ctx = intervene(h, *ivs) if ivs else None
    with torch.inference_mode():
        if ctx is not None:
            ctx.__enter__()
        try:
            cache, nxt = prefill(h.model, ids)
            nxt = decode_loop(h.model, cache, nxt, 3)                     # warm-up (Triton compile, allocator)
            walls = [wall_ms_per_step(h.model, cache, nxt, steps, sync) for _ in range(2)]
            row["wall_ms"] = round(min(walls), 3)
            if profile_steps and device.startswith("cuda"):
                row["device_ms"] = round(device_ms_per_step(h.model, cache, nxt, profile_steps), 3)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    return row


def check_act_decode(device: str) -> dict:
    """Kernel vs PyTorch reference for ACT's column edits at one query (the split-KV decode path)."""
    from kernels.attention import AttentionEdits
    from kernels.attention import fused as tri
    from kernels.attention.reference import attention as reference

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=g).to(device, torch.bfloat16)
               for shape in ((2, 32, 1, 128), (2, 8, 4096, 128), (2, 8, 4096, 128)))
    k[:, :, 0] *= 4                                                            # a sink on key 0
    ed = AttentionEdits(col_idx=torch.tensor([[[0, 7]] * 32] * 2, device=device),
                        col_scale=torch.full((2, 32), 0.4, device=device))
    kw = dict(scale=128 ** -0.5, key_start=torch.tensor([0, 9], device=device), edits=ed)
    got = tri.attention(q, k, v, **kw)
    ref = reference(q.float(), k.float(), v.float(), **kw)
    return {"check": "act decode kernel vs fp32 reference (bf16 inputs, GQA 32/8, S 4096)",
            "max_err_out": float((got.out.float() - ref.out).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cases", default="1x4096,16x2048", help="BATCHxPROMPT, comma separated")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--profile-steps", type=int, default=8)
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    h = random_model(args.shape, args.device, dtype)
    rows: list = [{"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                   "torch": torch.__version__, "shape": args.shape, "dtype": str(dtype)}]
    if args.device.startswith("cuda"):
        rows.append(check_act_decode(args.device))
        print(json.dumps(rows[-1]), flush=True)
    todo = variants(h.n_layers)
    if args.only:
        todo = {k: v for k, v in todo.items() if k in args.only.split(",")}
    for case in args.cases.split(","):
        B, P = (int(x) for x in case.split("x"))
        base = None
        for name, ivs in todo.items():
            row = run_case(h, name, ivs, B, P, args.steps, args.profile_steps, args.device)
            if name == "none":
                base = row
            elif base is not None:
                row["wall_x"] = round(row["wall_ms"] / base["wall_ms"], 3)
                if "device_ms" in row and base.get("device_ms"):
                    row["device_x"] = round(row["device_ms"] / base["device_ms"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
