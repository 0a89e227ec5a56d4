"""Training-free interventions at generate time: ACT, HeadMask, HeadScale (VHR), Redistribute (VAR),
SinkWindow (StreamingLLM), HeadwiseKV (head-wise KV cache), composed by ``intervene`` (order documented in ``interventions.core``).

    import probe
    from interventions import intervene, ACT, HeadMask      # or: from probe import intervene, ACT, HeadMask
    h = probe.load("smollm2")
    with intervene(h, ACT(beta=0.4), HeadMask("L18H6", mode="zero")):
        h.model.generate(**h.encode("The capital of France is"), max_new_tokens=8)

Names load on first use, so ``probe --help`` (which registers ``interventions.commands``) stays light.
"""
_LAZY = {"ACT": "act", "intervene": "core", "HeadMask": "mask", "Redistribute": "redistribute", "HeadScale": "scale",
         "SinkWindow": "sinkwindow", "HeadwiseKV": "headkv", "parse_spec": "spec", "VAR": "vlm", "VHR": "vlm"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["intervene", "ACT", "HeadMask", "HeadScale", "Redistribute", "SinkWindow", "HeadwiseKV", "parse_spec", "VAR", "VHR"]
