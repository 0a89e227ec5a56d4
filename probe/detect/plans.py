"""Device-sized defaults for the detectors that build their own inputs, with a printed plan.

The full retrieval grid (3 lengths x 5 depths x every needle) and 16 arithmetic pairs per
operator suit a GPU; on a CPU they run for tens of minutes, so the CLI starts smaller there.
Options the user set are never changed. The estimate comes from timing one forward of the
loaded model on its device, scaled by the tokens the plan processes: a rough guide, not a promise.
"""
from __future__ import annotations

import math
import time
from typing import Optional

# option -> value used on CPU when the user did not set it
CPU_DEFAULTS = {
    "retrieval": {"lengths": [256, 512], "depths": [0, 50, 100], "needles": 2},
    "arithmetic": {"n": 4},
}
CAPTURE_OVERHEAD = 2.0      # capture through the seam's reference path vs a plain forward (rough)


def seconds_per_token(handle, tokens: int = 64) -> float:
    """Wall seconds per token of one plain forward (batch 1, ``tokens`` tokens) on the handle's device."""
    import torch

    ids = torch.full((1, tokens), int(handle.tokenizer.eos_token_id or 0), device=handle.device)
    with torch.no_grad():
        handle.model(input_ids=ids, use_cache=False)          # warm-up
        t = time.perf_counter()
        handle.model(input_ids=ids, use_cache=False)
    return (time.perf_counter() - t) / tokens


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def plan_for(handle, name: str, options: dict, per_token: Optional[float] = None) -> Optional[str]:
    """Fill CPU-sized defaults into ``options`` (in place) and return the plan line (None for
    detectors that read the given prompts)."""
    if name not in CPU_DEFAULTS:
        return None
    on_cpu = handle.device.type == "cpu"
    filled = []
    if on_cpu:
        for key, value in CPU_DEFAULTS[name].items():
            if key not in options:
                options[key] = value
                filled.append(key)
    per_token = per_token if per_token is not None else seconds_per_token(handle)
    size = f"CPU-sized defaults for {', '.join(filled)}" if filled else "as set"
    if name == "retrieval":
        from .retrieval import DEFAULTS

        opts = {**DEFAULTS, **options}
        lengths, depths = [int(x) for x in _as_list(opts["lengths"])], _as_list(opts["depths"])
        needles = opts["needles"] if isinstance(opts["needles"], int) else len(_as_list(opts["needles"]))
        n = len(lengths) * len(depths) * needles
        if int(opts["samples"] or 0):
            n = min(n, int(opts["samples"]))
        tokens = n * sum(lengths) / len(lengths)                  # prefill tokens over the plan
        decode_step = 16 * per_token                                # a one-token step costs ~16 tokens' time (rough)
        est = CAPTURE_OVERHEAD * (per_token * tokens + decode_step * n * int(opts["max_new_tokens"]))
        plan = (f"retrieval plan ({size}): {len(lengths)} lengths {lengths} x {len(depths)} depths x {needles} needles "
                f"= {n} samples, {opts['max_new_tokens']} tokens decoded each")
        more = "--opt retrieval.lengths=512,1024,2048 --opt retrieval.depths=0,25,50,75,100"
    else:
        from .arithmetic import DEFAULTS

        opts = {**DEFAULTS, **options}
        ops = len(_as_list(opts["operators"]))
        prompts = int(opts["n"]) * ops
        batches = math.ceil(prompts / int(opts["batch_size"]))
        prompt_tokens = 6 * (int(opts["shots"]) + 1)
        tokens = batches * handle.n_layers * (handle.n_heads + 1) * int(opts["batch_size"]) * prompt_tokens
        est = per_token * tokens
        plan = (f"arithmetic plan ({size}): {int(opts['n'])} pairs x {ops} operators = {prompts} prompts, every head "
                f"and MLP of {handle.n_layers} layers patched")
        more = "--opt arithmetic.n=16"
    return f"{plan}; estimate ~{_human(est)} on {handle.device.type} (larger: {more}; smaller: fewer values)"


def _human(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
