"""``probe.capture``: record per-head attention statistics (and residual-stream taps) of forward calls."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from kernels.attention import AttentionResult, StatsRequest

from ..errors import ProbeError
from ..models.handle import as_handle
from ..models.padding import first_real_index
from . import seam
from .taps import TapSet, tap_name

STAT_NAMES = ("received", "sink", "entropy", "lse", "spans", "topk", "full")


def stats_request(stats: Union[StatsRequest, Iterable[str], str], topk: int = 0, topk_rows: int = 1) -> StatsRequest:
    """Build a StatsRequest from names: received, sink (key-0 mass), entropy, lse, spans, topk, full."""
    if isinstance(stats, StatsRequest):
        return stats
    names = {stats} if isinstance(stats, str) else set(stats)
    unknown = names - set(STAT_NAMES)
    if unknown:
        raise ProbeError(f"unknown statistic(s) {sorted(unknown)}", f"choose from {', '.join(STAT_NAMES)}")
    k = topk or (5 if "topk" in names else 0)
    return StatsRequest(lse="lse" in names, entropy="entropy" in names, sink_mass="sink" in names,
                        span_mass="spans" in names, received="received" in names, topk=k,
                        topk_rows=topk_rows, full="full" in names)


@dataclass
class LayerStats:
    """Statistics of one layer in one forward call, on CPU (float32).

    key_start [B]; lse/entropy [B, H, T]; sink_mass [B, H, T, P]; span_mass [B, H, T, NS];
    received_sum [B, H, S]; received_count [B, S]; topk_idx/topk_val [B, H, R, k]; probs [B, H, T, S].
    """

    layer: int
    T: int
    S: int
    key_start: Tensor
    lse: Optional[Tensor] = None
    entropy: Optional[Tensor] = None
    sink_mass: Optional[Tensor] = None
    span_mass: Optional[Tensor] = None
    received_sum: Optional[Tensor] = None
    received_count: Optional[Tensor] = None
    topk_idx: Optional[Tensor] = None
    topk_val: Optional[Tensor] = None
    probs: Optional[Tensor] = None

    @property
    def received_mean(self) -> Tensor:
        """Mean attention each key receives from the queries that see it, s_j: [B, H, S]."""
        if self.received_sum is None:
            raise ProbeError("received mass was not captured", "capture with stats including 'received'")
        return self.received_sum / self.received_count.clamp_min(1)[:, None, :]

    @property
    def query_mask(self) -> Tensor:
        """[B, T] True for real (non-padding) queries."""
        q_pos = torch.arange(self.S - self.T, self.S)
        return q_pos[None, :] >= self.key_start[:, None]


@dataclass
class HiddenSummary:
    """Residual stream entering one layer, reduced per prompt (all [B, ...] on CPU, float32).

    absmax [B, D] max |x| over real tokens per dim; argmax_pos [B, D] its position;
    first [B, D] x at the first real token; median_abs [B] median |x| over real tokens and dims (from <= 16K strided entries);
    token_max [B, T] max |x| over dims per token; token_dim [B, T] its dim; rms [B, T].
    full [B, T, D] when the capture asked for hidden="full".
    """

    layer: int
    absmax: Tensor
    argmax_pos: Tensor
    first: Tensor
    median_abs: Tensor
    token_max: Tensor
    token_dim: Tensor
    rms: Tensor
    full: Optional[Tensor] = None


@dataclass
class CallRecord:
    """One forward call: per-layer attention statistics and hidden-state summaries."""

    index: int
    layers: dict = field(default_factory=dict)   # layer -> LayerStats
    hidden: dict = field(default_factory=dict)   # layer -> HiddenSummary


def _approx_median(values: Tensor, n: int = 16384) -> Tensor:
    """Median of |x| from at most ``n`` evenly strided entries (exact for smaller inputs)."""
    flat = values.reshape(-1)
    step = max(1, flat.numel() // n)
    return flat[::step].median()


def _summarise_hidden(layer: int, x: Tensor, attention_mask: Optional[Tensor], full: bool) -> HiddenSummary:
    x = x.detach().float()                                               # [B, T, D]
    B, T, D = x.shape
    # the mask lives where the embeddings are; with a device_map this layer may be on another device
    real = attention_mask[:, -T:].to(x.device, torch.bool) if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
    a = x.abs().masked_fill(~real[..., None], 0.0)                       # [B, T, D]
    absmax, argmax_pos = a.transpose(1, 2).contiguous().max(dim=-1)      # [B, D]
    first_pos = first_real_index(real).masked_fill(~real.any(1), 0)      # [B] (an all-padding row reads position 0)
    first = x[torch.arange(B), first_pos]                                # [B, D]
    med = torch.stack([_approx_median(a[b][real[b]]) for b in range(B)])  # [B]
    token_max, token_dim = a.max(dim=-1)                                 # [B, T]
    rms = x.pow(2).mean(-1).add(1e-6).sqrt()                             # [B, T]
    cpu = lambda t: t.cpu()  # noqa: E731
    return HiddenSummary(layer, cpu(absmax), cpu(argmax_pos), cpu(first), cpu(med), cpu(token_max),
                         cpu(token_dim), cpu(rms), cpu(x) if full else None)


class Recorder:
    """Collects what one ``capture`` context saw. ``calls[i].layers[l]`` -> LayerStats."""

    def __init__(self, request: StatsRequest, layers: Optional[Sequence[int]], hidden: Optional[str],
                 spans: Optional[Tensor], sink_pos: Optional[Tensor]):
        self.request = request
        self.layers_wanted = set(layers) if layers is not None else None
        self.hidden_mode = hidden
        self._spans = spans
        self._sink_pos = sink_pos
        self.calls: list[CallRecord] = []

    # -- what the caller can change between forward calls --------------------------------------
    def set_spans(self, spans: Optional[Tensor]) -> None:
        """Key spans [B, NS, 2] (start, end) whose per-query mass is recorded from the next call on."""
        self._spans = spans

    def set_sink_pos(self, sink_pos: Optional[Tensor]) -> None:
        """Key positions [B, P] whose per-query mass is recorded (default: the first real key)."""
        self._sink_pos = sink_pos

    # -- reading ------------------------------------------------------------------------------
    def layer(self, layer: int, call: int = 0) -> LayerStats:
        """Statistics of ``layer`` in forward call ``call`` (0 = the first, -1 = the last)."""
        if not self.calls:
            raise ProbeError("nothing captured yet", "run a forward inside the capture context")
        try:
            record = self.calls[call]
        except IndexError as err:
            raise ProbeError(f"no forward call {call}: {len(self.calls)} call(s) captured",
                             f"calls are 0..{len(self.calls) - 1} (or -1 for the last)") from err
        if layer not in record.layers:
            have = sorted(record.layers)
            where = f"layers are {have[0]}..{have[-1]}" if have == list(range(have[0], have[-1] + 1)) else f"layers {have}"
            raise ProbeError(f"no capture for layer {layer} in call {call}", f"captured {where}"
                             + ("; check the layers= filter" if have else ""))
        return record.layers[layer]

    def hidden(self, layer: int, call: int = 0) -> HiddenSummary:
        return self.calls[call].hidden[layer]

    # -- seam hook protocol -------------------------------------------------------------------
    def _wants(self, layer: int) -> bool:
        return self.layers_wanted is None or layer in self.layers_wanted

    def stats_request(self, call: seam.AttentionCall) -> StatsRequest:
        return self.request if self._wants(call.layer) else StatsRequest()

    def sink_pos(self, call):
        return None if self._sink_pos is None else self._sink_pos.to(call.device)

    def spans(self, call):
        return None if self._spans is None else self._spans.to(call.device)

    def after(self, call: seam.AttentionCall, result: AttentionResult) -> None:
        if not self._wants(call.layer):
            return
        cpu = lambda t: None if t is None else t.detach().float().cpu()  # noqa: E731
        stats = LayerStats(
            call.layer, call.T, call.S, call.key_start.cpu(), cpu(result.lse), cpu(result.entropy),
            cpu(result.sink_mass), cpu(result.span_mass), cpu(result.received_sum), cpu(result.received_count),
            None if result.topk_idx is None else result.topk_idx.cpu(), cpu(result.topk_val), cpu(result.probs),
        )
        self._current().layers[call.layer] = stats

    # -- internals ----------------------------------------------------------------------------
    def _current(self) -> CallRecord:
        if not self.calls:
            self.calls.append(CallRecord(0))
        return self.calls[-1]

    def _on_forward(self, module, args, kwargs):
        self.calls.append(CallRecord(len(self.calls)))

    def _on_resid_pre(self, x: Tensor, ctx) -> None:
        """Tap callback (``blocks.{l}.resid_pre``): x [B, T, d] -> the layer's HiddenSummary."""
        self._current().hidden[ctx.layer] = _summarise_hidden(ctx.layer, x, ctx.attention_mask,
                                                              self.hidden_mode == "full")


def attention_modules_of(model_or_handle) -> list:
    """Attention modules of a Handle or a bare HF model, in layer order."""
    handle, _ = as_handle(model_or_handle)
    return handle.attention_modules()


@contextlib.contextmanager
def capture(model_or_handle, stats=("received", "sink", "entropy"), *, layers: Optional[Sequence[int]] = None,
            hidden: Optional[str] = None, spans: Optional[Tensor] = None, sink_pos: Optional[Tensor] = None,
            topk: int = 0, topk_rows: int = 1, backend: Optional[str] = None, **backend_options):
    """Record attention statistics of every forward call run inside the block.

    Args:
        model_or_handle: a probe Handle or a Hugging Face model.
        stats: names (received, sink, entropy, lse, spans, topk, full) or a StatsRequest.
        layers: only these layers (default all).
        hidden: None, "summary" (per-dim/per-token reductions of the residual stream entering each
            layer) or "full" ([B, T, D] per layer; short prompts only).
        spans: [B, NS, 2] key spans for the "spans" statistic (changeable with ``rec.set_spans``).
        sink_pos: [B, P] keys for the "sink" statistic (default: first real key).
        topk, topk_rows: top-k keys of the last ``topk_rows`` queries.
        backend: "native" (this seam), "transformer-lens" or "nnsight" (``probe.backends``; forwards
            then run with ``rec.run(**inputs)``); None = the object's own (a TransformerBridge or
            nnsight model given here, or a ``probe.backends.wrap`` handle), else native.
        **backend_options: hook backends only: ``head_scale`` {(layer, head): factor}, ``remote``.
    Yields:
        Recorder (``rec.run(**inputs)`` runs one forward on every backend). On exit, even after an
        exception, the model is exactly as before. Inside a scan's record / replay session
        (``probe.capture.replay``: resume, sharding) a ``ReplayRecorder`` whose ``rec.run`` answers
        batches already captured from the session's store. ``native_capture`` is the seam path alone.
    """
    from .. import backends
    from .replay import active

    model_or_handle, backend = backends.resolve(model_or_handle, backend)
    sess = active()
    if sess is not None:        # inside a resumable or sharded scan: record / replay this block's batches
        yield _replay_recorder(sess, model_or_handle, backend, stats, layers, hidden, spans, sink_pos, topk, topk_rows,
                               backend_options)
        return
    if backend != "native":
        with backends.capture(model_or_handle, backend, stats, layers=layers, hidden=hidden, spans=spans,
                              sink_pos=sink_pos, topk=topk, topk_rows=topk_rows, **backend_options) as rec:
            yield rec
        return
    if backend_options:
        raise ProbeError(f"{sorted(backend_options)} need a hook backend",
                         "intervene natively with probe.intervene, or pass backend='nnsight' / 'transformer-lens'")
    with native_capture(model_or_handle, stats, layers=layers, hidden=hidden, spans=spans, sink_pos=sink_pos,
                        topk=topk, topk_rows=topk_rows) as rec:
        yield rec


@contextlib.contextmanager
def native_capture(model_or_handle, stats=("received", "sink", "entropy"), *, layers: Optional[Sequence[int]] = None,
                   hidden: Optional[str] = None, spans: Optional[Tensor] = None, sink_pos: Optional[Tensor] = None,
                   topk: int = 0, topk_rows: int = 1):
    """``capture`` through probe's own seam only (same arguments, no backend choice, no replay)."""
    request = stats_request(stats, topk, topk_rows)
    if hidden not in (None, "summary", "full"):
        raise ProbeError(f"hidden={hidden!r}", "use hidden=None, 'summary' or 'full'")
    _, model = as_handle(model_or_handle)
    modules = attention_modules_of(model_or_handle)
    rec = Recorder(request, layers, hidden, spans, sink_pos)
    rec.run = model  # the same ``rec.run(**inputs)`` call as the hook backends
    wanted = range(len(modules)) if layers is None else layers
    reads = [(tap_name(i, "resid_pre"), rec._on_resid_pre) for i in wanted] if hidden else []
    with TapSet(model_or_handle, reads=reads, on_call=rec._on_forward), seam.use_seam(model), \
            seam.attached(modules, rec):
        yield rec


def _replay_recorder(sess, handle, backend: str, stats, layers, hidden, spans, sink_pos, topk, topk_rows,
                     backend_options: dict):
    """The ``ReplayRecorder`` a capture block gets inside a session; its live batches run through ``capture``
    with the same arguments (on ``backend``) outside the session."""
    from .replay import ReplayRecorder, session

    request = stats_request(stats, topk, topk_rows)

    def compute(**inputs) -> CallRecord:
        with session(None), capture(handle, request, layers=layers, hidden=hidden, spans=rec._spans,
                                    sink_pos=rec._sink_pos, backend=backend, **backend_options) as live:
            live.run(**inputs)
        return live.calls[-1]

    rec = ReplayRecorder(sess, handle, compute, backend, request, layers, hidden, spans, sink_pos)
    return rec
