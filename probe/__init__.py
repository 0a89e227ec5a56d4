"""probe: attention interpretability and calibration workbench.

Notebook API::

    import probe
    h = probe.load("smollm2")
    with probe.capture(h, stats=("received", "sink", "entropy")) as rec:
        h.model(**h.encode("The capital of France is"))
    rec.layer(18).received_mean  # [B, H, S]

    from probe import ACT, HeadMask, intervene          # the interventions, re-exported

Everything but ``ProbeError`` loads on first use, so ``import probe`` (and ``probe --help``)
does not import torch.
"""
from .errors import ProbeError

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
    "load": "probe.models", "Handle": "probe.models",
    "capture": "probe.capture", "Recorder": "probe.capture",
    "scan": "probe.scanner",
    "read_report": "probe.report", "Report": "probe.report",
    "intervene": "interventions", "parse_spec": "interventions",
    "ACT": "interventions", "HeadMask": "interventions", "HeadScale": "interventions",
    "Redistribute": "interventions", "SinkWindow": "interventions", "VAR": "interventions", "VHR": "interventions",
    "cache": "probe.capture.taps", "taps": "probe.capture.taps", "ActivationCache": "probe.capture.taps",
    "patch": "probe.patching", "open_report": "probe.report", "plot": "probe.plot",
}
_RENAMED = {"open_report": "read_report"}     # probe.open_report is probe.report.read_report
_MODULES = ("plot",)                          # probe.plot is the module itself


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        value = module if name in _MODULES else getattr(module, _RENAMED.get(name, name))
        if name == "capture":   # bind probe.capture to the function, not the subpackage of the same name
            globals()[name] = value
        return value
    raise AttributeError(f"module 'probe' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["load", "Handle", "ProbeError", "capture", "Recorder", "intervene", "scan", "read_report", "open_report", "Report",
           "plot", "cache", "taps", "ActivationCache", "patch", "parse_spec", "ACT", "HeadMask", "HeadScale",
           "Redistribute", "SinkWindow", "VAR", "VHR", "__version__"]
