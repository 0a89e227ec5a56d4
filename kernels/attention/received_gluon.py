"""Received-mass pass, fully visible query blocks, in Gluon (Hopper: TMA ring, asynchronous warpgroup MMAs).

The Triton kernel (``received_kernel.received_fwd_kernel``) spends most of its time in the loop over the query
blocks that see every key of the program's key block (no mask). That loop is this kernel; the Triton kernel, launched
first with SKIP_FULL, still does the masked blocks (the diagonal, the window's edge, rows past the last full block)
and writes its sums; this one adds the full blocks' sums to them. Same grid (key block, batch x head), same key
blocks (BS) and the same [t_a, t_b) range (computed with the Triton kernel's query block BTR), so the two cover every
(query, key) pair once, in a fixed order: deterministic, no atomics.

Per program: the key block K [BS, D] is loaded once by TMA; query blocks Q [BT, D] and the prefill kernel's split
addend A [BT, 16] (``fused.split_addend``'s layout: -lse2 / c in three bf16 parts) stream through an NBUF-stage TMA
ring. Per query block, S^T = K Q^T + ones . A^T (two asynchronous MMAs: the addend costs no instruction per score),
issued before the previous block's exponentials so the tensor cores run under them; then p = 2^(S^T c + SHIFT) in
fp16 and the column sums (here: row sums of P^T) by one more MMA, P^T . e0 with P^T in registers (no add per
score). SHIFT (2^10) keeps the fp16 probabilities out of the subnormal range down to 2^-24; the sums are divided by
2^SHIFT at the end.

Hopper (sm_90) only; no interpreter. ``supported`` says when the dispatcher may use it.
"""
from __future__ import annotations

import os

import torch

try:                                                                          # Triton >= 3.5 with Gluon
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    HAVE_GLUON = True
except ImportError:                                                           # pragma: no cover (older Triton)
    HAVE_GLUON = False

SHIFT = 10            # p is computed as 2^SHIFT * p in fp16 (max 1024; subnormal only below 2^-24 of the true p)


if HAVE_GLUON:
    @gluon.jit
    def received_full_kernel(
        qd, kd, ad, rsum, key_start, T, S, window, c2,
        H: gl.constexpr, G: gl.constexpr, KV: gl.constexpr, D: gl.constexpr, BS: gl.constexpr,
        BT: gl.constexpr, BTR: gl.constexpr, NBUF: gl.constexpr, SHIFT: gl.constexpr, USE_WINDOW: gl.constexpr,
        WS: gl.constexpr,
    ):
        """rsum [B, H, S] += the column sums of the fully visible query blocks of key block program_id(0) in (batch x
        head) program_id(1). qd: q as [B * H * T, D] ([BT, D] blocks); kd: k as [B * KV * S, D] ([BS, D]);
        ad: the split addend as [B * H * T, 16] bf16 ([BT, 16]); c2 = scale * log2(e). WS: a one-warp partition issues
        the TMA loads (empty / ready barriers per stage), the four compute warps only wait on their stage."""
        i_s = gl.program_id(0)
        i_bh = gl.program_id(1)
        i_b = i_bh // H
        i_h = i_bh % H
        j0 = i_s * BS
        ks = gl.load(key_start + i_b).to(gl.int32)
        # the Triton kernel's fully visible range, in its query blocks (BTR)
        off = S - T
        t_lo = gl.maximum(j0 - off, 0) // BTR * BTR
        t_hi = T
        t_a = (gl.maximum(j0 + BS - 1 - off, 0) + BTR - 1) // BTR * BTR
        t_b = T // BTR * BTR
        if USE_WINDOW:
            t_hi = gl.minimum(T, gl.maximum(j0 + BS - 1 + window - off, 0))
            x = window + j0 - off - BTR
            t_b = gl.where(x >= 0, gl.minimum(t_b, (x // BTR + 1) * BTR), 0)
        if (j0 < ks) | (j0 + BS > S):
            t_b = 0
        t_a = gl.minimum(gl.maximum(t_a, t_lo), t_hi)
        t_b = gl.minimum(gl.maximum(t_b, t_a), t_hi)
        n = (t_b - t_a) // BT
        if n > 0:
            _full_blocks(qd, kd, ad, rsum, c2, i_b, i_h, i_bh, j0, t_a, n, T, S, H, G, KV, D, BS, BT, NBUF, SHIFT, WS)

    @gluon.jit
    def _full_blocks(qd, kd, ad, rsum, c2, i_b, i_h, i_bh, j0, t_a, n, T, S,
                     H: gl.constexpr, G: gl.constexpr, KV: gl.constexpr, D: gl.constexpr, BS: gl.constexpr,
                     BT: gl.constexpr, NBUF: gl.constexpr, SHIFT: gl.constexpr, WS: gl.constexpr):
        """The n query blocks from t_a against keys j0 + [0, BS): adds their column sums to rsum."""
        r_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[BS // 16, 1],
                                                           instr_shape=[16, 8, 16])
        blk: gl.constexpr = gl.BlockedLayout([1, 1], [32, 1], [BS // 16, 1], [1, 0])
        ones_a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BS, 16], gl.bfloat16)
        e0_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([8, BT], gl.float16)

        k_s = gl.allocate_shared_memory(kd.dtype, [BS, D], kd.layout)
        q_s = gl.allocate_shared_memory(qd.dtype, [NBUF, BT, D], qd.layout)
        a_s = gl.allocate_shared_memory(ad.dtype, [NBUF, BT, 16], ad.layout)
        c16 = gl.arange(0, 16, layout=gl.SliceLayout(0, blk))
        ones_a = gl.full([BS, 16], 0.0, gl.float32, blk) + gl.where(c16 < 3, 1.0, 0.0)[None, :]      # [BS, 16]
        one_s = gl.allocate_shared_memory(gl.bfloat16, [BS, 16], ones_a_layout, ones_a.to(gl.bfloat16))
        # e0 stored N-major ([8, BT], row 0 ones), the MMA reads its [BT, 8] transpose (K-major, as Q^T)
        r8 = gl.arange(0, 8, layout=gl.SliceLayout(1, blk))
        e0 = gl.full([8, BT], 0.0, gl.float32, blk) + gl.where(r8 == 0, 1.0, 0.0)[:, None]            # [8, BT]
        e0_s = gl.allocate_shared_memory(gl.float16, [8, BT], e0_layout, e0.to(gl.float16)).permute((1, 0))
        bars = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())     # stage landed
        empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())    # stage read (WS)
        kbar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        for i in gl.static_range(NBUF):
            mbarrier.init(bars.index(i), count=1)
            mbarrier.init(empty.index(i), count=1)
        mbarrier.init(kbar, count=1)
        fence_async_shared()

        q_row0 = i_bh * T + t_a                                               # row of qd / ad of the first block
        k_row = (i_b * KV + i_h // G) * S + j0
        nbytes: gl.constexpr = BT * D * 2 + BT * 16 * 2
        mbarrier.expect(kbar, BS * D * 2)
        tma.async_copy_global_to_shared(kd, [k_row, 0], kbar, k_s)
        if WS:
            racc, = gl.warp_specialize([
                (_consume, (k_s, q_s, a_s, one_s, e0_s, bars, empty, kbar, n, c2, qd, ad, q_row0,
                            BS, BT, NBUF, SHIFT, True)),
                (_produce, (qd, ad, q_s, a_s, bars, empty, q_row0, n, BT, NBUF)),
            ], [1], [24])
        else:
            for i in gl.static_range(NBUF):
                if i < n:
                    mbarrier.expect(bars.index(i), nbytes)
                    tma.async_copy_global_to_shared(qd, [q_row0 + i * BT, 0], bars.index(i), q_s.index(i))
                    tma.async_copy_global_to_shared(ad, [q_row0 + i * BT, 0], bars.index(i), a_s.index(i))
            racc, = _consume(k_s, q_s, a_s, one_s, e0_s, bars, empty, kbar, n, c2, qd, ad, q_row0,
                             BS, BT, NBUF, SHIFT, False)
        for i in gl.static_range(NBUF):
            mbarrier.invalidate(bars.index(i))
            mbarrier.invalidate(empty.index(i))
        mbarrier.invalidate(kbar)

        col = gl.sum(racc, axis=1) * (1.0 / (1 << SHIFT))                    # [BS] (only column 0 is nonzero)
        o_j = j0 + gl.arange(0, BS, layout=gl.SliceLayout(1, r_layout))
        p_r = rsum + i_bh.to(gl.int64) * S + o_j
        gl.store(p_r, gl.load(p_r) + col)

    @gluon.jit
    def _consume(k_s, q_s, a_s, one_s, e0_s, bars, empty, kbar, n, c2, qd, ad, q_row0, BS: gl.constexpr,
                 BT: gl.constexpr, NBUF: gl.constexpr, SHIFT: gl.constexpr, WS: gl.constexpr):
        """The compute warps: (racc [BS, 8],) whose column 0 holds 2^SHIFT times the column sums of the n blocks."""
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[BS // 16, 1],
                                                           instr_shape=[16, BT, 16])
        r_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[BS // 16, 1],
                                                           instr_shape=[16, 8, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=r_layout, k_width=2)
        mbarrier.wait(kbar, 0)
        zero_s = gl.zeros([BS, BT], gl.float32, s_layout)
        racc = gl.zeros([BS, 8], gl.float32, r_layout)
        # block 0's scores; then pairs of blocks with two score tiles that swap roles (no register copies): each
        # block's scores are issued on the tensor cores before the previous block's exponentials
        # (NBUF = 2: the pair's stages are 1 and 0, known when compiling: no address arithmetic in the loop)
        s_a = _scores(k_s, q_s, a_s, one_s, zero_s, bars, 0, 0, NBUF)
        s_a = warpgroup_mma_wait(num_outstanding=0, deps=(s_a, ))
        _release(qd, ad, q_s, a_s, bars, empty, q_row0, 0, 0, n, BT, NBUF, WS)
        for i in range(1, n - 1, 2):
            st_b = 1 if NBUF == 2 else i % NBUF
            st_a = 0 if NBUF == 2 else (i + 1) % NBUF
            s_b = _scores(k_s, q_s, a_s, one_s, zero_s, bars, i, st_b, NBUF)
            racc = _colsum(s_a, c2, e0_s, racc, p_layout, SHIFT)
            s_b, racc = warpgroup_mma_wait(num_outstanding=0, deps=(s_b, racc))
            _release(qd, ad, q_s, a_s, bars, empty, q_row0, i, st_b, n, BT, NBUF, WS)
            s_a = _scores(k_s, q_s, a_s, one_s, zero_s, bars, i + 1, st_a, NBUF)
            racc = _colsum(s_b, c2, e0_s, racc, p_layout, SHIFT)
            s_a, racc = warpgroup_mma_wait(num_outstanding=0, deps=(s_a, racc))
            _release(qd, ad, q_s, a_s, bars, empty, q_row0, i + 1, st_a, n, BT, NBUF, WS)
        if n % 2 == 0:                                                        # one block left: n - 1
            s_b = _scores(k_s, q_s, a_s, one_s, zero_s, bars, n - 1, (n - 1) % NBUF, NBUF)
            racc = _colsum(s_a, c2, e0_s, racc, p_layout, SHIFT)
            s_b, racc = warpgroup_mma_wait(num_outstanding=0, deps=(s_b, racc))
            racc = _colsum(s_b, c2, e0_s, racc, p_layout, SHIFT)
            racc = warpgroup_mma_wait(num_outstanding=0, deps=(racc, ))
        else:
            racc = _colsum(s_a, c2, e0_s, racc, p_layout, SHIFT)
            racc = warpgroup_mma_wait(num_outstanding=0, deps=(racc, ))
        return (racc, )

    @gluon.jit
    def _produce(qd, ad, q_s, a_s, bars, empty, q_row0, n, BT: gl.constexpr, NBUF: gl.constexpr):
        """The load warp (WS): block i into stage i % NBUF once the compute warps have released it."""
        for i in range(n):
            st = i % NBUF
            mbarrier.wait(empty.index(st), ((i // NBUF) & 1) ^ 1)
            mbarrier.expect(bars.index(st), BT * qd.block_type.shape[1] * 2 + BT * 16 * 2)
            tma.async_copy_global_to_shared(qd, [q_row0 + i * BT, 0], bars.index(st), q_s.index(st))
            tma.async_copy_global_to_shared(ad, [q_row0 + i * BT, 0], bars.index(st), a_s.index(st))

    @gluon.jit
    def _scores(k_s, q_s, a_s, one_s, zero_s, bars, i, st, NBUF: gl.constexpr):
        """Block i's S^T = K Q^T + ones . A^T [BS, BT], issued asynchronously once its TMA stage st (= i % NBUF) has
        landed."""
        mbarrier.wait(bars.index(st), (i // NBUF) & 1)
        s = warpgroup_mma(k_s, q_s.index(st).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        return warpgroup_mma(one_s, a_s.index(st).permute((1, 0)), s, is_async=True)

    @gluon.jit
    def _colsum(s, c2, e0_s, racc, p_layout: gl.constexpr, SHIFT: gl.constexpr):
        """racc [BS, 8] + (2^SHIFT * p) . e0 with p = 2^(s * c2) of the score tile s [BS, BT] (asynchronous)."""
        p = gl.exp2(s * c2 + SHIFT).to(gl.float16)                            # [BS, BT]
        return warpgroup_mma(gl.convert_layout(p, p_layout), e0_s, racc, is_async=True)

    @gluon.jit
    def _release(qd, ad, q_s, a_s, bars, empty, q_row0, i, st, n, BT: gl.constexpr, NBUF: gl.constexpr,
                 WS: gl.constexpr):
        """Block i's stage st (= i % NBUF; its MMA done) is free: WS tells the load warp; otherwise it is refilled
        here with block i + NBUF, when there is one."""
        if WS:
            mbarrier.arrive(empty.index(st), count=1)
        elif i + NBUF < n:
            mbarrier.expect(bars.index(st), BT * qd.block_type.shape[1] * 2 + BT * 16 * 2)
            tma.async_copy_global_to_shared(qd, [q_row0 + (i + NBUF) * BT, 0], bars.index(st), q_s.index(st))
            tma.async_copy_global_to_shared(ad, [q_row0 + (i + NBUF) * BT, 0], bars.index(st), a_s.index(st))


def _shared(block: list, dtype):
    return gl.NVMMASharedLayout.get_default_for(block, {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}[dtype])


def supported(q: torch.Tensor, common: dict) -> bool:
    """Whether this kernel may take the fully visible blocks: Gluon present, a Hopper GPU, 2-byte inputs, head_dim
    64 / 128, no softcap, and the PROBE_RECEIVED_GLUON switch not "0"."""
    if not HAVE_GLUON or os.environ.get("PROBE_RECEIVED_GLUON", "1") == "0" or not q.is_cuda:
        return False
    if q.element_size() != 2 or q.shape[3] not in (64, 128) or common["softcap"]:
        return False
    return torch.cuda.get_device_capability(q.device)[0] == 9


def launch_args(q, k, split, rsum, key_start, common, BS: int, BTR: int, BT: int, NBUF: int, WS: bool = False) -> tuple:
    """(grid, keyword arguments) of ``received_full_kernel`` (BS // 16 warps: one 16-key row of the MMA each) over
    q [B, H, T, D] and k [B, KV, S, D] whose rows
    form one [rows, D] matrix each (``fused._rows_descriptor`` says so), the prefill kernel's split addend
    [B, H, T, 16] bf16 and rsum [B, H, S] (already written by the Triton pass)."""
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    qd = TensorDescriptor(q, [B * H * T, D], [q.stride(2), 1], [BT, D], _shared([BT, D], q.dtype))
    kd = TensorDescriptor(k, [B * KV * S, D], [k.stride(2), 1], [BS, D], _shared([BS, D], k.dtype))
    ad = TensorDescriptor(split, [B * H * T, 16], [16, 1], [BT, 16], _shared([BT, 16], torch.bfloat16))
    kw = dict(qd=qd, kd=kd, ad=ad, rsum=rsum, key_start=key_start, T=T, S=S, window=common["window"],
              c2=common["scale"] * 1.4426950408889634, H=H, G=H // KV, KV=KV, D=D, BS=BS, BT=BT, BTR=BTR,
              NBUF=NBUF, SHIFT=SHIFT, USE_WINDOW=common["window"] > 0, WS=bool(WS), num_warps=BS // 16)
    if WS:
        # registers are given per warpgroup; with the load warp's group, BS 64: 8 warps x 96 = 24,576 per program, BS
        # 128: 12 x 80 = 30,720 (two programs per SM either way); the load warp takes 24, the compute warps the rest
        # (168 / 108 each; the offline sm_90 build uses ~150 / ~86)
        kw["maxnreg"] = 96 if BS == 64 else 80
    return (-(-S // BS), B * H), kw
