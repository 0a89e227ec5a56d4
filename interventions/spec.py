"""``parse_spec``: command-line SPEC strings -> interventions.

Forms (heads as L<layer>H<head>, several joined with ","; options as key=value joined with ","):
  act                               ACT with defaults (beta 0.4, threshold 0.1, layers 2..L-2)
  act:beta=0.4,threshold=0.1        options: beta, threshold, alpha, layers (e.g. 2-28 or 4,8,12)
  act:L18H6,L20H6:beta=0.4          ACT on those heads only
  mask:L18H6                        HeadMask, mode uniform
  mask:L18H6:mode=uniform|zero|mean[,decode_only=1]
  scale:L3H2:alpha=2                HeadScale
  sinkwindow:sinks=4,window=1020    SinkWindow
  redistribute:span=5-20[,sinks=auto|0+3,keep=0.6|transfer=0.4,rho=0.5,min_mass=0.2,layers=2-28,log=1]
  var[:keep=0.6|transfer=0.4,rho=0.5|nonsink_share=0.5,min_mass=0.2,tau=20,preset=code|paper,log=1]   (VLMs)
  vhr[:alpha=2,layers=1+17-29]      VHR with per-sample VHD head choice (VLMs); vhr:L3H2:alpha=2 fixed heads
  headkv:report=DIR,full=0.25,sinks=4,window=256[,column=retrieval_score,select=top|bottom|random|random-layers,
         seed=0,pool=max|mean]      HeadwiseKV (full KV cache for chosen heads); headkv:heads=L18H7+L17H3,window=256
"""
from __future__ import annotations

import re

from probe.errors import ProbeError

NAMES = ("act", "mask", "scale", "sinkwindow", "redistribute", "var", "vhr", "headkv")
VLM_ONLY = ("var",)          # vhr without fixed heads needs a VLM too (checked in check_against)
FORMS = ("act", "act:beta=0.4,threshold=0.1", "mask:L18H6", "mask:L18H6:mode=uniform|zero|mean",
         "scale:L3H2:alpha=2", "sinkwindow:sinks=4,window=1020", "redistribute:span=5-20,keep=0.6", "var:keep=0.6",
         "vhr:alpha=2", "headkv:report=DIR,full=0.25,sinks=4,window=256", "headkv:heads=L18H7+L17H3")
_HEADS = re.compile(r"^L\d+H\d+(,L\d+H\d+)*$", re.IGNORECASE)


def _bad(spec: str, why: str) -> ProbeError:
    return ProbeError(f"bad intervention SPEC {spec!r} ({why})", "valid forms: " + "; ".join(FORMS))


def _flag(value: str) -> bool:
    """A SPEC boolean: 1 / true / yes (any case) -> True; 0 / false / no -> False."""
    v = str(value).lower()
    if v not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(f"{value!r} is not a flag (use 1 or 0)")
    return v in ("1", "true", "yes")


def _ints(text: str) -> list[int]:
    """'2-5' -> [2, 3, 4, 5]; '1,4' or '1+4' -> [1, 4]."""
    out = []
    for part in re.split(r"[+;]", text):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _options(text: str) -> dict[str, str]:
    opts, key = {}, None
    for part in text.split(","):
        if "=" in part:
            key, val = part.split("=", 1)
            opts[key.strip().lower()] = val.strip()
        elif key is not None:      # layers=4,8,12 continues the previous key's list
            opts[key] += "+" + part.strip()
        else:
            raise ValueError(f"expected key=value, got {part!r}")
    return opts


def parse_spec(spec: str):
    """One SPEC string -> an intervention object (see the module doc for the forms)."""
    from .act import ACT
    from .headkv import HeadwiseKV
    from .mask import HeadMask
    from .redistribute import Redistribute
    from .scale import HeadScale
    from .sinkwindow import SinkWindow

    parts = [p for p in str(spec).strip().split(":")]
    name = parts[0].strip().lower()
    if name not in NAMES:
        raise ProbeError(f"unknown intervention {name!r} in SPEC {spec!r}", f"choose from {', '.join(NAMES)}; "
                         f"valid forms: {'; '.join(FORMS)}")
    heads, opts = None, {}
    try:
        for part in parts[1:]:
            if _HEADS.match(part.strip()):
                heads = part.strip().split(",")
            elif part.strip():
                opts.update(_options(part))
        f = lambda k, d=None: float(opts.pop(k)) if k in opts else d  # noqa: E731
        if name == "act":
            layers = _ints(opts.pop("layers")) if "layers" in opts else None
            iv = ACT(beta=f("beta", 0.4), threshold=f("threshold", 0.1), alpha=f("alpha"), layers=layers, heads=heads)
        elif name == "mask":
            if not heads:
                raise ValueError("mask needs heads, e.g. mask:L18H6")
            iv = HeadMask(heads, mode=opts.pop("mode", "uniform"), decode_only=_flag(opts.pop("decode_only", "0")))
        elif name == "scale":
            if not heads:
                raise ValueError("scale needs heads, e.g. scale:L3H2:alpha=2")
            iv = HeadScale(heads, alpha=f("alpha", 2.0))
        elif name == "sinkwindow":
            iv = SinkWindow(sinks=int(f("sinks", 4)), window=int(f("window", 1020)))
        elif name == "redistribute":
            if "span" not in opts:
                raise ValueError("redistribute needs span=START-END")
            a, b = opts.pop("span").split("-")
            sinks = opts.pop("sinks", "auto")
            layers = _ints(opts.pop("layers")) if "layers" in opts else None
            iv = Redistribute("auto" if sinks == "auto" else _ints(sinks), span=(int(a), int(b)), keep=f("keep"),
                              transfer=f("transfer"), rho=f("rho", 0.5), min_mass=f("min_mass", 0.2), layers=layers,
                              heads=heads, log_selection=_flag(opts.pop("log", "0")))
        elif name == "headkv":
            listed = opts.pop("heads").replace("+", ",") if "heads" in opts else None
            iv = HeadwiseKV(heads or listed, report=opts.pop("report", None), column=opts.pop("column", "retrieval_score"),
                            full=opts.pop("full", "0.25"), select=opts.pop("select", "top"), seed=int(f("seed", 0)),
                            pool=opts.pop("pool", "max"), sinks=int(f("sinks", 4)), window=int(f("window", 256)))
        elif name in ("var", "vhr"):
            iv = parse_vlm_spec(name, heads, opts)
        else:
            raise ValueError(f"unknown intervention {name!r}")
    except ProbeError as err:
        raise _bad(spec, err.problem) from err
    except (ValueError, TypeError) as err:
        raise _bad(spec, str(err)) from err
    if opts:
        raise _bad(spec, f"unknown option(s) {sorted(opts)} for {name}")
    return iv


def check_against(ivs, facts) -> None:
    """Check parsed interventions against a model's facts (``probe.models.model_facts``: layer and
    head counts, VLM or not) before its weights load; the same ProbeErrors ``intervene`` raises."""
    for iv in ivs:
        kind = type(iv).__name__
        for layer in getattr(iv, "layers", None) or ():
            facts.check_layer(int(layer))
        for attr in ("heads", "fixed"):
            for layer, head in getattr(iv, attr, None) or ():
                facts.check_head(int(layer), int(head))
        needs_vlm = kind == "VAR" or (kind == "VHR" and getattr(iv, "fixed", None) is None)
        if needs_vlm and not facts.is_vlm:
            raise ProbeError(f"{kind} needs a vision-language model; {facts.source} is text-only",
                             "load a LLaVA-style VLM (--model studio-vlm), or give VHR fixed heads (vhr:L3H2)")


def parse_vlm_spec(name: str, heads, opts: dict):
    """SPEC forms ``var[:keep=0.6|transfer=0.4,rho=0.5|nonsink_share=0.5,min_mass=0.2,tau=20,preset=paper,log=1]``
    and ``vhr[:L3H2,...][:alpha=2,layers=1+17-29]`` (pops the options it uses from ``opts``)."""
    from .vlm import VAR, VHR

    f = lambda k: float(opts.pop(k)) if k in opts else None  # noqa: E731
    layers = _ints(opts.pop("layers")) if "layers" in opts else None
    if name == "var":
        preset = opts.pop("preset", "code")
        if preset not in ("code", "paper"):
            raise ValueError("var preset is code or paper")
        kw = {k: v for k, v in dict(keep=f("keep"), transfer=f("transfer"), rho=f("rho"),
                                    nonsink_share=f("nonsink_share"), min_mass=f("min_mass"), tau=f("tau")).items()
              if v is not None}
        if "sink_dims" in opts:
            kw["sink_dims"] = _ints(opts.pop("sink_dims"))
        kw["log_selection"] = _flag(opts.pop("log", "0"))
        return (VAR.paper_preset if preset == "paper" else VAR)(layers=layers, heads=heads, **kw)
    if name == "vhr":
        alpha = f("alpha")
        return VHR(alpha=2.0 if alpha is None else alpha, layers=layers, heads=heads)
    raise ValueError(f"unknown VLM intervention {name!r}")
