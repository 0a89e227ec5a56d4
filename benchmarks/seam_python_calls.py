"""Python-level function calls per decode step that the seam adds to HF ``generate`` (CPU, cProfile).

A tiny random-init 8-layer Llama, batch 1, a 32-token prompt; calls per step = (calls of a 9-token generate -
calls of a 1-token generate) / 8. Rows: the plain model; the seam active with no hook (every layer falls
through to SDPA); one and eight layers hooked by a hook that asks for nothing (the seam's bookkeeping).
On a host-bound GPU decode every extra call costs wall time, so this is the host-side proxy the GPU
numbers in kernels/BENCHMARKS.md cannot give per layer.

    PYTHONPATH=. python benchmarks/seam_python_calls.py --out benchmarks/results/seam_python_calls_cpu.json
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats

import torch


class _Silent:
    """A seam hook that asks for nothing (what an alpha-1 HeadScale was before it stopped hooking)."""

    def after(self, call, result) -> None:
        pass


def main(argv=None) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    from probe.capture import seam
    from probe.models import Handle

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=8, num_attention_heads=4,
                      num_key_value_heads=4, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = 0
    h = Handle(model, None, "tiny", "object")
    ids = torch.randint(3, 256, (1, 32))

    def hooked(k: int):
        @contextlib.contextmanager
        def ctx():
            with seam.use_seam(model), seam.attached(h.attention_modules()[:k], _Silent()):
                yield
        return ctx

    def calls(n: int, ctx) -> int:
        prof = cProfile.Profile()
        with torch.no_grad(), ctx():
            prof.enable()
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False)
            prof.disable()
        return pstats.Stats(prof).total_calls

    rows = []
    for name, ctx in (("plain", contextlib.nullcontext), ("seam, no hook", hooked(0)), ("1 hooked layer", hooked(1)),
                      ("8 hooked layers", hooked(8))):
        per_step = (calls(9, ctx) - calls(1, ctx)) / 8
        rows.append({"case": name, "python_calls_per_step": per_step})
        print(f"{name:18s} {per_step:.0f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
