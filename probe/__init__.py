"""probe: attention interpretability and calibration workbench.

Notebook API::

    import probe
    h = probe.load("smollm2")
    with probe.capture(h, stats=("received", "sink", "entropy")) as rec:
        h.model(**h.encode("The capital of France is"))
    rec.layer(18).received_mean  # [B, H, S]
"""
from .errors import ProbeError
from .models import Handle, load
from .capture import Recorder, capture  # binds probe.capture to the function, not the subpackage

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so `import probe` stays light for the CLI's --help and for the app.
    if name == "intervene":
        from interventions import intervene

        return intervene
    if name == "scan":
        from .scanner import scan

        return scan
    if name == "open_report":
        from .report import read_report

        return read_report
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    if name in ("cache", "taps", "ActivationCache"):
        from .capture import taps as _taps

        return getattr(_taps, name)
    if name == "patch":
        from .patching import patch

        return patch
    raise AttributeError(name)


__all__ = ["load", "Handle", "ProbeError", "capture", "Recorder", "intervene", "scan", "open_report", "plot", "cache",
           "taps", "ActivationCache", "patch", "__version__"]
