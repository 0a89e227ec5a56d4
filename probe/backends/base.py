"""What every hook backend shares: the recorder with ``run``, backend names, and resolving a user's object.

A backend capture yields a ``BackendRecorder``: the same ``Recorder`` (``calls[i].layers[l]`` ->
``LayerStats``, ``hidden(l)`` -> ``HiddenSummary``) that native capture yields, plus ``run(**inputs)``,
which runs one forward through the backend (a TransformerLens bridge or an nnsight trace) and
records it. Inside a backend capture, calling ``handle.model(...)`` directly raises ProbeError
(it would bypass the backend and record nothing).
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional, Sequence

import torch
from torch import Tensor
from transformers.modeling_outputs import CausalLMOutput

from ..capture.recorder import CallRecord, Recorder, stats_request
from ..errors import ProbeError

BACKENDS = ("native", "transformer-lens", "nnsight")
_ALIASES = {"tl": "transformer-lens", "transformer_lens": "transformer-lens", "transformerlens": "transformer-lens",
            "hf": "native", "seam": "native", "nnsight": "nnsight"}


def normalize(name: Optional[str]) -> Optional[str]:
    """'transformer_lens' / 'tl' -> 'transformer-lens'; None stays None; unknown -> ProbeError."""
    if name is None:
        return None
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise ProbeError(f"unknown backend '{name}'", f"choose from {', '.join(BACKENDS)}")
    return key


def object_kind(obj) -> Optional[str]:
    """'transformer-lens' for a TransformerBridge, 'nnsight' for an nnsight model, else None (no imports)."""
    mod = type(obj).__module__ or ""
    if mod.startswith("transformer_lens"):
        return "transformer-lens"
    if mod.startswith("nnsight"):
        return "nnsight"
    return None


class BackendRecorder(Recorder):
    """A ``Recorder`` filled by a hook backend. ``run(input_ids=..., attention_mask=...)`` runs one forward.

    ``run`` returns an object with ``.logits`` [B, T, V]. Extra keyword arguments that a plain HF
    forward takes (``use_cache``) are accepted and ignored: the backends always run one full,
    cache-free forward.
    """

    backend = "?"

    def __init__(self, handle, request, layers, hidden, spans, sink_pos, head_scale=None):
        super().__init__(request, layers, hidden, spans, sink_pos)
        self.handle = handle
        self.head_scale = _head_scale_table(handle, head_scale)
        self._running = False

    def run(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, **_ignored) -> CausalLMOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._check_size(*input_ids.shape)
        self.calls.append(CallRecord(len(self.calls)))
        self._attention_mask = attention_mask
        self._running = True
        try:
            with torch.no_grad():
                logits = self._forward(input_ids, attention_mask)
        finally:
            self._running = False
        return CausalLMOutput(logits=logits)

    def _check_size(self, B: int, S: int) -> None:
        """Refuse, before running, a forward whose per-layer map [B, H, S, S] (float64 while reduced)
        exceeds PROBE_MAX_MAP_BYTES (default 4 GiB): hook backends hold full maps, native does not."""
        limit = int(os.environ.get("PROBE_MAX_MAP_BYTES", 4 << 30))
        need = B * self.handle.n_heads * S * S * 8
        if need > limit:
            raise ProbeError(f"the {self.backend} backend would hold a {need / 2**30:.2f} GiB attention map per layer "
                             f"({B} prompts x {S} tokens; limit {limit / 2**30:.2f} GiB, PROBE_MAX_MAP_BYTES)",
                             "use --backend native for long prompts (no N x N map), or fewer / shorter prompts")

    def _forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _guard(self, module, args, kwargs):
        if not self._running:
            raise ProbeError(f"a direct model call inside a {self.backend} capture records nothing",
                             "run forwards with rec.run(**inputs) inside a backend capture")


def _head_scale_table(handle, head_scale) -> Optional[dict]:
    """{(layer, head): factor} -> {layer: {head: factor}} after checking the heads exist."""
    if not head_scale:
        return None
    table: dict = {}
    for (layer, head), factor in dict(head_scale).items():
        handle.check_head(int(layer), int(head))
        table.setdefault(int(layer), {})[int(head)] = float(factor)
    return table


@contextlib.contextmanager
def guarded(rec: BackendRecorder, model):
    """Make direct calls of the HF ``model`` inside the block raise (they would bypass the backend)."""
    from ..capture.taps import ModuleHooks

    with ModuleHooks() as hooks:
        hooks.pre(model, rec._guard, with_kwargs=True)
        yield rec


def make_request(stats, topk: int, topk_rows: int, hidden: Optional[str]):
    if hidden not in (None, "summary", "full"):
        raise ProbeError(f"hidden={hidden!r}", "use hidden=None, 'summary' or 'full'")
    return stats_request(stats, topk, topk_rows)


def layers_of(handle, layers: Optional[Sequence[int]]) -> list[int]:
    wanted = range(handle.n_layers) if layers is None else layers
    for layer in wanted:
        if not 0 <= int(layer) < handle.n_layers:
            raise ProbeError(f"no layer {layer}", f"layers are 0..{handle.n_layers - 1}")
    return sorted(int(x) for x in wanted)
