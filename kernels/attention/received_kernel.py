"""Received-mass kernel: column sums of the probabilities, one key block per program.

A second pass over the queries that reuses the forward's lse (QK^T and exp2 only, no P.V), so the
sums are exact, deterministic (each key block is owned by one program: no atomics) and O(S) memory.

Variant switches (``tiles.RECEIVED_SWITCHES``, chosen per head_dim by a tuning run): KEYMAJOR computes
the scores key-major, S^T = K Q^T [BS, BT] (K the MMA's A operand, loaded once), and reduces each step
over its queries inside a warp (a [BS] running sum instead of a [BT, BS] tile held across the loop:
fewer registers, so more keys per program and fewer Q reloads from L2); FMA folds the logit scale
and the lse into one multiply-add per score; TMA loads the Q blocks through a tensor descriptor; LTMA the lse
blocks; LSE2 reads the prefill kernel's -lse * log2(e) (the multiply-add's addend as it is); PMIX sends whole
query blocks' exp2 to the FMA pipe; HMAJ orders the grid head-first; RLANES keeps the column sums per lane of
the MMA accumulator's column quad through the loops.
"""
from __future__ import annotations

import sys

import triton
import triton.language as tl

from . import jit_utils
from .jit_utils import INTERPRET, LOG2E, NEG, dot, dot_acc, lane_sum, precision, scores2


@triton.jit
def exp2_poly(x):
    """2^x on the FMA pipe (no MUFU): x = r + f with r = round(x), |f| <= 1/2; 2^f by a degree-4 polynomial
    (relative error 2.7e-6), 2^r added to the exponent bits. x is clamped at -126 (below it: ~2^-126, a denormal; at
    -127 the polynomial's 2^0 = 1 - 8e-7 made the exponent bits wrap to a NaN)."""
    x = tl.maximum(x, -126.0)
    j = x + 12582912.0                                                        # 1.5 * 2^23: rounds x to an integer
    f = x - (j - 12582912.0)                                                  # [-1/2, 1/2]
    p = 0.009560510516166687 * f + 0.05591703951358795
    p = p * f + 0.24024981260299683
    p = p * f + 0.6931219696998596
    p = p * f + 0.9999991655349731
    e = j.to(tl.int32, bitcast=True) << 23                                    # round(x) << 23 (the offset shifts out)
    return (p.to(tl.int32, bitcast=True) + e).to(tl.float32, bitcast=True)


@triton.jit
def _lse_addend(p_lse, o_t, m_t, ld, bh, t0, MASK: tl.constexpr, USE_LTMA: tl.constexpr, LSE2: tl.constexpr,
                BQ: tl.constexpr):
    """-lse * log2(e) of the queries o_t = t0 + [0, BQ) [BQ]: the addend of each score's base-2 logit (LSE2: lse is
    stored that way already, by the prefill kernel's LSE_NEG2; the multiply-add then takes it as it is). Rows that
    see no key (lse = -inf) and, with MASK, rows past T get -1e30 (their probabilities are 0). USE_LTMA: through the
    tensor descriptor ld over lse viewed as [B * H, T] ([1, BQ] blocks), row bh."""
    if USE_LTMA:
        b_a = tl.reshape(ld.load([bh, t0]), [BQ])                             # [BQ] (past T: zero-filled)
    elif MASK:
        b_a = tl.load(p_lse + o_t, mask=m_t, other=0.0)                       # [BQ]
    else:
        b_a = tl.load(p_lse + o_t)                                            # [BQ]
    if not LSE2:
        b_a = b_a * -LOG2E
    if MASK:
        b_a = tl.where(m_t & (b_a < -NEG), b_a, NEG)                          # rows that see nothing
    return b_a


@triton.jit
def _q_block(p_q, s_qt, t0, T, qd, q_row0, MASK: tl.constexpr, D: tl.constexpr, BQ: tl.constexpr,
             USE_TMA: tl.constexpr):
    """Queries t0 + [0, BQ) [BQ, D] (rows past T: zeros, or with TMA the next head's rows; masked by the caller)."""
    o_t = t0 + tl.arange(0, BQ)                                               # [BQ]
    o_d = tl.arange(0, D)                                                     # [D]
    if USE_TMA:
        b_q = qd.load([q_row0 + t0, 0])                                       # [BQ, D]
    elif MASK:
        b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :], mask=(o_t < T)[:, None], other=0.0)  # [BQ, D]
    else:
        b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :])               # [BQ, D]
    return b_q


@triton.jit
def _colsums(
    b_s, b_a, o_t, m_t, o_j, ks, T, S, window, scale, softcap, b_r, poly,
    MASK: tl.constexpr, POLY: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, FMA: tl.constexpr,
    PMIX: tl.constexpr, RL: tl.constexpr,
):
    """b_r [BS] (RL: [BS, 4] per-lane partials, ``lane_sum``) plus the column sums of exp2(logit + addend b_a) over
    the queries o_t of the score tile b_s [BS, BQ]. POLY: exp2 on the FMA pipe (``exp2_poly``) instead of the MUFU;
    PMIX > 0: the run-time flag ``poly`` picks between the two for the whole tile."""
    if FMA and not USE_SOFTCAP:
        b_x = b_s * (scale * LOG2E) + b_a[None, :]                            # [BS, BQ]
    else:
        b_x = scores2(b_s, scale, softcap, False, USE_SOFTCAP, False) + b_a[None, :]
    if POLY:
        b_p = exp2_poly(b_x)                                                  # [BS, BQ]
    elif PMIX > 0:
        if poly:
            b_p = exp2_poly(b_x)                                              # [BS, BQ]
        else:
            b_p = tl.exp2(b_x)                                                # [BS, BQ]
    else:
        b_p = tl.exp2(b_x)                                                    # [BS, BQ]
    if MASK:
        p_pos = S - T + o_t                                                   # [BQ]
        m_s = (o_j[:, None] <= p_pos[None, :]) & (o_j[:, None] >= ks) & m_t[None, :] & (o_j[:, None] < S)
        if USE_WINDOW:
            m_s = m_s & ((p_pos[None, :] - o_j[:, None]) < window)
        b_p = tl.where(m_s, b_p, 0.0)
    return b_r + lane_sum(b_p, RL)                                            # [BS] (RL: [BS, 4])


@triton.jit
def _scores(b_k, p_q, s_qt, t0, T, qd, q_row0, MASK: tl.constexpr, D: tl.constexpr, BQ: tl.constexpr,
            USE_TMA: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Key-major raw scores K Q^T [BS, BQ] of the queries t0 + [0, BQ)."""
    return dot(b_k, tl.trans(_q_block(p_q, s_qt, t0, T, qd, q_row0, MASK, D, BQ, USE_TMA)), PREC, UPCAST)


@triton.jit
def _colsums_at(
    b_s, t0, p_lse, ld, l_row, o_j, ks, T, S, window, scale, softcap, b_r, BQ: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, FMA: tl.constexpr, USE_LTMA: tl.constexpr,
    PMIX: tl.constexpr, LSE2: tl.constexpr, RL: tl.constexpr,
):
    """``_colsums`` of the fully visible query block t0 + [0, BQ) from its scores b_s [BS, BQ] (PMIX: its exp2
    on the FMA pipe when (t0 / BQ) % PMIX == 0)."""
    o_t = t0 + tl.arange(0, BQ)                                               # [BQ]
    m_t = o_t < T
    b_a = _lse_addend(p_lse, o_t, m_t, ld, l_row, t0, False, USE_LTMA, LSE2, BQ)  # [BQ]
    mix = (t0 // BQ) % PMIX == 0 if PMIX > 0 else False
    return _colsums(b_s, b_a, o_t, m_t, o_j, ks, T, S, window, scale, softcap, b_r, mix, False, False, USE_WINDOW,
                    USE_SOFTCAP, FMA, PMIX, RL)


@triton.jit
def _received_part(
    b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r, qd, q_row0, ld, l_row, poly,
    MASK: tl.constexpr, D: tl.constexpr, BQ: tl.constexpr, POLY: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, FMA: tl.constexpr,
    USE_TMA: tl.constexpr, USE_LTMA: tl.constexpr, PMIX: tl.constexpr, LSE2: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr, RL: tl.constexpr,
):
    """Key-major: BQ queries from t0 against the program's BS keys; returns b_r [BS] plus their column sums
    (``_colsums``). USE_LTMA: the lse block through the tensor descriptor ld (row l_row)."""
    o_t = t0 + tl.arange(0, BQ)                                               # [BQ]
    m_t = o_t < T
    b_q = _q_block(p_q, s_qt, t0, T, qd, q_row0, MASK, D, BQ, USE_TMA)        # [BQ, D]
    b_a = _lse_addend(p_lse, o_t, m_t, ld, l_row, t0, MASK, USE_LTMA, LSE2, BQ)  # [BQ]
    b_s = dot(b_k, tl.trans(b_q), PREC, UPCAST)                               # [BS, BQ]
    return _colsums(b_s, b_a, o_t, m_t, o_j, ks, T, S, window, scale, softcap, b_r, poly, MASK, POLY, USE_WINDOW,
                    USE_SOFTCAP, FMA, PMIX, RL)


@triton.jit
def _received_step(
    b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r, qd, q_row0, ld, l_row, poly,
    MASK: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, KEYMAJOR: tl.constexpr, FMA: tl.constexpr,
    USE_TMA: tl.constexpr, USE_LTMA: tl.constexpr, NQ: tl.constexpr, NPOLY: tl.constexpr, PMIX: tl.constexpr,
    LSE2: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, RL: tl.constexpr,
):
    """One query block of the column sums. b_r: [BT, BS] running tile (KEYMAJOR = False) or [BS] running
    sum (KEYMAJOR = True, in NQ parts of BT // NQ queries, the first NPOLY of them with ``exp2_poly``).
    MASK = False for query blocks that see every key of the block."""
    if KEYMAJOR:
        for i in tl.static_range(NQ):
            b_r = _received_part(b_k, p_q, s_qt, p_lse, t0 + i * (BT // NQ), o_j, ks, T, S, window, scale, softcap,
                                 b_r, qd, q_row0, ld, l_row, poly, MASK, D, BT // NQ, i < NPOLY, USE_WINDOW,
                                 USE_SOFTCAP, FMA, USE_TMA, USE_LTMA, PMIX, LSE2, PREC, UPCAST, RL)
    else:
        o_t = t0 + tl.arange(0, BT)                                           # [BT]
        o_d = tl.arange(0, D)                                                 # [D]
        m_t = o_t < T
        if USE_TMA:
            b_q = qd.load([q_row0 + t0, 0])                                   # [BT, D] (rows past T masked below)
        elif MASK:
            b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :], mask=m_t[:, None], other=0.0)  # [BT, D]
        else:
            b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :])           # [BT, D]
        b_a = _lse_addend(p_lse, o_t, m_t, ld, l_row, t0, MASK, False, LSE2, BT)  # [BT]
        b_s = dot(b_q, tl.trans(b_k), PREC, UPCAST)                           # [BT, BS]
        if FMA and not USE_SOFTCAP:
            b_p = tl.exp2(b_s * (scale * LOG2E) + b_a[:, None])               # [BT, BS]
        else:
            b_s = scores2(b_s, scale, softcap, False, USE_SOFTCAP, False)
            b_p = tl.exp2(b_s + b_a[:, None])                                 # [BT, BS]
        if MASK:
            p_pos = S - T + o_t                                               # [BT]
            m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks) & m_t[:, None] & (o_j[None, :] < S)
            if USE_WINDOW:
                m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
            b_p = tl.where(m_s, b_p, 0.0)
        b_r += b_p                                                            # [BT, BS]
    return b_r


@triton.heuristics({
    "USE_WINDOW": lambda a: a["window"] > 0,
    "USE_SOFTCAP": lambda a: a["softcap"] > 0,
    "USE_TMA": lambda a: a["qd"] is not None,
    "USE_LTMA": lambda a: a["ld"] is not None,
    "AMMA": lambda a: a["ad"] is not None,
    "NQ": lambda a: 4 if a["KEYMAJOR"] and a["NPOLY"] > 0 else 1,
    "RL": lambda a: bool(a["RLANES"]) and bool(a["KEYMAJOR"]),
    "PREC": precision,
    "UPCAST": lambda a: INTERPRET,
})
@triton.jit
def received_fwd_kernel(
    q, k, lse, rsum, key_start, qd, ld, ad,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_ks,
    scale, softcap, window, T, S,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
    KEYMAJOR: tl.constexpr, FMA: tl.constexpr, NPOLY: tl.constexpr, PMIX: tl.constexpr, HMAJ: tl.constexpr,
    LSE2: tl.constexpr, PIPE: tl.constexpr, LPRE: tl.constexpr, UNROLL: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_TMA: tl.constexpr, USE_LTMA: tl.constexpr,
    NQ: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, AMMA: tl.constexpr, RLANES: tl.constexpr,
    RL: tl.constexpr,
):
    """One program per (key block, batch x head): rsum [B, H, S] float32 from lse [B, H, T] (LSE2: as -lse * log2(e),
    the prefill kernel's LSE_NEG2 form; else natural).
    qd: a tensor descriptor over q viewed as [B * H * T, D] with [BT // NQ, D] blocks (None = pointer loads).
    NPOLY (key-major only): of the NQ = 4 quarters of each query block, how many take exp2 on the FMA pipe
    (``exp2_poly``), so the MUFU and the FMA units share the exponentials (0 = all on the MUFU, NQ = 1).
    PMIX (key-major, NPOLY = 0): every PMIX-th query block of the fully visible range takes ``exp2_poly`` for its
    whole [BS, BT] tile (the MMA keeps its width; co-resident warps keep both pipes busy; 0 = off).
    ld: a tensor descriptor over lse viewed as [B * H, T] with [1, BT // NQ] blocks (None = pointer loads).
    HMAJ: the grid is (batch x head, key block) instead of (key block, batch x head): the launch order runs the
    longest (first) key blocks of every head before the shorter ones of any head. PIPE (key-major, NQ = 1): in the
    fully visible range, each query block's Q K^T is issued before the previous block's exp2 and sums, so the MMA
    runs under them (one [BS, BT] score tile more in registers; at most one repeated, unused MMA per program).
    LPRE (key-major, NQ = 1, PMIX = 0, no PIPE): in the fully visible range, the next query block's lse addend is loaded
    one block ahead (in the sm_90 build the load is otherwise issued beside the block's MMA and waited for right after
    it). UNROLL: the fully visible range's loop unrolled that many times (1 = not), so its per-block loop control and
    barrier bookkeeping is shared by more scores.
    ad: a tensor descriptor over the prefill kernel's split addend (its adq, [B * H * T, 16] bfloat16, [BT, 16]
    blocks; None = off; AMMA, key-major, NQ = 1, with qd): in the fully visible range the MMA adds it to the scores
    (S' = K Q^T + ones . A^T, ones in the first three columns), so a score's base-2 logit is one multiply, and no lse
    block is loaded, laid out through shared memory or waited for there.
    RLANES (in effect as RL, key-major): the column sums kept per lane of the MMA accumulator's quad through the loops
    ([BS, 4], ``lane_sum``: no shuffles per query block), the lanes summed once at the end."""
    if HMAJ:
        i_bh, i_s = tl.program_id(0), tl.program_id(1)
    else:
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
    q_row0 = ((i_b * H + i_h) * T).to(tl.int32)                               # first row of qd
    l_row = (i_b * H + i_h).to(tl.int32)                                      # row of ld

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

    if KEYMAJOR:
        b_r = tl.zeros([BS, 4] if RL else [BS], tl.float32)                   # [BS] running column sums (RL: per lane)
    else:
        b_r = tl.zeros([BT, BS], tl.float32)                                  # [BT, BS] reduced once at the end
    for t0 in range(t_lo, t_a, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r, qd, q_row0,
                             ld, l_row, False, True, D, BT, USE_WINDOW, USE_SOFTCAP, KEYMAJOR, FMA, USE_TMA,
                             USE_LTMA, NQ, NPOLY, PMIX, LSE2, PREC, UPCAST, RL)
    if PIPE and KEYMAJOR and NQ == 1:
        # in pairs of query blocks: each block's Q K^T is issued before the previous block's exp2 and sums (the
        # MMA runs under them); two score tiles alternate, so no tile is copied
        n2 = t_a + (t_b - t_a) // (2 * BT) * (2 * BT)                         # end of the pairs
        b_s = _scores(b_k, p_q, s_qt, t_a, T, qd, q_row0, True, D, BT, USE_TMA, PREC, UPCAST)   # [BS, BT]
        for t0 in range(t_a, n2, 2 * BT):
            b_s2 = _scores(b_k, p_q, s_qt, t0 + BT, T, qd, q_row0, False, D, BT, USE_TMA, PREC, UPCAST)
            b_r = _colsums_at(b_s, t0, p_lse, ld, l_row, o_j, ks, T, S, window, scale, softcap, b_r, BT, USE_WINDOW,
                              USE_SOFTCAP, FMA, USE_LTMA, PMIX, LSE2, RL)
            # the next pair's first block (the last pair: the odd block left, or a repeat, unused)
            b_s = _scores(b_k, p_q, s_qt, tl.minimum(t0 + 2 * BT, t_b - BT), T, qd, q_row0, False, D, BT, USE_TMA,
                          PREC, UPCAST)
            b_r = _colsums_at(b_s2, t0 + BT, p_lse, ld, l_row, o_j, ks, T, S, window, scale, softcap, b_r, BT,
                              USE_WINDOW, USE_SOFTCAP, FMA, USE_LTMA, PMIX, LSE2, RL)
        if n2 < t_b:                                                          # an odd block left: t_b - BT
            b_r = _colsums_at(b_s, t_b - BT, p_lse, ld, l_row, o_j, ks, T, S, window, scale, softcap, b_r, BT,
                              USE_WINDOW, USE_SOFTCAP, FMA, USE_LTMA, PMIX, LSE2, RL)
    elif AMMA and KEYMAJOR and NQ == 1 and PMIX == 0 and USE_TMA:
        o_c = tl.arange(0, 16)                                                # [16]
        b_one = tl.where(o_c < 3, 1.0, 0.0)                                   # [16] the addend's three parts
        b_ones = (tl.zeros([BS, 16], tl.float32) + b_one[None, :]).to(q.dtype.element_ty)   # [BS, 16]
        for t0 in range(t_a, t_b, BT):
            b_q = _q_block(p_q, s_qt, t0, T, qd, q_row0, False, D, BT, USE_TMA)   # [BT, D]
            b_ad = ad.load([q_row0 + t0, 0])                                  # [BT, 16]
            b_s = dot(b_k, tl.trans(b_q), PREC, UPCAST)                       # [BS, BT] raw scores
            b_s = dot_acc(b_ones, tl.trans(b_ad), b_s, PREC, UPCAST)          # [BS, BT] + -lse2 / c per query
            b_r += lane_sum(tl.exp2(b_s * (scale * LOG2E)), RL)               # [BS] (RL: [BS, 4])
    elif LPRE and KEYMAJOR and NQ == 1 and PMIX == 0:
        # each query block's lse addend loaded one block ahead: its global load's latency is off the block's path
        o_n = t_a + tl.arange(0, BT)                                          # [BT]
        b_a = _lse_addend(p_lse, o_n, o_n < T, ld, l_row, t_a, True, False, LSE2, BT)      # [BT]
        for t0 in tl.range(t_a, t_b, BT, loop_unroll_factor=UNROLL):
            o_n = t0 + BT + tl.arange(0, BT)                                  # [BT] (past T: masked)
            b_an = _lse_addend(p_lse, o_n, o_n < T, ld, l_row, t0 + BT, True, False, LSE2, BT)
            b_s = _scores(b_k, p_q, s_qt, t0, T, qd, q_row0, False, D, BT, USE_TMA, PREC, UPCAST)  # [BS, BT]
            o_t = t0 + tl.arange(0, BT)                                       # [BT]
            b_r = _colsums(b_s, b_a, o_t, o_t < T, o_j, ks, T, S, window, scale, softcap, b_r, False, False, False,
                           USE_WINDOW, USE_SOFTCAP, FMA, 0, RL)
            b_a = b_an
    else:
        for t0 in tl.range(t_a, t_b, BT, loop_unroll_factor=UNROLL):
            mix = (t0 // BT) % PMIX == 0 if PMIX > 0 else False              # this block's exp2 on the FMA pipe
            b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r, qd, q_row0,
                                 ld, l_row, mix, False, D, BT, USE_WINDOW, USE_SOFTCAP, KEYMAJOR, FMA, USE_TMA,
                                 USE_LTMA, NQ, NPOLY, PMIX, LSE2, PREC, UPCAST, RL)
    for t0 in range(t_b, t_hi, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, softcap, b_r, qd, q_row0,
                             ld, l_row, False, True, D, BT, USE_WINDOW, USE_SOFTCAP, KEYMAJOR, FMA, USE_TMA,
                             USE_LTMA, NQ, NPOLY, PMIX, LSE2, PREC, UPCAST, RL)
    if KEYMAJOR:
        if RL:
            b_col = tl.sum(b_r, 1)                                            # [BS] the lanes' partial sums
        else:
            b_col = b_r
    else:
        b_col = tl.sum(b_r, 0)
    tl.store(rsum + (i_b * H + i_h) * S + o_j, b_col, mask=o_j < S)


# cache keys in a fixed order at import (jit_utils.stable_cache_keys: Triton 3.6 keys depend on hashing order)
jit_utils.stable_cache_keys(jit_utils, sys.modules[__name__])
