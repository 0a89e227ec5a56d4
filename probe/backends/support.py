"""What each backend can capture for a given model — decided from the model, before anything runs.

``table(handle)`` -> rows (backend, capability, yes/no, why); ``check(handle, backend, needs)``
raises one ProbeError for an unsupported combination. Capabilities:
  stats         per-head attention statistics (LayerStats: received, sink, entropy, ...)
  hidden        residual-stream summaries (HiddenSummary: massive activations)
  interventions native: probe.intervene (ACT, HeadMask, HeadScale, Redistribute, SinkWindow);
                hook backends: head scaling / ablation (capture(..., head_scale={(l, h): f}))
  long_prompts  no N x N map in memory (native: query-blocked kernels; hooks hold full maps)
  device_map    models spread over devices by accelerate (hf_device_map)
  remote        run on NDIF (nnsight only; needs a hub id)
"""
from __future__ import annotations

from typing import Iterable

from ..errors import ProbeError
from .base import BACKENDS

CAPABILITIES = ("stats", "hidden", "interventions", "long_prompts", "device_map", "remote")


def _is_vlm(handle) -> bool:
    return hasattr(handle.model.config, "vision_config")


def _tl_architecture(handle) -> tuple[bool, str]:
    try:
        from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
        from transformer_lens.model_bridge.sources.transformers import determine_architecture_from_hf_config
    except ImportError:
        return False, "transformer-lens 4.x is not installed (pip install 'transformer-lens>=4')"
    if _is_vlm(handle):
        return False, "probe's VLMs are assembled locally; TransformerLens has no adapter for them"
    try:
        arch = determine_architecture_from_hf_config(handle.model.config)
    except Exception:  # noqa: BLE001 - any failure means "no adapter"
        return False, f"TransformerLens has no adapter for model type {handle.model.config.model_type}"
    if arch not in SUPPORTED_ARCHITECTURES:
        return False, f"TransformerLens has no adapter for {arch}"
    if getattr(handle.model, "hf_device_map", None) and len(set(map(str, handle.model.hf_device_map.values()))) > 1:
        return False, "the bridge is built on a clone of the model; a model dispatched over several devices is not cloned"
    return True, f"TransformerBridge adapter for {arch}"


def _nnsight(handle) -> tuple[bool, str]:
    try:
        import nnsight  # noqa: F401
    except ImportError:
        return False, "nnsight is not installed (pip install 'nnsight>=0.8')"
    try:
        handle.attention_modules()
    except ProbeError as err:
        return False, err.problem
    return True, "eager attention weights (self_attn.output[1]) in a trace"


def _native(handle) -> tuple[bool, str]:
    try:
        handle.attention_modules()
    except ProbeError as err:
        return False, err.problem
    return True, "probe's attention seam (transformers AttentionInterface)"


def table(handle) -> list[dict]:
    """One row per (backend, capability): {"backend", "capability", "ok", "why"}."""
    from .nnsight_backend import KNOWN_REPOS

    base = {"native": _native(handle), "transformer-lens": _tl_architecture(handle), "nnsight": _nnsight(handle)}
    has_repo = bool(handle.extra.get("repo_id") or KNOWN_REPOS.get(str(handle.source)) or handle.kind == "hub")
    rows = []
    for backend in BACKENDS:
        ok, why = base[backend]
        hook = backend != "native"
        caps = {
            "stats": (ok, why),
            "hidden": (ok, "residual entering each layer" if ok else why),
            "interventions": (ok, ("head scaling / ablation (head_scale=)" if hook else
                                   "probe.intervene: ACT, HeadMask, HeadScale, Redistribute, SinkWindow") if ok else why),
            "long_prompts": (ok and not hook, ("holds each layer's full [B, H, T, S] map: keep prompts short"
                                               if hook else "query-blocked statistics, never the full map") if ok else why),
            "device_map": (ok, "stats reduced on each layer's device; small per-head tensors gathered" if ok else why),
            "remote": (ok and backend == "nnsight" and has_repo,
                       ("NDIF via nnsight (--remote); needs network and an API key" if has_repo
                        else "NDIF needs a hub id for the model") if backend == "nnsight" else "only nnsight runs on NDIF"),
        }
        if backend == "transformer-lens" and ok:
            caps["device_map"] = (True, "single-device or CPU-placed models (bridge on a clone)")
        for cap in CAPABILITIES:
            rows.append({"backend": backend, "capability": cap, "ok": bool(caps[cap][0]), "why": caps[cap][1]})
    return rows


def check(handle, backend: str, needs: Iterable[str] = ("stats",)) -> None:
    """Raise ProbeError (what is unsupported, what to use instead) unless ``backend`` can do every ``needs``."""
    rows = {(r["backend"], r["capability"]): r for r in table(handle)}
    for cap in needs:
        row = rows[(backend, cap)]
        if not row["ok"]:
            alternatives = [b for b in BACKENDS if rows[(b, cap)]["ok"]]
            fix = f"use --backend {' or '.join(alternatives)}" if alternatives else "no backend supports this for this model"
            raise ProbeError(f"backend {backend} cannot do '{cap}' for {handle.source}: {row['why']}",
                             f"{fix} (see `probe support {handle.source}`)")


TESTED = "plumbing-tested on a tiny random-init {cls} (random weights: proves the layout runs, not what the model does)"


def vision_rows(handle) -> list[dict]:
    """For a VLM: one row per vision tool (image_spans, vhd, visual-sinks, var, vhr) on the native
    backend, {"tool", "ok", "why"}; [] for a text-only model."""
    from ..models.vlm_layouts import family_of

    if not _is_vlm(handle):
        return []
    family = family_of(handle.model)
    basis = (f"{family.name}: " + TESTED.format(cls=family.hf_class)) if family else \
        f"{type(handle.model).__name__} is not a tested family: works if the image is one run of placeholder tokens"
    has_token = handle.image_token_id is not None and handle.processor is not None
    try:
        o_proj = all(hasattr(m, "o_proj") for m in handle.attention_modules())
    except ProbeError:
        o_proj = False
    no_token = "no image token id / processor found in the checkpoint"
    rows = [
        ("image_spans", has_token, basis if has_token else no_token),
        ("visual-sinks", has_token, "phi of image tokens per layer (native seam)" if has_token else no_token),
        ("vhd", has_token and o_proj, "head outputs before o_proj, with vs without the image" if o_proj
         else "attention modules have no o_proj"),
        ("var", has_token, "Redistribute inside the image span found from input_ids" if has_token else no_token),
        ("vhr", has_token and o_proj, "VHD-chosen heads scaled at generate time" if o_proj else "attention modules have no o_proj"),
    ]
    return [{"tool": t, "ok": bool(ok), "why": why} for t, ok, why in rows]


def families_text() -> str:
    """The VLM families probe knows: class, vision tower, image-token layout, positions, notes."""
    from ..models.vlm_layouts import FAMILIES

    lines = ["VLM families (tests/test_vlm_families.py runs each through scan --detect vhd,visual-sinks,",
             "generate -i var / -i vhr and the app on a tiny random-init checkpoint: plumbing tests with",
             "random weights, they prove a real checkpoint of the class runs, not what it does):", ""]
    for f in FAMILIES:
        lines += [f"{f.name:16} {f.hf_class}", f"{'':16} tower: {f.tower}", f"{'':16} image tokens: {f.image_tokens}",
                  f"{'':16} positions: {f.positions}" + (f"; {f.notes}" if f.notes else ""), ""]
    return "\n".join(lines).rstrip()


def render(handle) -> str:
    """The support table as text: capabilities down, backends across."""
    rows = table(handle)
    width = max(len(c) for c in CAPABILITIES) + 2
    lines = [f"{'':{width}}" + "".join(f"{b:18}" for b in BACKENDS)]
    for cap in CAPABILITIES:
        cells = [next(r for r in rows if r["backend"] == b and r["capability"] == cap) for b in BACKENDS]
        lines.append(f"{cap:{width}}" + "".join(f"{'yes' if c['ok'] else 'no':18}" for c in cells))
    lines.append("")
    for r in rows:
        if r["capability"] in ("stats", "long_prompts", "remote") or not r["ok"]:
            lines.append(f"  {r['backend']:17} {r['capability']:14} {r['why']}")
    vision = vision_rows(handle)
    if vision:
        lines += ["", "vision tools (native backend):"]
        lines += [f"  {r['tool']:14} {'yes' if r['ok'] else 'no ':4} {r['why']}" for r in vision]
    return "\n".join(lines)
