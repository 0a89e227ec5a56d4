"""The Triton attention launches under q's CUDA device (the stale-stream bug found on two H200s:
a device_map layer on cuda:1 ran on cuda:0's stream and returned stale statistics)."""
from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("triton")
from kernels.attention import StatsRequest, fused  # noqa: E402
from kernels.attention.reference import attention as reference_attention  # noqa: E402


class _OnDevice:
    """A stand-in for a CUDA tensor's device facts (CPU machines cannot make one): just ``is_cuda``,
    ``device`` and ``get_device()``; the guard reads nothing else before handing q to the launch."""

    def __init__(self, device: str):
        self.is_cuda, self.device = True, torch.device(device)

    def get_device(self) -> int:
        return self.device.index


def test_launch_guard_enters_q_device_on_cpu(monkeypatch):
    """CPU test of the guard: the launch runs inside torch.cuda.device(q.device), entered once and left after."""
    entered = []

    @contextlib.contextmanager
    def record(device):
        entered.append(("enter", torch.device(device)))
        yield
        entered.append(("exit", torch.device(device)))

    monkeypatch.setattr(torch.cuda, "device", record)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)        # cuda:0 is current
    seen = []
    guarded = fused._on_q_device(lambda q, k, v, **kw: seen.append(list(entered)) or "result")
    assert guarded(_OnDevice("cuda:1"), None, None) == "result"
    assert seen == [[("enter", torch.device("cuda:1"))]]                  # the launch ran under cuda:1
    assert entered == [("enter", torch.device("cuda:1")), ("exit", torch.device("cuda:1"))]
    entered.clear()
    assert guarded(torch.zeros(1), None, None) == "result" and entered == []   # CPU tensors: no device switch
    assert guarded(_OnDevice("cuda:0"), None, None) == "result" and entered == []  # already current: no switch
    assert fused.attention_validated.__wrapped__ is not None   # every launch (public entry and dispatcher) is guarded


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices in one process (a layer on cuda:1 while cuda:0 is current); "
                           "not run yet: the two-GPU machines were withheld. The CPU guard test above covers "
                           "the launch-under-q's-device wrapper")
def test_layer_on_cuda1_while_cuda0_is_current_matches_the_reference():
    """The two-GPU regression: statistics of a launch on cuda:1 with cuda:0 current equal the CPU reference."""
    torch.manual_seed(0)
    B, H, KV, T, D = 2, 8, 2, 257, 64
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, KV, T, D), torch.randn(B, KV, T, D)
    stats = StatsRequest(received=True, entropy=True, sink_mass=True)
    ref = reference_attention(q.double(), k.double(), v.double(), scale=D ** -0.5, stats=stats)
    torch.cuda.set_device(0)
    big = torch.randn(4096, 4096, device="cuda:0")
    for _ in range(3):                                   # keep cuda:0's stream busy while cuda:1 launches
        big = big @ big
    got = fused.attention(q.to("cuda:1"), k.to("cuda:1"), v.to("cuda:1"), scale=D ** -0.5, stats=stats)
    torch.cuda.synchronize("cuda:1")
    assert torch.cuda.current_device() == 0
    for name in ("out", "entropy", "sink_mass", "received_sum"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a is not None and a.device == torch.device("cuda:1"), name
        assert torch.allclose(a.double().cpu(), b, atol=2e-3, rtol=2e-3), name
