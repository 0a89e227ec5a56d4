"""TransformerLens 4.x backend: capture through a ``TransformerBridge`` built from the loaded HF model.

Hooks used per layer l:
  ``blocks.{l}.attn.hook_pattern``  [B, H, T, S] post-softmax map -> ``LayerStats`` (reduce.record_probs)
  ``blocks.{l}.hook_resid_pre``     [B, T, D] residual entering the block -> ``HiddenSummary``
  ``blocks.{l}.attn.hook_z``        [B, T, H, Dh] head outputs -> head scaling (``head_scale``)

The bridge is booted offline on a *structural clone* of the handle's model: new module objects
sharing the same parameter and buffer tensors (no weight copy). Booting swaps the attention
modules for bridge components and forces eager attention; doing that on the clone leaves the
user's model (and native capture on it) untouched. The bridge is cached in ``handle.extra``.
Its ``generate`` is not used (KV-cache bug in 4.x: see env-notes); every run is one full forward.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional

import torch
from torch import Tensor

from ..errors import ProbeError
from .base import BackendRecorder
from .reduce import key_start_from_mask, record_hidden, record_probs


def structural_clone(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s module tree (and config) whose parameters and buffers ARE the original tensors."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def boot(handle):
    """The handle's TransformerBridge (built once, offline, cached in ``handle.extra['tl_bridge']``)."""
    bridge = handle.extra.get("tl_bridge")
    if bridge is not None:
        return bridge
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as err:
        raise ProbeError("the transformer-lens backend needs transformer-lens 4.x", "pip install 'transformer-lens>=4'") from err
    from .support import check
    check(handle, "transformer-lens")
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    try:
        bridge = TransformerBridge.boot_transformers(
            str(handle.source), hf_model=structural_clone(handle.model), tokenizer=copy.deepcopy(handle.tokenizer))
    except Exception as err:  # adapters raise ValueError/NotImplementedError for unknown architectures
        raise ProbeError(f"TransformerLens could not bridge {type(handle.model).__name__}: {err}",
                         "use --backend native or nnsight for this model") from err
    bridge.eval()
    handle.extra["tl_bridge"] = bridge
    return bridge


class TLRecorder(BackendRecorder):
    """Runs ``bridge.run_with_hooks`` and reduces each layer's pattern as soon as its hook fires."""

    backend = "transformer-lens"

    def __init__(self, handle, bridge, layers, **kw):
        super().__init__(handle, layers=layers, **kw)
        self.bridge = bridge
        self.layer_list = layers
        self.windows = handle.sliding_windows

    def _forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        B, S = input_ids.shape
        key_start = key_start_from_mask(attention_mask, B, S)
        hooks = []
        for layer in self.layer_list:
            if self.request.any:
                hooks.append((f"blocks.{layer}.attn.hook_pattern", self._on_pattern(layer, key_start)))
            if self.hidden_mode:
                hooks.append((f"blocks.{layer}.hook_resid_pre", self._on_resid(layer, attention_mask)))
        for layer, heads in (self.head_scale or {}).items():
            hooks.append((f"blocks.{layer}.attn.hook_z", _scale_z(heads)))
        dev = self.bridge.cfg.device or input_ids.device
        return self.bridge.run_with_hooks(input_ids.to(dev), attention_mask=attention_mask.to(dev), fwd_hooks=hooks)

    def _on_pattern(self, layer: int, key_start: Tensor):
        def hook(pattern, hook):
            record_probs(self, layer, pattern, key_start, self.windows.get(layer))
        return hook

    def _on_resid(self, layer: int, attention_mask: Tensor):
        def hook(x, hook):
            record_hidden(self, layer, x, attention_mask.to(x.device))
        return hook


def _scale_z(heads: dict):
    def hook(z, hook):                                   # z [B, T, H, Dh]
        z = z.clone()
        for h, factor in heads.items():
            z[:, :, h] = z[:, :, h] * factor
        return z
    return hook


def make_recorder(handle, *, bridge=None, layers, **kw) -> TLRecorder:
    return TLRecorder(handle, bridge if bridge is not None else boot(handle), layers, **kw)


def handle_from_bridge(bridge, source: Optional[str] = None):
    """A probe Handle over a TransformerBridge the user already holds (its HF model is ``bridge.original_model``)."""
    from ..models import Handle

    handle = Handle(bridge.original_model, bridge.tokenizer, source or f"bridge:{type(bridge.original_model).__name__}",
                    "object")
    handle.extra.update(backend="transformer-lens", tl_bridge=bridge)
    return handle
