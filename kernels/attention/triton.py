"""Triton kernels of the fused attention op (same signature as ``reference.attention``).

Kernels:
    attention_fwd_kernel: FlashAttention-style forward (online softmax over key blocks, causal /
        sliding-window / left-padding block skipping, GQA) with, on request, lse, entropy, span
        mass (in the key loop), sink mass and ACT column edits (gathered in the epilogue from the
        final max / sum), VAR redistribution (span-target accumulator in the key loop, sink keys
        in the epilogue), uniform heads, head mean / scale.
    supports() refuses (-> reference): stats.full, float64, head_dim not a power of two in 16..256,
        statistics other than top-k together with probability edits, ACT and VAR together, more
        than 16 ACT columns / sink keys / spans / sink positions, window < 1.
    received_fwd_kernel: column sums of the probabilities, one key block per program, reusing
        the lse of the forward pass (QK^T and exp only, no P.V).
    decode_fwd_kernel + decode_combine_kernel: split-KV decode (T == 1) for the output / lse.
Top-k of the last rows is taken by the reference on those few rows (exact, O(H * R * S)).

Run benchmarks with ``python -m kernels.attention.bench`` (never as a script from this folder:
this file would shadow the ``triton`` package).
"""
from __future__ import annotations

import contextlib
import functools

import os
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .api import NO_STATS, AttentionEdits, AttentionResult, StatsRequest, check_shapes
from .reference import attention as reference_attention

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": keeps 0 * (s - m) NaN-free in the entropy sum

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# ----------------------------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation; UPCAST (interpreter only, whose bf16 dot is wrong) multiplies
    in fp32, which is exact for fp16 / bf16 products, so the numerics match the tensor cores'."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _scores2(b_s, scale, scale2, softcap, uni, USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr):
    """Raw q.k -> base-2 logits (scale, optional softcap, optional uniform-head zeroing)."""
    if USE_SOFTCAP:
        b_x = b_s * (scale / softcap)
        b_e = tl.exp2(tl.abs(b_x) * (-2.0 * LOG2E))
        b_th = (1.0 - b_e) / (1.0 + b_e)
        b_s = tl.where(b_x < 0, -b_th, b_th) * (softcap * LOG2E)
    else:
        b_s = b_s * scale2
    if USE_UNIFORM:
        b_s = tl.where(uni, 0.0, b_s)
    return b_s


@triton.jit
def _fwd_step(
    b_q, p_k, p_v, s_ks, s_vs, j0, p_pos, ks, S, window, scale, scale2, softcap, uni,
    b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1,
    MASK: tl.constexpr, D: tl.constexpr, BS: tl.constexpr, NS: tl.constexpr, NSP: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr,
    USE_ENTROPY: tl.constexpr, USE_SPAN: tl.constexpr, USE_COLS: tl.constexpr,
    USE_VAR: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One key block of the online softmax; MASK=False for blocks every query fully sees."""
    o_j = j0 + tl.arange(0, BS)                                               # [BS]
    o_d = tl.arange(0, D)                                                     # [D]
    if MASK:
        m_j = o_j < S
        b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
        b_v = tl.load(p_v + o_j[:, None] * s_vs + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
    else:
        b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :])               # [BS, D]
        b_v = tl.load(p_v + o_j[:, None] * s_vs + o_d[None, :])               # [BS, D]
    b_s = _dot(b_q, tl.trans(b_k), PREC, UPCAST)                           # [BT, BS]
    b_s = _scores2(b_s, scale, scale2, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
    if MASK:
        m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks)         # [BT, BS]
        if USE_WINDOW:
            m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
        b_s = tl.where(m_s, b_s, NEG)
    b_mn = tl.maximum(b_m, tl.max(b_s, 1))                                    # [BT]
    b_p = tl.exp2(b_s - b_mn[:, None])                                        # [BT, BS]
    b_alpha = tl.exp2(b_m - b_mn)                                             # [BT]
    if USE_ENTROPY:
        # running sum of p~ * (s - m), re-based on the new max like the accumulator
        b_ent = b_alpha * (b_ent - (b_mn - b_m) * b_l) + tl.sum(b_p * (b_s - b_mn[:, None]), 1)
    if USE_SPAN:
        b_spm = b_spm * b_alpha[:, None]                                      # [BT, NSP]
        for i in tl.static_range(NS):
            s0 = tl.load(p_spans + 2 * i).to(tl.int32)
            s1 = tl.load(p_spans + 2 * i + 1).to(tl.int32)
            if (s0 < j0 + BS) & (s1 > j0):
                m_in = (o_j >= s0) & (o_j < s1)                               # [BS]
                b_c = tl.sum(tl.where(m_in[None, :], b_p, 0.0), 1)            # [BT]
                b_spm += tl.where(tl.arange(0, NSP)[None, :] == i, b_c[:, None], 0.0)
    b_ls = tl.sum(b_p, 1)                                                     # [BT]
    b_l = b_l * b_alpha + b_ls
    b_acc = b_acc * b_alpha[:, None]
    b_pv = b_p
    if USE_COLS:
        # edited columns are kept out of the accumulator and out of l_rest; the epilogue adds
        # them back scaled. Only blocks holding one of them pay for the masking.
        b_lsr = b_ls
        hit = tl.sum(((b_cols >= j0) & (b_cols < j0 + BS)).to(tl.int32), 0) > 0
        if hit:
            m_c = tl.sum((o_j[:, None] == b_cols[None, :]).to(tl.int32), 1) > 0  # [BS]
            b_pv = tl.where(m_c[None, :], 0.0, b_p)
            b_lsr = tl.sum(b_pv, 1)
        b_lr = b_lr * b_alpha + b_lsr
    if USE_VAR:
        # VAR: mass and partial output of the span's non-sink keys (the redistribution targets)
        b_acc2 = b_acc2 * b_alpha[:, None]
        b_tm = b_tm * b_alpha
        if (sp0 < j0 + BS) & (sp1 > j0):
            m_snk = tl.sum((o_j[:, None] == b_cols[None, :]).to(tl.int32), 1) > 0  # [BS]
            m_tg = (o_j >= sp0) & (o_j < sp1) & (m_snk == 0)                 # [BS]
            b_pt = tl.where(m_tg[None, :], b_p, 0.0)                          # [BT, BS]
            b_tm += tl.sum(b_pt, 1)
            b_acc2 += _dot(b_pt.to(b_v.dtype), b_v, PREC, UPCAST)
    b_acc += _dot(b_pv.to(b_v.dtype), b_v, PREC, UPCAST)           # [BT, D]
    return b_mn, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm


@triton.jit
def _gather_col(
    b_q, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale, scale2, softcap, uni, b_m, b_l,
    D: tl.constexpr, LOAD_V: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    USE_UNIFORM: tl.constexpr,
):
    """Probability of key ``idx`` for every query of the block (from the final max and sum)."""
    o_d = tl.arange(0, D)                                                     # [D]
    idx_s = tl.maximum(idx, 0)
    b_k = tl.load(p_k + idx_s * s_ks + o_d).to(tl.float32)                    # [D]
    b_s = tl.sum(b_q.to(tl.float32) * b_k[None, :], 1)                        # [BT]
    b_s = _scores2(b_s, scale, scale2, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
    m_vis = (idx >= 0) & (idx >= ks) & (idx <= p_pos)                         # [BT]
    if USE_WINDOW:
        m_vis = m_vis & ((p_pos - idx) < window)
    b_p = tl.where(m_vis, tl.exp2(b_s - b_m) / b_l, 0.0)                      # [BT]
    if LOAD_V:
        b_v = tl.load(p_v + idx_s * s_vs + o_d).to(tl.float32)                # [D]
    else:
        b_v = b_k
    return b_p, b_v


# ----------------------------------------------------------------------------------------------
# forward kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def attention_fwd_kernel(
    q, k, v, o, lse, ent, spm, snk,
    key_start, sink_pos, spans, col_idx, col_scale, head_uniform, head_mean, head_mean_on, head_scale,
    redist_span, redist_from, redist_keep, redist_rho, redist_min_mass,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs, s_ob, s_ot, s_oh,
    scale, scale2, softcap, window, T, S,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
    NS: tl.constexpr, NSP: tl.constexpr, P: tl.constexpr, C: tl.constexpr, CP: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, STORE_LSE: tl.constexpr,
    USE_ENTROPY: tl.constexpr, USE_SPAN: tl.constexpr, USE_SINK: tl.constexpr,
    USE_COLS: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_HMEAN: tl.constexpr,
    USE_HSCALE: tl.constexpr, USE_VAR: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    i_kh = i_h // G
    o_t = i_t * BT + tl.arange(0, BT)                                         # [BT]
    o_d = tl.arange(0, D)                                                     # [D]
    m_t = o_t < T
    p_pos = S - T + o_t                                                       # [BT] absolute positions
    ks = tl.load(key_start + i_b).to(tl.int32)

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
    p_spans = spans + i_b * NS * 2

    b_m = tl.full([BT], NEG, tl.float32)                                      # [BT]
    b_l = tl.zeros([BT], tl.float32)                                          # [BT]
    b_lr = tl.zeros([BT], tl.float32)                                         # [BT] sum without ACT columns
    b_ent = tl.zeros([BT], tl.float32)                                        # [BT]
    b_spm = tl.zeros([BT, NSP], tl.float32)                                   # [BT, NSP]
    b_acc = tl.zeros([BT, D], tl.float32)                                     # [BT, D]
    b_acc2 = tl.zeros([BT, D], tl.float32)                                    # [BT, D] VAR targets
    b_tm = tl.zeros([BT], tl.float32)                                         # [BT] VAR target mass
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

    for j0 in range(lo, j_a, BS):
        b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
            b_q, p_k, p_v, s_ks, s_vs, j0, p_pos, ks, S, window, scale, scale2, softcap, uni,
            b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, True, D, BS, NS, NSP,
            USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, USE_SPAN, USE_COLS, USE_VAR, PREC, UPCAST)
    for j0 in range(j_a, j_b, BS):
        b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
            b_q, p_k, p_v, s_ks, s_vs, j0, p_pos, ks, S, window, scale, scale2, softcap, uni,
            b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, False, D, BS, NS, NSP,
            USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, USE_SPAN, USE_COLS, USE_VAR, PREC, UPCAST)
    for j0 in range(j_b, hi, BS):
        b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_acc2, b_tm = _fwd_step(
            b_q, p_k, p_v, s_ks, s_vs, j0, p_pos, ks, S, window, scale, scale2, softcap, uni,
            b_m, b_l, b_lr, b_acc, b_ent, b_spm, b_cols, p_spans, b_acc2, b_tm, sp0, sp1, True, D, BS, NS, NSP,
            USE_WINDOW, USE_SOFTCAP, USE_UNIFORM, USE_ENTROPY, USE_SPAN, USE_COLS, USE_VAR, PREC, UPCAST)

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
                b_pc, b_vc = _gather_col(b_q, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale, scale2,
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
            b_mc = tl.zeros([BT], tl.float32)                                     # [BT]
            b_oc = tl.zeros([BT, D], tl.float32)                                  # [BT, D]
            for c in tl.static_range(C):
                idx = tl.load(col_idx + (i_b * H + i_h) * C + c).to(tl.int32)
                b_pc, b_vc = _gather_col(b_q, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale, scale2,
                                         softcap, uni, b_m, b_l, D, True, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM)
                b_mc += b_pc
                b_oc += b_pc[:, None] * b_vc[None, :]
            # rows with visible keys outside C: p' = beta p on C, (1 - beta m) p / (1 - m) elsewhere, and
            # sum_{j not in C} p_j v_j / (1 - m) = acc / l_rest, with no cancellation when m is near 1
            m_ed = b_lr > 0
            b_rest = b_acc / tl.where(m_ed, b_lr, 1.0)[:, None]                   # [BT, D]
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
    if STORE_LSE:
        b_lse = tl.where(m_ok, (b_m + tl.log2(b_l)) * LN2, float("-inf"))
        tl.store(lse + o_row, b_lse, mask=m_t)
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
            b_pc, b_vc = _gather_col(b_q, p_k, p_v, s_ks, s_vs, idx, p_pos, ks, window, scale, scale2,
                                     softcap, uni, b_m, b_l, D, False, USE_WINDOW, USE_SOFTCAP, USE_UNIFORM)
            tl.store(snk + o_row * P + c, tl.where(m_ok, b_pc, 0.0), mask=m_t)


# ----------------------------------------------------------------------------------------------
# received mass: second pass over key blocks, reusing lse
# ----------------------------------------------------------------------------------------------
@triton.jit
def _received_step(
    b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, scale2, softcap, b_r,
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
    b_s = _dot(b_q, tl.trans(b_k), PREC, UPCAST)                           # [BT, BS]
    b_s = _scores2(b_s, scale, scale2, softcap, False, USE_SOFTCAP, False)
    b_p = tl.exp2(b_s - b_lse[:, None])                                       # [BT, BS]
    if MASK:
        p_pos = S - T + o_t                                                   # [BT]
        m_s = (o_j[None, :] <= p_pos[:, None]) & (o_j[None, :] >= ks) & m_t[:, None] & (o_j[None, :] < S)
        if USE_WINDOW:
            m_s = m_s & ((p_pos[:, None] - o_j[None, :]) < window)
        b_p = tl.where(m_s, b_p, 0.0)
    return b_r + b_p


@triton.jit
def received_fwd_kernel(
    q, k, lse, rsum, key_start,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_ks,
    scale, scale2, softcap, window, T, S,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
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
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, scale2, softcap, b_r,
                             True, D, BT, USE_WINDOW, USE_SOFTCAP, PREC, UPCAST)
    for t0 in range(t_a, t_b, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, scale2, softcap, b_r,
                             False, D, BT, USE_WINDOW, USE_SOFTCAP, PREC, UPCAST)
    for t0 in range(t_b, t_hi, BT):
        b_r = _received_step(b_k, p_q, s_qt, p_lse, t0, o_j, ks, T, S, window, scale, scale2, softcap, b_r,
                             True, D, BT, USE_WINDOW, USE_SOFTCAP, PREC, UPCAST)
    tl.store(rsum + (i_b * H + i_h) * S + o_j, tl.sum(b_r, 0), mask=o_j < S)


# ----------------------------------------------------------------------------------------------
# split-KV decode (T == 1): the G query heads of one kv head share every K/V load
# ----------------------------------------------------------------------------------------------
@triton.jit
def decode_fwd_kernel(
    q, k, v, po, pm, pl, key_start,
    s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs,
    scale, scale2, softcap, window, S, chunk, NSPLIT,
    H: tl.constexpr, KV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BG: tl.constexpr,
    BS: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    i_sp, i_bk = tl.program_id(0), tl.program_id(1)
    i_b, i_kh = (i_bk // KV).to(tl.int64), (i_bk % KV).to(tl.int64)
    o_g = tl.arange(0, BG)                                                    # [BG]
    o_d = tl.arange(0, D)                                                     # [D]
    m_g = o_g < G
    ks = tl.load(key_start + i_b).to(tl.int32)
    p_q = q + i_b * s_qb + (i_kh * G) * s_qh
    b_q = tl.load(p_q + o_g[:, None] * s_qh + o_d[None, :], mask=m_g[:, None], other=0.0)  # [BG, D]
    p_k = k + i_b * s_kb + i_kh * s_kh
    p_v = v + i_b * s_vb + i_kh * s_vh
    pos = S - 1
    lo = ks
    if USE_WINDOW:
        lo = tl.maximum(lo, pos - window + 1)
    j_lo = tl.maximum(i_sp * chunk, lo // BS * BS)
    j_hi = tl.minimum(i_sp * chunk + chunk, S)

    b_m = tl.full([BG], NEG, tl.float32)                                      # [BG]
    b_l = tl.zeros([BG], tl.float32)                                          # [BG]
    b_acc = tl.zeros([BG, D], tl.float32)                                     # [BG, D]
    for j0 in range(j_lo, j_hi, BS):
        o_j = j0 + tl.arange(0, BS)                                           # [BS]
        m_j = (o_j < j_hi) & (o_j >= lo)
        b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
        b_v = tl.load(p_v + o_j[:, None] * s_vs + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
        b_s = _dot(b_q, tl.trans(b_k), PREC, UPCAST)                # [BG, BS]
        b_s = _scores2(b_s, scale, scale2, softcap, False, USE_SOFTCAP, False)
        b_s = tl.where(m_j[None, :], b_s, NEG)
        b_mn = tl.maximum(b_m, tl.max(b_s, 1))                                # [BG]
        b_p = tl.exp2(b_s - b_mn[:, None])                                    # [BG, BS]
        b_alpha = tl.exp2(b_m - b_mn)
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        b_acc = b_acc * b_alpha[:, None] + _dot(b_p.to(b_v.dtype), b_v, PREC, UPCAST)
        b_m = b_mn
    o_h = i_b * H + i_kh * G + o_g                                            # [BG] rows of [B, H]
    tl.store(pm + o_h * NSPLIT + i_sp, b_m, mask=m_g)
    tl.store(pl + o_h * NSPLIT + i_sp, b_l, mask=m_g)
    tl.store(po + (o_h * NSPLIT + i_sp)[:, None] * D + o_d[None, :], b_acc, mask=m_g[:, None])


@triton.jit
def decode_combine_kernel(
    po, pm, pl, o, lse, key_start, head_mean, head_mean_on, head_scale,
    s_ob, s_oh, S, NSPLIT,
    H: tl.constexpr, D: tl.constexpr, NSP: tl.constexpr,
    STORE_LSE: tl.constexpr, USE_HMEAN: tl.constexpr, USE_HSCALE: tl.constexpr,
):
    i_bh = tl.program_id(0)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_n = tl.arange(0, NSP)                                                   # [NSP]
    o_d = tl.arange(0, D)                                                     # [D]
    m_n = o_n < NSPLIT
    b_m = tl.load(pm + i_bh * NSPLIT + o_n, mask=m_n, other=NEG)              # [NSP]
    b_l = tl.load(pl + i_bh * NSPLIT + o_n, mask=m_n, other=0.0)              # [NSP]
    b_po = tl.load(po + (i_bh * NSPLIT + o_n)[:, None] * D + o_d[None, :], mask=m_n[:, None], other=0.0)  # [NSP, D]
    m_all = tl.max(b_m, 0)
    b_w = tl.exp2(b_m - m_all)                                                # [NSP]
    l_all = tl.sum(b_l * b_w, 0)
    ok = (S - 1) >= tl.load(key_start + i_b)
    l_all = tl.where(ok, l_all, 1.0)
    b_o = tl.sum(b_po * b_w[:, None], 0) / l_all                              # [D]
    b_o = tl.where(ok, b_o, 0.0)
    if USE_HMEAN:
        on = tl.load(head_mean_on + i_h) != 0
        b_o = tl.where(ok & on, tl.load(head_mean + i_h * D + o_d).to(tl.float32), b_o)
    if USE_HSCALE:
        b_o = b_o * tl.load(head_scale + i_h).to(tl.float32)
    tl.store(o + i_b * s_ob + i_h * s_oh + o_d, b_o.to(o.dtype.element_ty))
    if STORE_LSE:
        tl.store(lse + i_bh, tl.where(ok, (m_all + tl.log2(l_all)) * LN2, float("-inf")))


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _unsupported(q: Tensor, k: Tensor, v: Tensor, kw: dict) -> Optional[str]:
    """Why the kernel does not cover this request (None = it does)."""
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtype {q.dtype} (kernel covers fp16 / bf16 / fp32 with equal q, k, v dtypes)"
    if not (q.is_cuda or _INTERPRET):
        return "not on CUDA"
    D = q.shape[-1]
    if D not in (16, 32, 64, 128, 256):
        return f"head_dim {D}"
    stats: StatsRequest = kw.get("stats", NO_STATS) or NO_STATS
    edits: Optional[AttentionEdits] = kw.get("edits")
    if stats.full:
        return "stats.full (the whole map is the reference's job)"
    window = kw.get("window")
    if window is not None and int(window) < 1:
        return "window < 1"
    if edits is not None:
        if edits.redist_idx is not None and edits.col_idx is not None:
            return "ACT and VAR together (each alone is in the kernel)"
        if edits.redist_idx is not None and edits.redist_idx.shape[-1] > 16:
            return "more than 16 VAR sink keys"
        if edits.edits_probs and (stats.lse or stats.entropy or stats.sink_mass or stats.span_mass
                                  or stats.received):
            return "statistics of edited probabilities (only topk is served with probability edits)"
        if edits.col_idx is not None and edits.col_idx.shape[-1] > 16:
            return "more than 16 ACT columns"
    sink_pos = kw.get("sink_pos")
    if stats.sink_mass and sink_pos is not None and sink_pos.shape[-1] > 16:
        return "more than 16 sink positions"
    spans = kw.get("spans")
    if stats.span_mass and spans is not None and spans.shape[1] > 16:
        return "more than 16 spans"
    return None


def supports(q: Tensor, k: Tensor, v: Tensor, **kw) -> bool:
    """True when the Triton kernels cover this request (else the dispatcher uses the reference)."""
    try:
        check_shapes(q, k, v)
    except ValueError:
        return False
    return _unsupported(q, k, v, kw) is None


# head_dim -> (BT, BS, num_warps, num_stages) overrides (bench.py --tune)
FWD_CONFIG: dict = {}
RECEIVED_CONFIG: dict = {}


def _fwd_config(D: int, itemsize: int) -> tuple[int, int, int, int]:
    """(BT, BS, num_warps, num_stages) of the forward kernel."""
    if _INTERPRET:
        return 32, 32, 4, 1
    if D in FWD_CONFIG and itemsize == 2:
        return FWD_CONFIG[D]
    if D <= 64:
        cfg = (64, 64, 4, 3)        # H200, bench.py --tune at 16K: 0.83 ms vs 0.93 for (128, 64, 4, 3)
    elif D <= 128:
        cfg = (128, 128, 8, 3)      # 4.27 ms vs 4.61 for (128, 64, 8, 3)
    else:
        cfg = (64, 32, 4, 2)
    if itemsize == 4:
        cfg = (min(cfg[0], 64), min(cfg[1], 32), cfg[2], 2)
    return cfg


def _received_config(D: int, itemsize: int) -> tuple[int, int, int, int]:
    """(BT, BS, num_warps, num_stages) of the received-mass kernel (keys stay in registers)."""
    if _INTERPRET:
        return 32, 32, 4, 1
    if D in RECEIVED_CONFIG and itemsize == 2:
        return RECEIVED_CONFIG[D]
    if D <= 64:
        cfg = (64, 128, 4, 3)
    elif D <= 128:
        cfg = (64, 128, 4, 3)
    else:
        cfg = (32, 64, 4, 2)
    if itemsize == 4:
        cfg = (min(cfg[0], 32), min(cfg[1], 64), cfg[2], 2)
    return cfg


_CONST: dict = {}


def _const(kind: str, n: int, dev) -> Tensor:
    """Cached read-only placeholders: float32 / int64 zeros of length n on dev."""
    key = (kind, n, str(dev))
    t = _CONST.get(key)
    if t is None:
        t = torch.zeros(n, dtype=torch.float32 if kind == "f" else torch.long, device=dev)
        _CONST[key] = t
    return t


def _dedup(idx: Tensor) -> Tensor:
    """Indices [..., C] (-1 unused) with repeats set to -1 (device ops, no sync, no recompile)."""
    idx, _ = idx.long().sort(-1)
    if idx.shape[-1] > 1:
        dup = idx[..., 1:] == idx[..., :-1]
        idx = torch.cat([idx[..., :1], torch.where(dup, torch.full_like(idx[..., 1:], -1), idx[..., 1:])], -1)
    return idx.contiguous()


def _received_count(key_start: Tensor, T: int, S: int, window: Optional[int], dtype) -> Tensor:
    """Number of this call's queries that see each key, [B, S] (closed form)."""
    j = torch.arange(S, device=key_start.device)                              # [S]
    first = torch.clamp(j, min=S - T)                                         # first query position >= j
    last = torch.full_like(j, S - 1)
    if window is not None:
        last = torch.clamp(j + int(window) - 1, max=S - 1)
    cnt = (last - first + 1).clamp_min(0)[None, :].expand(key_start.shape[0], S)  # [B, S]
    cnt = torch.where(j[None, :] >= key_start[:, None], cnt, torch.zeros_like(cnt))
    return cnt.to(dtype)


def _on_q_device(fn):
    """Launch under q's CUDA device. Triton launches on the *current* device's stream: with a model
    spread over GPUs (device_map), a layer on cuda:1 while cuda:0 is current ran on cuda:0's stream,
    unordered with cuda:1's work, and its statistics came back stale (found on the H200 x2)."""
    @functools.wraps(fn)
    def on_device(q: Tensor, k: Tensor, v: Tensor, **kw) -> AttentionResult:
        with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():   # CPU: TRITON_INTERPRET
            return fn(q, k, v, **kw)
    return on_device


@_on_q_device
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
    """Causal GQA attention with in-launch statistics and edits, in Triton (see ``kernels.attention.api``).

    Args:
        q: [B, H, T, D]; k, v: [B, KV, S, D] (fp16 / bf16 / fp32, D in 16..256, a power of two).
        scale, key_start [B], window, softcap, sink_pos [B, P], spans [B, NS, 2], stats, edits:
            as in ``reference.attention``.
        block_q: ignored (the reference's memory knob; the kernel tiles by itself).
    Returns:
        AttentionResult with out [B, T, H, D] in q's dtype; lse / entropy [B, H, T],
        sink_mass [B, H, T, P], span_mass [B, H, T, NS], received_sum [B, H, S],
        received_count [B, S], topk_idx / topk_val [B, H, R, k], all float32, when requested.
    """
    why = _unsupported(q, k, v, {"stats": stats, "edits": edits, "window": window,
                                 "sink_pos": sink_pos, "spans": spans})
    if why is not None:
        raise NotImplementedError(f"triton attention: {why}")
    B, H, KV, T, S, D = check_shapes(q, k, v)
    G = H // KV
    dev = q.device
    f32 = torch.float32
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    key_start = (_const("i", B, dev) if key_start is None else key_start.to(dev).long().contiguous())
    use_window = window is not None and int(window) < S
    win = int(window) if use_window else 0
    use_softcap = bool(softcap)
    cap = float(softcap) if use_softcap else 1.0
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    scale = float(scale)
    scale2 = scale * 1.4426950408889634
    dummy = _const("f", 2, dev)
    idummy = _const("i", 2, dev)

    out = torch.empty(B, T, H, D, dtype=q.dtype, device=dev)
    res = AttentionResult(out=out)
    ed = edits if edits is not None else AttentionEdits()
    use_hmean = ed.head_mean_on is not None and ed.head_mean is not None
    use_hscale = ed.head_scale is not None
    hmean = ed.head_mean.contiguous() if use_hmean else dummy
    hmean_on = ed.head_mean_on.to(torch.int32).contiguous() if use_hmean else idummy
    hscale = ed.head_scale.to(f32).contiguous() if use_hscale else dummy
    need_lse = stats.lse or stats.received

    plain = not (ed.edits_probs or stats.entropy or stats.sink_mass or stats.span_mass or stats.received)
    if T == 1 and plain:
        lse = torch.empty(B, H, 1, dtype=f32, device=dev) if stats.lse else dummy
        _decode(q, k, v, out, lse, key_start, hmean, hmean_on, hscale, scale, scale2, cap, win,
                use_window, use_softcap, stats.lse, use_hmean, use_hscale, prec)
        if stats.lse:
            res.lse = lse
    else:
        lse = torch.empty(B, H, T, dtype=f32, device=dev) if need_lse else dummy
        ent = torch.empty(B, H, T, dtype=f32, device=dev) if stats.entropy else dummy
        if stats.sink_mass and sink_pos is None:
            sink_pos = key_start[:, None]
        P = sink_pos.shape[1] if stats.sink_mass else 0
        snk = torch.empty(B, H, T, P, dtype=f32, device=dev) if stats.sink_mass else dummy
        sinkp = sink_pos.to(dev).long().contiguous() if stats.sink_mass else idummy
        if stats.span_mass and spans is None:
            raise ValueError("stats.span_mass needs spans [B, NS, 2]")
        NS = spans.shape[1] if stats.span_mass else 0
        spm = torch.empty(B, H, T, NS, dtype=f32, device=dev) if stats.span_mass else dummy
        spn = spans.to(dev).long().contiguous() if stats.span_mass else idummy
        use_var = ed.redist_idx is not None
        use_cols = ed.col_idx is not None or use_var
        if use_var:  # the sink keys, per batch row, take the place of the ACT columns
            C = ed.redist_idx.shape[-1]
            cols = _dedup(ed.redist_idx.to(dev))[:, None, :].expand(B, H, C).contiguous()
            rspan = ed.redist_span.to(dev).long().contiguous()
            rfrom = ed.redist_from.to(dev).long().contiguous()
            rkeep = ed.redist_keep.to(dev).to(f32).contiguous()
        else:
            C = ed.col_idx.shape[-1] if use_cols else 0
            cols = _dedup(ed.col_idx.to(dev)) if use_cols else idummy
            rspan, rfrom, rkeep = idummy, idummy, dummy
        cscale = ed.col_scale.to(f32).contiguous() if ed.col_idx is not None else dummy
        use_uni = ed.head_uniform is not None
        uni = ed.head_uniform.to(torch.int32).contiguous() if use_uni else idummy

        BT, BS, nw, ns = _fwd_config(D, q.element_size())
        if use_var:  # two [BT, D] accumulators
            BT = min(BT, 64 if D <= 128 else 32)
        grid = (triton.cdiv(T, BT), B * H)
        attention_fwd_kernel[grid](
            q, k, v, out, lse, ent, spm, snk,
            key_start, sinkp, spn, cols, cscale, uni, hmean, hmean_on, hscale,
            rspan, rfrom, rkeep, float(ed.redist_rho), float(ed.redist_min_mass),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            scale, scale2, cap, win, T, S,
            H=H, G=G, D=D, BT=BT, BS=BS, NS=NS, NSP=max(2, triton.next_power_of_2(max(NS, 1))),
            P=P, C=C, CP=max(2, triton.next_power_of_2(max(C, 1))),
            USE_WINDOW=use_window, USE_SOFTCAP=use_softcap, STORE_LSE=need_lse,
            USE_ENTROPY=stats.entropy, USE_SPAN=stats.span_mass, USE_SINK=stats.sink_mass,
            USE_COLS=use_cols, USE_UNIFORM=use_uni, USE_HMEAN=use_hmean, USE_HSCALE=use_hscale,
            USE_VAR=use_var, PREC=prec, UPCAST=_INTERPRET, num_warps=nw, num_stages=ns,
        )
        if stats.lse:
            res.lse = lse
        if stats.entropy:
            res.entropy = ent
        if stats.sink_mass:
            res.sink_mass = snk
        if stats.span_mass:
            res.span_mass = spm
        if stats.received:
            rsum = torch.empty(B, H, S, dtype=f32, device=dev)
            RT, RS, rnw, rns = _received_config(D, q.element_size())
            received_fwd_kernel[(triton.cdiv(S, RS), B * H)](
                q, k, lse, rsum, key_start,
                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                scale, scale2, cap, win, T, S,
                H=H, G=G, D=D, BT=RT, BS=RS, USE_WINDOW=use_window, USE_SOFTCAP=use_softcap,
                PREC=prec, UPCAST=_INTERPRET, num_warps=rnw, num_stages=rns,
            )
            res.received_sum = rsum
            res.received_count = _received_count(key_start, T, S, window, f32)

    rows = min(stats.topk_rows, T) if stats.topk else 0
    if rows:
        # exact top-k of the last few rows (edits included) by the reference: O(H * rows * S)
        tail = reference_attention(
            q[:, :, T - rows:], k, v, scale=scale, key_start=key_start, window=window, softcap=softcap,
            stats=StatsRequest(topk=stats.topk, topk_rows=rows), edits=edits)
        res.topk_idx, res.topk_val = tail.topk_idx, tail.topk_val.to(f32)
    return res


_SMS: dict = {}


def _sm_count(dev) -> int:
    """Streaming multiprocessors of dev (132 on an H200; a nominal 4 in the interpreter)."""
    if dev.type != "cuda":
        return 4
    key = str(dev)
    if key not in _SMS:
        _SMS[key] = torch.cuda.get_device_properties(dev).multi_processor_count
    return _SMS[key]


def _decode(q, k, v, out, lse, key_start, hmean, hmean_on, hscale, scale, scale2, cap, win,
            use_window, use_softcap, store_lse, use_hmean, use_hscale, prec) -> None:
    """Split-KV decode for T == 1: partial (max, sum, acc) per key chunk, then one combine."""
    B, H, _, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    G = H // KV
    # one wave: 64-key tiles, 2 stages, so that a few CTAs fit per SM, and as many key chunks as
    # fill those slots (decode is bandwidth-bound: every SM streams K/V for the whole launch)
    BS = 32 if _INTERPRET else (64 if D <= 128 and q.element_size() == 2 else 32)
    stages = 1 if _INTERPRET else 2
    smem = BS * D * q.element_size() * 2 * stages + 16 * D * q.element_size()
    slots = _sm_count(q.device) * max(1, min(4, (224 * 1024) // smem))
    nsplit = max(1, min(512, slots // (B * KV), triton.cdiv(S, BS)))
    chunk = triton.cdiv(triton.cdiv(S, nsplit), BS) * BS
    nsplit = triton.cdiv(S, chunk)
    f32 = torch.float32
    part = torch.empty(B * H * nsplit * (D + 2), dtype=f32, device=q.device)  # one allocation
    po = part[: B * H * nsplit * D]                                          # [B, H, nsplit, D]
    pm = part[B * H * nsplit * D: B * H * nsplit * (D + 1)]                  # [B, H, nsplit]
    pl = part[B * H * nsplit * (D + 1):]                                     # [B, H, nsplit]
    BG = max(16, triton.next_power_of_2(G))
    decode_fwd_kernel[(nsplit, B * KV)](
        q, k, v, po, pm, pl, key_start,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        scale, scale2, cap, win, S, chunk, nsplit,
        H=H, KV=KV, G=G, D=D, BG=BG, BS=BS, USE_WINDOW=use_window, USE_SOFTCAP=use_softcap, PREC=prec, UPCAST=_INTERPRET,
        num_warps=4, num_stages=stages,
    )
    decode_combine_kernel[(B * H,)](
        po, pm, pl, out, lse, key_start, hmean, hmean_on, hscale,
        out.stride(0), out.stride(2), S, nsplit,
        H=H, D=D, NSP=max(2, triton.next_power_of_2(nsplit)),
        STORE_LSE=store_lse, USE_HMEAN=use_hmean, USE_HSCALE=use_hscale, num_warps=4,
    )
