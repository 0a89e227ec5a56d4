"""A model spread over two GPUs with accelerate's device_map gives the same scan as on one GPU.

Loads SmolLM2 (fp32) on cuda:0, and again from the same cached folder with ``device_map="balanced"``
over every visible GPU; runs ``probe.scan`` (sinks detector) and a greedy ACT generation on both and
prints the max difference of the heads tables, the layer -> device split and the timings as JSON.

    python -m studies.scale.device_map_parity --out $OUT/device_map.json      # needs >= 2 GPUs
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch


import probe  # noqa: E402
from interventions import ACT, intervene  # noqa: E402
from probe.data.prompts import default_prompts  # noqa: E402
from probe.models.cache import cache_root  # noqa: E402


def scan_heads(h, prompts):
    t0 = time.perf_counter()
    rep = probe.scan(h, prompts, detect=("sinks",))
    return rep.tables["heads"], time.perf_counter() - t0


def act_tokens(h, prompt: str) -> list:
    with torch.inference_mode(), intervene(h, ACT(layers=[10, 11, 14])):
        ids = h.model.generate(**h.encode(prompt), max_new_tokens=12, do_sample=False,
                               pad_token_id=h.tokenizer.pad_token_id)
    return ids[0].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--device", default="cuda:0", help="the one-device baseline")
    ap.add_argument("--device-map", default="balanced", help='accelerate device_map ("balanced", "auto", "cpu" for a plumbing check)')
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    one = probe.load("smollm2", device=args.device, dtype=torch.float32)
    folder = next((cache_root() / "models").glob(f"*-{one.file_hash[:12]}"))
    split = probe.load(str(folder), dtype=torch.float32, device_map=args.device_map)
    dmap = getattr(split.model, "hf_device_map", None) or {"": str(split.device)}
    placement = Counter(str(d) for d in dmap.values())
    prompts = default_prompts(one.tokenizer, args.n_prompts, args.prompt_tokens)
    a, t_one = scan_heads(one, prompts)
    b, t_split = scan_heads(split, prompts)
    num = a.select_dtypes("number").columns
    prompt = "The capital of France is"
    res = {"gpus": torch.cuda.device_count(), "device_map_arg": args.device_map, "device_map_modules_per_device": dict(placement),
           "device_map": {k: str(v) for k, v in dmap.items()},
           "prompts": f"{args.n_prompts}x{args.prompt_tokens}", "scan_one_gpu_s": round(t_one, 2),
           "scan_device_map_s": round(t_split, 2), "heads_rows": len(a),
           "heads_max_abs_diff": float((a[num] - b[num]).abs().max().max()),
           "act_generate_same_tokens": act_tokens(one, prompt) == act_tokens(split, prompt)}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
