"""``--device``: one option, one default and one check for every command that loads a model."""
from __future__ import annotations

from typing import Optional

from .errors import ProbeError

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def resolve_device(device: Optional[str]) -> str:
    """'auto' / None -> 'cuda' or 'cpu'; 'cpu', 'cuda', 'cuda:N' checked against this machine.

    Raises ProbeError (one line naming the fix) for other names, CUDA without a GPU, or N too large.
    """
    device = (device or DEFAULT_DEVICE).strip().lower()
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ProbeError(f"--device {device!r} is not a device", "use auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    import torch

    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda" if n_gpu else "cpu"
    if n_gpu == 0:
        raise ProbeError(f"--device {device}: no CUDA device on this machine", "use --device cpu (or auto)")
    if ":" in device and int(device[5:]) >= n_gpu:
        raise ProbeError(f"--device {device}: only {n_gpu} CUDA device(s)", f"use cuda:0..cuda:{n_gpu - 1}")
    return device
