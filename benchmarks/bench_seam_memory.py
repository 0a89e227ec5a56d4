"""Peak GPU memory and wall time of probe.capture vs the plain SDPA forward on long prompts.

Random-init models built on the GPU (bf16): a Gemma-3-270M-shaped text model (18 layers, head_dim
256, 4 query heads on 1 kv head, sliding window 512 on 5 of every 6 layers, global layers between)
and a Llama-7B-shaped model cut to 8 layers (32 heads, d 128). Only the decoder stack runs
(``model.model``: no N x vocab logits). ``capture`` records received, sink and entropy on every
layer through the seam (its mask function hands the kernel (key_start, window), never N x N).
Peak = torch.cuda.max_memory_allocated during one forward, weights included; wall = best of 2.

    python -m benchmarks.bench_seam_memory --out benchmarks/results/seam_memory_h200.json
    python -m benchmarks.bench_seam_memory --tiny      (CPU smoke run of the script itself)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

GiB = 1024 ** 3
CASES = [("gemma3-270m", 8192, 0), ("gemma3-270m", 32768, 0), ("llama7b-8layers", 65536, 64)]


def build(shape: str, device: str, tiny: bool):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM
    if shape.startswith("gemma3"):
        n = 6 if tiny else 18
        cfg = Gemma3TextConfig(vocab_size=1000 if tiny else 262144, hidden_size=64 if tiny else 640,
                               intermediate_size=128 if tiny else 2048, num_hidden_layers=n,
                               num_attention_heads=4, num_key_value_heads=1, head_dim=32 if tiny else 256,
                               sliding_window=8 if tiny else 512,
                               layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)],
                               max_position_embeddings=131072, attn_implementation="sdpa")
        cls = Gemma3ForCausalLM
    else:
        cfg = LlamaConfig(vocab_size=1000 if tiny else 32000, hidden_size=128 if tiny else 4096,
                          intermediate_size=256 if tiny else 11008, num_hidden_layers=2 if tiny else 8,
                          num_attention_heads=4 if tiny else 32, num_key_value_heads=4 if tiny else 32,
                          max_position_embeddings=131072, attn_implementation="sdpa")
        cls = LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        return cls(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32).eval()


def measure(fn, device: str) -> tuple[float, float]:
    """(peak GiB of one call, best wall seconds of two)."""
    if device != "cuda":
        t0 = time.perf_counter()
        fn()
        return float("nan"), time.perf_counter() - t0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    walls = [time.perf_counter() - t0]
    peak = torch.cuda.max_memory_allocated() / GiB
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    walls.append(time.perf_counter() - t0)
    return peak, min(walls)


def main(argv=None) -> int:
    import probe
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("needs CUDA (or --tiny)", file=sys.stderr)
        return 2
    rows = []
    for shape, N, pad in CASES:
        N, pad = (64, min(pad, 16)) if args.tiny else (N, pad)
        model = build(shape, device, args.tiny)
        ids = torch.randint(0, model.config.vocab_size, (1, N), device=device)
        mask = torch.ones(1, N, dtype=torch.long, device=device)
        mask[:, :pad] = 0
        weights = torch.cuda.memory_allocated() / GiB if device == "cuda" else float("nan")
        row = {"shape": shape, "N": N, "left_pad": pad, "weights_gib": weights}

        def plain():
            with torch.no_grad():
                model.model(input_ids=ids, attention_mask=mask)

        def cap():
            with torch.no_grad(), probe.capture(model, stats=("received", "sink", "entropy")):
                model.model(input_ids=ids, attention_mask=mask)
        for name, fn in (("plain_sdpa", plain), ("capture", cap)):
            try:
                row[f"{name}_peak_gib"], row[f"{name}_s"] = measure(fn, device)
            except torch.cuda.OutOfMemoryError as e:
                row[f"{name}_error"] = f"OOM: {str(e).splitlines()[0][:120]}"
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
            "transformers": __import__("transformers").__version__, "argv": sys.argv}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
