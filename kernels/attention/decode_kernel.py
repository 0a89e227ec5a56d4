"""Split-KV decode kernels (one query per sequence, T == 1), edits included.

``decode_fwd_kernel``: one program per (key chunk, batch x kv head); the G query heads of a kv head
share every K/V load. It writes partial (max, sum, acc) per chunk and, with ACT columns / VAR sink
keys, leaves those keys out of the accumulator (and out of a second sum, l_rest, for ACT), and
accumulates VAR's span targets separately. The column test runs only in programs whose chunk holds
an edited column or the VAR span (decided once per program, outside the key loop); every other
program runs the plain loop. How such a chunk is run is COL_MODE (chunk / block / split / bits / span, see
the kernel; ``fused.decode_edit_config`` picks one per shape).
``decode_combine_kernel``: one program per (batch, head): merges the chunks, gathers the few edited
columns from q and the final max / sum, and applies ACT / VAR / head mean / head scale exactly as
the prefill epilogue does (no 1 - m cancellation). With FUSED the split kernel runs the same combine
(``_combine_head``) itself, in the program that finishes a (batch, kv head) last: one launch per step.
"""
from __future__ import annotations

import sys

import triton
import triton.language as tl

from . import jit_utils
from .jit_utils import INTERPRET, LN2, NEG, dot, precision, scores2


@triton.jit
def _decode_special(
    b_p, b_v, o_j, p_cols, m_g, b_alpha, b_tm, b_acc2, sp0, sp1,
    BS: tl.constexpr, BG: tl.constexpr, C: tl.constexpr, USE_VAR: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """A block that may hold edited columns: their probabilities out of P.V and l_rest, and VAR's
    span targets accumulated. Returns (p for P.V, its row sums, VAR target mass, VAR accumulator)."""
    n_c = tl.zeros([BG, BS], tl.int32)                                        # [BG, BS] edited-column hits
    for c in tl.static_range(C):
        col = tl.load(p_cols + c, mask=m_g, other=-1).to(tl.int32)           # [BG]
        n_c += (o_j[None, :] == col[:, None]).to(tl.int32)
    b_pv = tl.where(n_c > 0, 0.0, b_p)
    b_lsr = tl.sum(b_pv, 1)
    if USE_VAR:
        m_tg = (o_j[None, :] >= sp0) & (o_j[None, :] < sp1) & (n_c == 0)      # [BG, BS] span targets
        b_pt = tl.where(m_tg, b_p, 0.0)
        b_tm = b_tm * b_alpha + tl.sum(b_pt, 1)
        b_acc2 = b_acc2 * b_alpha[:, None] + dot(b_pt.to(b_v.dtype), b_v, PREC, UPCAST)
    return b_pv, b_lsr, b_tm, b_acc2


@triton.jit
def _block_probs(
    b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, b_m,
    D: tl.constexpr, BS: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """The key block j0 + [0, BS) (keys outside [lo, j_hi) masked) for the G query heads b_q [BG, D]: its keys o_j
    [BS], values b_v [BS, D], probabilities b_p [BG, BS] against the new running max b_mn [BG] (base 2), and the
    factor b_alpha [BG] that rescales state kept at the old max b_m."""
    o_j = j0 + tl.arange(0, BS)                                               # [BS]
    o_d = tl.arange(0, D)                                                     # [D]
    m_j = (o_j < j_hi) & (o_j >= lo)
    b_k = tl.load(p_k + o_j[:, None] * s_ks + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
    b_v = tl.load(p_v + o_j[:, None] * s_vs + o_d[None, :], mask=m_j[:, None], other=0.0)  # [BS, D]
    b_s = dot(b_q, tl.trans(b_k), PREC, UPCAST)                               # [BG, BS]
    b_s = scores2(b_s, scale, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
    b_s = tl.where(m_j[None, :], b_s, NEG)
    b_mn = tl.maximum(b_m, tl.max(b_s, 1))                                    # [BG]
    b_p = tl.exp2(b_s - b_mn[:, None])                                        # [BG, BS]
    b_alpha = tl.exp2(b_m - b_mn)                                             # [BG]
    return o_j, b_v, b_p, b_mn, b_alpha


@triton.jit
def _decode_step(
    b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, b_cols, m_g,
    b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1,
    SPECIAL: tl.constexpr, D: tl.constexpr, BS: tl.constexpr, BG: tl.constexpr, C: tl.constexpr,
    USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_LR: tl.constexpr, USE_VAR: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One key block for the G heads of a kv head. SPECIAL: 0 = no edited column or VAR span key in
    this block, 1 = mask the columns (and accumulate VAR's targets) in every block, 2 = test each
    block (b_cols [BG, CP], the span) and mask only blocks that hold one."""
    o_j, b_v, b_p, b_mn, b_alpha = _block_probs(b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, b_m,
                                                D, BS, USE_SOFTCAP, USE_UNIFORM, PREC, UPCAST)
    b_ls = tl.sum(b_p, 1)
    b_l = b_l * b_alpha + b_ls
    b_pv = b_p
    b_lsr = b_ls
    if SPECIAL == 1:
        b_pv, b_lsr, b_tm, b_acc2 = _decode_special(b_p, b_v, o_j, p_cols, m_g, b_alpha, b_tm, b_acc2, sp0, sp1,
                                                    BS, BG, C, USE_VAR, PREC, UPCAST)
    elif SPECIAL == 2:
        hit = tl.sum(tl.sum(((b_cols >= j0) & (b_cols < j0 + BS)).to(tl.int32), 1), 0) > 0
        if USE_VAR:
            hit = hit | ((sp0 < j0 + BS) & (sp1 > j0))
        if hit:
            b_pv, b_lsr, b_tm, b_acc2 = _decode_special(b_p, b_v, o_j, p_cols, m_g, b_alpha, b_tm, b_acc2,
                                                        sp0, sp1, BS, BG, C, USE_VAR, PREC, UPCAST)
        else:
            if USE_VAR:
                b_tm = b_tm * b_alpha
                b_acc2 = b_acc2 * b_alpha[:, None]
    else:
        if USE_VAR:
            b_tm = b_tm * b_alpha
            b_acc2 = b_acc2 * b_alpha[:, None]
    if USE_LR:
        b_lr = b_lr * b_alpha + b_lsr
    b_acc = b_acc * b_alpha[:, None] + dot(b_pv.to(b_v.dtype), b_v, PREC, UPCAST)  # [BG, D]
    return b_mn, b_l, b_lr, b_acc, b_acc2, b_tm


@triton.jit
def _next_special(b_cols, cur, sp0, sp1, BS: tl.constexpr, USE_VAR: tl.constexpr):
    """Start of the first key block at or after ``cur`` (a block start) that holds an edited column of any of the
    G heads (b_cols [BG, CP], -1 unused) or, with VAR, a span key; >= 2**30 when none (one reduction per call)."""
    big = 1 << 30
    nxt = tl.min(tl.min(tl.where(b_cols >= cur, b_cols, big), 1), 0)
    if USE_VAR:
        s0 = tl.maximum(cur, sp0)
        nxt = tl.minimum(nxt, tl.where(s0 < sp1, s0, big))
    return nxt // BS * BS


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _special_bits(b_cols, j_lo, j_hi, sp0, sp1, BS: tl.constexpr, USE_VAR: tl.constexpr):
    """int64 mask of a chunk's key blocks (bit t: the block at j_lo + t * BS, t < 62) that hold an edited column of
    any of the G heads (b_cols [BG, CP], -1 unused) or, with VAR, a span key in [sp0, sp1)."""
    in_c = (b_cols >= j_lo) & (b_cols < j_hi)                                  # [BG, CP]
    t_c = tl.where(in_c, (b_cols - j_lo) // BS, 0).to(tl.int64)
    bits = tl.reduce(tl.reduce(tl.where(in_c, tl.full(t_c.shape, 1, tl.int64) << t_c, 0), 1, _or), 0, _or)
    if USE_VAR:
        s0 = tl.maximum(sp0, j_lo)
        s1 = tl.minimum(sp1, j_hi)
        t0 = tl.minimum(tl.maximum((s0 - j_lo) // BS, 0), 62).to(tl.int64)
        t1 = tl.minimum(tl.maximum((s1 - 1 - j_lo) // BS + 1, 0), 62).to(tl.int64)  # blocks t0 .. t1 - 1
        one = tl.full([], 1, tl.int64)
        bits = bits | tl.where(s0 < s1, (one << t1) - (one << t0), 0)
    return bits


@triton.jit
def _decode_split_block(
    b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, m_g,
    b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm, sp0, sp1,
    D: tl.constexpr, BS: tl.constexpr, BG: tl.constexpr, C: tl.constexpr,
    USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_VAR: tl.constexpr, COLS_OUT: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, ROUTE: tl.constexpr = False,
):
    """One key block that holds an edited column or VAR span key (split / bits / span modes). COLS_OUT (ACT): b_acc2
    takes the columns' P.V (the combine then needs no column gathers). The main state (b_m, b_l, b_acc)
    takes only the keys that are not edited columns; the side state, scaled to its own max b_m2, takes the
    columns' mass b_lx and VAR's target mass / accumulator (sums of positive terms only: no cancellation).
    ROUTE (VAR, span mode): the targets go to the side state only (the chunk's end adds them to the main state)."""
    o_j, b_v, b_p, b_mn, b_alpha = _block_probs(b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, b_m,
                                                D, BS, USE_SOFTCAP, USE_UNIFORM, PREC, UPCAST)
    b_a2 = tl.exp2(b_m2 - b_mn)                                               # [BG] side state to the new max
    n_c = tl.zeros([BG, BS], tl.int32)                                        # [BG, BS] edited-column hits
    for c in tl.static_range(C):
        col = tl.load(p_cols + c, mask=m_g, other=-1).to(tl.int32)           # [BG]
        n_c += (o_j[None, :] == col[:, None]).to(tl.int32)
    b_pv = tl.where(n_c > 0, 0.0, b_p)                                        # [BG, BS] kept keys
    if ROUTE and USE_VAR:
        b_pv = tl.where((o_j[None, :] >= sp0) & (o_j[None, :] < sp1), 0.0, b_pv)   # targets: side state only
    b_l = b_l * b_alpha + tl.sum(b_pv, 1)
    b_acc = b_acc * b_alpha[:, None] + dot(b_pv.to(b_v.dtype), b_v, PREC, UPCAST)  # [BG, D]
    b_px = tl.where(n_c > 0, b_p, 0.0)                                        # [BG, BS] edited columns
    b_lx = b_lx * b_a2 + tl.sum(b_px, 1)
    if COLS_OUT:
        b_acc2 = b_acc2 * b_a2[:, None] + dot(b_px.to(b_v.dtype), b_v, PREC, UPCAST)
    if USE_VAR:
        m_tg = (o_j[None, :] >= sp0) & (o_j[None, :] < sp1) & (n_c == 0)      # [BG, BS] span targets
        b_pt = tl.where(m_tg, b_p, 0.0)
        b_tm = b_tm * b_a2 + tl.sum(b_pt, 1)
        b_acc2 = b_acc2 * b_a2[:, None] + dot(b_pt.to(b_v.dtype), b_v, PREC, UPCAST)
    return b_mn, b_l, b_acc, b_mn, b_lx, b_acc2, b_tm


@triton.jit
def _decode_target_block(
    b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni,
    b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm,
    D: tl.constexpr, BS: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One key block inside VAR's span that holds no sink key (span mode): every visible key is a target, so it
    goes to the side state alone (target mass b_tm, P.V b_acc2), and the main state is only rescaled to the block's
    new max -- one P.V product, as in the plain loop, which this block's loop is like (software-pipelined)."""
    o_j, b_v, b_p, b_mn, b_alpha = _block_probs(b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, b_m,
                                                D, BS, USE_SOFTCAP, USE_UNIFORM, PREC, UPCAST)
    b_a2 = tl.exp2(b_m2 - b_mn)                                               # [BG]
    b_tm = b_tm * b_a2 + tl.sum(b_p, 1)
    b_acc2 = b_acc2 * b_a2[:, None] + dot(b_p.to(b_v.dtype), b_v, PREC, UPCAST)
    return b_mn, b_l * b_alpha, b_acc * b_alpha[:, None], b_mn, b_lx * b_a2, b_acc2, b_tm


@triton.jit
def _interior_end(b_cols, nb, sp0, sp1, j_hi, BS: tl.constexpr):
    """End of the run of key blocks from nb that lie inside the span [sp0, sp1) whole and hold no edited column of
    any head (b_cols [BG, CP], -1 unused): nb when block nb is not such a block."""
    big = 1 << 30
    c_next = tl.min(tl.min(tl.where(b_cols >= nb, b_cols, big), 1), 0) // BS * BS   # the next block with a column
    end = tl.minimum(tl.minimum(sp1 // BS * BS, c_next), j_hi)
    return tl.where(nb >= sp0, tl.maximum(end, nb), nb)


@triton.jit
def _part(ptr, mask, other, CG: tl.constexpr):
    """A load of the split kernel's partials; CG (the fused tail): through L2 only (.cg), never a stale L1 line, since
    other programs of the same launch wrote them."""
    if CG:
        return tl.load(ptr, mask=mask, other=other, cache_modifier=".cg")
    else:
        return tl.load(ptr, mask=mask, other=other)


@triton.jit
def _combine_head(
    i_b, i_h, po, pm, pl, plr, po2, ptm, o, lse, q, k, v, key_start, n_keys, col_idx, col_scale, head_uniform,
    redist_span, redist_from, redist_keep, redist_rho, redist_min_mass, head_mean, head_mean_on, head_scale,
    s_ob, s_oh, s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs,
    scale, softcap, window, S, NSPLIT,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, NSP: tl.constexpr, C: tl.constexpr,
    STORE_LSE: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_COLS: tl.constexpr,
    USE_VAR: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_HMEAN: tl.constexpr, USE_HSCALE: tl.constexpr,
    USE_NKEYS: tl.constexpr, COLS_DONE: tl.constexpr, CG: tl.constexpr,
):
    """o[b, 0, h] [D] (and lse[b, h]) of one (batch b, head h) from its NSPLIT partials, with the edit epilogue of the
    prefill kernel (n_keys: as in ``decode_fwd_kernel``). COLS_DONE (ACT): the columns' mass and P.V come in ptm / po2
    from the split kernel instead of gathers here. CG: the partials are read through L2 only (``_part``)."""
    i_bh = i_b * H + i_h
    o_n = tl.arange(0, NSP)                                                   # [NSP]
    o_d = tl.arange(0, D)                                                     # [D]
    m_n = o_n < NSPLIT
    b_m = _part(pm + i_bh * NSPLIT + o_n, m_n, NEG, CG)                       # [NSP]
    b_l = _part(pl + i_bh * NSPLIT + o_n, m_n, 0.0, CG)                       # [NSP]
    o_pd = (i_bh * NSPLIT + o_n)[:, None] * D + o_d[None, :]                  # [NSP, D]
    b_po = _part(po + o_pd, m_n[:, None], 0.0, CG)                            # [NSP, D]
    m_all = tl.max(b_m, 0)
    b_w = tl.exp2(b_m - m_all)                                                # [NSP]
    l_all = tl.sum(b_l * b_w, 0)
    ks = tl.load(key_start + i_b).to(tl.int32)
    pos = S - 1
    if USE_NKEYS:
        pos = tl.minimum(tl.load(n_keys + i_b).to(tl.int32), S) - 1            # the query's position (see fwd)
    ok = pos >= ks
    l_all = tl.where(ok, l_all, 1.0)
    b_acc = tl.sum(b_po * b_w[:, None], 0)                                    # [D]
    b_o = b_acc / l_all                                                       # [D]
    if COLS_DONE:
        b_mc = tl.sum(_part(ptm + i_bh * NSPLIT + o_n, m_n, 0.0, CG) * b_w, 0) / l_all       # column mass
        b_oc = tl.sum(_part(po2 + o_pd, m_n[:, None], 0.0, CG) * b_w[:, None], 0) / l_all  # [D]
        beta = tl.load(col_scale + i_bh).to(tl.float32)
        b_lr = _part(plr + i_bh * NSPLIT + o_n, m_n, 0.0, CG)                 # [NSP]
        l_rest = tl.sum(b_lr * b_w, 0)
        ed = l_rest > 0
        b_rest = b_acc / tl.where(ed, l_rest, 1.0)                            # [D]
        b_o = tl.where(ed, (1.0 - beta * b_mc) * b_rest + beta * b_oc, b_o + b_oc)
    elif USE_COLS:
        i_kh = i_h // G
        b_q = tl.load(q + i_b * s_qb + i_h * s_qh + o_d).to(tl.float32)       # [D]
        p_k = k + i_b * s_kb + i_kh * s_kh
        p_v = v + i_b * s_vb + i_kh * s_vh
        uni = False
        if USE_UNIFORM:
            uni = tl.load(head_uniform + i_h) != 0
        sp0, sp1 = 0, 0
        if USE_VAR:
            sp0 = tl.load(redist_span + i_b * 2).to(tl.int32)
            sp1 = tl.load(redist_span + i_b * 2 + 1).to(tl.int32)
        b_mc = tl.sum(tl.zeros([D], tl.float32), 0)                           # column mass
        b_msi = tl.sum(tl.zeros([D], tl.float32), 0)                          # VAR: sink mass in the span
        b_oc = tl.zeros([D], tl.float32)                                      # [D] sum of p_c v_c
        for c in tl.static_range(C):
            idx = tl.load(col_idx + i_bh * C + c).to(tl.int32)
            vis = (idx >= 0) & (idx >= ks) & (idx <= pos)
            if USE_WINDOW:
                vis = vis & ((pos - idx) < window)
            # a column out of sight reads the query's own key instead (p_c = 0): a static cache's slots past the
            # query hold anything, NaN included, and 0 * NaN would reach the output
            idx_s = tl.where(vis, idx, tl.maximum(pos, 0))
            b_kc = tl.load(p_k + idx_s * s_ks + o_d).to(tl.float32)          # [D]
            s_c = scores2(tl.sum(b_q * b_kc, 0), scale, softcap, uni, USE_SOFTCAP, USE_UNIFORM)
            p_c = tl.where(vis, tl.exp2(s_c - m_all) / l_all, 0.0)
            b_vc = tl.load(p_v + idx_s * s_vs + o_d).to(tl.float32)          # [D]
            b_mc += p_c
            b_oc += p_c * b_vc
            if USE_VAR:
                b_msi += tl.where((idx >= sp0) & (idx < sp1), p_c, 0.0)
        if USE_VAR:
            keep = tl.load(redist_keep + i_h).to(tl.float32)
            r_from = tl.load(redist_from + i_b).to(tl.int32)
            b_tm = _part(ptm + i_bh * NSPLIT + o_n, m_n, 0.0, CG)             # [NSP]
            b_acc2 = tl.sum(_part(po2 + o_pd, m_n[:, None], 0.0, CG) * b_w[:, None], 0)  # [D]
            den = tl.sum(b_tm * b_w, 0) / l_all                               # target mass
            mass = den + b_msi                                                # span mass
            sel = (pos >= r_from) & (b_msi / (mass + 1e-6) <= redist_rho) & (mass >= redist_min_mass)
            sel = sel & (den > 0) & (keep < 1.0)
            gain = (1.0 - keep) * b_mc / tl.where(sel, den, 1.0)
            b_o = tl.where(sel, b_o + keep * b_oc + gain * (b_acc2 / l_all), b_o + b_oc)
        else:
            beta = tl.load(col_scale + i_bh).to(tl.float32)
            b_lr = _part(plr + i_bh * NSPLIT + o_n, m_n, 0.0, CG)             # [NSP]
            l_rest = tl.sum(b_lr * b_w, 0)
            ed = l_rest > 0
            b_rest = b_acc / tl.where(ed, l_rest, 1.0)                        # [D]
            b_o = tl.where(ed, (1.0 - beta * b_mc) * b_rest + beta * b_oc, b_o + b_oc)
    b_o = tl.where(ok, b_o, 0.0)
    if USE_HMEAN:
        on = tl.load(head_mean_on + i_h) != 0
        b_o = tl.where(ok & on, tl.load(head_mean + i_h * D + o_d).to(tl.float32), b_o)
    if USE_HSCALE:
        b_o = b_o * tl.load(head_scale + i_h).to(tl.float32)
    tl.store(o + i_b * s_ob + i_h * s_oh + o_d, b_o.to(o.dtype.element_ty))
    if STORE_LSE:
        tl.store(lse + i_bh, tl.where(ok, (m_all + tl.log2(l_all)) * LN2, float("-inf")))


# the switches both decode kernels read from which optional arguments are given (the split kernel's epilogue ones
# matter only when it is FUSED)
_FLAGS = {
    "USE_WINDOW": lambda a: a["window"] > 0,
    "USE_SOFTCAP": lambda a: a["softcap"] > 0,
    "USE_COLS": lambda a: a["col_idx"] is not None,
    "USE_VAR": lambda a: a["redist_span"] is not None,
    "USE_UNIFORM": lambda a: a["head_uniform"] is not None,
    "USE_NKEYS": lambda a: a["n_keys"] is not None,
    "STORE_LSE": lambda a: a["lse"] is not None,
    "USE_HMEAN": lambda a: a["head_mean"] is not None,
    "USE_HSCALE": lambda a: a["head_scale"] is not None,
}
_cols_out = lambda a: a["col_idx"] is not None and a["redist_span"] is None and a["ptm"] is not None  # noqa: E731


@triton.heuristics({
    **_FLAGS,
    "USE_LR": lambda a: a["plr"] is not None,
    "COLS_OUT": _cols_out,
    "CP": lambda a: max(2, triton.next_power_of_2(max(a["C"], 1))),
    "PREC": precision,
    "UPCAST": lambda a: INTERPRET,
    "FUSED": lambda a: a["done"] is not None,
})
@triton.jit
def decode_fwd_kernel(
    q, k, v, po, pm, pl, plr, po2, ptm, key_start, n_keys, col_idx, head_uniform, redist_span,
    done, o, lse, col_scale, redist_from, redist_keep, redist_rho, redist_min_mass, head_mean, head_mean_on,
    head_scale, s_ob, s_oh,
    s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs,
    scale, softcap, window, S, chunk, NSPLIT,
    H: tl.constexpr, KV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BG: tl.constexpr,
    BS: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, NSP: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_COLS: tl.constexpr, USE_LR: tl.constexpr,
    USE_VAR: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_NKEYS: tl.constexpr, COLS_OUT: tl.constexpr,
    COL_MODE: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
    FUSED: tl.constexpr, STORE_LSE: tl.constexpr, USE_HMEAN: tl.constexpr, USE_HSCALE: tl.constexpr,
):
    """Partials per (b, h, chunk): pm, pl (, plr) [B, H, NSPLIT] and po (, po2) [B, H, NSPLIT, D],
    ptm [B, H, NSPLIT], all float32. col_idx [B, H, C] deduplicated (-1 unused). COL_MODE, where the edited
    columns (VAR: and its span) are taken out, in a chunk that holds one: 0 = mask every key block of that chunk,
    1 = test each key block and mask only those that hold one, 2 = split: plain runs of key blocks (the loop of
    the unedited kernel) between the blocks that hold one, found by one reduction per such block, 3 = bits: the
    unedited loop over every block with those masked out (one bit test per block), then only those (a chunk of
    at most 62 blocks), 4 = span (VAR; ACT: as split): as split, with each run of span blocks that hold no sink key
    one loop of its own whose targets go to the side state alone. COLS_OUT (ACT, modes 2 / 3): ptm / po2 take the columns' mass and P.V, so the combine
    gathers no column. n_keys [B] (USE_NKEYS; None = S for every row): how many keys row b has -- the query sits at
    n_keys[b] - 1 and keys n_keys[b] .. S - 1 are never read (a static cache's graph-mode step: S its capacity, fixed,
    the filled count on the device); chunks past it write an empty partial.
    FUSED (``done`` [B * KV] int32, zero before the launch, zero again after it): the combine in the same launch --
    each program counts itself done on its (batch, kv head) after its partials are stored (a CTA barrier, then one
    acquire-release atomic add), and the program that counts last runs ``_combine_head`` for the G heads (o, lse,
    col_scale, redist_*, head_mean / head_mean_on / head_scale, s_ob, s_oh, NSP: as ``decode_combine_kernel``'s),
    reading the others' partials through L2, then resets its counter. The order of the combine's sums is fixed, so
    the output does not depend on which program came last (no atomics touch the data)."""
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
    o_h = i_b * H + i_kh * G + o_g                                            # [BG] rows of [B, H]
    n_b = S
    if USE_NKEYS:
        n_b = tl.minimum(tl.load(n_keys + i_b).to(tl.int32), S)
    pos = n_b - 1
    lo = ks
    if USE_WINDOW:
        lo = tl.maximum(lo, pos - window + 1)
    j_lo = tl.maximum(i_sp * chunk, lo // BS * BS)
    j_hi = tl.minimum(i_sp * chunk + chunk, n_b)
    uni = False
    if USE_UNIFORM:
        uni = (tl.load(head_uniform + i_kh * G + o_g, mask=m_g, other=0) != 0)[:, None]  # [BG, 1]
    p_cols = col_idx
    if USE_COLS:
        p_cols = col_idx + o_h * C                                            # [BG] row starts
    sp0, sp1 = 0, 0
    if USE_VAR:
        sp0 = tl.load(redist_span + i_b * 2).to(tl.int32)
        sp1 = tl.load(redist_span + i_b * 2 + 1).to(tl.int32)

    b_m = tl.full([BG], NEG, tl.float32)                                      # [BG]
    b_l = tl.zeros([BG], tl.float32)                                          # [BG]
    b_lr = tl.zeros([BG], tl.float32)                                         # [BG] sum without columns
    b_acc = tl.zeros([BG, D], tl.float32)                                     # [BG, D]
    b_acc2 = tl.zeros([BG, D], tl.float32)                                    # [BG, D] VAR targets
    b_tm = tl.zeros([BG], tl.float32)                                         # [BG] VAR target mass
    b_cols = tl.full([BG, CP], -1, tl.int32)                                  # [BG, CP]
    if USE_COLS:
        o_c = tl.arange(0, CP)
        b_cols = tl.load(p_cols[:, None] + o_c[None, :], mask=m_g[:, None] & (o_c < C)[None, :],
                         other=-1).to(tl.int32)
        n_in = tl.sum(tl.sum(((b_cols >= j_lo) & (b_cols < j_hi)).to(tl.int32), 1), 0)
        special = n_in > 0
        if USE_VAR:
            special = special | ((sp0 < j_hi) & (sp1 > j_lo))
        if COL_MODE == 2 or COL_MODE == 4:
            # 4 = span (VAR): as split, but a run of span blocks without a sink is one pipelined loop whose targets
            # go to the side state alone (split runs each span block alone: a load the pipeline does not hide)
            b_m2 = tl.full([BG], NEG, tl.float32)                             # [BG] max of the side state
            b_lx = tl.zeros([BG], tl.float32)                                 # [BG] edited columns' mass
            cur = j_lo
            while cur < j_hi:
                nb = tl.minimum(_next_special(b_cols, cur, sp0, sp1, BS, USE_VAR), j_hi)
                for j0 in range(cur, nb, BS):
                    b_m, b_l, b_lr, b_acc, b_acc2, b_tm = _decode_step(
                        b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, b_cols, m_g,
                        b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1, 0, D, BS, BG, C,
                        USE_SOFTCAP, USE_UNIFORM, False, False, PREC, UPCAST)
                nx = nb + BS                                                  # where the next run starts
                if COL_MODE == 4 and USE_VAR:
                    ie = _interior_end(b_cols, nb, sp0, sp1, j_hi, BS)
                    for j2 in range(nb, ie, BS):
                        b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm = _decode_target_block(
                            b_q, p_k, p_v, s_ks, s_vs, j2, lo, j_hi, scale, softcap, uni,
                            b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm, D, BS, USE_SOFTCAP, USE_UNIFORM, PREC, UPCAST)
                    nx = tl.where(ie > nb, ie, nb + BS)
                    nb = tl.where(ie > nb, j_hi, nb)                          # an interior run: no special block now
                # the block at nb (if any) as a loop of at most one trip, not an `if`: compiled like the plain
                # loop it needs ~181 registers at d 128 on sm_90, as an `if` 255 and spills
                for j1 in range(nb, tl.minimum(nb + BS, j_hi), BS):
                    b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm = _decode_split_block(
                        b_q, p_k, p_v, s_ks, s_vs, j1, lo, j_hi, scale, softcap, uni, p_cols, m_g,
                        b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm, sp0, sp1, D, BS, BG, C,
                        USE_SOFTCAP, USE_UNIFORM, USE_VAR, COLS_OUT, PREC, UPCAST, COL_MODE == 4)
                cur = nx
            # main state = the kept keys; side state to the final max: l = kept + columns
            b_a2 = tl.exp2(b_m2 - b_m)                                        # [BG]
            b_lr = b_l
            b_l = b_l + b_lx * b_a2
            if USE_VAR:
                b_tm = b_tm * b_a2
                b_acc2 = b_acc2 * b_a2[:, None]
                if COL_MODE == 4:                                             # the targets back into the main state
                    b_l = b_l + b_tm
                    b_acc = b_acc + b_acc2
            if COLS_OUT:
                b_tm = b_lx * b_a2                                            # columns' mass and P.V
                b_acc2 = b_acc2 * b_a2[:, None]
        elif COL_MODE == 3:
            # pass 1: the unedited loop over every block of the chunk, the blocks that hold an edited column (or a
            # VAR span key) masked out whole (one bit test per block); pass 2: those blocks, columns taken out
            bits = _special_bits(b_cols, j_lo, j_hi, sp0, sp1, BS, USE_VAR)
            for j0 in range(j_lo, j_hi, BS):
                hit = ((bits >> ((j0 - j_lo) // BS)) & 1) != 0
                b_m, b_l, b_lr, b_acc, b_acc2, b_tm = _decode_step(
                    b_q, p_k, p_v, s_ks, s_vs, j0, lo, tl.where(hit, j0, j_hi), scale, softcap, uni, p_cols, b_cols,
                    m_g, b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1, 0, D, BS, BG, C,
                    USE_SOFTCAP, USE_UNIFORM, False, False, PREC, UPCAST)
            b_m2 = tl.full([BG], NEG, tl.float32)                             # [BG] max of the side state
            b_lx = tl.zeros([BG], tl.float32)                                 # [BG] edited columns' mass
            while bits != 0:
                t = tl.log2((bits & -bits).to(tl.float32)).to(tl.int32)       # lowest set bit (exact: t < 62)
                j1 = j_lo + t * BS
                for j2 in range(j1, j1 + 1, BS):                              # one trip (see COL_MODE 2)
                    b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm = _decode_split_block(
                        b_q, p_k, p_v, s_ks, s_vs, j2, lo, j_hi, scale, softcap, uni, p_cols, m_g,
                        b_m, b_l, b_acc, b_m2, b_lx, b_acc2, b_tm, sp0, sp1, D, BS, BG, C,
                        USE_SOFTCAP, USE_UNIFORM, USE_VAR, COLS_OUT, PREC, UPCAST)
                bits = bits & (bits - 1)
            b_a2 = tl.exp2(b_m2 - b_m)                                        # [BG]
            b_lr = b_l
            b_l = b_l + b_lx * b_a2
            if USE_VAR:
                b_tm = b_tm * b_a2
                b_acc2 = b_acc2 * b_a2[:, None]
            if COLS_OUT:
                b_tm = b_lx * b_a2                                            # columns' mass and P.V
                b_acc2 = b_acc2 * b_a2[:, None]
        elif special:
            if COL_MODE == 1:
                for j0 in range(j_lo, j_hi, BS):
                    b_m, b_l, b_lr, b_acc, b_acc2, b_tm = _decode_step(
                        b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, b_cols, m_g,
                        b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1, 2, D, BS, BG, C,
                        USE_SOFTCAP, USE_UNIFORM, USE_LR, USE_VAR, PREC, UPCAST)
            else:
                for j0 in range(j_lo, j_hi, BS):
                    b_m, b_l, b_lr, b_acc, b_acc2, b_tm = _decode_step(
                        b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, b_cols, m_g,
                        b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1, 1, D, BS, BG, C,
                        USE_SOFTCAP, USE_UNIFORM, USE_LR, USE_VAR, PREC, UPCAST)
        else:
            for j0 in range(j_lo, j_hi, BS):
                b_m, b_l, b_lr, b_acc, b_acc2, b_tm = _decode_step(
                    b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, b_cols, m_g,
                    b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1, 0, D, BS, BG, C,
                    USE_SOFTCAP, USE_UNIFORM, USE_LR, USE_VAR, PREC, UPCAST)
    else:
        for j0 in range(j_lo, j_hi, BS):
            b_m, b_l, b_lr, b_acc, b_acc2, b_tm = _decode_step(
                b_q, p_k, p_v, s_ks, s_vs, j0, lo, j_hi, scale, softcap, uni, p_cols, b_cols, m_g,
                b_m, b_l, b_lr, b_acc, b_acc2, b_tm, sp0, sp1, 0, D, BS, BG, C,
                USE_SOFTCAP, USE_UNIFORM, USE_LR, USE_VAR, PREC, UPCAST)
    o_p = o_h * NSPLIT + i_sp                                                 # [BG] partial rows
    tl.store(pm + o_p, b_m, mask=m_g)
    tl.store(pl + o_p, b_l, mask=m_g)
    tl.store(po + o_p[:, None] * D + o_d[None, :], b_acc, mask=m_g[:, None])
    if USE_LR:
        tl.store(plr + o_p, b_lr, mask=m_g)
    if USE_VAR or COLS_OUT:
        tl.store(ptm + o_p, b_tm, mask=m_g)
        tl.store(po2 + o_p[:, None] * D + o_d[None, :], b_acc2, mask=m_g[:, None])
    if FUSED:
        tl.debug_barrier()                                                    # every thread's partials stored
        n_done = tl.atomic_add(done + i_bk, 1, sem="acq_rel", scope="gpu")
        if n_done == NSPLIT - 1:                                              # the last of the (b, kv head)'s chunks
            for g in range(G):
                _combine_head(i_b, i_kh * G + g, po, pm, pl, plr, po2, ptm, o, lse, q, k, v, key_start, n_keys,
                              col_idx, col_scale, head_uniform, redist_span, redist_from, redist_keep, redist_rho,
                              redist_min_mass, head_mean, head_mean_on, head_scale, s_ob, s_oh, s_qb, s_qh, s_kb,
                              s_kh, s_ks, s_vb, s_vh, s_vs, scale, softcap, window, S, NSPLIT, H, G, D, NSP, C,
                              STORE_LSE, USE_WINDOW, USE_SOFTCAP, USE_COLS, USE_VAR, USE_UNIFORM, USE_HMEAN,
                              USE_HSCALE, USE_NKEYS, COLS_OUT, True)
            tl.store(done + i_bk, 0)                                          # ready for the next launch


@triton.heuristics({**_FLAGS, "COLS_DONE": _cols_out})
@triton.jit
def decode_combine_kernel(
    po, pm, pl, plr, po2, ptm, o, lse, q, k, v, key_start, n_keys, col_idx, col_scale, head_uniform,
    redist_span, redist_from, redist_keep, redist_rho, redist_min_mass, head_mean, head_mean_on, head_scale,
    s_ob, s_oh, s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs,
    scale, softcap, window, S, NSPLIT,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, NSP: tl.constexpr, C: tl.constexpr,
    STORE_LSE: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, USE_COLS: tl.constexpr,
    USE_VAR: tl.constexpr, USE_UNIFORM: tl.constexpr, USE_HMEAN: tl.constexpr, USE_HSCALE: tl.constexpr,
    USE_NKEYS: tl.constexpr, COLS_DONE: tl.constexpr,
):
    """o [B, 1, H, D] (and lse [B, H, 1]) from the partials, one program per (batch, head): ``_combine_head``."""
    i_bh = tl.program_id(0)
    _combine_head((i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64), po, pm, pl, plr, po2, ptm, o, lse, q, k, v,
                  key_start, n_keys, col_idx, col_scale, head_uniform, redist_span, redist_from, redist_keep,
                  redist_rho, redist_min_mass, head_mean, head_mean_on, head_scale,
                  s_ob, s_oh, s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs, scale, softcap, window, S, NSPLIT,
                  H, G, D, NSP, C, STORE_LSE, USE_WINDOW, USE_SOFTCAP, USE_COLS, USE_VAR, USE_UNIFORM, USE_HMEAN,
                  USE_HSCALE, USE_NKEYS, COLS_DONE, False)


# cache keys in a fixed order at import (jit_utils.stable_cache_keys: Triton 3.6 keys depend on hashing order; the
# split kernel and the combine kernel share _combine_head, so whichever a process hashed first set its key)
jit_utils.stable_cache_keys(jit_utils, sys.modules[__name__])
