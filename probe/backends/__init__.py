"""Hook backends (TransformerLens, nnsight) behind the same ``probe.capture`` and scan.

Same statistics, three ways (see README.md in this folder for when to use which)::

    import probe
    h = probe.load("smollm2")
    enc = h.encode(["The capital of France is", "My dear Mr. Bennet"])
    for backend in ("native", "transformer-lens", "nnsight"):
        with probe.capture(h, stats=("received", "entropy"), hidden="summary", backend=backend) as rec:
            rec.run(**enc)                 # one forward through that backend
        rec.layer(18).received_mean        # [B, H, S] — equal across backends within 1e-4

Bring your own objects from a notebook::

    from transformer_lens.model_bridge import TransformerBridge
    bridge = TransformerBridge.boot_transformers("my-model", hf_model=hf_model, tokenizer=tok)
    with probe.capture(bridge, stats=("received",)) as rec:      # backend inferred: transformer-lens
        rec.run(**probe.backends.wrap(bridge).encode("Hello"))
    report = probe.scan(probe.backends.wrap(bridge), prompts)    # heads.parquet from the bridge's hooks

    from nnsight import LanguageModel
    lm = LanguageModel(hf_model, tokenizer=tok)
    h = probe.backends.wrap(lm)                                  # Handle whose default backend is nnsight
    with probe.capture(h, head_scale={(3, 1): 0.0}) as rec:      # head L3H1 ablated inside the trace
        rec.run(**h.encode("Hello"))

Remote (NDIF)::  ``probe.capture(h, backend="nnsight", remote=True)`` / ``probe scan --backend nnsight --remote``.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

from torch import Tensor

from ..errors import ProbeError
from .base import BACKENDS, BackendRecorder, guarded, layers_of, make_request, normalize, object_kind

__all__ = ["BACKENDS", "BackendRecorder", "capture", "wrap", "resolve", "support_table"]


def wrap(obj, source: Optional[str] = None):
    """A probe ``Handle`` for a Handle, an HF model (needs ``.tokenizer`` via the Handle instead),
    a TransformerLens ``TransformerBridge`` or an nnsight model. The handle remembers its backend
    (``handle.extra['backend']``), so ``probe.capture(handle)`` and ``probe.scan(handle, ...)`` use it."""
    from ..models import Handle

    if isinstance(obj, Handle):
        return obj
    kind = object_kind(obj)
    if kind == "transformer-lens":
        from .transformer_lens import handle_from_bridge

        return handle_from_bridge(obj, source)
    if kind == "nnsight":
        from .nnsight_backend import handle_from_nnsight

        return handle_from_nnsight(obj, source)
    raise ProbeError(f"cannot wrap a {type(obj).__name__}",
                     "pass a probe Handle (probe.load), a TransformerLens TransformerBridge or an nnsight LanguageModel")


def resolve(obj, backend: Optional[str]) -> tuple[object, str]:
    """(handle-or-model, backend name) for ``probe.capture``: an explicit backend wins, else the object's own."""
    from ..models import Handle

    backend = normalize(backend)
    kind = object_kind(obj)
    if kind is not None:
        obj = wrap(obj)
    own = obj.extra.get("backend") if isinstance(obj, Handle) else None
    if backend is None:
        return obj, own or "native"
    if own == "transformer-lens" and backend != "transformer-lens":
        raise ProbeError(f"this model is held by a TransformerBridge, whose attention replaces the HF modules; "
                         f"backend {backend} cannot see it", "use backend='transformer-lens' for a bridge")
    if backend != "native" and not isinstance(obj, Handle):
        raise ProbeError(f"backend {backend} needs the tokenizer and model facts of a Handle",
                         "pass probe.load(...) or probe.backends.wrap(obj), not a bare HF model")
    return obj, backend


@contextlib.contextmanager
def capture(handle, backend: str, stats=("received", "sink", "entropy"), *, layers: Optional[Sequence[int]] = None,
            hidden: Optional[str] = None, spans: Optional[Tensor] = None, sink_pos: Optional[Tensor] = None,
            topk: int = 0, topk_rows: int = 1, head_scale: Optional[dict] = None, remote=False):
    """Capture through a hook backend ("transformer-lens" or "nnsight"); yields a ``BackendRecorder``.

    Same arguments and the same ``Recorder`` contents as ``probe.capture``; forwards run with
    ``rec.run(input_ids=..., attention_mask=...)``. ``head_scale`` {(layer, head): factor} scales
    head outputs during the run (0 = ablation). ``remote`` (nnsight only): True / host URL for NDIF,
    "local" for nnsight's in-process simulation of the remote request.
    """
    from .support import check

    request = make_request(stats, topk, topk_rows, hidden)
    backend = normalize(backend)
    if request.lse:
        raise ProbeError(f"backend {backend} cannot capture 'lse': it sees post-softmax maps, not the scores",
                         "capture 'lse' with backend='native'")
    needs = ["stats"] + (["hidden"] if hidden else []) + (["interventions"] if head_scale else [])
    if remote:
        needs.append("remote")
        if backend != "nnsight":
            raise ProbeError(f"remote execution is not available with backend {backend}", "use backend='nnsight' with remote=True")
    check(handle, backend, needs)
    wanted = layers_of(handle, layers)
    kw = dict(request=request, hidden=hidden, spans=spans, sink_pos=sink_pos, head_scale=head_scale)
    if backend == "transformer-lens":
        from .transformer_lens import make_recorder

        rec = make_recorder(handle, layers=wanted, **kw)
    elif backend == "nnsight":
        from .nnsight_backend import make_recorder

        rec = make_recorder(handle, layers=wanted, remote=remote, **kw)
    else:
        raise ProbeError("backend 'native' is probe.capture's own path", "call probe.capture(handle, backend='native')")
    rec.layers_wanted = set(wanted) if layers is not None else None
    with guarded(rec, handle.model):
        yield rec


def support_table(model_or_handle) -> list[dict]:
    """Rows (backend, capability, ok, why) — see ``probe.backends.support``."""
    from .support import table

    return table(wrap(model_or_handle) if object_kind(model_or_handle) else model_or_handle)
