"""Record and replay captured forwards, keyed by batch: what per-batch resume and sharded scans stand on.

Inside a ``session`` every ``probe.capture`` block yields a ``ReplayRecorder`` instead of a live one.
Its ``rec.run(input_ids=..., attention_mask=...)`` looks the batch up by a hash of its token ids:

  record: batch k is really run (on the backend the caller asked for) when it is not in ``store``
      and k % world == rank; its ``CallRecord`` (small per-head tensors, maps only when asked) goes
      into ``store`` and to ``on_compute`` (the caller writes it to disk). Batches another rank owns
      get shape-correct zero statistics (the caller throws that detector output away).
  replay: every batch is answered from ``store``; a missing one is a ProbeError.

The detector code path is unchanged, so a replayed scan's report equals a live one. Only detectors
whose forwards go through ``rec.run`` can be replayed (the scanner knows which). The session is
set by the scanner (``probe.scanner.scan``: ``resume`` and the ``Shard`` strategy), never by a
detector.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
from typing import Callable, Optional

import torch

from ..errors import ProbeError
from ..models.padding import first_real_index
from .recorder import CallRecord, HiddenSummary, LayerStats, Recorder

_SESSION: contextvars.ContextVar = contextvars.ContextVar("probe_replay_session", default=None)


class ReplaySession:
    """mode "record" (compute batches k with k % world == rank, keep them in ``store``) or "replay"
    (answer every batch from ``store``). ``on_compute(key, CallRecord)`` runs after each batch computed."""

    def __init__(self, mode: str, rank: int = 0, world: int = 1, store: Optional[dict] = None,
                 on_compute: Optional[Callable[[str, CallRecord], None]] = None):
        if mode not in ("record", "replay"):
            raise ValueError(f"mode {mode!r}: use 'record' or 'replay'")
        self.mode, self.rank, self.world = mode, rank, world
        self.store: dict = store if store is not None else {}
        self.on_compute = on_compute
        self.batch = 0          # batches seen so far (the k of k % world)
        self.computed = 0       # batches really run in this session


def active() -> Optional[ReplaySession]:
    """The session of the current context, or None (a live capture)."""
    return _SESSION.get()


@contextlib.contextmanager
def session(sess: Optional[ReplaySession]):
    """Make ``sess`` the active session inside the block (None: live capture inside)."""
    token = _SESSION.set(sess)
    try:
        yield sess
    finally:
        _SESSION.reset(token)


def batch_key(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> str:
    """sha256 of a batch's token ids, mask and shape: input_ids, attention_mask [B, T] -> hex string."""
    h = hashlib.sha256(input_ids.detach().cpu().long().numpy().tobytes())
    if attention_mask is not None:
        h.update(attention_mask.detach().cpu().long().numpy().tobytes())
    h.update(str(tuple(input_ids.shape)).encode())
    return h.hexdigest()


class ReplayRecorder(Recorder):
    """What a ``probe.capture`` block yields inside a session: ``run`` records, fakes or replays one call.

    ``compute(input_ids=..., attention_mask=..., **kwargs)`` runs the live capture of one batch (outside
    the session) and returns its CallRecord.
    """

    def __init__(self, sess: ReplaySession, handle, compute: Callable[..., CallRecord], backend: str, request, layers,
                 hidden, spans, sink_pos):
        super().__init__(request, layers, hidden, spans, sink_pos)
        self.sess, self.handle, self.compute, self.backend = sess, handle, compute, backend

    def run(self, input_ids, attention_mask=None, **kwargs):
        key = batch_key(input_ids, attention_mask)
        k = self.sess.batch
        self.sess.batch += 1
        if self.sess.mode == "replay":
            if key not in self.sess.store:
                raise ProbeError(f"batch {k} is in no shard file",
                                 "rerun every rank of the sharded scan (same prompts and options)")
            call = self.sess.store[key]
        elif key in self.sess.store or k % self.sess.world == self.sess.rank:
            if key not in self.sess.store:
                call = self.compute(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                self.sess.store[key] = call
                self.sess.computed += 1
                if self.sess.on_compute is not None:
                    self.sess.on_compute(key, call)
            call = self.sess.store[key]
        else:
            call = zero_call(self.handle, self.request, self.layers_wanted, self.hidden_mode, attention_mask,
                             input_ids.shape, self._sink_pos, self._spans)
        self.calls.append(CallRecord(len(self.calls), dict(call.layers), dict(call.hidden)))
        return None


def zero_call(handle, request, layers_wanted, hidden_mode, attention_mask, shape, sink_pos, spans) -> CallRecord:
    """Shape-correct zero statistics for a batch another rank computes (record mode only; discarded)."""
    B, S = shape
    T, H, D = S, handle.n_heads, handle.hidden_size
    key_start = torch.zeros(B, dtype=torch.long) if attention_mask is None else first_real_index(attention_mask.cpu())
    z = lambda *s: torch.zeros(*s)  # noqa: E731
    call = CallRecord(0)
    for layer in range(handle.n_layers):
        if layers_wanted is not None and layer not in layers_wanted:
            continue
        P = 1 if sink_pos is None else sink_pos.shape[1]
        call.layers[layer] = LayerStats(
            layer, T, S, key_start, z(B, H, T) if request.lse else None, z(B, H, T) if request.entropy else None,
            z(B, H, T, P) if request.sink_mass else None,
            z(B, H, T, spans.shape[1]) if request.span_mass and spans is not None else None,
            z(B, H, S) if request.received else None, z(B, S) if request.received else None,
            torch.zeros(B, H, request.topk_rows, request.topk, dtype=torch.long) if request.topk else None,
            z(B, H, request.topk_rows, request.topk) if request.topk else None,
            z(B, H, T, S) if request.full else None)
        if hidden_mode:
            long = lambda *s: torch.zeros(*s, dtype=torch.long)  # noqa: E731
            call.hidden[layer] = HiddenSummary(layer, z(B, D), long(B, D), z(B, D), z(B), z(B, T), long(B, T), z(B, T),
                                               z(B, T, D) if hidden_mode == "full" else None)
    return call


def call_to_dict(call: CallRecord) -> dict:
    """A CallRecord as plain dicts of tensors (``torch.save`` with ``weights_only`` loading)."""
    return {"layers": {l: vars(s) for l, s in call.layers.items()}, "hidden": {l: vars(s) for l, s in call.hidden.items()}}


def call_from_dict(d: dict) -> CallRecord:
    """Inverse of ``call_to_dict``."""
    return CallRecord(0, {l: LayerStats(**s) for l, s in d["layers"].items()},
                      {l: HiddenSummary(**s) for l, s in d["hidden"].items()})
