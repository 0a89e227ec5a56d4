"""``intervene``: apply several interventions to a model for the duration of a ``with`` block.

Composition order (fixed, whatever order the arguments come in):

  0. SinkWindow   — which keys exist (the KV cache keeps sinks + recent window).
  1. HeadMask     — "uniform" replaces the probabilities of its heads first;
  2. ACT          — then sink columns are rescaled (on the possibly uniform map);
  3. Redistribute — then sink mass moves to the span;
  4. HeadMask "mean" replaces a head's output, then HeadScale and HeadMask "zero" multiply it
     (scales multiply: HeadScale(α) after a mean ablation gives α · mean).

Steps 1-4 are the probability / output edit order of ``kernels.attention.AttentionEdits`` (the
seam merges every intervention's edits per layer and the kernel applies them in that order).
Sink detection (ACT's received mass, VAR's "auto" residual rule) looks at the *unedited*
attention of that layer, computed in a pre-pass; earlier layers' edits do reach it through the
residual stream, as in the papers' in-forward hooks. Two ACTs (or two Redistributes, or two mean
masks) on one layer are refused. SinkWindow re-indexes the cache, so it cannot be combined with
ACT or Redistribute (their sink positions would go stale).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from probe.errors import ProbeError

from .base import Intervention, as_handle


class Intervened:
    """What ``intervene`` yields: the handle and the interventions in composition order."""

    def __init__(self, handle, interventions: list):
        self.handle = handle
        self.interventions = interventions

    def __repr__(self) -> str:
        return f"Intervened({self.interventions})"


def ordered(interventions) -> list:
    """Interventions sorted into the composition order (stable for equal kinds)."""
    items = list(interventions)
    for iv in items:
        if not isinstance(iv, Intervention):
            raise ProbeError(f"{iv!r} is not an intervention", "use ACT, HeadMask, HeadScale, Redistribute, SinkWindow or parse_spec(SPEC)")
    return sorted(items, key=lambda iv: iv.order)


@contextlib.contextmanager
def intervene(handle_or_model, *interventions) -> Iterator[Intervened]:
    """Apply ``interventions`` to every forward (prefill and decode) run inside the block.

    Args:
        handle_or_model: a probe Handle or a Hugging Face causal LM.
        *interventions: ACT, HeadMask, HeadScale, Redistribute, SinkWindow (any order; see module doc).
    Yields:
        Intervened. On exit, even after an exception, the model is exactly as before: no hooks are
        left and the attention implementation is restored (parameters are never touched).
    """
    handle, model = as_handle(handle_or_model)
    items = ordered(interventions)
    from .act import ACT
    from .redistribute import Redistribute
    from .sinkwindow import SinkWindow

    windows = [iv for iv in items if isinstance(iv, SinkWindow)]
    stale = [iv for iv in items if isinstance(iv, (ACT, Redistribute))]   # subclasses too (VAR is a Redistribute)
    if windows and stale:
        raise ProbeError(f"SinkWindow cannot be combined with {type(stale[0]).__name__} (its sink positions go stale "
                         "when the cache is re-indexed)", "combine SinkWindow with HeadMask / HeadScale only")
    if len(windows) > 1:
        raise ProbeError("two SinkWindow interventions", "give one")
    if any(type(iv).__name__ == "HeadwiseKV" for iv in items) and len(items) > 1:
        raise ProbeError("HeadwiseKV computes the attention itself and owns the KV cache", "apply it alone")
    for iv in items:
        iv.validate(handle)
    with contextlib.ExitStack() as stack:
        if any(iv.uses_seam for iv in items):
            from probe.capture import seam

            stack.enter_context(seam.use_seam(model))
        for iv in items:
            iv.install(handle, stack)
        if any(iv.uses_seam for iv in items):
            seam.allow_compile(model, handle.attention_modules())   # graph-safe hooks only: generate may compile
        yield Intervened(handle, items)
