"""probe's compute kernels: each op has a PyTorch reference (the CPU path) and a Triton kernel.

Import name note: Hugging Face also ships a package importable as ``kernels``. transformers
only treats it as present when the *distribution* named ``kernels`` is installed with a
version in its accepted range; this project's distribution is ``probe-workbench``, so
transformers ignores this folder (tested in tests/test_packaging.py).
"""
