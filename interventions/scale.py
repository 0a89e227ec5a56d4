"""HeadScale: the VHR mechanism (He et al., ACL 2025; methods.md §3).

Multiplies chosen heads' outputs (before the output projection) by alpha, at every position of
prefill and decode (the flagged "scale all positions" reading, consistent with the KV cache).
Head *choice* by VHD belongs to the vision issue; here the heads are given.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from kernels.attention import AttentionEdits
from probe.errors import ProbeError

from .base import Intervention, attach_hook, check_heads, parse_heads


class HeadScale(Intervention):
    """Scale (layer, head) outputs by ``alpha`` (2.0 per VHR; 1 = no-op, 0 = zero ablation)."""

    order = 4

    def __init__(self, heads, alpha: float = 2.0):
        self.heads = parse_heads(heads)
        if not self.heads:
            raise ProbeError("HeadScale needs at least one head", "e.g. HeadScale('L3H2', alpha=2)")
        self.alpha = float(alpha)

    def __repr__(self) -> str:
        return f"HeadScale({['L%dH%d' % x for x in self.heads]}, alpha={self.alpha})"

    def validate(self, handle) -> None:
        check_heads(handle, self.heads)

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        scales: dict[int, torch.Tensor] = {}
        for layer, head in self.heads:
            scales.setdefault(layer, torch.ones(handle.n_heads))[head] = self.alpha   # [H]
        scales = {l: s for l, s in scales.items() if not bool((s == 1).all())}     # alpha 1: no hook, SDPA as is
        attach_hook(handle, scales, _ScaleHook(scales), stack)


class _ScaleHook:
    """Hands each layer's edit, built once per device, to every call."""

    graph_safe = True     # head-output edits only: the seam may let generate compile (seam.allow_compile)

    def __init__(self, scales: dict):
        self.scales = scales                     # layer -> [H]
        self._edits: dict = {}

    def edits(self, call, pre) -> Optional[AttentionEdits]:
        key = (call.layer, call.device)
        hit = self._edits.get(key)
        if hit is None:
            s = self.scales.get(call.layer)
            if s is None:
                return None
            hit = self._edits[key] = AttentionEdits(head_scale=s.to(call.device))
        return hit

    after = None          # no callback after the attention call
