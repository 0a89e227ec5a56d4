"""Shared pieces of the interventions: the base class, head lists, layer defaults, handle lookup.

An intervention is a small object holding parameters. ``intervene`` validates it against a model
(``validate``) and then lets it install its hooks (``install``) on an ``ExitStack`` that removes
them again. Nothing here touches modeling code: seam hooks hand ``AttentionEdits`` to the
attention op, SinkWindow swaps the KV-cache layers of the cache transformers passes around.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterable, Optional, Sequence, Union

import torch

from probe.errors import ProbeError
from probe.models.handle import as_handle  # noqa: F401  (the one as_handle; re-exported)

HeadSpec = Union[str, tuple, list]
_HEAD_RE = re.compile(r"^L(\d+)H(\d+)$", re.IGNORECASE)


def parse_head(head: HeadSpec) -> tuple[int, int]:
    """"L18H6" or (18, 6) -> (18, 6)."""
    if isinstance(head, str):
        m = _HEAD_RE.match(head.strip())
        if not m:
            raise ProbeError(f"cannot read head {head!r}", "write heads as L<layer>H<head>, e.g. L18H6")
        return int(m.group(1)), int(m.group(2))
    try:
        layer, h = head
        return int(layer), int(h)
    except (TypeError, ValueError) as err:
        raise ProbeError(f"cannot read head {head!r}", "give (layer, head) pairs or strings like L18H6") from err


def parse_heads(heads: Union[None, HeadSpec, Iterable[HeadSpec], dict]) -> Optional[list[tuple[int, int]]]:
    """Normalise a head selection: None, "L1H2", [(1, 2), "L3H4"], {layer: [heads]} -> sorted pairs."""
    if heads is None:
        return None
    if isinstance(heads, dict):
        return sorted({(int(l), int(h)) for l, hs in heads.items() for h in hs})
    if isinstance(heads, str):
        heads = [x for x in heads.split(",") if x.strip()]
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    return sorted({parse_head(h) for h in heads})


def check_heads(handle, heads: Optional[Sequence[tuple[int, int]]]) -> None:
    """ProbeError naming the valid ranges for the first head that does not exist."""
    for layer, head in heads or ():
        handle.check_head(layer, head)


def check_layers(handle, layers: Optional[Sequence[int]]) -> None:
    for layer in layers or ():
        if not 0 <= int(layer) < handle.n_layers:
            raise ProbeError(f"no layer {layer} in {handle.source}", f"layers are 0..{handle.n_layers - 1}")


def default_layers(n_layers: int) -> list[int]:
    """Workbench default for ACT / VAR: skip layers 0, 1 and the last one (2..L-2)."""
    return list(range(2, max(2, n_layers - 1)))


def resolve_layers(layers: Optional[Sequence[int]], heads: Optional[Sequence[tuple[int, int]]], n_layers: int) -> list[int]:
    """The layers an intervention edits: ``layers`` if given, else the layers of ``heads``, else 2..L-2."""
    if layers is not None:
        return list(layers)
    if heads is not None:
        return sorted({l for l, _ in heads})
    return default_layers(n_layers)


def head_table(n_layers: int, n_heads: int, layers: Sequence[int], heads: Optional[Sequence[tuple[int, int]]]) -> torch.Tensor:
    """[L, H] bool: which heads an intervention edits (all heads of ``layers`` when heads is None)."""
    on = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    if heads is None:
        on[list(layers)] = True
    else:
        for layer, head in heads:
            on[layer, head] = True
    return on


class Intervention:
    """Base class. ``order`` is the position in the composition order (see ``interventions.core``)."""

    order: int = 100
    uses_seam: bool = True

    def validate(self, handle) -> None:
        """Raise ProbeError when the parameters do not fit the model."""

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        """Attach hooks; register their removal on ``stack``."""
        raise NotImplementedError


def attach_hook(handle, layers: Iterable[int], hook, stack: contextlib.ExitStack) -> None:
    """Route the attention modules of ``layers`` through ``hook`` until ``stack`` closes."""
    from probe.capture import seam

    modules = handle.attention_modules()
    for layer in sorted(set(layers)):
        seam.attach(modules[layer], hook)
        stack.callback(seam.detach, modules[layer], hook)
