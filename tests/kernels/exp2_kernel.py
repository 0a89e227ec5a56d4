"""A test kernel that applies the received pass's ``exp2_mix`` to a vector (imported inside test bodies, after the
conftest has set TRITON_INTERPRET)."""
import triton
import triton.language as tl

from kernels.attention.received_kernel import exp2_mix


@triton.jit
def apply_exp2_mix(x_ptr, y_ptr, N: tl.constexpr, MIX: tl.constexpr, UPCAST: tl.constexpr):
    """y = exp2_mix(x) for x, y [N] float32, N a multiple of 64 (a [N / 64, 64] tile, as in the pass)."""
    o = tl.arange(0, N)                                                       # [N]
    x = tl.reshape(tl.load(x_ptr + o), [N // 64, 64])                         # [N / 64, 64]
    y = exp2_mix(x, MIX, UPCAST)
    tl.store(y_ptr + o, tl.reshape(y, [N]))
