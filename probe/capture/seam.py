"""The one seam between probe and a model: an attention function registered with transformers.

``AttentionInterface.register("probe", ...)`` adds an implementation name; a model only uses it
while a probe context manager has switched that model's ``attn_implementation`` to "probe"
(and back on exit). Nothing in transformers is patched. Modules with no active hook (e.g. a
VLM's vision tower) fall through to SDPA.

Hooks attach per attention module (``attach`` / ``detach``). For each call the seam:
  1. turns transformers' mask into (key_start, window) and checks it is causal + left padding
     (a static cache's keys are sliced to the filled prefix),
  2. asks hooks for statistics (``stats_request``) and edits (``edits``; an ACT-like hook may ask
     for a plain received-mass pre-pass first with ``needs_received``),
  3. runs ``kernels.attention.attention`` (Triton on CUDA, PyTorch reference elsewhere) -- or,
     when no statistic and no probability edit is asked for, SDPA followed by the output edits
     (head mean / scale) as in-place ops: the same attention with the host cost of the unmodified model,
  4. hands the result to every hook (``after``) and returns the output to the model.
The decode path reads no tensor value on the host: hooks build their edit tensors once per
sequence (at the prefill) and hand the same objects to every decode step.
A hook with an ``attend`` method computes the layer's output itself (HeadwiseKV, whose KV heads
have different cache lengths); it must be the layer's only hook.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import NamedTuple, Optional, Protocol

import torch
from torch import Tensor

from kernels.attention import AttentionEdits, AttentionResult, StatsRequest, attention, decode_attention, graph_op
from kernels.attention.api import NO_STATS

from ..errors import ProbeError
from ..models.padding import first_real_index
from .causal_mask import GRAPH_MODE_CONFIGS, CompactCausalMask, compact_mask, rows_match

ATTN_NAME = "probe"


@dataclass
class AttentionCall:
    """What a hook knows about one attention call of one layer.

    key_start: [B] first real key per row (None on the output-only path of graph-safe hooks, which never read
    it); q_pos: [T] absolute query positions (S - T + t), built on first use (most calls never need it).
    """

    layer: int
    module: torch.nn.Module
    B: int
    H: int
    KV: int
    T: int
    S: int
    D: int
    key_start: Tensor
    window: Optional[int]
    q_positions: Optional[Tensor] = None
    call_index: int = 0
    query: Optional[Tensor] = None   # [B, H, T, D] the layer's inputs (references, not copies)
    key: Optional[Tensor] = None     # [B, KV, S, D]
    value: Optional[Tensor] = None   # [B, KV, S, D]
    scale: Optional[float] = None    # multiplier of q.k the call uses
    softcap: Optional[float] = None  # logit soft-capping (Gemma-2 style), None = off

    @property
    def is_prefill(self) -> bool:
        return self.T > 1

    @property
    def device(self) -> torch.device:
        return (self.key_start if self.key_start is not None else self.query).device

    @property
    def q_pos(self) -> Tensor:
        """[T] absolute query positions S - T .. S - 1 (on the call's device)."""
        if self.q_positions is None:
            self.q_positions = torch.arange(self.S - self.T, self.S, device=self.key_start.device)
        return self.q_positions


class SeamHook(Protocol):
    """What capture and interventions implement. Every method is optional except ``after``.

    A hook with ``graph_safe = True`` promises: no ``stats_request`` / ``attend``, ``needs_received`` False on
    decode steps (T == 1); its ``edits`` reads only the call's layer, B, H, T, D and device (``key_start`` is
    None there) and returns head-output edits (``head_scale``, ``head_mean``), ``head_uniform``, ACT columns
    (``col_idx`` distinct per head, ``col_scale``, fixed per sequence) or a VAR edit (fixed per sequence); its ``after`` is None or reads no tensor
    values. Decode steps of layers whose hooks are all graph-safe run SDPA + those edits as tensor ops (no host
    read, no Triton launch), which ``torch.compile`` traces and CUDA graphs capture (``allow_compile``): HeadScale /
    HeadMask always, ACT / VAR in graph mode (a dense mask over a static cache; eagerly they keep the decode
    kernel, cheaper on the host). Prefills take the general path.
    """

    graph_safe: bool

    def stats_request(self, call: AttentionCall) -> StatsRequest: ...

    def needs_received(self, call: AttentionCall) -> bool: ...

    def edits(self, call: AttentionCall, pre: Optional[AttentionResult]) -> Optional[AttentionEdits]: ...

    def sink_pos(self, call: AttentionCall) -> Optional[Tensor]: ...

    def spans(self, call: AttentionCall) -> Optional[Tensor]: ...

    def after(self, call: AttentionCall, result: AttentionResult) -> None: ...

    def attend(self, call: AttentionCall, common: dict) -> Tensor: ...   # optional: compute the layer's output [B, T, H, D] itself


class _Plan:
    """A module's hooks and their optional methods, looked up once at attach / detach instead of per call;
    ``calls`` counts the module's attention calls while any hook is attached (``AttentionCall.call_index``);
    ``window`` is the module's own ``sliding_window`` attribute (None when it has none), read once."""

    __slots__ = ("hooks", "attend", "received", "edits", "stats", "after", "calls", "graph_safe", "window",
                 "span_plans")

    def __init__(self, hooks: list, calls: int = 0, window: Optional[int] = None):
        self.hooks = tuple(hooks)
        self.window = window
        self.attend = [h for h in hooks if hasattr(h, "attend")]
        self.received = [h.needs_received for h in hooks if hasattr(h, "needs_received")]
        self.edits = [h.edits for h in hooks if hasattr(h, "edits")]
        self.stats = [h.stats_request for h in hooks if getattr(h, "stats_request", None) is not None]
        self.after = [h.after for h in hooks if getattr(h, "after", None) is not None]
        self.span_plans = [h.var_plan for h in hooks if hasattr(h, "var_plan")]     # VAR's SpanPlan per sequence
        self.calls = calls
        # every hook is graph-safe (HeadScale, HeadMask, ACT): decode steps take the output-only path
        self.graph_safe = all(getattr(h, "graph_safe", False) for h in hooks) and not (self.attend or self.stats)


# A module's plan lives on the module itself (one plain attribute, set by attach and removed by the last detach):
# torch.compile guards on a module attribute it reads, so a graph compiled while a module had no hook (or other
# hooks) is not replayed after hooks change; a lookup in a side table (a WeakKeyDictionary) was not guarded, and a
# compiled decode step kept running without the edit attached after it.
_PLAN_ATTR = "_probe_seam_plan"


def _plan(module) -> Optional[_Plan]:
    return getattr(module, _PLAN_ATTR, None)


def attach(module: torch.nn.Module, hook) -> None:
    """Route ``module``'s attention calls through ``hook`` (in attach order)."""
    plan = _plan(module)
    object.__setattr__(module, _PLAN_ATTR, _Plan(list(plan.hooks if plan else ()) + [hook], plan.calls if plan else 0,
                                                 getattr(module, "sliding_window", None)))


def detach(module: torch.nn.Module, hook) -> None:
    """Stop routing ``module`` through ``hook``; forget the module when no hook is left."""
    plan = _plan(module)
    hooks = list(plan.hooks) if plan else []
    if hook in hooks:
        hooks.remove(hook)
    if hooks:
        object.__setattr__(module, _PLAN_ATTR, _Plan(hooks, plan.calls, plan.window))
    elif plan is not None:
        module.__dict__.pop(_PLAN_ATTR, None)


@contextlib.contextmanager
def attached(modules, hook):
    """Route every module of ``modules`` through ``hook`` for a ``with`` block; detached on exit, also on error."""
    modules = list(modules)
    for m in modules:
        attach(m, hook)
    try:
        yield hook
    finally:
        for m in modules:
            detach(m, hook)


def active_hooks(module: torch.nn.Module) -> list:
    plan = _plan(module)
    return list(plan.hooks) if plan else []


# The last mask checked: (weakref to the mask tensor, B, T, S, window) -> key_start. Every layer of one
# forward gets the same mask object, so the causal check (a device->host sync) runs once per forward,
# not once per layer -- on a GPU the per-layer sync cost decode speed (host waits on each layer).
_MASK_MEMO: list = [None, None]


def _mask_to_key_start(mask: Optional[Tensor], B: int, T: int, S: int, window: Optional[int], device) -> Tensor:
    """Derive the first real key per row from transformers' mask and check the pattern is causal.

    mask: None (pure causal), a ``CompactCausalMask`` (the seam's own mask function), or
    [B, 1, T, >=S] bool (True = visible) / additive float. Returns [B] long.
    """
    if mask is None:
        return torch.zeros(B, dtype=torch.long, device=device)
    if isinstance(mask, CompactCausalMask):
        if (mask.q_length, mask.n_keys, mask.window) == (T, S, window):
            return mask.key_start
        mask = mask.dense()
        if mask is None:
            return torch.zeros(B, dtype=torch.long, device=device)
    ref, key = _MASK_MEMO[0], (B, T, S, window)
    if ref is not None and ref[0]() is mask and ref[1] == key:
        return _MASK_MEMO[1]
    key_start = _checked_key_start(mask, B, T, S, window, device)
    _MASK_MEMO[0], _MASK_MEMO[1] = (weakref.ref(mask), key), key_start
    return key_start


def _checked_key_start(mask: Tensor, B: int, T: int, S: int, window: Optional[int], device) -> Tensor:
    """``_mask_to_key_start`` without the memo: one device->host sync for the check."""
    m = mask[:, 0, :, :S] if mask.dim() == 4 else mask[..., :S]
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    m = m.expand(B, T, S)
    cols = m.any(dim=1)                                                   # [B, S]
    key_start = first_real_index(cols)
    if not rows_match(lambda t0, t1: m[:, t0:t1], key_start, T, S, window):  # row blocks: no N x N temporaries
        raise ProbeError(
            "this model's attention mask is not causal with left padding (e.g. bidirectional or packed sequences)",
            "probe's capture supports causal decoders; use left padding and one sequence per row",
        )
    return key_start.long()


def _merge_stats(reqs: list[StatsRequest]) -> StatsRequest:
    reqs = [r for r in reqs if r is not NO_STATS]
    if len(reqs) <= 1:
        return reqs[0] if reqs else NO_STATS
    out = NO_STATS
    for r in reqs:
        out = StatsRequest(
            lse=out.lse or r.lse, entropy=out.entropy or r.entropy, sink_mass=out.sink_mass or r.sink_mass,
            span_mass=out.span_mass or r.span_mass, received=out.received or r.received,
            topk=max(out.topk, r.topk), topk_rows=max(out.topk_rows, r.topk_rows) if r.topk else out.topk_rows,
            full=out.full or r.full,
        )
    return out


_SCALE_FIELDS = ("head_scale",)


def merge_edits(a: Optional[AttentionEdits], b: Optional[AttentionEdits]) -> Optional[AttentionEdits]:
    """Compose two interventions' edits: head scales multiply, uniform/mean masks OR, the rest must
    not collide (two ACT-style column edits in one layer are refused)."""
    if a is None or b is None:
        return a or b
    out = replace(a)
    if b.head_scale is not None:
        out.head_scale = b.head_scale if a.head_scale is None else a.head_scale * b.head_scale
    if b.head_uniform is not None:
        out.head_uniform = b.head_uniform if a.head_uniform is None else a.head_uniform | b.head_uniform
        out.uniform_heads = b.uniform_heads if a.head_uniform is None else (
            tuple(sorted(set(a.uniform_heads) | set(b.uniform_heads))) if a.uniform_heads and b.uniform_heads else None)
    if b.head_mean_on is not None:
        if a.head_mean_on is not None:
            raise ProbeError("two mean-ablation masks on one layer", "combine them into one HeadMask")
        out.head_mean_on, out.head_mean = b.head_mean_on, b.head_mean
    for group in (("col_idx", "col_scale"), ("redist_idx", "redist_span", "redist_from", "redist_keep")):
        if getattr(b, group[0]) is not None:
            if getattr(a, group[0]) is not None:
                raise ProbeError(f"two interventions both set {group[0]} on one layer", "apply them one at a time")
            for f in group:
                setattr(out, f, getattr(b, f))
            if group[0] == "redist_idx":
                out.redist_rho, out.redist_min_mass = b.redist_rho, b.redist_min_mass
    return out


def _first(hooks, method: str, call):
    for h in hooks:
        fn = getattr(h, method, None)
        val = fn(call) if fn else None
        if val is not None:
            return val
    return None


_SDPA: list = []      # transformers' sdpa_attention_forward, imported on first use


def _sdpa(module, query, key, value, attention_mask, **kwargs) -> Tensor:
    """transformers' SDPA attention -> [B, T, H, D] (a compact mask becomes its dense form, built once
    per forward; keys sliced to a static cache's prefix get the matching slice of the mask)."""
    if not _SDPA:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        _SDPA.append(sdpa_attention_forward)
    if isinstance(attention_mask, CompactCausalMask):
        attention_mask = attention_mask.dense()
    if attention_mask is not None and attention_mask.shape[-1] > key.shape[2]:
        attention_mask = attention_mask[..., :key.shape[2]]
    return _SDPA[0](module, query, key, value, attention_mask, **kwargs)[0]


def _output_edits(out: Tensor, edits: Optional[AttentionEdits]) -> Tensor:
    """Head mean / scale edits on the head outputs out [B, T, H, D] (in place; kernel order: mean, then scale)."""
    if edits is None:
        return out
    if edits.head_mean_on is not None and edits.head_mean is not None:
        on = edits.head_mean_on.to(out.device)[:, None]                            # [H, 1]
        out.copy_(torch.where(on, edits.head_mean.to(out.device), out))
    if edits.head_scale is not None:
        out.mul_(edits.head_scale.to(out.device)[:, None])                        # [H, 1], computed in fp32
    return out


def _visible_keys(attention_mask, B: int, S: int, window: Optional[int], device) -> Tensor:
    """[B, S] bool: the keys a decode step's query (the last position) sees, from the mask SDPA gets: a
    ``CompactCausalMask``, a bool / additive [B, 1, 1, >=S] mask, or None (every key)."""
    if isinstance(attention_mask, CompactCausalMask):
        j = torch.arange(S, device=device)
        vis = j[None, :] >= attention_mask.key_start[:, None]                                  # [B, S]
        if window is not None:
            vis = vis & (j[None, :] > S - 1 - int(window))
        return vis
    if attention_mask is None:
        return torch.ones(B, S, dtype=torch.bool, device=device)
    m = attention_mask[:, 0, -1, :S]                                                       # [B or 1, S]
    return (m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2).expand(B, S)


def _uniform_decode(out: Tensor, value: Tensor, vis: Optional[Tensor], on: Tensor, heads: Optional[tuple] = None
                    ) -> Tensor:
    """Uniform heads of one decode step on SDPA's output: out [B, 1, H, D] gets, for the heads in ``on`` [H]
    bool, the mean of the visible values (value [B, KV, S, D], vis [B, S] or None = every key); in place.
    ``heads``: the same heads as host integers (``AttentionEdits.uniform_heads``): when their KV heads form one run,
    only those KV heads' values are read (one masked head reads 1 / KV of the cache instead of all of it)."""
    KV = value.shape[1]
    H = out.shape[2]
    G = H // KV
    kv = sorted({h // G for h in heads}) if heads else None
    if kv and kv[-1] - kv[0] + 1 == len(kv):
        # a run of KV heads (one masked head: one KV head), read by slices: no index tensor (whose copy to the
        # device would wait for it) and no host read; other KV head sets take the whole cache below
        k0, k1 = kv[0], kv[-1] + 1
        mean = _mean_values(value[:, k0:k1], vis).repeat_interleave(G, dim=1)             # [B, (k1 - k0) G, 1, D]
        mean = mean.transpose(1, 2).to(out.dtype)                                          # [B, 1, (k1 - k0) G, D]
        part = out[:, :, k0 * G:k1 * G]
        part.copy_(torch.where(on.to(out.device)[k0 * G:k1 * G][None, None, :, None], mean, part))
        return out
    mean = _mean_values(value, vis)                                                        # [B, KV, 1, D]
    if H != KV:
        mean = mean.repeat_interleave(H // KV, dim=1)
    mean = mean.transpose(1, 2).to(out.dtype)                                              # [B, 1, H, D]
    out.copy_(torch.where(on.to(out.device)[None, None, :, None], mean, out))
    return out


def _mean_values(value: Tensor, vis: Optional[Tensor]) -> Tensor:
    """value [B, K, S, D] -> float32 [B, K, 1, D]: the mean over the visible keys (vis [B, S] or None = every key)."""
    if vis is None:
        return value.mean(2, keepdim=True, dtype=torch.float32)                           # [B, K, 1, D]
    w = vis.to(value.dtype)[:, None, None, :]                                              # [B, 1, 1, S]
    return torch.matmul(w, value).float() / vis.sum(-1).clamp_min(1).float()[:, None, None, None]


_NEG_INF = float("-inf")
_ACT_TENSOR_PATH: list = [None]     # why ACT's tensor-op decode path was switched off (None: in use)
# Graph-mode ACT / VAR decode steps on CUDA: True = the Triton decode kernels as the custom op
# ``probe::decode_attention`` (kernels/attention/graph_op.py), False = the tensor-op forms ``_act_decode`` /
# ``_var_decode`` (benchmarks compare the two; CPU always takes the tensor ops).
GRAPH_KERNEL: list = [True]


def _graph_kernel_decode(query: Tensor, key: Tensor, value: Tensor, vis: Tensor, edits: AttentionEdits,
                         scale: float, window: Optional[int], softcap) -> Tensor:
    """ACT / VAR on a graph-mode decode step through the Triton decode kernels (``graph_op.decode_step``) ->
    [B, 1, H, D]. vis [B, S]: the keys SDPA's dense mask shows the query over the whole static cache; its first
    visible key and its own position (the last visible key: causal with left padding, which the eager prefill
    checked) become device tensors, so nothing here reads a value on the host. The hooks' column / sink indices are
    distinct per row (what ``_act_decode`` / ``_var_decode`` assume too): no deduplication in the step."""
    S = vis.shape[-1]
    j = torch.arange(S, device=vis.device)
    key_start = torch.where(vis, j, S).amin(-1)                                            # [B]
    n_keys = torch.where(vis, j + 1, 0).amax(-1)                                           # [B] position + 1
    return graph_op.decode_step(query, key, value, key_start, n_keys, scale=scale, window=window, softcap=softcap,
                                edits=edits, distinct=True)


class SpanPlan(NamedTuple):
    """Host integers of one sequence's VAR edit, fixed from its prefill on (``span_plan``): the keys [lo, hi) cover
    every row's span; ``mixed``: some row's span is narrower (its other keys in [lo, hi) are not targets);
    ``prefix``: some key before lo is not a sink (else the keys before lo need no attention call of their own)."""

    lo: int
    hi: int
    mixed: bool
    prefix: bool


def span_plan(idx: Tensor, span: Tensor) -> SpanPlan:
    """The ``SpanPlan`` of sink keys idx [B, C] (-1 unused, distinct per row) and spans [B, 2] (absolute): one
    device->host read, made once per sequence (at its prefill), never on a decode step."""
    host = torch.cat([span.reshape(-1), idx.reshape(-1)]).tolist()
    B = span.shape[0]
    spans, sinks = host[:2 * B], host[2 * B:]
    lo, hi = min(spans[0::2]), max(spans[1::2])
    C = len(sinks) // B
    before = [sum(0 <= p < lo for p in sinks[r * C:(r + 1) * C]) for r in range(B)]     # sinks before lo, per row
    return SpanPlan(lo, hi, len(set(zip(spans[0::2], spans[1::2]))) > 1, any(n < lo for n in before))


# Overrides of the graph-mode decode calls' CUDA kernel: (device, dtype, G, D) -> "cudnn" (benchmarks and tests; the
# default is ATen's memory-efficient kernel: with cuDNN's kernel, which also returns the log-sum-exp, the H200's static
# ACT step measured 1.33x plain in session 6's second call, against 1.14x with the efficient kernel in its first)
_LSE_KERNEL: dict = {}
# device -> CTAs to aim for (its SM count, set by ``prepare_graph_decode``): a batch-1 call splits its keys into chunks
# that run as a batch of their own (split-KV), so that B * KV heads (32 on Llama-7B, 3 on SmolLM2) are not the only CTAs
_SPLIT_CTAS: dict = {}
_CHUNK_MIN = 256         # keys per chunk, at least
_ALIGN = 16              # the CUDA kernels' bias rows start at multiples of this many elements


def _sdpa_lse(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Attention of q [B, KV, G, D] (the G query heads of a KV head as G rows) over k / v [B, KV, S, D] with an
    additive bias [B, KV, G, S] -> (out [B, KV, G, D], log-sum-exp [B, KV, G] float32): ATen's memory-efficient kernel
    on CUDA (cuDNN's where ``_LSE_KERNEL`` says so), the CPU flash kernel elsewhere (all return the log-sum-exp)."""
    if q.is_cuda and _LSE_KERNEL.get((q.device, q.dtype, q.shape[2], q.shape[3])) == "cudnn":
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, bias, True, 0.0, False, False,
                                                                      scale=scale)[:2]
    elif q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, 0.0, False, scale=scale)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                             scale=scale)[:2]
    return out, lse.reshape(q.shape[0], q.shape[1], -1)[..., :q.shape[2]].float()


def prepare_graph_decode(device) -> None:
    """Eagerly, before a compiled decode step reads it: the device's SM count for ``_chunks`` (CUDA only)."""
    device = torch.device(device)
    if device.type == "cuda" and device not in _SPLIT_CTAS:
        _SPLIT_CTAS[device] = torch.cuda.get_device_properties(device).multi_processor_count


def _chunks(B: int, KV: int, n: int, device) -> tuple[int, int, int]:
    """(m chunks, c keys each, s keys between chunk starts) covering n keys exactly, (m - 1) s + c = n: one chunk unless
    the batch is 1 and its KV heads leave SMs idle (``_SPLIT_CTAS``); then as many chunks as fill the SMs, each >=
    ``_CHUNK_MIN`` keys, s = n // m apart, the last one c = s + n % m long (each key counted in one chunk)."""
    m = min(_SPLIT_CTAS.get(device, 0) // KV, n // _CHUNK_MIN) if B == 1 else 1
    if m <= 1:
        return 1, n, n
    s = n // m
    return m, n - (m - 1) * s, s


def _partial(q: Tensor, key: Tensor, value: Tensor, keep: Tensor, lo: int, hi: int, scale: float
             ) -> tuple[Tensor, Tensor]:
    """Attention of q [B, KV, G, D] over the keys [lo, hi) that ``keep`` marks -- keep [B, S] (every head) or
    [B, KV, G, S] -- -> (out [B, KV, G, D] float32, log-sum-exp [B, KV, G]); a row without a key gets (0, -inf)
    whatever the kernel returns for it (the CPU kernel: lse 0). Static slices of the cache; at batch 1 the range is
    cut into ``_chunks`` -- views of the cache (``unfold``; the last chunk's extra keys are masked in the others) --
    that the kernel runs as a batch (split-KV), merged here by their log-sum-exps."""
    B, KV, G, D = q.shape
    n = hi - lo
    m, c, s = _chunks(B, KV, n, q.device)
    keep = keep[..., lo:hi]
    keep = (keep.view(B, 1, 1, n) if keep.dim() == 2 else keep).expand(B, KV, G, n)
    k, v = key[:, :, lo:hi], value[:, :, lo:hi]
    if m > 1:                    # batch 1: the chunks become the batch, [m, KV, c, D] views of the cache
        k, v = (x[0].unfold(1, c, s).permute(1, 0, 3, 2) for x in (k, v))
        q = q.expand(m, KV, G, D).contiguous()
        own = torch.arange(c, device=q.device) < s
        own = own | (torch.arange(m, device=q.device) == m - 1)[:, None]                     # [m, c] its own keys
        keep = keep[0].unfold(-1, c, s).permute(2, 0, 1, 3) & own[:, None, None, :]          # [m, KV, G, c]
    pad = -(-c // _ALIGN) * _ALIGN if q.is_cuda else c        # an aligned row stride for the CUDA kernel's bias
    bias = torch.zeros(*keep.shape[:3], pad, dtype=q.dtype, device=q.device)[..., :c]
    bias.masked_fill_(~keep, _NEG_INF)
    out, lse = _sdpa_lse(q, k, v, bias, scale)                                                # [m or B, KV, G, ...]
    some = keep.any(-1)
    out, lse = torch.where(some[..., None], out.float(), 0.0), torch.where(some, lse, _NEG_INF)
    if m == 1:
        return out, lse
    total = torch.logsumexp(lse, 0)                                                           # [KV, G]
    w = torch.exp(lse - total).nan_to_num(0.0)                                                # [m, KV, G]; no key: 0
    return (w[..., None] * out).sum(0)[None], total[None]


_COMPARES = 1 << 24      # _key_mask: up to this many (key, position) compares, then a scatter


def _key_mask(idx: Tensor, on: Tensor, S: int) -> Tensor:
    """[..., S] bool: the positions idx [..., C] (in range) where on [..., C] -- one compare per (key, position), which
    a compiled graph fuses with its consumer, up to ``_COMPARES``; a scatter beyond (no [..., C, S] temporary)."""
    if idx.numel() * S <= _COMPARES:
        return (torch.where(on, idx, -1)[..., None] == torch.arange(S, device=idx.device)).any(-2)
    out = torch.zeros(*idx.shape[:-1], S + 1, dtype=torch.bool, device=idx.device)
    return out.scatter_(-1, torch.where(on, idx, S), True)[..., :S]


def _explicit_keys(q: Tensor, key: Tensor, value: Tensor, idx: Tensor, on: Tensor, scale: float
                   ) -> tuple[Tensor, Tensor]:
    """Scores and values of a few keys taken out of the attention calls, in float32: idx [B, KV, G, C] or [B, 1, 1, C]
    positions (in range), on: same shape, False = no key -> (scores [B, KV, G, C] (-inf off), values [B, KV, G or 1,
    C, D]). Elementwise products and sums (no matmul), which a compiled graph fuses."""
    B, KV, G, D = q.shape
    C, Gi = idx.shape[-1], idx.shape[2]
    g = idx.expand(B, KV, Gi, C).reshape(B, KV, Gi * C, 1).expand(B, KV, Gi * C, D)
    k_x = key.gather(2, g).view(B, KV, Gi, C, D).float()
    v_x = value.gather(2, g).view(B, KV, Gi, C, D).float()
    s_x = (k_x * q.float()[:, :, :, None, :]).sum(-1).mul_(scale)                          # [B, KV, G, C]
    return s_x.masked_fill_(~on, _NEG_INF), v_x


def _weights(lses: list, s_x: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities of attention calls (their log-sum-exps, each [B, KV, G]) and of explicit keys (scores s_x
    [B, KV, G, C], -inf off) in the softmax over all of them -> (w [B, KV, G, P], p [B, KV, G, C])."""
    lse = torch.stack(lses, -1)                                                              # [B, KV, G, P]
    total = torch.logsumexp(torch.cat([lse, s_x], -1), -1, keepdim=True)                     # [B, KV, G, 1]
    return torch.exp(lse - total), torch.exp(s_x - total)


def _act_decode(query: Tensor, key: Tensor, value: Tensor, vis: Tensor, col_idx: Tensor, col_scale: Tensor,
                scale: float) -> Tensor:
    """ACT's column edit on one decode step with tensor ops (no Triton launch, no host read) -> [B, 1, H, D].

    query [B, H, 1, D], key / value [B, KV, S, D], vis [B, S], col_idx [B, H, C] (distinct positions per head,
    -1 unused), col_scale [B, H]. With m = the row's mass on its columns C and beta the scale:
    out = beta * sum_C p_j v_j + (1 - beta m) * attention over the visible keys outside C (the kernel's
    A'_j = beta A_j on C, A_j (1 - beta m) / (1 - m) elsewhere): one SDPA call over the non-column keys that also
    returns its log-sum-exp, plus the C columns in fp32; 1 - beta m = (1 - beta) m + (1 - m) with 1 - m the
    non-column keys' own probability (no cancellation). The newest key is never a column (columns are prompt
    positions), so the non-column set is never empty. Used where the step must be graph-capturable (a static cache's
    compiled decode step): eagerly its small ops cost more host time than the Triton kernel's launch (measured on the
    H200, session 5).
    """
    B, H, _, D = query.shape
    KV, S = key.shape[1], key.shape[2]
    G, C = H // KV, col_idx.shape[-1]
    safe = col_idx.clamp(0, S - 1)
    on = (col_idx >= 0) & vis.gather(1, safe.view(B, H * C)).view(B, H, C)             # visible columns
    cols = _key_mask(safe, on, S)                                                        # [B, H, S]
    q = query.reshape(B, KV, G, D)
    o_rest, lse_rest = _partial(q, key, value, (vis[:, None, :] & ~cols).view(B, KV, G, S), 0, S, scale)
    s_c, v_c = _explicit_keys(q, key, value, safe.view(B, KV, G, C), on.view(B, KV, G, C), scale)
    w, p_c = _weights([lse_rest], s_c)                                                    # [B, KV, G, 1], [B, KV, G, C]
    beta = col_scale.view(B, KV, G, 1).float()
    m = p_c.sum(-1, keepdim=True)
    pv = (p_c[..., None] * v_c).sum(-2)                                                   # [B, KV, G, D]
    out = beta * pv + ((1 - beta) * m + w) * o_rest
    return out.view(B, H, D)[:, None].to(query.dtype)                                    # [B, 1, H, D]


def _var_decode(query: Tensor, key: Tensor, value: Tensor, vis: Tensor, edits: AttentionEdits, scale: float,
                plan: Optional[SpanPlan] = None) -> Tensor:
    """VAR's redistribution on one decode step with tensor ops (graph mode) -> [B, 1, H, D].

    query [B, H, 1, D], key / value [B, KV, S, D], vis [B, S]; edits: redist_idx [B, C] sink keys (-1 unused),
    redist_span [B, 2], redist_from [B], redist_keep [H], redist_rho, redist_min_mass (``AttentionEdits``); plan: the
    sequence's ``SpanPlan`` (None: the span may be anywhere, lo = 0, hi = S, mixed). The visible non-sink keys are
    split into attention calls over static slices that each return their log-sum-exp -- the span's targets over
    [lo, hi), the other keys of [lo, hi) (when ``mixed``), the keys before lo (when ``prefix``) and those after hi --
    so every key is read once; the sink keys are scored in fp32. One softmax over the calls' log-sum-exps and the
    sinks' scores gives the output, the target mass and the sinks' probabilities; a selected row becomes
    out + (keep - 1) * sum_sinks p v + (1 - keep) * (sink mass) * (attention over the targets), the kernel's edit.
    """
    B, H, _, D = query.shape
    KV, S = key.shape[1], key.shape[2]
    G, C = H // KV, edits.redist_idx.shape[-1]
    lo, hi, mixed, prefix = plan if plan is not None else (0, S, True, False)
    hi = min(hi, S)
    j = torch.arange(S, device=query.device)
    idx = edits.redist_idx                                                                 # [B, C]
    safe = idx.clamp(0, S - 1)
    on = (idx >= 0) & vis.gather(1, safe)                                                  # [B, C] visible sinks
    sink = _key_mask(safe, on, S)                                                          # [B, S]
    span = (j >= edits.redist_span[:, :1]) & (j < edits.redist_span[:, 1:])                # [B, S]
    free = vis & ~sink
    q = query.reshape(B, KV, G, D)
    parts = [_partial(q, key, value, free & span, lo, hi, scale)]                          # the targets first
    if mixed:
        parts.append(_partial(q, key, value, free & ~span, lo, hi, scale))
    if prefix and lo > 0:
        parts.append(_partial(q, key, value, free, 0, lo, scale))
    if hi < S:
        parts.append(_partial(q, key, value, free, hi, S, scale))
    s_s, v_s = _explicit_keys(q, key, value, safe.view(B, 1, 1, C), on.view(B, 1, 1, C), scale)
    w, p_s = _weights([lse for _, lse in parts], s_s)                                      # [B, KV, G, P], [.., C]
    pv = (p_s[..., None] * v_s).sum(-2)                                                    # [B, KV, G, D] sinks
    out = pv                                                                               # plain attention
    for i, (o, _) in enumerate(parts):
        out = out + w[..., i, None] * o
    denom = w[..., :1]                                                                     # [B, KV, G, 1] target mass
    in_span = (span.gather(1, safe) & on).view(B, 1, 1, C)
    on_span = (p_s * in_span).sum(-1, keepdim=True)
    m = denom + on_span                                                                    # span mass
    keep = edits.redist_keep.to(query.device).float().view(1, KV, G, 1)
    pos = (j[None, :] * vis).amax(-1)                      # the query's position: its own key is the last visible one
    rows = (pos >= edits.redist_from).view(B, 1, 1, 1)
    sel = rows & (keep < 1) & (on_span / (m + 1e-6) <= edits.redist_rho) & (m >= edits.redist_min_mass) & (denom > 0)
    moved = out + (keep - 1) * pv + ((1 - keep) * p_s.sum(-1, keepdim=True)) * parts[0][0]
    return torch.where(sel, moved, out).view(B, H, D)[:, None].to(query.dtype)             # [B, 1, H, D]


def _filled_keys(key: Tensor, value: Tensor, attention_mask) -> tuple[Tensor, Tensor]:
    """k / v [B, KV, S, D] cut to a static cache's filled keys (``CompactCausalMask.kv_valid``); else as given."""
    if isinstance(attention_mask, CompactCausalMask) and attention_mask.kv_valid is not None:
        n = attention_mask.kv_valid
        return key[:, :, :n], value[:, :, :n]
    return key, value


def _output_only(plan, module, query, key, value, attention_mask, dropout, scaling, sliding_window, softcap, kwargs):
    """The path of graph-safe hooks: SDPA (or, for ACT / VAR on a graph-mode decode step, the Triton decode kernels
    as the custom op ``probe::decode_attention`` on CUDA -- ``_graph_kernel_decode`` -- and the tensor-op forms
    ``_act_decode`` / ``_var_decode`` elsewhere), then the output edits as tensor ops (``_output_edits``) ->
    [B, T, H, D]; ACT / VAR decode
    steps with a compact mask (eager) go to the kernels from here (``attention``: the Triton decode kernel on
    CUDA), with the call and edits already built; None when the general path must take the call (probability
    edits on a prefill, two probability edits, ACT / VAR with a dense mask once the tensor-op path is off).
    No host read of tensor values, and (but for the eager ACT / VAR kernel call) traceable by ``torch.compile``."""
    key, value = _filled_keys(key, value, attention_mask)
    B, H, T, D = query.shape
    window = sliding_window or plan.window
    call = AttentionCall(module.layer_idx, module, B, H, key.shape[1], T, key.shape[2], D, None, window,
                         query=query, key=key, value=value)
    edits = _merged_edits(plan, call, None)
    decode = T == 1
    if edits is not None and ((not decode and edits.edits_probs) or (edits.col_idx is not None) + (
            edits.head_uniform is not None) + (edits.redist_idx is not None) > 1):
        return None
    scale = scaling if scaling is not None else D ** -0.5
    if edits is not None and (edits.redist_idx is not None or edits.col_idx is not None):
        # VAR / ACT columns: the Triton kernel path for compact masks (eagerly cheaper on the host); tensor ops for a
        # dense mask over a whole static cache (graph mode: the step generate compiles and captures in a CUDA graph)
        if attention_mask is None or isinstance(attention_mask, CompactCausalMask):
            return _kernel_decode(plan, call, edits, attention_mask, scale, softcap)
        if _ACT_TENSOR_PATH[0] is not None:
            return None
        vis = _visible_keys(attention_mask, B, key.shape[2], window, query.device)              # [B, S]
    if edits is not None and query.is_cuda and GRAPH_KERNEL[0] and (edits.redist_idx is not None
                                                                     or edits.col_idx is not None):
        out = _graph_kernel_decode(query, key, value, vis, edits, scale, window, softcap)
    elif edits is not None and edits.redist_idx is not None:
        span_plan = plan.span_plans[0](call) if plan.span_plans else None
        out = _var_decode(query, key, value, vis, edits, scale, span_plan)
    elif edits is not None and edits.col_idx is not None:
        try:
            out = _act_decode(query, key, value, vis, edits.col_idx, edits.col_scale, scale)
        except (RuntimeError, NotImplementedError) as err:     # e.g. an ATen kernel this build lacks
            if torch.compiler.is_compiling():
                raise
            _ACT_TENSOR_PATH[0] = f"{type(err).__name__}: {str(err)[:200]}"
            GRAPH_MODE_CONFIGS.clear()            # later forwards: compact masks, which the kernel path needs
            warnings.warn(f"probe seam: ACT's tensor-op decode path failed ({_ACT_TENSOR_PATH[0]}); using the Triton "
                          "kernel path from the next forward on", RuntimeWarning, stacklevel=2)
            return None
    else:
        out = _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scale, **kwargs)
        if edits is not None and edits.head_uniform is not None:
            every = attention_mask is None or (isinstance(attention_mask, CompactCausalMask) and window is None
                                               and attention_mask.dense() is None)   # unpadded: every key
            vis = None if every else _visible_keys(attention_mask, B, key.shape[2], window, query.device)
            _uniform_decode(out, value, vis, edits.head_uniform, edits.uniform_heads)
    out = _output_edits(out, edits)
    if plan.after:
        result = AttentionResult(out=out)
        for fn in plan.after:
            fn(call, result)
    return out


def _merged_edits(plan, call: AttentionCall, pre) -> Optional[AttentionEdits]:
    """The plan's hooks' edits for one call (``pre``: the received-mass pre-pass or None), composed in attach order
    by ``merge_edits``."""
    edits = None
    for fn in plan.edits:
        edits = merge_edits(edits, fn(call, pre))
    return edits


def _kernel_decode(plan, call: AttentionCall, edits: AttentionEdits, attention_mask, scale: float, softcap) -> Tensor:
    """An eager ACT / VAR decode step of graph-safe hooks on the kernels (what the general path does with these
    hooks: no statistics, no received-mass pre-pass at T == 1, the edits already merged) -> out [B, 1, H, D]."""
    key_start = _mask_to_key_start(attention_mask, call.B, 1, call.S, call.window, call.query.device)
    result = decode_attention(call.query, call.key, call.value, scale=scale, key_start=key_start, window=call.window,
                              softcap=softcap, edits=edits)
    for fn in plan.after:
        fn(call, result)
    return result.out


def probe_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None,
                    softcap=None, **kwargs):
    """transformers attention function: q [B, H, T, D], k/v [B, KV, S, D] -> ([B, T, H, D], None)."""
    plan = getattr(module, _PLAN_ATTR, None)     # getattr, not __dict__.get: torch.compile guards only on the former
    if plan is None:
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     sliding_window=sliding_window, softcap=softcap, **kwargs), None
    if plan.graph_safe and query.shape[2] == 1:    # decode steps of graph-safe hooks (prefills: the general path)
        out = _output_only(plan, module, query, key, value, attention_mask, dropout, scaling, sliding_window, softcap,
                           kwargs)
        if out is not None:
            return out, None
    hooks = plan.hooks
    key, value = _filled_keys(key, value, attention_mask)
    B, H, T, D = query.shape
    KV, S = key.shape[1], key.shape[2]
    window = sliding_window or plan.window
    key_start = _mask_to_key_start(attention_mask, B, T, S, window, query.device)
    idx = plan.calls
    plan.calls = idx + 1
    scale = scaling if scaling is not None else D ** -0.5
    call = AttentionCall(int(module.layer_idx), module, B, H, KV, T, S, D, key_start, window, None, idx,
                         query, key, value, scale, softcap)
    common = dict(scale=scale, key_start=key_start, window=window, softcap=softcap)
    attend = plan.attend
    if attend:      # a hook that computes the attention itself (HeadwiseKV: per-KV-head cache lengths)
        if len(hooks) > 1:
            raise ProbeError(f"{type(attend[0]).__name__} computes layer {call.layer}'s attention itself and cannot "
                             "share it with other probe hooks", "apply HeadwiseKV without capture or other interventions")
        out = attend[0].attend(call, common)
        attend[0].after(call, None)
        return out, None

    pre = None
    if plan.received and any(fn(call) for fn in plan.received):
        pre = attention(query, key, value, stats=StatsRequest(received=True), **common)
    edits = _merged_edits(plan, call, pre)
    request = _merge_stats([fn(call) for fn in plan.stats]) if plan.stats else NO_STATS
    probs = edits is not None and (edits.head_uniform is not None or edits.col_idx is not None
                                   or edits.redist_idx is not None)
    if (request is NO_STATS or not request.any) and not probs and softcap is None:
        # nothing to measure, no probability edit: SDPA + the output edits, at the unmodified model's host cost
        out = _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scale, **kwargs)
        result = AttentionResult(out=_output_edits(out, edits))
    else:
        result = attention(query, key, value, sink_pos=_first(hooks, "sink_pos", call),
                           spans=_first(hooks, "spans", call) if request.span_mass else None,
                           stats=request, edits=edits, **common)
    for fn in plan.after:
        fn(call, result)
    return result.out, None


def _probe_mask(*args, **kwargs):
    """Mask function for the "probe" implementation: a ``CompactCausalMask`` (key_start, window) for
    causal / sliding-window / left-padded patterns, else SDPA's (bool [B, 1, T, S] or None)."""
    return compact_mask(*args, **kwargs)


def register() -> None:
    """Register the "probe" attention and mask functions with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, probe_attention)
    AttentionMaskInterface.register(ATTN_NAME, _probe_mask)


class use_seam:
    """Context manager: switch a model to the "probe" implementation and restore it on exit.

    Re-entrant per model (nested capture + intervene): only the outermost exit restores.
    While active, ``generate``'s automatic ``torch.compile`` (a static cache on CUDA) is switched off
    (``generation_config.disable_compile``, restored on exit): the seam's hooks are Python objects that
    change per sequence, and its mask function reads values, so it runs eagerly -- unless ``allow_compile``
    finds every hook graph-safe (``intervene`` asks after installing its hooks).
    """

    _depth: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
    _saved: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        register()
        depth = self._depth.get(self.model, 0)
        gen = getattr(self.model, "generation_config", None)
        if depth == 0:
            self._saved[self.model] = _config_impls(self.model)
            if gen is not None:
                self._saved[self.model]["disable_compile"] = (gen, getattr(gen, "disable_compile", None))
                gen.disable_compile = True
            try:
                self.model.set_attn_implementation(ATTN_NAME)
            except Exception as err:  # transformers refuses models without the attention interface
                saved = self._saved.pop(self.model, {}).get("disable_compile")
                if saved is not None:
                    saved[0].disable_compile = saved[1]
                raise ProbeError(
                    f"unsupported architecture {type(self.model).__name__}: it does not route attention through "
                    "transformers' attention interface",
                    "use a model family that does (Llama, Gemma, Qwen, Mistral, LLaVA)",
                ) from err
        else:              # a nested user (e.g. capture inside intervene) may attach hooks that are not graph-safe
            _set_graph_mode(self._saved.get(self.model, {}), False)
            if gen is not None:
                gen.disable_compile = True
        self._depth[self.model] = depth + 1
        return self

    def __exit__(self, *exc):
        depth = self._depth.get(self.model, 1) - 1
        if depth <= 0:
            self._depth.pop(self.model, None)
            saved = self._saved.pop(self.model, {})
            _set_graph_mode(saved, False)
            gen = saved.pop("disable_compile", None)
            if gen is not None:
                gen[0].disable_compile = gen[1]
            for cfg, impl in saved.values():
                cfg._attn_implementation_internal = impl
        else:
            self._depth[self.model] = depth
        return False


def _set_graph_mode(saved: dict, on: bool) -> None:
    """Register (or drop) the configs of a ``use_seam`` entry with the mask function's graph mode."""
    for key, val in saved.items():
        if key == "disable_compile":
            continue
        if on:
            GRAPH_MODE_CONFIGS[key] = val[0]
        else:
            GRAPH_MODE_CONFIGS.pop(key, None)


def allow_compile(model, modules) -> bool:
    """Give ``generate`` its automatic ``torch.compile`` / CUDA graphs back (a static cache on CUDA) while the seam is
    active, when every hook attached to ``modules`` is graph-safe (HeadScale, HeadMask, ACT, Redistribute with given
    sinks) -- True when it did. Then the seam's mask function hands a static cache's decode steps SDPA's dense
    mask over the whole cache (fixed shapes, no host read) and those layers run SDPA + tensor ops, which the
    compiled graph captures (ACT / VAR: the decode kernels as the custom op ``probe::decode_attention``, which
    reads the filled key count on the device, on CUDA; ``_act_decode`` / ``_var_decode`` elsewhere;
    ``prepare_graph_decode`` reads the device for the latter here). Hooks that read statistics (capture, a
    Redistribute that logs its selection or finds its sinks) or compute the attention themselves (HeadwiseKV)
    keep the forward eager. Undone by the seam's outermost exit, or by a nested ``use_seam`` entry."""
    saved = use_seam._saved.get(model)
    if saved is None:
        return False
    if any(not p.graph_safe for p in map(_plan, modules) if p is not None):     # capture, VAR, HeadwiseKV
        return False
    for m in modules:                   # what ACT's / VAR's graph-mode decode calls read of the device, eagerly
        w = next(m.parameters(), None)
        if _plan(m) is not None and w is not None:
            prepare_graph_decode(w.device)
    gen = saved.get("disable_compile")
    if gen is not None:
        gen[0].disable_compile = gen[1]
    _set_graph_mode(saved, True)
    return True


def _config_impls(model) -> dict:
    """{id(config): (config, implementation)} for the model's config and every sub-config / sub-model config."""
    found = {}
    stack = [model.config] + [m.config for m in model.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation_internal")]
    while stack:
        cfg = stack.pop()
        if id(cfg) in found:
            continue
        found[id(cfg)] = (cfg, getattr(cfg, "_attn_implementation_internal", None))
        for key in getattr(cfg, "sub_configs", {}) or {}:
            sub = getattr(cfg, key, None)
            if sub is not None:
                stack.append(sub)
    return found
