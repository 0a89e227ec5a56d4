"""Triton helpers shared by the attention kernels: constants, the matmul wrapper, logits."""
from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": keeps 0 * (s - m) NaN-free in the entropy sum

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def stable_cache_keys(*modules) -> int:
    """Compute the Triton cache key of every JIT function of ``modules``, in order (helpers before the kernels
    that call them); returns how many. Triton 3.6 folds a called function's global constants into its caller's
    key only when the callee's key exists already, so a kernel's on-disk cache key depended on which kernel a
    process hashed first: session 4's timed run (decode kernels first) recompiled every prefill kernel its
    precompile processes had compiled, and session 5's compile log showed two keys per kernel, split by the
    processes' first kernel. A fixed order at import gives every process the same keys."""
    n = 0
    for m in modules:
        for obj in list(vars(m).values()):
            fn = obj if isinstance(obj, triton.runtime.JITFunction) else getattr(obj, "fn", None)  # heuristics wrap
            if isinstance(fn, triton.runtime.JITFunction):
                fn.cache_key                                      # noqa: B018 - computed and cached by Triton
                n += 1
    return n


def precision(args) -> str:
    """``@triton.heuristics`` rule: exact fp32 products for fp32 inputs, tensor cores otherwise."""
    return "ieee" if args["q"].element_size() == 4 else "tf32"


@triton.jit
def dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation; UPCAST (interpreter only, whose bf16 dot is wrong) multiplies
    in fp32, which is exact for fp16 / bf16 products, so the numerics match the tensor cores'."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def dot_acc(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b with the addition done by the MMA (fp32 accumulator); UPCAST as in ``dot``."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def lane_sum(x, LANES: tl.constexpr):
    """Sum of a tile [R, C] over its columns: [R] (LANES False), or [R, 4] partial sums, one per lane of the
    MMA accumulator's column quad (LANES: the reduction stays in registers -- columns 2 (t % 4) + {0, 1} + 8 i of a
    row live in lane t % 4 -- and the lanes are summed once, later, instead of by two shuffle levels per call)."""
    if LANES:
        R: tl.constexpr = x.shape[0]
        C: tl.constexpr = x.shape[1]
        y = tl.sum(tl.sum(tl.reshape(x, [R, C // 8, 4, 2]), 1), 2)           # [R, 4]
    else:
        y = tl.sum(x, 1)                                                      # [R]
    return y


@triton.jit
def scores2(b_s, scale, softcap, uni, USE_SOFTCAP: tl.constexpr, USE_UNIFORM: tl.constexpr):
    """Raw q.k -> base-2 logits (scale, optional softcap, optional uniform-head zeroing)."""
    if USE_SOFTCAP:
        b_x = b_s * (scale / softcap)
        b_e = tl.exp2(tl.abs(b_x) * (-2.0 * LOG2E))
        b_th = (1.0 - b_e) / (1.0 + b_e)
        b_s = tl.where(b_x < 0, -b_th, b_th) * (softcap * LOG2E)
    else:
        b_s = b_s * (scale * LOG2E)
    if USE_UNIFORM:
        b_s = tl.where(uni, 0.0, b_s)
    return b_s
