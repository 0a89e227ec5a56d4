"""Received-mass kernel: column sums of the probabilities, one key block per program.

A second pass over the queries that reuses the forward's lse (QK^T and exp2 only, no P.V), so the
sums are exact, deterministic (each key block is owned by one program: no atomics) and O(S) memory.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .jit_utils import INTERPRET, LOG2E, NEG, dot, precision, scores2


@triton.jit
def _received_step(
    b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r,
    MASK: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    o_t = t0 + tl.arange(0, BT)                                               # [BT]
    o_d = tl.arange(0, D)                                                     # [D]
    if MASK:
        m_t = o_t < T
        b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :], mask=m_t[:, None], other=0.0)  # [BT, D]
        b_lse = tl.load(p_lse + o_t, mask=m_t, other=0.0) * LOG2E            # [BT]
        b_lse = tl.where(b_lse > NEG, b_lse, -NEG)                            # rows that see nothing
    else:
        b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :])               # [BT, D]
        b_lse = tl.load(p_lse + o_t) * LOG2E                                  # [BT]
    b_s = dot(b_q, tl.trans(b_k), PREC, UPCAST)                               # [BT, BS]
    b_s = scores2(b_s, scale, softcap, False, USE_SOFTCAP, False)
    b_p = tl.exp2(b_s - b_lse[:, None])                                       # [BT, BS]
    if MASK:
        p_pos = S - T + o_t                                                   # [BT]
        m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks) & m_t[:, None] & (o_j[None, :] < S)
        if USE_WINDOW:
            m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
        b_p = tl.where(m_s, b_p, 0.0)
    return b_r + b_p


@triton.heuristics({
    "USE_WINDOW": lambda a: a["window"] > 0,
    "USE_SOFTCAP": lambda a: a["softcap"] > 0,
    "PREC": precision,
    "UPCAST": lambda a: INTERPRET,
})
@triton.jit
def received_fwd_kernel(
    q, k, lse, rsum, key_start,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_ks,
    scale, softcap, window, T, S,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One program per (key block, batch x head): rsum [B, H, S] float32 from lse [B, H, T]."""
    i_s, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    i_kh = i_h // G
    j0 = i_s * BS
    o_j = j0 + tl.arange(0, BS)                                               # [BS]
    o_d = tl.arange(0, D)                                                     # [D]
    ks = tl.load(key_start + i_b).to(tl.int32)
    p_k = k + i_b * s_kb + i_kh * s_kh
    b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :], mask=(o_j < S)[:, None], other=0.0)  # [BS, D]
    p_q = q + i_b * s_qb + i_h * s_qh
    p_lse = lse + (i_b * H + i_h) * T

    off = S - T                                                               # position of query 0
    t_lo = tl.maximum(j0 - off, 0) // BT * BT
    t_hi = T
    # fully visible query blocks [t_a, t_b)
    t_a = (tl.maximum(j0 + BS - 1 - off, 0) + BT - 1) // BT * BT
    t_b = T // BT * BT
    if USE_WINDOW:
        t_hi = tl.minimum(T, tl.maximum(j0 + BS - 1 + window - off, 0))
        x = window + j0 - off - BT
        t_b = tl.where(x >= 0, tl.minimum(t_b, (x // BT + 1) * BT), 0)
    if (j0 < ks) | (j0 + BS > S):
        t_b = 0
    t_a = tl.minimum(tl.maximum(t_a, t_lo), t_hi)
    t_b = tl.minimum(tl.maximum(t_b, t_a), t_hi)

    b_r = tl.zeros([BT, BS], tl.float32)                                      # [BT, BS] reduced once at the end
    for t0 in range(t_lo, t_a, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r,
                             True, D, BT, USE_WINDOW, USE_SOFTCAP, PREC, UPCAST)
    for t0 in range(t_a, t_b, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r,
                             False, D, BT, USE_WINDOW, USE_SOFTCAP, PREC, UPCAST)
    for t0 in range(t_b, t_hi, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r,
                             True, D, BT, USE_WINDOW, USE_SOFTCAP, PREC, UPCAST)
    tl.store(rsum + (i_b * H + i_h) * S + o_j, tl.sum(b_r, 0), mask=o_j < S)
