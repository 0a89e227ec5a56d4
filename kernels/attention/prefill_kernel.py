"""Prefill kernel: FlashAttention-style forward with in-launch statistics and edits.

``attention_fwd_kernel`` runs an online softmax over key blocks (causal / sliding-window /
left-padding block skipping, GQA) and, on request, lse, entropy, span mass (in the key loop, or in
a post-pass over only the spans' key blocks), sink mass and ACT column edits (gathered in the
epilogue from the final max / sum), VAR redistribution (span-target accumulator in the key loop,
sink keys in the epilogue), uniform heads, head mean / scale. Every optional input is a pointer
that is ``None`` when off; ``@triton.heuristics`` turns that into the kernel's ``USE_*`` switches,
so a launch passes only what it uses, by keyword. The variant switches (SEG, SPAN_POST, RELOAD_Q,
TMA loads, FMA, REV, TMAX, LSUM, FIXREF) are chosen per variant by ``tiles.PREFILL_SWITCHES``.
"""
from __future__ import annotations

import sys

import triton
import triton.language as tl

from . import jit_utils
from .jit_utils import INTERPRET, LN2, LOG2E, NEG, dot, dot_acc, lane_sum, precision, scores2


@triton.jit
def _rowmax(b_s, TREE: tl.constexpr):
    """Row max of a score tile [BT, BS] -> [BT]. TREE: the key axis is halved in registers (a depth-log2 tree of
    independent max ops) before the reduction across lanes, instead of one dependent chain per row (the sm_90 build's
    plain ``tl.max`` runs 31 dependent FMNMX per row at BS = 128 before any exp2 can start)."""
    if TREE:
        BT: tl.constexpr = b_s.shape[0]
        for _ in tl.static_range(4):                                          # BS -> BS / 16 (at least 8)
            if b_s.shape[1] >= 16:
                b_s = tl.max(tl.reshape(b_s, [BT, 2, b_s.shape[1] // 2]), 1)  # [BT, half the keys]
    return tl.max(b_s, 1)                                                     # [BT]


@triton.jit
def _rescaled(x, alpha, FIX: tl.constexpr):
    """x * alpha, or x as it is under a fixed reference (FIX: nothing is re-based)."""
    if FIX:
        return x
    else:
        return x * alpha


@triton.jit
def _fwd_step(
    b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1,
    MASK: tl.constexpr, D: tl.constexpr, BS: tl.constexpr, NS: tl.constexpr, NSP: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr,
    USE_ENTROPY: tl.constexpr, USE_SPAN: tl.constexpr, USE_COLS: tl.constexpr, COLMODE: tl.constexpr,
    USE_VAR: tl.constexpr, USE_TMA: tl.constexpr, FMA: tl.constexpr, TMAX: tl.constexpr, LS: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, FIX: tl.constexpr = False,
):
    """One key block of the online softmax; MASK=False for blocks every query fully sees.

    USE_SPAN: span mass accumulated here (off when the span post-pass computes it). COLMODE (with
    USE_COLS): 0 = a block known to hold no edited column (only l_rest is kept), 1 = test the block
    for a column at run time, 2 = a block known to hold one (mask the columns). FMA: the row max of the
    raw scores, one fused multiply-add per score for the base-2 logit, P.V accumulated into the
    running output by the MMA (no softcap). TMAX: the row max by ``_rowmax``'s tree. LS (no ACT columns, no VAR): the
    row sum and entropy sum as per-lane partials b_l, b_ent [BT, 4] (``lane_sum``; no shuffles in the loop). USE_TMA:
    K / V come
    from tensor descriptors kd / vd over the [rows, D] view, this (batch, kv head)'s keys at row0.
    FIX (MASK = False only): no row max -- the probabilities are taken against the reference b_m as it is, so nothing
    is rescaled (no max, no alpha, no accumulator multiply); the caller checks the sums for overflow afterwards."""
    o_j = j0 + tl.arange(0, BS)                                               # [BS]
    o_d = tl.arange(0, D)                                                     # [D]
    if USE_TMA:
        # rows past S belong to the next head (or are zero-filled past the end): masked below
        b_k = kd.load([row0 + j0, 0])                                         # [BS, D]
        b_v = vd.load([row0 + j0, 0])                                         # [BS, D]
    elif MASK:
        m_j = o_j < S
        b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
        b_v = tl.load(p_v + o_j[:, None] * s_vs + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
    else:
        b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :])               # [BS, D]
        b_v = tl.load(p_v + o_j[:, None] * s_vs + o_d[None, :])               # [BS, D]
    b_s = dot(b_q, tl.trans(b_k), PREC, UPCAST)                               # [BT, BS]
    if FIX:
        if FMA and not USE_SOFTCAP:
            if USE_UNIFORM:
                b_s = tl.where(uni, 0.0, b_s)
            b_x = b_s * (scale * LOG2E) - b_m[:, None]                        # [BT, BS]
        else:
            b_x = scores2(b_s, scale, softcap, uni, USE_SOFTCAP, USE_UNIFORM) - b_m[:, None]
        b_mn = b_m
    elif FMA and not USE_SOFTCAP:
        # the max of the raw scores, scaled once per row; then one FMA per score: s * c - m
        if USE_UNIFORM:
            b_s = tl.where(uni, 0.0, b_s)
        if MASK:
            m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks)     # [BT, BS]
            if USE_WINDOW:
                m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
            b_s = tl.where(m_s, b_s, NEG)
        c2 = scale * LOG2E
        b_mn = tl.maximum(b_m, _rowmax(b_s, TMAX) * c2)                       # [BT]
        b_x = b_s * c2 - b_mn[:, None]                                        # [BT, BS]
        if MASK:
            # a row with no visible key in this block has b_mn = NEG * c2 rounded, and the fused multiply-add
            # leaves NEG * c2 - b_mn = the product's rounding error, up to ~1e22: exp2 of it is inf (GPU only; the
            # interpreter does not fuse). Masked scores are set after the FMA instead.
            b_x = tl.where(m_s, b_x, NEG)
    else:
        b_s = scores2(b_s, scale, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
        if MASK:
            m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks)     # [BT, BS]
            if USE_WINDOW:
                m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
            b_s = tl.where(m_s, b_s, NEG)
        b_mn = tl.maximum(b_m, _rowmax(b_s, TMAX))                            # [BT]
        b_x = b_s - b_mn[:, None]                                             # [BT, BS]
    b_p = tl.exp2(b_x)                                                        # [BT, BS]
    b_alpha = tl.exp2(b_m - b_mn)                                             # [BT] (FIX: unused)
    if USE_ENTROPY:
        # running sum of p~ * (s - m), re-based on the new max like the accumulator
        if FIX:
            b_ent = b_ent + lane_sum(b_p * b_x, LS)
        elif LS:
            b_ent = b_alpha[:, None] * (b_ent - (b_mn - b_m)[:, None] * b_l) + lane_sum(b_p * b_x, True)
        else:
            b_ent = b_alpha * (b_ent - (b_mn - b_m) * b_l) + tl.sum(b_p * b_x, 1)
    if USE_SPAN:
        b_spm = _rescaled(b_spm, b_alpha[:, None], FIX)                       # [BT, NSP]
        for i in tl.static_range(NS):
            s0 = tl.load(p_spans + 2 * i).to(tl.int32)
            s1 = tl.load(p_spans + 2 * i + 1).to(tl.int32)
            if (s0 < j0 + BS) & (s1 > j0):
                m_in = (o_j >= s0) & (o_j < s1)                               # [BS]
                b_c = tl.sum(tl.where(m_in[None, :], b_p, 0.0), 1)            # [BT]
                b_spm += tl.where(tl.arange(0, NSP)[None, :] == i, b_c[:, None], 0.0)
    if LS:
        b_ls = lane_sum(b_p, True)                                            # [BT, 4]
        b_l = _rescaled(b_l, b_alpha[:, None], FIX) + b_ls
    else:
        b_ls = tl.sum(b_p, 1)                                                 # [BT]
        b_l = _rescaled(b_l, b_alpha, FIX) + b_ls
    b_acc = _rescaled(b_acc, b_alpha[:, None], FIX)                           # [BT, D]
    b_pv = b_p
    if USE_COLS:
        # edited columns are kept out of the accumulator and out of l_rest; the epilogue adds
        # them back scaled. Only blocks holding one of them pay for the masking.
        b_lsr = b_ls
        if COLMODE == 1:
            hit = tl.sum(((b_cols >= j0) & (b_cols < j0 + BS)).to(tl.int32), 0) > 0
            if hit:
                m_c = tl.sum((o_j[:, None] == b_cols[None, :]).to(tl.int32), 1) > 0  # [BS]
                b_pv = tl.where(m_c[None, :], 0.0, b_p)
                b_lsr = tl.sum(b_pv, 1)
        elif COLMODE == 2:
            m_c = tl.sum((o_j[:, None] == b_cols[None, :]).to(tl.int32), 1) > 0  # [BS]
            b_pv = tl.where(m_c[None, :], 0.0, b_p)
            b_lsr = tl.sum(b_pv, 1)
        b_lr = _rescaled(b_lr, b_alpha, FIX) + b_lsr
    if USE_VAR:
        # VAR: mass and partial output of the span's non-sink keys (the redistribution targets)
        b_acc2 = _rescaled(b_acc2, b_alpha[:, None], FIX)
        b_tm = _rescaled(b_tm, b_alpha, FIX)
        if (sp0 < j0 + BS) & (sp1 > j0):
            m_snk = tl.sum((o_j[:, None] == b_cols[None, :]).to(tl.int32), 1) > 0  # [BS]
            m_tg = (o_j >= sp0) & (o_j < sp1) & (m_snk == 0)                 # [BS]
            b_pt = tl.where(m_tg[None, :], b_p, 0.0)                          # [BT, BS]
            b_tm += tl.sum(b_pt, 1)
            b_acc2 += dot(b_pt.to(b_v.dtype), b_v, PREC, UPCAST)
    if FMA:
        b_acc = dot_acc(b_pv.to(b_v.dtype), b_v, b_acc, PREC, UPCAST)          # [BT, D], accumulated in the MMA
    else:
        b_acc += dot(b_pv.to(b_v.dtype), b_v, PREC, UPCAST)                  # [BT, D]
    return b_mn, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm


@triton.jit
def _state0(BT: tl.constexpr, D: tl.constexpr, NSP: tl.constexpr, LS: tl.constexpr):
    """The online softmax's state before any key: max, sum, sum without ACT columns, output, entropy sum, span
    masses, VAR's target output and mass."""
    b_m = tl.full([BT], NEG, tl.float32)                                      # [BT]
    b_l = tl.zeros([BT, 4] if LS else [BT], tl.float32)                       # [BT] (LS: [BT, 4] per lane)
    b_lr = tl.zeros([BT], tl.float32)                                         # [BT] sum without ACT columns
    b_acc = tl.zeros([BT, D], tl.float32)                                     # [BT, D]
    b_ent = tl.zeros([BT, 4] if LS else [BT], tl.float32)                     # [BT] (LS: [BT, 4] per lane)
    b_spm = tl.zeros([BT, NSP], tl.float32)                                   # [BT, NSP]
    b_acc2 = tl.zeros([BT, D], tl.float32)                                    # [BT, D] VAR targets
    b_tm = tl.zeros([BT], tl.float32)                                         # [BT] VAR target mass
    return b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm


@triton.jit
def _overflowed(b_l, b_acc):
    """Whether any sum b_l ([BT] or per lane [BT, 4]) reached 1e30 or any output accumulator b_acc [BT, D] 1e37
    (inf and NaN included): a scalar for the whole program."""
    n = tl.sum(tl.where(b_l < 1e30, 0, 1)) + tl.sum(tl.where(tl.abs(b_acc) < 1e37, 0, 1))
    return n > 0


@triton.jit
def _gather_col(
    b_q, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale, softcap, uni, b_m, b_l,
    D: tl.constexpr, LOAD_V: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    USE_UNIFORM: tl.constexpr,
):
    """Probability of key ``idx`` for every query of the block (from the final max and sum)."""
    o_d = tl.arange(0, D)                                                     # [D]
    idx_s = tl.maximum(idx, 0)
    b_k = tl.load(p_k + idx_s * s_ks + o_d).to(tl.float32)                    # [D]
    b_s = tl.sum(b_q.to(tl.float32) * b_k[None, :], 1)                        # [BT]
    b_s = scores2(b_s, scale, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
    m_vis = (idx >= 0) & (idx >= ks) & (idx <= p_pos)                         # [BT]
    if USE_WINDOW:
        m_vis = m_vis & ((p_pos - idx) < window)
    b_p = tl.where(m_vis, tl.exp2(b_s - b_m) / b_l, 0.0)                      # [BT]
    if LOAD_V:
        b_v = tl.load(p_v + idx_s * s_vs + o_d).to(tl.float32)                # [D]
    else:
        b_v = b_k
    return b_p, b_v


@triton.jit
def _span_mass(
    b_q, p_k, s_ks, s0, s1, lo_req, hi, p_pos, ks, S, window, scale, softcap, uni, b_m,
    D: tl.constexpr, BS: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    USE_UNIFORM: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """Unnormalized mass sum_{j in [s0, s1)} exp2(s_j - m) per query row [BT], from the final max m,
    over only the key blocks of [s0, s1) that this query block can see."""
    o_d = tl.arange(0, D)                                                     # [D]
    a0 = tl.maximum(s0, lo_req)
    a1 = tl.minimum(s1, hi)
    b_c = tl.zeros_like(b_m)                                                  # [BT]
    for j0 in range(a0 // BS * BS, a1, BS):
        o_j = j0 + tl.arange(0, BS)                                           # [BS]
        b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :], mask=(o_j < S)[:, None], other=0.0)  # [BS, D]
        b_s = dot(b_q, tl.trans(b_k), PREC, UPCAST)                           # [BT, BS]
        b_s = scores2(b_s, scale, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
        m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks)         # [BT, BS]
        m_s = m_s & ((o_j >= s0) & (o_j < s1))[None, :]
        if USE_WINDOW:
            m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
        b_c += tl.sum(tl.where(m_s, tl.exp2(b_s - b_m[:, None]), 0.0), 1)
    return b_c


@triton.heuristics({
    "USE_WINDOW": lambda a: a["window"] > 0,
    "USE_SOFTCAP": lambda a: a["softcap"] > 0,
    "STORE_LSE": lambda a: a["lse"] is not None,
    "STORE_AD": lambda a: a["adq"] is not None,
    "USE_ENTROPY": lambda a: a["ent"] is not None,
    "USE_SPAN": lambda a: a["spm"] is not None,
    "USE_SINK": lambda a: a["snk"] is not None,
    "USE_VAR": lambda a: a["redist_span"] is not None,
    "USE_COLS": lambda a: a["col_idx"] is not None,
    "USE_UNIFORM": lambda a: a["head_uniform"] is not None,
    "USE_HMEAN": lambda a: a["head_mean"] is not None,
    "USE_HSCALE": lambda a: a["head_scale"] is not None,
    "USE_TMA": lambda a: a["kd"] is not None,
    "LOOP_SPAN": lambda a: a["spm"] is not None and not a["SPAN_POST"],
    "SEG_ON": lambda a: bool(a["SEG"]) and a["col_idx"] is not None and a["redist_span"] is None,
    "LS": lambda a: bool(a["LSUM"]) and a["col_idx"] is None and a["redist_span"] is None,
    "NSP": lambda a: max(2, triton.next_power_of_2(max(a["NS"], 1))),
    "CP": lambda a: max(2, triton.next_power_of_2(max(a["C"], 1))),
    "PREC": precision,
    "UPCAST": lambda a: INTERPRET,
})
@triton.jit
def attention_fwd_kernel(
    q, k, v, kd, vd, o, lse, ent, spm, snk, adq,
    key_start, sink_pos, spans, col_idx, col_scale, head_uniform, head_mean, head_mean_on, head_scale,
    redist_span, redist_from, redist_keep, redist_rho, redist_min_mass,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs, s_ob, s_ot, s_oh,
    scale, softcap, window, T, S,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
    NS: tl.constexpr, NSP: tl.constexpr, P: tl.constexpr, C: tl.constexpr, CP: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, STORE_LSE: tl.constexpr,
    USE_ENTROPY: tl.constexpr, USE_SPAN: tl.constexpr, USE_SINK: tl.constexpr,
    USE_COLS: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_HMEAN: tl.constexpr,
    USE_HSCALE: tl.constexpr, USE_VAR: tl.constexpr, USE_TMA: tl.constexpr,
    SEG: tl.constexpr, SPAN_POST: tl.constexpr, RELOAD_Q: tl.constexpr, FMA: tl.constexpr, REV: tl.constexpr,
    LSE_NEG2: tl.constexpr, LOOP_SPAN: tl.constexpr, SEG_ON: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
    STORE_AD: tl.constexpr, TMAX: tl.constexpr, LSUM: tl.constexpr, LS: tl.constexpr, FIXREF: tl.constexpr,
):
    """One program per (query block, batch x head). Pointers: q [B, H, T, D], k / v [B, KV, S, D],
    o [B, T, H, D]; lse / ent [B, H, T], spm [B, H, T, NS], snk [B, H, T, P] (float32, None = off);
    col_idx [B, H, C] deduplicated ACT columns or VAR sink keys, ascending, -1 for unused slots.
    kd / vd: tensor descriptors over k / v viewed as [B * KV * S, D] (None = pointer loads).

    Variant switches (the tile table picks them per variant): SEG (ACT) runs the fully visible key
    range as plain segments between the blocks that hold an edited column (one pass over the sorted
    column list; no per-block test); SPAN_POST computes span mass after the key loop, over only the
    spans' key blocks, from the final max and sum; RELOAD_Q re-loads q for the epilogue's gathers;
    FMA folds the logit scale into one multiply-add per score and accumulates P.V in the MMA; REV runs the
    query blocks of each head last-first (causal: the longest key ranges start first, the short ones fill the
    last wave). LSE_NEG2: lse is stored as -lse * log2(e) (the received-mass pass's input: the addend of its
    multiply-adds, with no multiply there). adq [B, H, T, 16] bfloat16 (None = off; STORE_AD): the received pass's
    addend -lse2 / (scale * log2(e)) in raw-score units as three bfloat16 parts in columns 0..2 (their sum is the
    float32 value to ~2^-24), zeros after: that pass adds it to its scores with the MMA (its AMMA switch).
    TMAX: each key block's row max by a tree in registers (``_rowmax``) rather than one dependent chain per row.
    LSUM (in effect as LS: no ACT columns, no VAR): the row and entropy sums kept per lane through the key loop
    (``lane_sum``). FIXREF (without SEG_ON): the fully visible key range past its first block runs with no row max
    and no rescaling, against the row max of that first block: a base-2 logit up to 128 above it keeps exp2 finite in
    float32, and one 126 below it (so at least that far below the row's max) is far under float32's precision of the
    sum. A program whose sums pass 1e30 (logits ~100 above the reference) runs the range again with the running max
    (``_overflowed``), so the result never depends on the reference."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    if REV:
        i_t = tl.num_programs(0) - 1 - i_t
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    i_kh = i_h // G
    o_t = i_t * BT + tl.arange(0, BT)                                         # [BT]
    o_d = tl.arange(0, D)                                                     # [D]
    m_t = o_t < T
    p_pos = S - T + o_t                                                       # [BT] absolute positions
    ks = tl.load(key_start + i_b).to(tl.int32)
    row0 = ((i_b * (H // G) + i_kh) * S).to(tl.int32)                         # first row of kd / vd

    p_q = q + i_b * s_qb + i_h * s_qh
    p_k = k + i_b * s_kb + i_kh * s_kh
    p_v = v + i_b * s_vb + i_kh * s_vh
    b_q = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :], mask=m_t[:, None], other=0.0)  # [BT, D]

    uni = False
    if USE_UNIFORM:
        uni = tl.load(head_uniform + i_h) != 0
    b_cols = tl.full([CP], -1, tl.int32)                                      # [CP]
    if USE_COLS:
        b_cols = tl.load(col_idx + (i_b * H + i_h) * C + tl.arange(0, CP),
                         mask=tl.arange(0, CP) < C, other=-1).to(tl.int32)
    p_spans = spans
    if USE_SPAN:
        p_spans = spans + i_b * NS * 2

    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _state0(BT, D, NSP, LS)
    sp0, sp1 = 0, 0
    if USE_VAR:
        sp0 = tl.load(redist_span + i_b * 2).to(tl.int32)
        sp1 = tl.load(redist_span + i_b * 2 + 1).to(tl.int32)

    # key range of this query block, and its fully visible middle part [j_a, j_b)
    pos0 = S - T + i_t * BT
    hi = tl.minimum(pos0 + BT, S)
    lo_req = ks
    j_a = (ks + BS - 1) // BS * BS
    if USE_WINDOW:
        lo_req = tl.maximum(ks, pos0 - window + 1)
        j_a = tl.maximum(j_a, (tl.maximum(hi - window, 0) + BS - 1) // BS * BS)
    lo = lo_req // BS * BS
    j_b = (pos0 + 1) // BS * BS
    j_a = tl.minimum(tl.maximum(j_a, lo), hi)
    j_b = tl.minimum(tl.maximum(j_b, j_a), hi)

    if FIXREF and not SEG_ON:
        # the first fully visible block with its row max gives every row a reference; the rest of the range is taken
        # against it, unrescaled (``_fwd_step``'s FIX). Scores far above the reference (sums past 1e30, an accumulator
        # past 1e37, inf or NaN): a second pass over the key range from the start with the running max throughout
        # (j_f = j_b), so the result never depends on the reference. One copy of each loop serves both passes.
        j_f = tl.minimum(j_a + BS, j_b)
        n_pass = 0
        while n_pass < 2:
            for j0 in range(lo, j_a, BS):
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                    b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, True, D, BS, NS, NSP,
                    USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 1, USE_VAR, USE_TMA,
                    FMA, TMAX, LS, PREC, UPCAST)
            for j0 in range(j_a, j_f, BS):
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                    b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS, NSP,
                    USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 1, USE_VAR, USE_TMA,
                    FMA, TMAX, LS, PREC, UPCAST)
            for j0 in range(j_f, j_b, BS):
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                    b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS, NSP,
                    USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 1, USE_VAR, USE_TMA,
                    FMA, TMAX, LS, PREC, UPCAST, True)
            bad = _overflowed(b_l, b_acc)
            if bad:
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _state0(BT, D, NSP, LS)
            j_f = tl.where(bad, j_b, j_f)
            n_pass = tl.where(bad, n_pass + 1, 2)
    else:
        for j0 in range(lo, j_a, BS):
            b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, True, D, BS, NS, NSP,
                USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 1, USE_VAR, USE_TMA,
                FMA, TMAX, LS, PREC, UPCAST)
        if SEG_ON:
            # the sorted column list splits [j_a, j_b) into plain segments and the blocks holding a
            # column (a repeat, -1 or an out-of-range column adds an empty segment and no block)
            p_c = col_idx + (i_b * H + i_h) * C
            cur = j_a
            for c in range(0, C):
                idx = tl.load(p_c + c).to(tl.int32)
                blk = tl.maximum(idx, 0) // BS * BS
                ok = (idx >= 0) & (blk >= cur) & (blk < j_b)
                e = tl.where(ok, blk, cur)
                for j0 in range(cur, e, BS):
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                        b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                        b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS,
                        NSP, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 0, USE_VAR,
                        USE_TMA, FMA, TMAX, LS, PREC, UPCAST)
                for j0 in range(e, tl.where(ok, e + BS, e), BS):
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                        b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                        b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS,
                        NSP, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 2, USE_VAR,
                        USE_TMA, FMA, TMAX, LS, PREC, UPCAST)
                cur = tl.where(ok, e + BS, cur)
            for j0 in range(cur, j_b, BS):
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                    b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS, NSP,
                    USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 0, USE_VAR, USE_TMA,
                    FMA, TMAX, LS, PREC, UPCAST)
        else:
            for j0 in range(j_a, j_b, BS):
                b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
                    b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
                    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS, NSP,
                    USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 1, USE_VAR, USE_TMA,
                    FMA, TMAX, LS, PREC, UPCAST)
    for j0 in range(j_b, hi, BS):
        b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
            b_q, p_k, p_v, kd, vd, row0, s_ks, s_vs, j0, p_pos, ks, S, window, scale, softcap, uni,
            b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, True, D, BS, NS, NSP,
            USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, LOOP_SPAN, USE_COLS, 1, USE_VAR, USE_TMA,
            FMA, TMAX, LS, PREC, UPCAST)

    if LS:
        b_l = tl.sum(b_l, 1)                                                  # [BT] the lanes' partial sums
        b_ent = tl.sum(b_ent, 1)                                              # [BT]
    b_qe = b_q                                                                # [BT, D] q of the epilogue
    if RELOAD_Q:
        b_qe = tl.load(p_q + o_t[:, None] * s_qt + o_d[None, :], mask=m_t[:, None], other=0.0)
    if USE_SPAN:
        if SPAN_POST:
            # span post-pass: only the spans' key blocks, exp2 against the final max
            for i in tl.static_range(NS):
                s0 = tl.load(p_spans + 2 * i).to(tl.int32)
                s1 = tl.load(p_spans + 2 * i + 1).to(tl.int32)
                b_c = _span_mass(b_qe, p_k, s_ks, s0, s1, lo_req, hi, p_pos, ks, S, window, scale, softcap,
                                 uni, b_m, D, BS, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, PREC, UPCAST)
                b_spm += tl.where(tl.arange(0, NSP)[None, :] == i, b_c[:, None], 0.0)

    # epilogue: a row sees a key iff its position is past the padding (the window holds itself)
    m_ok = m_t & (p_pos >= ks)                                                # [BT]
    b_l = tl.where(m_ok, b_l, 1.0)
    b_o = b_acc / b_l[:, None]                                                # [BT, D]
    if USE_COLS:
        if USE_VAR:
            keep = tl.load(redist_keep + i_h).to(tl.float32)
            r_from = tl.load(redist_from + i_b).to(tl.int32)
            b_ms = tl.zeros([BT], tl.float32)                                 # [BT] sink mass
            b_msi = tl.zeros([BT], tl.float32)                                # [BT] sink mass in the span
            b_os = tl.zeros([BT, D], tl.float32)                              # [BT, D] sinks' p v
            for c in tl.static_range(C):
                idx = tl.load(col_idx + (i_b * H + i_h) * C + c).to(tl.int32)
                b_pc, b_vc = _gather_col(b_qe, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale,
                                         softcap, uni, b_m, b_l, D, True, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM)
                b_ms += b_pc
                b_msi += tl.where((idx >= sp0) & (idx < sp1), b_pc, 0.0)
                b_os += b_pc[:, None] * b_vc[None, :]
            b_den = b_tm / b_l                                                # [BT] target mass
            b_mass = b_den + b_msi                                            # [BT] span mass
            b_qs = b_msi / (b_mass + 1e-6)
            m_sel = (p_pos >= r_from) & (b_qs <= redist_rho) & (b_mass >= redist_min_mass) & (b_den > 0)
            m_sel = m_sel & ((tl.zeros([BT], tl.float32) + keep) < 1.0)
            b_gain = (1.0 - keep) * b_ms / tl.where(m_sel, b_den, 1.0)        # [BT]
            b_o = tl.where(m_sel[:, None], b_o + keep * b_os + b_gain[:, None] * (b_acc2 / b_l[:, None]), b_o + b_os)
        else:
            beta = tl.load(col_scale + i_b * H + i_h).to(tl.float32)
            b_mc = tl.zeros([BT], tl.float32)                                 # [BT]
            b_oc = tl.zeros([BT, D], tl.float32)                              # [BT, D]
            for c in tl.static_range(C):
                idx = tl.load(col_idx + (i_b * H + i_h) * C + c).to(tl.int32)
                b_pc, b_vc = _gather_col(b_qe, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale,
                                         softcap, uni, b_m, b_l, D, True, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM)
                b_mc += b_pc
                b_oc += b_pc[:, None] * b_vc[None, :]
            # rows with visible keys outside C: p' = beta p on C, (1 - beta m) p / (1 - m) elsewhere, and
            # sum_{j not in C} p_j v_j / (1 - m) = acc / l_rest, with no cancellation when m is near 1
            m_ed = b_lr > 0
            b_rest = b_acc / tl.where(m_ed, b_lr, 1.0)[:, None]               # [BT, D]
            b_o = tl.where(m_ed[:, None], (1.0 - beta * b_mc)[:, None] * b_rest + beta * b_oc, b_o + b_oc)
    b_o = tl.where(m_ok[:, None], b_o, 0.0)
    if USE_HMEAN:
        on = tl.load(head_mean_on + i_h) != 0
        b_hm = tl.load(head_mean + i_h * D + o_d).to(tl.float32)              # [D]
        b_o = tl.where(m_ok[:, None] & on, b_hm[None, :], b_o)
    if USE_HSCALE:
        b_o = b_o * tl.load(head_scale + i_h).to(tl.float32)
    p_o = o + i_b * s_ob + i_h * s_oh + o_t[:, None] * s_ot + o_d[None, :]
    tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_t[:, None])

    o_row = (i_b * H + i_h) * T + o_t                                         # [BT] row of [B, H, T]
    b_lse2 = b_m + tl.log2(b_l)                                               # [BT] base-2 lse
    if STORE_LSE:
        if LSE_NEG2:
            b_lse = tl.where(m_ok, -b_lse2, float("inf"))
        else:
            b_lse = tl.where(m_ok, b_lse2 * LN2, float("-inf"))
        tl.store(lse + o_row, b_lse, mask=m_t)
    if STORE_AD:
        b_a = tl.where(m_ok, -b_lse2 / (scale * LOG2E), 0.0)                  # [BT] raw-score units
        a1 = b_a.to(tl.bfloat16).to(tl.float32)
        r1 = b_a - a1
        a2 = r1.to(tl.bfloat16).to(tl.float32)
        a3 = (r1 - a2).to(tl.bfloat16).to(tl.float32)
        o_c = tl.arange(0, 16)                                                # [16]
        b_ad = tl.where(o_c[None, :] == 0, a1[:, None], tl.where(o_c[None, :] == 1, a2[:, None],
                                                                 tl.where(o_c[None, :] == 2, a3[:, None], 0.0)))
        tl.store(adq + o_row[:, None] * 16 + o_c[None, :], b_ad.to(tl.bfloat16), mask=m_t[:, None])
    if USE_ENTROPY:
        b_h = tl.where(m_ok, (tl.log2(b_l) - b_ent / b_l) * LN2, 0.0)
        tl.store(ent + o_row, b_h, mask=m_t)
    if USE_SPAN:
        o_ns = tl.arange(0, NSP)
        b_sm = tl.where(m_ok[:, None], b_spm / b_l[:, None], 0.0)             # [BT, NSP]
        tl.store(spm + o_row[:, None] * NS + o_ns[None, :], b_sm, mask=m_t[:, None] & (o_ns[None, :] < NS))
    if USE_SINK:
        for c in tl.static_range(P):
            idx = tl.load(sink_pos + i_b * P + c).to(tl.int32)
            b_pc, b_vc = _gather_col(b_qe, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale,
                                     softcap, uni, b_m, b_l, D, False, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM)
            tl.store(snk + o_row * P + c, tl.where(m_ok, b_pc, 0.0), mask=m_t)


# cache keys in a fixed order at import (jit_utils.stable_cache_keys: Triton 3.6 keys depend on hashing order)
jit_utils.stable_cache_keys(jit_utils, sys.modules[__name__])
