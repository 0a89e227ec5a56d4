"""VLM interventions: VAR (Kang et al., ICLR 2025) and VHR (He et al., ACL 2025); methods.md §2, §3.

VAR = ``Redistribute`` with the paper's selection, found on every prefill that holds an image:
  sinks: phi(x_j) = max_{d in D_sink} |x_j[d] / rms(x_j)| > tau (20) on the residual stream entering
  each layer; D_sink found automatically from the LM's first-token massive activations
  (``probe.capture.massive.find_sink_dims``), or given. Span = the image tokens of each row (found from
  ``input_ids`` at the prefill). Head/query selection (dynamic, inside the attention op): visual mass
  m >= min_mass (0.2) and sink share q <= rho (0.5). Layers 2..L-2.
  Conventions, both exposed (methods.md §2 flags them):
    keep     = the official code's p: fraction of the sinks' mass they *keep* (0.6 shipped);
    transfer = the paper's p = 1 - keep: fraction *moved* to the image's non-sink tokens;
    rho      = the code's threshold on the sink share q (select iff q <= rho);
    nonsink_share = the paper's rho = 1 - rho (select iff 1 - q >= nonsink_share).
  ``VAR.paper_preset()`` = transfer 0.6 (the paper's p as a third-party review reads it, i.e. keep
  0.4) and nonsink_share 0.5 (the hallucination setting; secondary source).

VHR = HeadScale(alpha = 2) on heads chosen by VHD at the first generated token, per sample:
  one extra forward on the batch [prompt with image, same prompt without the image tokens]; layer by
  layer (an edit on the named ``z`` tap, o_proj's input), VHD and TA of the layer's heads at the last prompt position give the
  heads (outlier removal, then above-median: ``probe.capture.head_outputs.vhr_select``) and those heads are
  scaled by alpha in that same forward, so later layers see the reinforced ones (the paper's layer-
  by-layer reading; the no-image row is reinforced too, flagged UNVERIFIED in methods.md). The
  chosen heads then stay fixed for the whole generation and all positions are scaled (KV-consistent).
  Layers: 1 plus the last round(14/32 * L) (``vhr_layers``; 32 layers -> 1, 18..31).
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Optional, Sequence

import torch
from torch import Tensor

from probe.capture.head_outputs import head_outputs, vhd_scores, vhr_layers, vhr_select
from probe.capture.massive import find_sink_dims
from probe.capture.taps import ModuleHooks
from probe.errors import ProbeError
from probe.models.padding import first_real_index
from probe.models.vlm_inputs import drop_image_tokens, encode_images, with_image_token

from .base import Intervention, attach_hook, check_heads, check_layers, head_table, parse_heads
from .redistribute import Redistribute, _RedistHook
from .scale import _ScaleHook

_SINK_DIMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> D_sink found


def sink_dims_of(handle) -> list[int]:
    """D_sink of a handle's LM (first-token massive activations), cached per model object."""
    model = handle.model
    if model not in _SINK_DIMS:
        with torch.no_grad():
            dims, _ = find_sink_dims(handle)
        _SINK_DIMS[model] = dims
    dims = _SINK_DIMS[model]
    if not dims:
        raise ProbeError(f"no massive-activation sink dims found in {handle.source}'s LM",
                         "give VAR(sink_dims=[...]) explicitly")
    return list(dims)


def _input_ids(args, kwargs) -> Optional[Tensor]:
    ids = kwargs.get("input_ids")
    return args[0] if ids is None and args else ids


def image_spans_unpadded(handle, input_ids: Tensor, attention_mask: Optional[Tensor]) -> list[tuple[int, int]]:
    """One (start, end) image span per row, counted from the row's first real token.

    input_ids, attention_mask [B, T] (left padded) -> B pairs; ProbeError unless each row has one image.
    """
    spans = handle.image_spans(input_ids.cpu())
    if any(len(s) != 1 for s in spans):
        raise ProbeError(f"VAR needs exactly one image per row (found {[len(s) for s in spans]})",
                         "give each prompt one image")
    if attention_mask is None:
        pads = [0] * len(spans)
    else:
        pads = first_real_index(attention_mask.cpu()).tolist()   # [B] left pads
    return [(s[0][0] - p, s[0][1] - p) for s, p in zip(spans, pads)]


class VAR(Redistribute):
    """Visual attention redistribution on a LLaVA-layout VLM (see the module doc).

    Args:
        keep: code's p, fraction of sink mass kept (default 0.6). transfer: paper's p = 1 - keep.
        rho: code's rho (select iff sink share q <= rho; 0.5). nonsink_share: paper's rho = 1 - rho.
        min_mass: minimum image mass of a selected (head, query) (0.2).
        tau: phi threshold (20, strict). sink_dims: "auto" (found from the LM) or a list of dims.
        layers: default 2..L-2. heads: optional (layer, head) restriction (the paper: all heads).
        log_selection: count the (layer, head, query) rows the rule edits (``selection_table()``).
    After a forward, ``found_sinks[layer]`` lists each row's sink positions (visual and text) and
    ``spans`` the image spans it used.
    """

    def __init__(self, keep: Optional[float] = None, transfer: Optional[float] = None, rho: Optional[float] = None,
                 nonsink_share: Optional[float] = None, min_mass: float = 0.2, tau: float = 20.0,
                 sink_dims="auto", layers: Optional[Sequence[int]] = None, heads=None, log_selection: bool = False):
        if rho is not None and nonsink_share is not None:
            raise ProbeError("VAR got both rho and nonsink_share", "give one: rho (code) = 1 - nonsink_share (paper)")
        rho = 1.0 - float(nonsink_share) if nonsink_share is not None else (0.5 if rho is None else float(rho))
        super().__init__("auto", span=(0, 1), keep=keep, rho=rho, min_mass=min_mass, layers=layers, heads=heads,
                         transfer=transfer, tau=tau, sink_dims=None if sink_dims == "auto" else list(sink_dims),
                         log_selection=log_selection)
        self.sink_dims_option = sink_dims
        self.spans = None

    @classmethod
    def paper_preset(cls, **overrides) -> "VAR":
        """Paper conventions: transfer (paper p) 0.6, nonsink_share (paper rho) 0.5 (secondary sources)."""
        return cls(**{"transfer": 0.6, "nonsink_share": 0.5, **overrides})

    @property
    def nonsink_share(self) -> float:
        return 1.0 - self.rho

    def __repr__(self) -> str:
        return (f"VAR(keep={self.keep:g} [transfer={self.transfer:g}], rho={self.rho:g} "
                f"[nonsink_share={self.nonsink_share:g}], min_mass={self.min_mass:g}, tau={self.tau:g}, "
                f"sink_dims={self.sink_dims if self.sink_dims is not None else 'auto'})")

    def validate(self, handle) -> None:
        if handle.image_token_id is None:
            raise ProbeError(f"VAR needs a vision-language model; {handle.source} has no image token",
                             "load a LLaVA-style VLM, e.g. studio-vlm")
        super().validate(handle)

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        if self.sink_dims_option == "auto":
            self.sink_dims = sink_dims_of(handle)
        self.spans = None

        def pre(module, args, kwargs):
            ids = _input_ids(args, kwargs)
            if ids is None:
                return
            if (ids == handle.image_token_id).any():
                self.spans = image_spans_unpadded(handle, ids, kwargs.get("attention_mask"))
            elif self.spans is None or ids.shape[1] > 1 and _no_cache(kwargs):
                raise ProbeError("VAR saw a prompt without an image", "put one image in every prompt")

        stack.enter_context(ModuleHooks()).pre(handle.model, pre, with_kwargs=True)
        # Redistribute.install with a hook that follows ``cache.batch_repeat_interleave`` (class scoring)
        layers = self.resolved_layers(handle.n_layers)
        heads = None if self.heads is None else [(l, hd) for l, hd in self.heads if l in layers]
        hook = _RepeatingRedistHook(self, head_table(handle.n_layers, handle.n_heads, layers, heads))
        self.found_sinks, self.selection = {}, {}       # per block, as Redistribute.install
        stack.enter_context(hook.residual_taps(handle, layers))
        attach_hook(handle, layers, hook, stack)


class _RepeatingRedistHook(_RedistHook):
    """Redistribute's hook; a later call whose batch is k times the prompt's (the prompt cache
    repeated per row with ``batch_repeat_interleave(k)``, as ``class_logprobs`` does) reuses each
    row's sink set k times."""

    def edits(self, call, pre):
        state = self._state.get(call.layer)
        if call.T != call.S and state is not None and call.B != state[0].shape[0] and call.B % state[0].shape[0] == 0:
            k = call.B // state[0].shape[0]
            self.set_state(call.layer, tuple(t.repeat_interleave(k, 0) for t in state))
        return super().edits(call, pre)


def _no_cache(kwargs) -> bool:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache is None or (hasattr(cache, "get_seq_length") and cache.get_seq_length() == 0)


class VHR(Intervention):
    """Vision-aware head reinforcement (see the module doc).

    Args:
        alpha: scale of the chosen heads' outputs (2).
        layers: candidate layers (default ``vhr_layers(L)``: 1 plus the last round(14/32 L)).
        heads: fixed (layer, head) pairs (skips the selection: a plain HeadScale).
        outlier_removal: Eq. 6 (True).
    Use ``select(handle, inputs)`` once per sample before ``intervene`` (explicit), or leave heads
    unset: then every forward that carries the image (``pixel_values`` or, in ``generate``'s prefill,
    ``mm_encoder_outputs``) selects
    the heads for its sample first (batch 1 only). ``heads``, ``vhd`` [L, H] and ``ta`` [L, H] hold
    the latest selection.
    """

    order = 4

    def __init__(self, alpha: float = 2.0, layers: Optional[Sequence[int]] = None, heads=None,
                 outlier_removal: bool = True):
        self.alpha = float(alpha)
        self.layers = None if layers is None else sorted({int(l) for l in layers})
        self.fixed = parse_heads(heads)
        self.heads = self.fixed
        self.outlier_removal = bool(outlier_removal)
        self.vhd: Optional[Tensor] = None
        self.ta: Optional[Tensor] = None
        self._scales: dict[int, Tensor] = {}
        self._busy = False
        self._explicit = False     # select() was called by the user: keep those heads
        self._auto_running = False

    def __repr__(self) -> str:
        heads = "auto" if self.heads is None else len(self.heads)
        return f"VHR(alpha={self.alpha:g}, layers={self.layers or 'default'}, heads={heads})"

    def resolved_layers(self, n_layers: int) -> list[int]:
        return self.layers if self.layers is not None else vhr_layers(n_layers)

    def validate(self, handle) -> None:
        check_layers(handle, self.layers)
        check_heads(handle, self.fixed)
        if self.fixed is None and handle.image_token_id is None:
            raise ProbeError(f"VHR's head choice needs a vision-language model; {handle.source} has no image token",
                             "give VHR(heads=[...]) or load a VLM")

    @torch.no_grad()
    def select(self, handle, inputs: dict) -> list[tuple[int, int]]:
        """Choose the heads for one sample (and remember them).

        Args:
            inputs: processor output for ONE prompt with its image: input_ids [1, T], attention_mask,
                pixel_values (or ``mm_encoder_outputs``, as ``generate`` passes them) and the family's
                image geometry (image_sizes, image_grid_thw, mm_token_type_ids) when it has one.
        Returns:
            the chosen (layer, head) pairs; ``self.vhd`` / ``self.ta`` [L, H] (0 outside the layers).
        """
        from probe.models.vlm_layouts import image_kwargs, uses_mrope

        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        if ids.shape[0] != 1:
            raise ProbeError(f"VHR selects heads per sample; got a batch of {ids.shape[0]}", "select one sample at a time")
        mask = torch.ones_like(ids) if mask is None else mask
        txt = drop_image_tokens(ids, mask, handle.image_token_id, handle.pad_id)
        T = max(ids.shape[1], txt["input_ids"].shape[1])
        pad = lambda t, v: torch.nn.functional.pad(t, (T - t.shape[1], 0), value=v)  # noqa: E731 left pad
        both_ids = torch.cat([pad(ids, handle.pad_id), pad(txt["input_ids"], handle.pad_id)])   # [2, T]
        both_mask = torch.cat([pad(mask, 0), pad(txt["attention_mask"], 0)])                           # [2, T]
        pos = (both_mask.cumsum(-1) - 1).clamp_min(0)                                                  # [2, T]
        extra = {"position_ids": pos}
        if uses_mrope(handle.model):      # 3-D positions: the model derives them from the ids and the mask
            extra = {"mm_token_type_ids": (both_ids == handle.image_token_id).long()} \
                if "mm_token_type_ids" in inputs else {}
        layers = set(self.resolved_layers(handle.n_layers))
        L, H = handle.n_layers, handle.n_heads
        vhd, ta = torch.zeros(L, H), torch.zeros(L, H)
        chosen: list[tuple[int, int]] = []

        def edit(layer: int, x: Tensor):                       # x [2, T, H, Dh]
            if layer not in layers:
                return None
            v, t = vhd_scores(x[0, -1], x[1, -1])              # [H], [H]
            vhd[layer], ta[layer] = v.cpu(), t.cpu()
            on = vhr_select(v, t, self.outlier_removal)        # [H]
            chosen.extend((layer, int(h)) for h in on.nonzero().flatten().tolist())
            scale = torch.where(on, self.alpha, 1.0).to(x.dtype).to(x.device)   # [H]
            return x * scale.view(1, 1, -1, 1)

        self._busy = True
        try:
            with head_outputs(handle, sorted(layers), edit=edit):
                handle.model(input_ids=both_ids, attention_mask=both_mask, use_cache=False, **extra,
                             **image_kwargs(inputs))
        finally:
            self._busy = False
        self.vhd, self.ta, self.heads = vhd, ta, sorted(chosen)
        self._explicit = not self._auto_running
        return self.heads

    def _set_scales(self, n_heads: int) -> None:
        self._scales.clear()
        for layer, head in self.heads or ():
            self._scales.setdefault(layer, torch.ones(n_heads))[head] = self.alpha   # [H]

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        layers = self.resolved_layers(handle.n_layers) if self.fixed is None else sorted({l for l, _ in self.fixed})
        if self._explicit and self.fixed is None:
            bad = sorted({l for l, _ in self.heads} - set(layers))
            if bad:
                raise ProbeError(f"VHR heads in layers {bad} outside its layers", "select again or widen layers")
        self._set_scales(handle.n_heads)
        attach_hook(handle, layers, _ScaleHook(self._scales), stack)
        if self.fixed is None and not self._explicit:   # auto: select on every prefill with an image
            from probe.models.vlm_layouts import image_kwargs
            self.heads = None
            self._scales.clear()

            def pre(module, args, kwargs):
                mm = kwargs.get("mm_encoder_outputs") or {}
                if self._busy or (kwargs.get("pixel_values") is None and mm.get("image") is None):
                    return
                inputs = {**image_kwargs(kwargs), "input_ids": _input_ids(args, kwargs),
                          "attention_mask": kwargs.get("attention_mask"), "mm_encoder_outputs": mm or None}
                if kwargs.get("mm_token_type_ids") is not None:
                    inputs["mm_token_type_ids"] = kwargs["mm_token_type_ids"]
                self._scales.clear()
                self._auto_running = True
                try:
                    self.select(handle, inputs)
                finally:
                    self._auto_running = False
                self._set_scales(handle.n_heads)

            stack.enter_context(ModuleHooks()).pre(handle.model, pre, with_kwargs=True)


def encode_with_image(handle, prompt: str, path, chat_template: bool = False) -> dict:
    """One prompt + one image file -> processor inputs (input_ids [1, T], attention_mask, pixel_values).

    The image token goes in front unless the prompt already has it (studio-vlm's trained layout).
    """
    from pathlib import Path

    if handle.processor is None or handle.image_token_id is None:
        raise ProbeError(f"--image needs a vision-language model; {handle.source} has none",
                         "use --model studio-vlm (or a LLaVA folder), or drop --image")
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"image file {path} does not exist", "check the path")
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ProbeError(f"cannot read {path} as an image ({err})", "give a PNG or JPEG file") from err
    return encode_images(handle, [with_image_token(handle, prompt, chat_template)], [img])
