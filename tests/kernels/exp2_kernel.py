"""A test kernel that applies the received pass's ``exp2_poly`` to a vector (imported inside test bodies, after the
conftest has set TRITON_INTERPRET)."""
import triton
import triton.language as tl

from kernels.attention.received_kernel import exp2_poly


@triton.jit
def apply_exp2_poly(x_ptr, y_ptr, N: tl.constexpr):
    """y = exp2_poly(x) for x, y [N] float32."""
    o = tl.arange(0, N)                                                       # [N]
    tl.store(y_ptr + o, exp2_poly(tl.load(x_ptr + o)))
