"""Redistribute: the VAR mechanism (Kang et al., ICLR 2025; methods.md §2), on any key span.

For a chosen span [start, end) of the prompt (image tokens in the vision issue, any text span here)
and a set of sink keys, per query row of an eligible head: m = attention mass on the span,
q = share of m on the sinks inside the span. If q <= rho and m >= min_mass (the paper's head
selection, dynamic per head and query), the sinks keep ``keep`` of their mass and the rest goes to
the span's non-sink keys in proportion to their attention. Rows: prefill queries after the span
and every decode step.

Conventions (methods.md §2 flags them): ``keep`` is the official code's p (fraction of sink mass
*kept*, 0.6 shipped); ``transfer`` = 1 - keep is the fraction *moved* (the paper's p, per the
author). ``rho`` is the code's threshold on the sink share q (rho_paper = 1 - rho).

Sinks: explicit positions, or "auto" = VAR's massive-activation rule on the residual stream entering
each layer at the prefill: phi(x_j) = max_{d in sink_dims} |x_j[d]| / rms(x_j) > tau (rms without
gain, eps 1e-6; tau 20, strict). ``sink_dims=None`` uses every dimension (workbench default when the
model's D_sink is unknown; SmolLM2's is {507}). With "auto", a row whose span holds no sink is left
alone ("a layer without visual sinks selects nothing"). Sink sets are found once per sequence and
reused at decode steps. All positions are token indices in the unpadded prompt (0 = first real token).

Selection log (``log_selection=True``): the rule is dynamic per (layer, head, query), so how much of
the model it touched is a measurement, not a setting. With the log on, every call also returns the
log-sum-exp of its scores and the hook recomputes each row's pre-edit span mass m and sink share q
from the scores of the span and sink keys only (no N x N map): ``selection`` counts, per (layer, head),
the query rows that were eligible (after the span, head chosen) and those the rule selected;
``selection_table()`` returns it as a tidy DataFrame and ``selected_fraction`` the overall share.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from kernels.attention import AttentionEdits, StatsRequest
from kernels.attention.api import visible_mask
from probe.capture.massive import massive_phi
from probe.capture.seam import SpanPlan, span_plan
from probe.errors import ProbeError

from .base import Intervention, attach_hook, check_heads, check_layers, head_table, parse_heads, resolve_layers

_NEVER = 2 ** 62   # redist_from for rows that must not be edited


class Redistribute(Intervention):
    """Move attention from sink keys to a span's non-sink keys (VAR).

    Args:
        sink_keys: list of prompt positions, or "auto" (massive-activation rule, see module doc).
        span: (start, end) prompt positions of the target span, or one pair per batch row.
        keep: fraction of the sinks' mass they keep (code's p; 0.6). Mutually exclusive with transfer.
        transfer: fraction of the sinks' mass moved to the span (paper's p = 1 - keep).
        rho: select a row iff sink share of the span mass <= rho (code's rho, 0.5).
        min_mass: ... and span mass >= min_mass (0.2).
        layers: default 2..L-2. heads: None (every head, selection is per query) or (layer, head) pairs.
        tau, sink_dims: the "auto" rule's threshold and channels.
    """

    order = 3

    def __init__(self, sink_keys: Union[str, Sequence[int]] = "auto", span=None, keep: Optional[float] = None,
                 rho: float = 0.5, min_mass: float = 0.2, layers: Optional[Sequence[int]] = None, heads=None,
                 transfer: Optional[float] = None, tau: float = 20.0, sink_dims: Optional[Sequence[int]] = None,
                 log_selection: bool = False):
        if keep is not None and transfer is not None:
            raise ProbeError("Redistribute got both keep and transfer", "give one: keep = 1 - transfer")
        keep = 0.6 if keep is None and transfer is None else (keep if keep is not None else 1.0 - float(transfer))
        if not 0.0 <= keep <= 1.0:
            raise ProbeError(f"Redistribute keep={keep}", "keep (and transfer) must lie in [0, 1]")
        if span is None:
            raise ProbeError("Redistribute needs span=(start, end)", "give the prompt positions of the target span")
        spans = [span] if isinstance(span[0], int) else list(span)
        self.spans = [(int(s), int(e)) for s, e in spans]
        if any(e <= s or s < 0 for s, e in self.spans):
            raise ProbeError(f"bad span {span}", "span is (start, end) with 0 <= start < end (end exclusive)")
        if isinstance(sink_keys, str) and sink_keys != "auto":
            raise ProbeError(f"sink_keys={sink_keys!r}", 'give a list of prompt positions or "auto"')
        self.sink_keys = sink_keys if isinstance(sink_keys, str) else [int(k) for k in sink_keys]
        self.keep, self.rho, self.min_mass = float(keep), float(rho), float(min_mass)
        self.layers = None if layers is None else sorted({int(l) for l in layers})
        self.heads = parse_heads(heads)
        self.tau, self.sink_dims = float(tau), sink_dims
        self.found_sinks: dict[int, list] = {}
        self.log_selection = bool(log_selection)
        self.selection: dict[int, Tensor] = {}      # layer -> [2, H] int64 (eligible rows, selected rows)

    @property
    def selected_fraction(self) -> Optional[float]:
        """Selected / eligible (layer, head, query) rows over everything run so far (None: no log)."""
        if not self.selection:
            return None
        tot = torch.stack(list(self.selection.values())).sum((0, 2))          # [2]
        return float(tot[1] / tot[0]) if tot[0] else 0.0

    def selection_table(self):
        """One row per (layer, head): eligible query rows, selected rows, fraction (needs log_selection)."""
        import pandas as pd

        rows = [{"layer": l, "head": h, "eligible": int(c[0, h]), "selected": int(c[1, h]),
                 "fraction": float(c[1, h] / c[0, h]) if c[0, h] else 0.0}
                for l, c in sorted(self.selection.items()) for h in range(c.shape[1])]
        return pd.DataFrame(rows, columns=["layer", "head", "eligible", "selected", "fraction"])

    @property
    def transfer(self) -> float:
        return 1.0 - self.keep

    def __repr__(self) -> str:
        return f"Redistribute(sinks={self.sink_keys}, span={self.spans}, keep={self.keep}, rho={self.rho})"

    def resolved_layers(self, n_layers: int) -> list[int]:
        return resolve_layers(self.layers, self.heads, n_layers)

    def validate(self, handle) -> None:
        check_layers(handle, self.layers)
        check_heads(handle, self.heads)
        if self.sink_dims is not None and any(not 0 <= d < handle.hidden_size for d in self.sink_dims):
            raise ProbeError(f"sink_dims {self.sink_dims}", f"channels are 0..{handle.hidden_size - 1}")

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        layers = self.resolved_layers(handle.n_layers)
        heads = None if self.heads is None else [(l, h) for l, h in self.heads if l in layers]
        table = head_table(handle.n_layers, handle.n_heads, layers, heads)
        hook = _RedistHook(self, table)
        self.found_sinks, self.selection = {}, {}
        if self.sink_keys == "auto":
            stack.enter_context(hook.residual_taps(handle, layers))
        attach_hook(handle, layers, hook, stack)


class _RedistHook:
    def __init__(self, red: Redistribute, table: Tensor):
        self.red = red
        self.table = table                          # [L, H] bool
        self._resid: dict[int, Tensor] = {}         # layer -> residual entering it [B, T, d] (latest call; a reference)
        self._state: dict[int, tuple] = {}          # layer -> (idx [B, C], span [B, 2], from [B])
        self._edits: dict[int, AttentionEdits] = {}  # layer -> this sequence's edit
        self._plans: dict[int, SpanPlan] = {}        # layer -> this sequence's host integers (graph-mode decode)
        self._keeps: dict = {}                      # (layer, device) -> keep [H]
        self._spans_rel: dict = {}                  # (spans, device) -> the spans [B, 2] relative to each row's first token
        self._sequence: Optional[tuple] = None      # explicit sinks: (key, key_start, (idx, span, frm, found)) of the
                                                    # latest prefill, shared by the layers of one forward
        self._plan_memo: Optional[tuple] = None     # (idx, span, their SpanPlan): the latest one

    def residual_taps(self, handle, layers):
        """TapSet computing phi [B, T] from the residual stream entering each of ``layers``."""
        from probe.capture.taps import TapSet, tap_name

        return TapSet(handle, reads=[(tap_name(l, "resid_pre"), self._on_resid) for l in layers])

    def _on_resid(self, x: Tensor, ctx) -> None:
        self._resid[ctx.layer] = x        # phi is computed at the prefill only (decode steps reuse the sink set)

    def _spans(self, B: int) -> list:
        spans = self.red.spans
        if len(spans) == 1:
            return spans * B
        if len(spans) != B:
            raise ProbeError(f"Redistribute has {len(spans)} spans for a batch of {B}", "give one span or one per row")
        return spans

    def _prefill(self, call) -> tuple:
        """This sequence's (idx [B, C], span [B, 2], from [B]) at call's layer; records ``found_sinks``. Explicit sinks
        give every layer of one forward the same state (same key_start tensor, S, B): the first hooked layer finds it
        (its host reads), the others reuse it."""
        ks = call.key_start
        key = (id(ks), ks._version, call.S, call.B, call.device, tuple(map(tuple, self._spans(call.B))))
        hit = self._sequence
        if self.red.sink_keys != "auto" and hit is not None and hit[0] == key and hit[1] is ks:
            idx, span, frm, found = hit[2]
            self.red.found_sinks[call.layer] = [list(r) for r in found]
            return idx, span, frm
        idx, span, frm = self._find(call)
        if self.red.sink_keys != "auto":
            self._sequence = (key, ks, (idx, span, frm, [list(r) for r in self.red.found_sinks[call.layer]]))
        return idx, span, frm

    def _find(self, call) -> tuple:
        dev, ks = call.device, call.key_start
        spans = self._spans(call.B)
        rel_key = (tuple(map(tuple, spans)), dev)                                 # the spans may change per input (VLM)
        rel = self._spans_rel.get(rel_key)
        if rel is None:
            if len(self._spans_rel) > 64:
                self._spans_rel.clear()
            rel = self._spans_rel[rel_key] = torch.tensor(spans, device=dev)      # [B, 2]
        span = rel + ks[:, None]                                                  # [B, 2] absolute
        if span.max() > call.S:
            raise ProbeError(f"Redistribute span {self.red.spans} runs past the prompt", "check the span positions")
        frm = span[:, 1].clone()                                                  # [B] rows after the span
        if self.red.sink_keys == "auto":
            phi = massive_phi(self._resid.pop(call.layer), self.red.sink_dims).to(dev)  # [B, S]
            j = torch.arange(call.S, device=dev)
            sink = (phi > self.red.tau) & (j[None] >= ks[:, None])                # [B, S]
            in_span = sink & (j[None] >= span[:, :1]) & (j[None] < span[:, 1:])
            frm = torch.where(in_span.any(-1), frm, torch.full_like(frm, _NEVER))
        else:
            sink = torch.zeros(call.B, call.S, dtype=torch.bool, device=dev)
            pos = torch.tensor(self.red.sink_keys, device=dev)[None, :] + ks[:, None]  # [B, K]
            if (pos >= call.S).any():
                raise ProbeError(f"Redistribute sink keys {self.red.sink_keys} run past the prompt", "check the positions")
            sink.scatter_(1, pos, True)
        C = max(1, int(sink.sum(-1).max()))
        j = torch.arange(call.S, device=dev).expand(call.B, -1)
        idx = torch.where(sink, j, torch.full_like(j, call.S)).sort(-1).values[:, :C]  # [B, C]
        idx = torch.where(idx >= call.S, torch.full_like(idx, -1), idx)
        self.red.found_sinks[call.layer] = [(r[r >= 0] - k).tolist() for r, k in zip(idx.cpu(), ks.cpu())]
        return idx, span, frm

    def edits(self, call, pre) -> Optional[AttentionEdits]:
        if call.T == call.S:                              # a new sequence: its sinks and its edit, once
            self.set_state(call.layer, self._prefill(call))
        edits = self._edits.get(call.layer)               # decode steps reuse the object
        if edits is None or edits.redist_idx.shape[0] != call.B:
            raise ProbeError("Redistribute saw a decode step without its prompt",
                             "run the whole generation (prefill and decode) inside the intervene block")
        return edits

    def set_state(self, layer: int, state: tuple) -> None:
        """This sequence's (idx [B, C], span [B, 2], from [B]) at ``layer`` and the edit built from it; for graph-safe
        use also its ``SpanPlan`` (the span's key range as host integers: one read here, none per decode step)."""
        idx, span, frm = self._state[layer] = state
        if self.graph_safe:
            memo = self._plan_memo                       # the layers of one forward share idx / span (explicit sinks)
            if memo is None or memo[0] is not idx or memo[1] is not span:
                memo = self._plan_memo = (idx, span, span_plan(idx, span))
            self._plans[layer] = memo[2]
        self._edits[layer] = AttentionEdits(redist_idx=idx, redist_span=span, redist_from=frm,
                                            redist_keep=self._keep(layer, idx.device),
                                            redist_rho=self.red.rho, redist_min_mass=self.red.min_mass)

    def _keep(self, layer: int, device) -> Tensor:
        """[H] fraction of sink mass kept: ``keep`` in the chosen heads, 1 (no edit) elsewhere."""
        key = (layer, device)
        if key not in self._keeps:
            self._keeps[key] = torch.where(self.table[layer], self.red.keep, 1.0).to(device)
        return self._keeps[key]

    def var_plan(self, call) -> Optional[SpanPlan]:
        """The sequence's ``SpanPlan`` at the call's layer: decode steps in graph mode attend over static key slices."""
        return self._plans.get(call.layer)

    @property
    def graph_safe(self) -> bool:
        """Decode steps may take the seam's tensor-op path (graph mode) unless the selection is logged (statistics)
        or the sinks are found by the residual taps ("auto")."""
        return not self.red.log_selection and self.red.sink_keys != "auto"

    @property
    def stats_request(self):
        return self._stats_request if self.red.log_selection else None

    @property
    def after(self):
        return self._after if self.red.log_selection else None

    def _stats_request(self, call) -> StatsRequest:
        return StatsRequest(lse=True)

    def _after(self, call, result) -> None:
        idx, span, frm = self._state[call.layer]
        keep = self._keep(call.layer, idx.device)
        counts = selection_counts(call, result.lse, idx, span, frm, keep, self.red.rho, self.red.min_mass)
        prev = self.red.selection.get(call.layer)
        self.red.selection[call.layer] = counts if prev is None else prev + counts


def selection_counts(call, lse: Tensor, idx: Tensor, span: Tensor, frm: Tensor, keep: Tensor, rho: float,
                     min_mass: float, block: int = 256) -> Tensor:
    """Rows the Redistribute rule selects, from pre-edit scores of the span and sink keys only.

    lse [B, H, T] (log-sum-exp of the call's scores), idx [B, C] sink keys (-1 unused), span [B, 2],
    frm [B] first edited query position, keep [H]. Same rule as ``kernels.attention``: a row of a head
    with keep < 1, at or after ``frm``, is selected iff m >= min_mass, q = mass(span & sinks) / (m + 1e-6)
    <= rho and the span's non-sink keys have mass > 0. Returns [2, H] int64: eligible rows, selected rows.
    """
    q, k = call.query, call.key                                                  # [B, H, T, D], [B, KV, S, D]
    B, H, T, D = q.shape
    KV, S, G = k.shape[1], k.shape[2], H // k.shape[1]
    scale = getattr(call.module, "scaling", None) or D ** -0.5
    softcap = getattr(getattr(call.module, "config", None), "attn_logit_softcapping", None)
    width = int((span[:, 1] - span[:, 0]).max())
    pos = span[:, :1] + torch.arange(width, device=span.device)                   # [B, W] span keys
    in_span = pos < span[:, 1:]
    sink_in_span = torch.zeros_like(in_span)
    for c in range(idx.shape[1]):                                                # C is a handful of keys
        sink_in_span |= (pos == idx[:, c:c + 1]) & (idx[:, c:c + 1] >= 0)
    pos = pos.clamp(max=S - 1)
    kk = k.gather(2, pos[:, None, :, None].expand(B, KV, width, D)).float()       # [B, KV, W, D]
    eligible = torch.zeros(H, dtype=torch.long, device=q.device)
    selected = torch.zeros(H, dtype=torch.long, device=q.device)
    chosen = (keep < 1)[None, :, None]                                           # [1, H, 1]
    for t0 in range(0, T, block):
        t1 = min(T, t0 + block)
        q_pos = call.q_pos[t0:t1]                                                # [n]
        qb = q[:, :, t0:t1].float().view(B, KV, G, t1 - t0, D)
        s = (qb @ kk.transpose(-1, -2)[:, :, None]).mul_(scale).view(B, H, t1 - t0, width)  # [B, H, n, W]
        if softcap:
            s = softcap * torch.tanh(s / softcap)
        vis = visible_mask(call.key_start, q_pos, S, call.window)                # [B, n, S]
        vis = vis.gather(2, pos[:, None, :].expand(-1, t1 - t0, -1)) & in_span[:, None]  # [B, n, W]
        p = torch.where(vis[:, None], torch.exp(s - lse[:, :, t0:t1, None].float()), 0.0)  # [B, H, n, W]
        m = p.sum(-1)                                                            # [B, H, n]
        on_sinks = (p * sink_in_span[:, None, None]).sum(-1)
        rows = (q_pos[None, :] >= frm[:, None])[:, None, :] & chosen             # [B, H, n]
        sel = rows & (m >= min_mass) & (on_sinks / (m + 1e-6) <= rho) & (m - on_sinks > 0)
        eligible += rows.expand(B, H, -1).sum((0, 2))
        selected += sel.sum((0, 2))
    return torch.stack([eligible, selected]).cpu()
