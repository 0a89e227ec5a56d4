"""Kernel tests run the Triton kernels on CPU through Triton's interpreter when CUDA is absent.

TRITON_INTERPRET must be set before ``kernels.attention.triton`` (and Triton's JIT) is imported,
so it is set here, at collection, and the tests import the kernel module inside the test bodies.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
