"""PyTorch reference of the fused attention op: exact, query-blocked, the CPU path.

Peak extra memory is O(B * H * block_q * S): the whole T x S map exists only when
``stats.full`` asks for it. Same signature as the Triton kernels (``kernels.attention.fused``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .api import NO_STATS, AttentionEdits, AttentionResult, StatsRequest, check_shapes, visible_mask

# Budget for one block of scores, in elements (64 Mi floats = 256 MiB in fp32).
_BLOCK_ELEMENTS = 1 << 26


def default_block_q(B: int, H: int, T: int, S: int) -> int:
    """Largest query block whose [B, H, block, S] scores fit the block budget."""
    return max(1, min(T, _BLOCK_ELEMENTS // max(1, B * H * S)))


def _index_mask(idx: Tensor, S: int) -> Tensor:
    """[..., C] int64 indices (-1 = unused) -> [..., S] bool membership."""
    valid = idx >= 0
    onehot = torch.zeros(*idx.shape[:-1], S + 1, dtype=torch.bool, device=idx.device)
    onehot.scatter_(-1, torch.where(valid, idx, torch.full_like(idx, S)), True)
    return onehot[..., :S]


def _edit_probs(p: Tensor, vis: Tensor, q_pos: Tensor, edits: AttentionEdits) -> Tensor:
    """Apply the probability edits of ``AttentionEdits`` to p [B, H, n, S] (vis [B, n, S])."""
    B, H, n, S = p.shape
    if edits.head_uniform is not None:
        uni = vis[:, None].to(p.dtype) / vis.sum(-1).clamp_min(1)[:, None, :, None].to(p.dtype)
        p = torch.where(edits.head_uniform.view(1, H, 1, 1).to(torch.bool), uni, p)
    if edits.col_idx is not None:
        cols = _index_mask(edits.col_idx, S)[:, :, None, :]                  # [B, H, 1, S]
        beta = edits.col_scale.to(p.dtype).view(B, H, 1, 1)                  # [B, H, 1, 1]
        m = (p * cols).sum(-1, keepdim=True)                                # [B, H, n, 1]
        rest = (p * ~cols).sum(-1, keepdim=True)  # = 1 - m without its cancellation when m ~ 1
        ok = rest > 1e-12
        other = (1 - beta * m) / torch.where(ok, rest, torch.ones_like(m))  # [B, H, n, 1]
        p = torch.where(ok, torch.where(cols, beta * p, p * other), p)
    if edits.redist_idx is not None:
        sink = _index_mask(edits.redist_idx, S)[:, None, None, :]            # [B, 1, 1, S]
        j = torch.arange(S, device=p.device)
        span = (j >= edits.redist_span[:, :1]) & (j < edits.redist_span[:, 1:])  # [B, S]
        span = span[:, None, None, :]                                        # [B, 1, 1, S]
        target = span & ~sink
        m = (p * span).sum(-1, keepdim=True)                                 # [B, H, n, 1]
        q_share = (p * (span & sink)).sum(-1, keepdim=True) / (m + 1e-6)
        rows = (q_pos[None, :] >= edits.redist_from[:, None])[:, None, :, None]  # [B, 1, n, 1]
        keep = edits.redist_keep.to(p.dtype).view(1, H, 1, 1)
        denom = (p * target).sum(-1, keepdim=True)                           # [B, H, n, 1]
        sel = rows & (keep < 1) & (q_share <= edits.redist_rho) & (m >= edits.redist_min_mass) & (denom > 0)
        budget = (1 - keep) * (p * sink).sum(-1, keepdim=True)               # [B, H, n, 1]
        moved = torch.where(sink, keep * p, torch.where(target, p + budget * p / denom.clamp_min(1e-30), p))
        p = torch.where(sel, moved, p)
    return p


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    key_start: Optional[Tensor] = None,
    window: Optional[int] = None,
    softcap: Optional[float] = None,
    sink_pos: Optional[Tensor] = None,
    spans: Optional[Tensor] = None,
    stats: StatsRequest = NO_STATS,
    edits: Optional[AttentionEdits] = None,
    block_q: Optional[int] = None,
) -> AttentionResult:
    """Causal GQA attention with optional per-head statistics and edits (see ``kernels.attention.api``).

    Args:
        q: [B, H, T, D]; k, v: [B, KV, S, D].
        scale: multiplier of q.k (usually D ** -0.5).
        key_start: [B] int64, first non-padding key of each row (left padding); None = 0.
        window: sliding window W (query sees keys with pos_q - pos_k < W); None = full causal.
        softcap: logits -> softcap * tanh(logits / softcap) (Gemma-2 style); None = off.
        sink_pos: [B, P] int64 keys whose mass is reported; default the first real key.
        spans: [B, NS, 2] int64 key spans [start, end) whose mass is reported.
        stats: which statistics to compute.
        edits: probability / output edits (None = plain attention).
        block_q: query rows per block (memory O(B * H * block_q * S)); None = automatic.
    Returns:
        AttentionResult with out [B, T, H, D] in q's dtype and the requested statistics.
    """
    B, H, KV, T, S, D = check_shapes(q, k, v)
    G = H // KV
    dev = q.device
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    key_start, sink_pos, bq, q_pos_all = _rows(B, H, T, S, key_start, sink_pos, stats, block_q, dev)

    kf = k.to(cdt)[:, :, None]                                           # [B, KV, 1, S, D]
    vf = v.to(cdt)[:, :, None]                                           # [B, KV, 1, S, D]
    res = _with_stats(AttentionResult(out=torch.empty(B, T, H, D, dtype=q.dtype, device=dev)),
                      B, H, T, S, stats, sink_pos, spans, cdt, dev)
    for t0 in range(0, T, bq):
        t1 = min(T, t0 + bq)
        n = t1 - t0
        q_pos = q_pos_all[t0:t1]                                          # [n]
        qb = q[:, :, t0:t1].to(cdt).view(B, KV, G, n, D)
        s = (qb @ kf.transpose(-1, -2)).mul_(scale).view(B, H, n, S)   # [B, H, n, S]
        if softcap:
            s = softcap * torch.tanh(s / softcap)
        vis, row_ok, p = _softmax_visible(s, key_start, q_pos, S, window)
        if edits is not None and edits.edits_probs:
            p = _edit_probs(p, vis, q_pos, edits)

        o = (p.view(B, KV, G, n, S) @ vf).view(B, H, n, D)               # [B, H, n, D]
        if edits is not None:
            if edits.head_mean_on is not None:
                on = edits.head_mean_on.view(1, H, 1, 1).to(torch.bool) & row_ok[..., None]
                o = torch.where(on, edits.head_mean.to(cdt).view(1, H, 1, D), o)
            if edits.head_scale is not None:
                o = o * edits.head_scale.to(cdt).view(1, H, 1, 1)
        res.out[:, t0:t1] = o.transpose(1, 2).to(q.dtype)
        _block_stats(res, s, p, vis, t0, t1, T, stats, sink_pos, spans)
    return res


def stats_from_logits(
    logits: Tensor,
    *,
    key_start: Optional[Tensor] = None,
    window: Optional[int] = None,
    sink_pos: Optional[Tensor] = None,
    spans: Optional[Tensor] = None,
    stats: StatsRequest = NO_STATS,
    block_q: Optional[int] = None,
) -> AttentionResult:
    """``attention``'s statistics from given attention logits, by the same lines, in O(T * S) work.

    For maps computed elsewhere (the TransformerLens / nnsight backends hand over probabilities P; their logits
    log P give P back under the masked softmax, since P's visible entries sum to 1).

    Args:
        logits: [B, H, T, S] scores after scale and softcap (query t at key position S - T + t); float64 keeps
            the round trip exact to ~1e-15.
        key_start [B], window, sink_pos [B, P], spans [B, NS, 2], stats, block_q: as in ``attention``
            (``stats.topk`` / ``full`` included; no edits).
    Returns:
        AttentionResult with the requested statistics in logits' dtype (float32 for 2-byte inputs); ``out`` is an
        empty tensor (no values).
    """
    B, H, T, S = logits.shape
    dev = logits.device
    cdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    key_start, sink_pos, bq, q_pos_all = _rows(B, H, T, S, key_start, sink_pos, stats, block_q, dev)
    res = _with_stats(AttentionResult(out=torch.empty(0, dtype=logits.dtype, device=dev)),
                      B, H, T, S, stats, sink_pos, spans, cdt, dev)
    for t0 in range(0, T, bq):
        t1 = min(T, t0 + bq)
        s = logits[:, :, t0:t1].to(cdt, copy=True)                        # [B, H, n, S] (ours: filled in place)
        vis, _, p = _softmax_visible(s, key_start, q_pos_all[t0:t1], S, window)
        _block_stats(res, s, p, vis, t0, t1, T, stats, sink_pos, spans)
    return res


def _rows(B: int, H: int, T: int, S: int, key_start, sink_pos, stats: StatsRequest, block_q, dev) -> tuple:
    """(key_start [B] int64 (0 when None), sink_pos [B, P] (the first real key when sink mass is asked without it),
    the query block, the queries' key positions [T]) of a call."""
    key_start = torch.zeros(B, dtype=torch.long, device=dev) if key_start is None else key_start.to(dev).long()
    if stats.sink_mass and sink_pos is None:
        sink_pos = key_start.clamp(max=S - 1)[:, None]                  # a fully padded row reports 0
    return key_start, sink_pos, block_q or default_block_q(B, H, T, S), torch.arange(S - T, S, device=dev)


def _softmax_visible(s: Tensor, key_start: Tensor, q_pos: Tensor, S: int, window: Optional[int]) -> tuple:
    """Masks s [B, H, n, S] in place to the visible keys and softmaxes it -> (vis [B, n, S], row_ok [B, 1, n],
    p [B, H, n, S]); fully masked rows get p = 0."""
    vis = visible_mask(key_start, q_pos, S, window)                      # [B, n, S]
    s.masked_fill_(~vis[:, None], float("-inf"))
    row_ok = vis.any(-1)[:, None, :]                                     # [B, 1, n]
    p = torch.softmax(s, dim=-1)                                         # [B, H, n, S]
    if not bool(row_ok.all()):                                           # fully masked rows: NaN -> 0
        p = p.masked_fill(~row_ok[..., None], 0.0)
    return vis, row_ok, p


def _with_stats(res: AttentionResult, B: int, H: int, T: int, S: int, stats: StatsRequest, sink_pos, spans,
                cdt, dev) -> AttentionResult:
    """res with zeroed buffers for the requested statistics."""
    zeros = lambda *shape: torch.zeros(*shape, dtype=cdt, device=dev)  # noqa: E731
    if stats.lse:
        res.lse = zeros(B, H, T)
    if stats.entropy:
        res.entropy = zeros(B, H, T)
    if stats.sink_mass:
        res.sink_mass = zeros(B, H, T, sink_pos.shape[1])
    if stats.span_mass:
        if spans is None:
            raise ValueError("stats.span_mass needs spans [B, NS, 2]")
        res.span_mass = zeros(B, H, T, spans.shape[1])
    if stats.received:
        res.received_sum = zeros(B, H, S)
        res.received_count = zeros(B, S)
    rows_topk = min(stats.topk_rows, T) if stats.topk else 0
    if rows_topk:
        kk = min(stats.topk, S)
        res.topk_idx = torch.zeros(B, H, rows_topk, kk, dtype=torch.long, device=dev)
        res.topk_val = zeros(B, H, rows_topk, kk)
    if stats.full:
        res.probs = zeros(B, H, T, S)
    return res


def _block_stats(res: AttentionResult, s: Tensor, p: Tensor, vis: Tensor, t0: int, t1: int, T: int,
                 stats: StatsRequest, sink_pos, spans) -> None:
    """Adds one query block's statistics to res: s [B, H, n, S] masked logits, p their probabilities (edited),
    vis [B, n, S]; rows t0..t1 of T."""
    B, H, n, S = p.shape
    if stats.lse:
        res.lse[:, :, t0:t1] = torch.logsumexp(s, dim=-1)                # -inf on fully masked rows
    if stats.entropy:
        res.entropy[:, :, t0:t1] = torch.special.entr(p).sum(-1)         # -sum p log p, 0 log 0 = 0
    if stats.sink_mass:
        idx = sink_pos[:, None, None, :].expand(B, H, n, -1)
        res.sink_mass[:, :, t0:t1] = p.gather(-1, idx)
    if stats.span_mass:
        j = torch.arange(S, device=p.device)
        in_span = (j >= spans[..., :1]) & (j < spans[..., 1:])           # [B, NS, S]
        res.span_mass[:, :, t0:t1] = torch.einsum("bhns,bks->bhnk", p, in_span.to(p.dtype))
    if stats.received:
        res.received_sum += p.sum(2)
        res.received_count += vis.sum(1).to(p.dtype)
    rows_topk = res.topk_idx.shape[2] if res.topk_idx is not None else 0
    if rows_topk and t1 > T - rows_topk:
        r0 = max(t0, T - rows_topk)
        val, idx = p[:, :, r0 - t0:].topk(res.topk_idx.shape[-1], dim=-1)
        d0, d1 = r0 - (T - rows_topk), t1 - (T - rows_topk)
        res.topk_idx[:, :, d0:d1] = idx
        res.topk_val[:, :, d0:d1] = val
    if stats.full:
        res.probs[:, :, t0:t1] = p
