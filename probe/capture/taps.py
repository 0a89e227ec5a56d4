"""Named taps: the one place in probe that registers PyTorch module hooks.

Two layers:

* ``ModuleHooks`` — a context manager owning raw ``register_forward_(pre_)hook`` handles (used where a
  hook must see a module's own arguments, e.g. the model's ``input_ids`` or the decoder's cache).
  Every other module in probe and ``interventions`` goes through it; a test greps for that.
* ``TapSet`` — canonical, per-layer activation names on top of it (and of the attention seam for
  q / k / v / pattern). ``probe.taps`` (read + edit for a ``with`` block) and ``probe.cache`` (one
  forward, TransformerLens ``run_with_cache`` style) are the user-facing verbs.

Names are ``"blocks.{layer}.{site}"``; a bare site (``"z"``) means every layer. TransformerLens
names (``"blocks.5.attn.hook_z"``, ``"blocks.5.hook_resid_pre"``) are accepted too.

==========  =====================  ===============================================================
site        shape                  where (Llama / SmolLM2 / Gemma-3 / a VLM's language model)
==========  =====================  ===============================================================
resid_pre   [B, T, d]              the decoder layer's input (the residual stream entering it)
resid_mid   [B, T, d]              resid_pre + attn_out (what the MLP half adds to)
resid_post  [B, T, d]              the decoder layer's output
attn_out    [B, T, d]              what attention adds to the residual stream: ``self_attn``'s
                                   output (Llama), ``post_attention_layernorm``'s output (Gemma-3)
mlp_out     [B, T, d]              what the MLP adds: ``mlp``'s output (Llama),
                                   ``post_feedforward_layernorm``'s output (Gemma-3)
z           [B, T, H, D]           per-head attention output before ``o_proj`` (its input, split)
q           [B, T, H, D]           queries after RoPE (from the seam's ``AttentionCall``; read-only)
k, v        [B, T, KV, D]          this call's new keys / values after RoPE (read-only; cached
                                   positions are not repeated at decode steps)
pattern     [B, H, T, S]           attention probabilities; read-only, only when asked and only
                                   for S <= ``PATTERN_MAX_KEYS`` (use ``probe.capture`` statistics
                                   for long prompts)
==========  =====================  ===============================================================

A callback is ``fn(tensor, ctx)``; ``ctx`` is a ``TapContext`` (name, layer, site, forward-call index,
the call's attention mask). Edits return a tensor of the same shape (or None = unchanged) and run
in the order given, before reads, so reads and the cache see what the model actually used.
Editing ``resid_mid`` rewrites ``attn_out`` as ``new - resid_pre`` (exact up to one float rounding).
q / k / v / pattern go through the attention seam (the layer then runs probe's attention op
instead of SDPA: same values to float rounding).
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from kernels.attention import StatsRequest
from kernels.attention.api import NO_STATS

from ..errors import ProbeError
from ..models.handle import as_handle

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
SEAM_SITES = ("q", "k", "v", "pattern")
DEFAULT_CACHE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
PATTERN_MAX_KEYS = 2048

# probe name -> TransformerLens hook name ({l} = layer)
TL_NAMES = {
    "resid_pre": "blocks.{l}.hook_resid_pre", "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post", "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out", "z": "blocks.{l}.attn.hook_z", "q": "blocks.{l}.attn.hook_q",
    "k": "blocks.{l}.attn.hook_k", "v": "blocks.{l}.attn.hook_v", "pattern": "blocks.{l}.attn.hook_pattern",
}

TapFn = Callable[[Tensor, "TapContext"], Optional[Tensor]]
_NAME = re.compile(r"^blocks\.(\d+|\*)\.(?:attn\.)?(?:hook_)?([a-z_]+)$")


# ---- raw hooks ----------------------------------------------------------------------------------

class ModuleHooks:
    """Owns forward (pre-)hooks; ``remove()`` (or leaving the ``with`` block) takes them all off.

    ``pre(module, fn, with_kwargs=False)`` / ``post(...)`` have PyTorch's hook signatures
    (``fn(module, args[, kwargs])`` / ``fn(module, args, [kwargs,] output)``).
    """

    def __init__(self):
        self._handles: list = []

    def pre(self, module: torch.nn.Module, fn, *, with_kwargs: bool = False):
        self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))

    def post(self, module: torch.nn.Module, fn, *, with_kwargs: bool = False):
        self._handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "ModuleHooks":
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False


# ---- names ----------------------------------------------------------------------------------------

def tap_name(layer: int, site: str) -> str:
    """Canonical name: (5, "z") -> "blocks.5.z"."""
    return f"blocks.{int(layer)}.{site}"


def parse_name(name: str, n_layers: int) -> list[tuple[int, str]]:
    """"blocks.5.z", "blocks.5.attn.hook_z", "blocks.*.z" or "z" -> [(layer, site), ...]."""
    m = _NAME.match(name.strip())
    layer, site = (m.group(1), m.group(2)) if m else ("*", name.strip())
    if site not in SITES:
        raise ProbeError(f"unknown tap {name!r}", f"use blocks.<layer>.<site> with site one of {', '.join(SITES)}")
    if layer == "*":
        return [(l, site) for l in range(n_layers)]
    if not 0 <= int(layer) < n_layers:
        raise ProbeError(f"tap {name!r}: no layer {layer}", f"layers are 0..{n_layers - 1}")
    return [(int(layer), site)]


@dataclass
class TapContext:
    """What a tap callback knows. ``call`` counts the model's forward calls inside the block (0 =
    the first; in ``generate``: 0 = prefill, then one per decode step). ``attention_mask`` is that
    call's [B, S] mask (None when not given). ``layer_kwargs``: the decoder layer's keyword
    arguments (resid_pre only: mask, position embeddings, cache). ``attention``: the seam's
    ``AttentionCall`` (q / k / v / pattern only)."""

    name: str
    layer: int
    site: str
    call: int
    attention_mask: Optional[Tensor] = None
    layer_kwargs: dict = field(default_factory=dict)
    attention: object = None


# ---- the engine ------------------------------------------------------------------------------------

def _as_pairs(spec) -> list[tuple[str, TapFn]]:
    if spec is None:
        return []
    items = spec.items() if isinstance(spec, Mapping) else spec
    return [(str(n), fn) for n, fn in items]


def _gemma_style(layer) -> bool:
    """Gemma-2/3 layers normalise each half's output before adding it (sandwich norms)."""
    return hasattr(layer, "pre_feedforward_layernorm") and hasattr(layer, "post_feedforward_layernorm")


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x, new):
    return (new,) + tuple(x[1:]) if isinstance(x, tuple) else new


class TapSet:
    """Context manager: run read and edit callbacks at named sites for every forward in the block.

    Args:
        handle_or_model: a probe Handle or a Hugging Face model (LM or LLaVA-style VLM).
        reads: {name: fn} or [(name, fn)]: ``fn(tensor, ctx)``, return value ignored.
        edits: {name: fn} or [(name, fn)]: ``fn(tensor, ctx) -> tensor`` (same shape) or None.
        on_call: ``fn(model, args, kwargs)`` before every forward of the model (after the call
            counter moves).
    On exit, even after an exception, every hook and seam attachment is gone.
    """

    def __init__(self, handle_or_model, reads=None, edits=None, on_call=None):
        self.handle, self.model = as_handle(handle_or_model)
        self.n_layers = len(self.handle.decoder_layers())
        self.fns: dict[tuple[int, str], list] = {}
        for items, is_edit in ((_as_pairs(edits), True), (_as_pairs(reads), False)):
            for name, fn in items:
                for key in parse_name(name, self.n_layers):
                    if is_edit and key[1] in SEAM_SITES:
                        raise ProbeError(f"tap {name!r} is read-only", "edit z, attn_out, mlp_out or a resid_* site")
                    self.fns.setdefault(key, []).append((fn, is_edit))
        for key in self.fns:   # edits first (in the order given), then reads
            self.fns[key].sort(key=lambda item: not item[1])
        self.on_call = on_call
        self.call = -1
        self.attention_mask: Optional[Tensor] = None
        self._resid: dict[int, Tensor] = {}
        self._stack: Optional[contextlib.ExitStack] = None

    # -- running callbacks --------------------------------------------------------------------
    def _ctx(self, layer: int, site: str, **extra) -> TapContext:
        return TapContext(tap_name(layer, site), layer, site, max(self.call, 0), self.attention_mask, **extra)

    def _run(self, layer: int, site: str, x: Tensor, **extra) -> Tensor:
        ctx = self._ctx(layer, site, **extra)
        for fn, is_edit in self.fns[(layer, site)]:
            if is_edit:
                new = fn(x, ctx)
                if new is not None:
                    if not isinstance(new, Tensor) or new.shape != x.shape:
                        got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                        raise ProbeError(f"edit on {ctx.name} returned {got}, expected shape {tuple(x.shape)}",
                                         "return a tensor of the input's shape (or None to leave it)")
                    x = new.to(x.dtype)
            else:
                fn(x, ctx)
        return x

    def _has(self, layer: int, site: str) -> bool:
        return (layer, site) in self.fns

    # -- hooks ---------------------------------------------------------------------------------
    def _on_model(self, module, args, kwargs):
        self.call += 1
        self.attention_mask = kwargs.get("attention_mask")
        if self.on_call is not None:
            self.on_call(module, args, kwargs)

    def _resid_pre(self, l: int):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]                     # [B, T, d]
            new = self._run(l, "resid_pre", x, layer_kwargs=kwargs) if self._has(l, "resid_pre") else x
            if self._has(l, "resid_mid"):
                self._resid[l] = new
            if new is x:
                return None
            if args:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}
        return hook

    def _attn_out(self, l: int):
        def hook(module, args, output):
            a = _first(output)                                                    # [B, T, d]
            new = self._run(l, "attn_out", a) if self._has(l, "attn_out") else a
            if self._has(l, "resid_mid"):
                r = self._resid.pop(l)
                mid = r + new                                                     # what the layer computes next
                edited = self._run(l, "resid_mid", mid)
                if edited is not mid:
                    new = edited - r
            return None if new is a else _replace_first(output, new)
        return hook

    def _post(self, l: int, site: str):
        def hook(module, args, output):
            x = _first(output)
            new = self._run(l, site, x)
            return None if new is x else _replace_first(output, new)
        return hook

    def _z(self, l: int, n_heads: int):
        def hook(module, args):
            x = args[0]                                                           # [B, T, H*D]
            B, T, HD = x.shape
            heads = x.view(B, T, n_heads, HD // n_heads)                          # [B, T, H, D]
            new = self._run(l, "z", heads)
            if new is heads:
                return None
            return (new.reshape(B, T, HD),) + tuple(args[1:])
        return hook

    def __enter__(self) -> "TapSet":
        from . import seam

        stack = contextlib.ExitStack()
        try:
            hooks = stack.enter_context(ModuleHooks())
            hooks.pre(self.model, self._on_model, with_kwargs=True)
            layers = self.handle.decoder_layers()
            n_heads = self.handle.n_heads
            seam_layers = sorted({l for l, s in self.fns if s in SEAM_SITES})
            for l in sorted({l for l, _ in self.fns}):
                layer = layers[l]
                gemma = _gemma_style(layer)
                if self._has(l, "resid_pre") or self._has(l, "resid_mid"):
                    hooks.pre(layer, self._resid_pre(l), with_kwargs=True)
                if self._has(l, "attn_out") or self._has(l, "resid_mid"):
                    hooks.post(layer.post_attention_layernorm if gemma else layer.self_attn, self._attn_out(l))
                if self._has(l, "mlp_out"):
                    hooks.post(layer.post_feedforward_layernorm if gemma else layer.mlp, self._post(l, "mlp_out"))
                if self._has(l, "resid_post"):
                    hooks.post(layer, self._post(l, "resid_post"))
                if self._has(l, "z"):
                    o_proj = getattr(layer.self_attn, "o_proj", None)
                    if o_proj is None:
                        raise ProbeError(f"layer {l}'s attention has no o_proj", "the z tap needs Llama/Gemma-style attention")
                    hooks.pre(o_proj, self._z(l, n_heads))
            if seam_layers:
                stack.enter_context(seam.use_seam(self.model))
                mods = self.handle.attention_modules()
                hook = _SeamTaps(self)
                for l in seam_layers:
                    seam.attach(mods[l], hook)
                    stack.callback(seam.detach, mods[l], hook)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> bool:
        stack, self._stack = self._stack, None
        self._resid.clear()
        if stack is not None:
            stack.close()
        return False


class _SeamTaps:
    """Seam hook feeding q / k / v / pattern taps from the ``AttentionCall``."""

    def __init__(self, taps: TapSet):
        self.taps = taps

    def stats_request(self, call) -> StatsRequest:
        if not self.taps._has(call.layer, "pattern"):
            return NO_STATS
        if call.S > PATTERN_MAX_KEYS:
            raise ProbeError(f"{tap_name(call.layer, 'pattern')} asks for the full [B, H, T, S] map with S={call.S} keys "
                             f"(limit {PATTERN_MAX_KEYS})", "use probe.capture statistics (received, sink, entropy) for long prompts")
        return StatsRequest(full=True)

    def after(self, call, result) -> None:
        t, l = self.taps, call.layer
        views = {"q": lambda: call.query.transpose(1, 2),                          # [B, T, H, D]
                 "k": lambda: call.key[:, :, -call.T:].transpose(1, 2),           # [B, T, KV, D]
                 "v": lambda: call.value[:, :, -call.T:].transpose(1, 2),
                 "pattern": lambda: result.probs}                                 # [B, H, T, S]
        for site, view in views.items():
            if t._has(l, site):
                t._run(l, site, view(), attention=call)


# ---- the cache and the verbs ---------------------------------------------------------------------

class ActivationCache(Mapping):
    """Activations by name, one entry per forward call (decode step) in which the site ran.

    ``cache["blocks.5.z"]`` is the tensor when the block ran one forward; with several (``generate``)
    use ``cache["blocks.5.z", i]`` (i = call index, -1 = the last) or ``cache.steps(name)``.
    TransformerLens names work as keys too.
    """

    def __init__(self, n_layers: int, cpu: bool = False):
        self.n_layers = n_layers
        self.cpu = cpu
        self._data: dict[str, dict[int, Tensor]] = {}

    def _store(self, x: Tensor, ctx: TapContext) -> None:
        x = x.detach()
        x = x.to("cpu", copy=True) if self.cpu else x.clone()
        self._data.setdefault(ctx.name, {})[ctx.call] = x

    def _key(self, name: str) -> str:
        keys = parse_name(name, self.n_layers)
        if len(keys) != 1:
            raise ProbeError(f"cache key {name!r} names {len(keys)} layers", "index one layer, e.g. blocks.5.z")
        key = tap_name(*keys[0])
        if key not in self._data:
            raise ProbeError(f"{key} was not cached", f"add it to names= (cached: {', '.join(self._data) or 'nothing'})")
        return key

    def steps(self, name: str) -> list[Tensor]:
        """Every entry of ``name``, in call order."""
        entries = self._data[self._key(name)]
        return [entries[c] for c in sorted(entries)]

    def calls(self, name: str) -> list[int]:
        return sorted(self._data[self._key(name)])

    def __getitem__(self, key) -> Tensor:
        if isinstance(key, tuple):
            name, i = key
            entries = self._data[self._key(name)]
            calls = sorted(entries)
            return entries[calls[i] if i < 0 else i]
        entries = self._data[self._key(key)]
        if len(entries) != 1:
            raise ProbeError(f"{key} holds {len(entries)} forward calls", f"index one: cache[{key!r}, i] or cache.steps({key!r})")
        return next(iter(entries.values()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, name) -> bool:
        try:
            return self._key(name) in self._data
        except ProbeError:
            return False

    def __repr__(self) -> str:
        shown = [f"{k}: {tuple(v[min(v)].shape)}" + (f" x{len(v)} calls" if len(v) > 1 else "")
                 for k, v in list(self._data.items())[:6]]
        more = f", ... ({len(self._data)} names)" if len(self._data) > 6 else ""
        return "ActivationCache(" + ", ".join(shown) + more + ")"


def _names(names) -> list[str]:
    if names is None:
        return list(DEFAULT_CACHE_SITES)
    return [names] if isinstance(names, str) else list(names)


@contextlib.contextmanager
def taps(handle_or_model, names: Union[None, str, Sequence[str]] = (), edits=None, *, cpu: bool = False
         ) -> Iterator[ActivationCache]:
    """Cache ``names`` and apply ``edits`` for every forward run inside the block.

    Args:
        handle_or_model: a probe Handle or a Hugging Face model.
        names: tap names to cache ("blocks.5.z", "z" = every layer; None = every non-seam site).
        edits: {name: fn} or [(name, fn)] with ``fn(tensor, ctx) -> tensor | None`` (zeroing, patching,
            steering); removed on exit, also after an exception.
        cpu: keep CPU copies (default: detached clones on the model's device).
    Yields:
        ActivationCache filled as forwards run (one entry per call; ``generate``: per decode step).

    Example::

        with probe.taps(h, ["blocks.5.z"], edits={"blocks.5.z": zero_head(3)}) as cache:
            h.model.generate(**h.encode("The capital of France is"), max_new_tokens=4)
        cache.steps("blocks.5.z")   # [B, T, H, D] per call
    """
    handle, _ = as_handle(handle_or_model)
    out = ActivationCache(handle.n_layers, cpu)
    with TapSet(handle, reads=[(n, out._store) for n in _names(names)], edits=edits):
        yield out


def cache(handle_or_model, inputs, names: Union[None, str, Sequence[str]] = None, *, edits=None, cpu: bool = False,
          **forward_kwargs) -> ActivationCache:
    """Run one forward (no grad, ``use_cache=False``) and return the cached activations.

    Args:
        inputs: a dict of model inputs (``h.encode(...)``, a processor's output) or text(s)
            (encoded with the handle's tokenizer, left padding).
        names: tap names (see ``probe.capture.taps``); None = resid_pre/mid/post, attn_out,
            mlp_out and z of every layer.
        edits: as in ``probe.taps``; cpu: CPU copies.
    Returns:
        ActivationCache; ``cache["blocks.5.z"]`` is [B, T, H, D]. Works inside ``probe.capture`` /
        ``intervene`` blocks (their statistics and edits apply to this forward too).
    """
    handle, model = as_handle(handle_or_model)
    if isinstance(inputs, (str, list, tuple)):
        if handle.tokenizer is None:
            raise ProbeError("text inputs need a tokenizer", "pass a probe Handle or encoded inputs (input_ids, attention_mask)")
        inputs = handle.encode(list(inputs) if not isinstance(inputs, str) else inputs)
    kwargs = {"use_cache": False, **forward_kwargs}
    with torch.no_grad(), taps(handle_or_model, names, edits, cpu=cpu) as out:
        model(**inputs, **kwargs)
    return out


def sites_of(names: Iterable[str], n_layers: int) -> list[tuple[int, str]]:
    """Every (layer, site) that ``names`` cover."""
    return [key for n in names for key in parse_name(n, n_layers)]
