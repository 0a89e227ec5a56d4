"""Installing probe (whose top-level package is named `kernels`) must not make transformers think
Hugging Face's `kernels` hub package is present, and GGUF loading must keep working."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys


def test_transformers_does_not_see_hf_kernels():
    code = ("import kernels, transformers.utils.import_utils as iu; "
            "print(kernels.__file__); print(iu.is_kernels_available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].endswith("kernels/__init__.py") and "probe" not in out[0].split("/")[-2]
    assert out[1] == "False"
    assert importlib.util.find_spec("kernels") is not None          # our package is importable as `kernels`
    try:
        importlib.metadata.version("kernels")                        # ... but no distribution named `kernels`
        raise AssertionError("a distribution named 'kernels' is installed")
    except importlib.metadata.PackageNotFoundError:
        pass


def test_gguf_model_loads_with_project_installed(smollm2):
    import torch

    enc = smollm2.encode("The capital of France is")
    with torch.no_grad():
        out = smollm2.model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert "Paris" in smollm2.tokenizer.decode(out[0, enc["input_ids"].shape[1]:])
    assert smollm2.file_hash and len(smollm2.file_hash) == 64
