"""HeadMask: ablate chosen heads — uniform attention, zero output, or mean output (methods.md §4).

- "uniform": the head attends uniformly to its visible keys (the retrieval-head paper's masking:
  logits set to 0, i.e. the mean of the visible values).
- "zero": the head output (before the output projection) is 0.
- "mean": the head output is replaced by a stored per-head mean (``HeadMask.compute_means``).
``decode_only=True`` applies the mask only on single-query calls (T == 1, the decode steps).
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from kernels.attention import AttentionEdits
from probe.errors import ProbeError

from .base import Intervention, as_handle, attach_hook, check_heads, parse_heads

MODES = ("uniform", "zero", "mean")


class HeadMask(Intervention):
    """Mask (layer, head) pairs.

    Args:
        heads: (layer, head) pairs or "LxHy" strings (or one of them).
        mode: "uniform" | "zero" | "mean".
        decode_only: only mask decode steps (T == 1).
        means: for mode="mean", per-head mean outputs [L, H, D] (from ``compute_means``) or
            {(layer, head): [D]}.
    """

    order = 1

    def __init__(self, heads, mode: str = "uniform", decode_only: bool = False,
                 means: Union[None, Tensor, dict] = None):
        if mode not in MODES:
            raise ProbeError(f"HeadMask mode={mode!r}", f"use one of {', '.join(MODES)}")
        self.heads = parse_heads(heads)
        if not self.heads:
            raise ProbeError("HeadMask needs at least one head", "e.g. HeadMask([(18, 6)]) or HeadMask('L18H6')")
        self.mode, self.decode_only, self.means = mode, bool(decode_only), means

    def __repr__(self) -> str:
        return f"HeadMask({['L%dH%d' % x for x in self.heads]}, mode={self.mode!r}, decode_only={self.decode_only})"

    def validate(self, handle) -> None:
        check_heads(handle, self.heads)
        if self.mode == "mean":
            if self.means is None:
                raise ProbeError("HeadMask(mode='mean') has no stored means",
                                 "pass means=HeadMask.compute_means(handle, prompts)")
            for layer, head in self.heads:
                self._mean(layer, head, handle.head_dim)

    def _mean(self, layer: int, head: int, D: int) -> Tensor:
        try:
            m = self.means[(layer, head)] if isinstance(self.means, dict) else self.means[layer, head]
        except (KeyError, IndexError) as err:
            raise ProbeError(f"no stored mean for L{layer}H{head}", "compute means over every layer with compute_means") from err
        m = torch.as_tensor(m)
        if m.shape != (D,):
            raise ProbeError(f"stored mean for L{layer}H{head} has shape {tuple(m.shape)}", f"expected [{D}] (head_dim)")
        return m

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        per_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            per_layer.setdefault(layer, []).append(head)
        means = None
        if self.mode == "mean":
            means = {(l, h): self._mean(l, h, handle.head_dim) for l, h in self.heads}
        attach_hook(handle, per_layer, _MaskHook(self, per_layer, handle.n_heads, handle.head_dim, means), stack)

    @staticmethod
    def compute_means(handle_or_model, prompts: Union[str, Sequence[str]], chat_template: bool = False,
                      batch_size: int = 8) -> Tensor:
        """Mean head output (before the output projection) over every real token of ``prompts``.

        Returns: [L, H, D] float32 on CPU, for HeadMask(mode="mean", means=...).
        """
        from probe.capture import seam

        handle, model = as_handle(handle_or_model)
        if handle.tokenizer is None:
            raise ProbeError("compute_means needs a tokenizer", "pass a probe Handle (probe.load)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        hook = _MeanHook(handle.n_layers, handle.n_heads, handle.head_dim)
        modules = handle.attention_modules()
        with torch.no_grad(), seam.use_seam(model), contextlib.ExitStack() as stack:
            for m in modules:
                seam.attach(m, hook)
                stack.callback(seam.detach, m, hook)
            for i in range(0, len(prompts), batch_size):
                model(**handle.encode(prompts[i:i + batch_size], chat_template=chat_template), use_cache=False)
        return hook.sum / hook.count.clamp_min(1)


class _MaskHook:
    graph_safe = True     # uniform heads / head-output edits: the seam may let generate compile (seam.allow_compile)

    def __init__(self, mask: HeadMask, per_layer: dict, H: int, D: int, means: Optional[dict]):
        self.mask = mask
        self.per_layer = per_layer
        self.H, self.D = H, D
        self.means = means
        self._cache: dict = {}

    def edits(self, call, pre) -> Optional[AttentionEdits]:
        if call.layer not in self.per_layer or (self.mask.decode_only and call.T != 1):
            return None
        key = (call.layer, call.device)
        hit = self._cache.get(key)
        if hit is None:                                  # once per layer and device, then the same object
            hit = self._cache[key] = self._build(call.layer, call.device)
        return hit

    def _build(self, layer: int, device) -> AttentionEdits:
        on = torch.zeros(self.H, dtype=torch.bool, device=device)                # [H]
        on[self.per_layer[layer]] = True
        mode = self.mask.mode
        if mode == "uniform":
            return AttentionEdits(head_uniform=on, uniform_heads=tuple(sorted(set(self.per_layer[layer]))))
        if mode == "zero":
            return AttentionEdits(head_scale=(~on).float())
        mean = torch.zeros(self.H, self.D, device=device)                         # [H, D]
        for h in self.per_layer[layer]:
            mean[h] = self.means[(layer, h)].to(device).float()
        return AttentionEdits(head_mean=mean, head_mean_on=on)

    after = None          # no callback after the attention call


class _MeanHook:
    """Sums head outputs over real query tokens: sum [L, H, D], count [L]."""

    def __init__(self, L: int, H: int, D: int):
        self.sum = torch.zeros(L, H, D)
        self.count = torch.zeros(L, 1, 1)

    def after(self, call, result) -> None:
        real = (call.q_pos[None, :] >= call.key_start[:, None])                   # [B, T]
        out = result.out.float() * real[:, :, None, None]                         # [B, T, H, D]
        self.sum[call.layer] += out.sum((0, 1)).cpu()
        self.count[call.layer] += real.sum().cpu()
