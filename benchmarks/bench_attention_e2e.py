"""End-to-end GPU timing of probe's capture and interventions: Triton kernel path vs reference path.

1. Capture (what `probe scan`'s sink detector runs per batch: received mass + entropy + hidden-state
   summaries, every layer) on random-init models of SmolLM2's shape (30 layers, 9/3 heads, d 64) and
   Llama-7B's shape (8 of its 32 layers, 32/32 heads, d 128 — the per-layer cost is what matters), bf16.
2. Greedy decode tokens/s on the SmolLM2-shaped model: no intervention, ACT, HeadMask(zero), HeadScale.
3. Parity on real SmolLM2 attention inputs (q/k/v of a real 512-token Austen prompt, saved on the CPU
   machine with --save): kernel stats vs the fp64 reference stats saved with them.

Usage: python -m benchmarks.bench_attention_e2e --save .devdata/smollm2_qkv.pt   (CPU machine)
       python -m benchmarks.bench_attention_e2e --qkv .devdata/smollm2_qkv.pt --out results.json   (GPU)
Set PROBE_DISABLE_TRITON=1 to force the reference path (the script toggles it itself).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from kernels.attention import StatsRequest, reference_attention

LAYERS_SAVED = (0, 12, 18)
FULL_STATS = StatsRequest(lse=True, entropy=True, sink_mass=True, received=True)


def save_real_qkv(path: str) -> None:
    """Capture q/k/v of a real SmolLM2 prompt through the seam and store them with fp64 reference stats."""
    import probe
    from probe.capture import seam
    from probe.data.prompts import default_prompts

    h = probe.load("smollm2")
    enc = h.encode(default_prompts(h.tokenizer, n=1, tokens=512)[0])
    saved = {}

    class Grab:
        """A seam hook that keeps the q/k/v of the chosen layers (first call only)."""

        def stats_request(self, call):
            return StatsRequest()

        def after(self, call, result):
            if call.layer in LAYERS_SAVED and call.layer not in saved:
                saved[call.layer] = dict(q=call.query.clone(), k=call.key.clone(), v=call.value.clone(),
                                         scale=call.module.scaling)

    grab = Grab()
    with torch.no_grad(), seam.use_seam(h.model):
        for m in h.attention_modules():
            seam.attach(m, grab)
        try:
            h.model(**enc)
        finally:
            for m in h.attention_modules():
                seam.detach(m, grab)
    for layer, d in saved.items():
        ref = reference_attention(d["q"].double(), d["k"].double(), d["v"].double(), scale=d["scale"], stats=FULL_STATS)
        d["ref"] = {n: getattr(ref, n) for n in ("out", "lse", "entropy", "sink_mass", "received_sum")}
    torch.save(saved, path)
    print(f"saved layers {sorted(saved)} to {path}")


def random_model(shape: str, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from probe.models import Handle

    if shape == "smollm2":
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=65536, tie_word_embeddings=True)
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=8,
                          num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=65536)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    return Handle(model, None, shape, "object")


def timed(fn, reps: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_capture(rows: list, device: str) -> None:
    import probe

    for shape, cases in (("smollm2", ((4, 512), (1, 4096), (1, 16384))), ("llama7b-8layers", ((1, 4096), (1, 16384)))):
        h = random_model("smollm2" if shape == "smollm2" else "llama", device)
        for B, N in cases:
            ids = torch.randint(0, 32000, (B, N), device=device)

            def plain():
                with torch.no_grad():
                    h.model(input_ids=ids, use_cache=False)

            def cap():
                with torch.no_grad(), probe.capture(h, stats=("received", "entropy"), hidden="summary"):
                    h.model(input_ids=ids, use_cache=False)
            res = {"shape": shape, "batch": B, "tokens": N, "sdpa_forward_s": timed(plain)}
            for path in ("kernel", "reference"):
                os.environ["PROBE_DISABLE_TRITON"] = "1" if path == "reference" else "0"
                torch.cuda.reset_peak_memory_stats()
                try:
                    res[f"capture_{path}_s"] = timed(cap, reps=1 if path == "reference" else 3)
                    res[f"capture_{path}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                except torch.OutOfMemoryError:
                    res[f"capture_{path}_s"] = "OOM"
            os.environ["PROBE_DISABLE_TRITON"] = "0"
            rows.append(res)
            print(json.dumps(res), flush=True)
        h = None  # free the model before the next shape
        torch.cuda.empty_cache()


def bench_decode(rows: list, device: str) -> None:
    from interventions import ACT, HeadMask, HeadScale, intervene

    h = random_model("smollm2", device)
    ids = torch.randint(0, 32000, (1, 512), device=device)
    variants = {"none": [], "act": [ACT()], "mask_zero_L18H6": [HeadMask([(18, 6)], mode="zero")],
                "scale_L3H2_x2": [HeadScale([(3, 2)], alpha=2.0)]}
    def plain():
        with torch.no_grad():
            h.model.generate(input_ids=ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
    res = {"decode_path": "unmodified model (sdpa, no probe)", "intervention": "-", "new_tokens": 64, "prompt": 512,
           "tokens_per_s": round(64 / timed(plain, reps=2), 1)}
    rows.append(res)
    print(json.dumps(res), flush=True)
    for path in ("kernel", "reference"):
        os.environ["PROBE_DISABLE_TRITON"] = "1" if path == "reference" else "0"
        for name, ivs in variants.items():
            def gen():
                with torch.no_grad(), intervene(h, *ivs):
                    h.model.generate(input_ids=ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
            s = timed(gen, reps=2)
            res = {"decode_path": path, "intervention": name, "new_tokens": 64, "prompt": 512,
                   "tokens_per_s": round(64 / s, 1)}
            rows.append(res)
            print(json.dumps(res), flush=True)
    os.environ["PROBE_DISABLE_TRITON"] = "0"


def parity_real(rows: list, path: str, device: str) -> None:
    from kernels.attention import attention

    saved = torch.load(path)
    for layer, d in saved.items():
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (d[n].to(device, dtype) for n in ("q", "k", "v"))
            res = attention(q, k, v, scale=d["scale"], stats=FULL_STATS)
            err = {n: float((getattr(res, n).double().cpu() - d["ref"][n]).abs().max()) for n in d["ref"]}
            row = {"parity_layer": layer, "dtype": str(dtype), **{f"maxerr_{n}": e for n, e in err.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", help="CPU: capture real SmolLM2 q/k/v into this file")
    ap.add_argument("--qkv", help="GPU: the file written by --save")
    ap.add_argument("--out", default="bench_e2e.json")
    ap.add_argument("--only", choices=("capture", "decode"), help="run one part")
    args = ap.parse_args()
    if args.save:
        save_real_qkv(args.save)
        return
    device = "cuda"
    rows: list = [{"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}]
    if args.qkv and not args.only:
        parity_real(rows, args.qkv, device)
    if args.only != "decode":
        bench_capture(rows, device)
    if args.only != "capture":
        bench_decode(rows, device)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
