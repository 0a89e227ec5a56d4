"""Training-free interventions at generate time: ACT, HeadMask, HeadScale (VHR), Redistribute (VAR),
SinkWindow (StreamingLLM), composed by ``intervene`` (order documented in ``interventions.core``).

    import probe
    from interventions import intervene, ACT, HeadMask
    h = probe.load("smollm2")
    with intervene(h, ACT(beta=0.4), HeadMask("L18H6", mode="zero")):
        h.model.generate(**h.encode("The capital of France is"), max_new_tokens=8)
"""
from .act import ACT
from .core import intervene
from .mask import HeadMask
from .redistribute import Redistribute
from .scale import HeadScale
from .sinkwindow import SinkWindow
from .spec import parse_spec
from .vlm import VAR, VHR

__all__ = ["intervene", "ACT", "HeadMask", "HeadScale", "Redistribute", "SinkWindow", "parse_spec", "VAR", "VHR"]
