"""Host side of the Triton attention kernels (same signature as ``reference.attention``).

Kernels (each in its own module): ``prefill_kernel.attention_fwd_kernel`` (output, statistics and
edits in one launch), ``received_kernel.received_fwd_kernel`` (exact column sums from the
forward's lse), ``decode_kernel`` (split-KV decode for T == 1, ACT / VAR / uniform / head edits
included). ``unsupported_reason`` says why a request goes to the reference: stats.full, float64,
head_dim not a power of two in 16..256, statistics other than top-k together with probability
edits, ACT and VAR together, more than 16 ACT columns / sink keys / spans / sink positions,
window < 1. Top-k of the last rows is taken by the reference on those few rows (exact, O(H R S)).
"""
from __future__ import annotations

import functools
import operator
import threading
import weakref
from typing import Optional

import torch
from torch import Tensor

from . import decode_kernel, jit_utils, launch, prefill_kernel, received_kernel, tiles
from .api import NO_STATS, AttentionEdits, AttentionResult, StatsRequest, check_shapes
from .decode_kernel import decode_combine_kernel, decode_fwd_kernel
from .jit_utils import INTERPRET
from .prefill_kernel import attention_fwd_kernel
from .received_kernel import received_fwd_kernel
from .reference import attention as reference_attention

jit_utils.stable_cache_keys(jit_utils, prefill_kernel, received_kernel, decode_kernel)   # same keys in every process

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_LIST = 16   # ACT columns, VAR sink keys, spans, sink positions per call


def unsupported_reason(q: Tensor, k: Tensor, v: Tensor, kw: dict) -> Optional[str]:
    """Why the kernels do not cover this request (None = they do)."""
    try:
        check_shapes(q, k, v)
    except ValueError as err:
        return str(err)
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtype {q.dtype} (kernel covers fp16 / bf16 / fp32 with equal q, k, v dtypes)"
    if not (q.is_cuda or INTERPRET):
        return "not on CUDA"
    D = q.shape[-1]
    if D not in (16, 32, 64, 128, 256):
        return f"head_dim {D} (kernel covers 16, 32, 64, 128, 256)"
    stats: StatsRequest = kw.get("stats", NO_STATS) or NO_STATS
    edits: Optional[AttentionEdits] = kw.get("edits")
    if stats.full:
        return "stats.full (the whole map is the reference's job)"
    window = kw.get("window")
    if window is not None and int(window) < 1:
        return "window < 1"
    if edits is not None:
        if edits.redist_idx is not None and edits.col_idx is not None:
            return "ACT and VAR together (each alone is in the kernel)"
        if edits.redist_idx is not None and edits.redist_idx.shape[-1] > _MAX_LIST:
            return f"more than {_MAX_LIST} VAR sink keys"
        if edits.edits_probs and (stats.lse or stats.entropy or stats.sink_mass or stats.span_mass
                                  or stats.received):
            return "statistics of edited probabilities (only topk is served with probability edits)"
        if edits.col_idx is not None and edits.col_idx.shape[-1] > _MAX_LIST:
            return f"more than {_MAX_LIST} ACT columns"
    sink_pos = kw.get("sink_pos")
    if stats.sink_mass and sink_pos is not None and sink_pos.shape[-1] > _MAX_LIST:
        return f"more than {_MAX_LIST} sink positions"
    spans = kw.get("spans")
    if stats.span_mass and spans is not None and spans.shape[1] > _MAX_LIST:
        return f"more than {_MAX_LIST} spans"
    return None


def supports(q: Tensor, k: Tensor, v: Tensor, **kw) -> bool:
    """True when the Triton kernels cover this request (else the dispatcher uses the reference)."""
    return unsupported_reason(q, k, v, kw) is None


# ---------------------------------------------------------------------------------------------
# per-sequence caches: edit index lists do not change between the decode steps of one sequence
# ---------------------------------------------------------------------------------------------
_DEDUP: dict = {}
_DEDUP_MAX = 512


def _dedup_raw(idx: Tensor) -> Tensor:
    """Indices [..., C] (-1 unused) with repeats set to -1 (device ops, no sync, no recompile)."""
    idx, _ = idx.long().sort(-1)
    if idx.shape[-1] > 1:
        dup = idx[..., 1:] == idx[..., :-1]
        idx = torch.cat([idx[..., :1], torch.where(dup, torch.full_like(idx[..., 1:], -1), idx[..., 1:])], -1)
    return idx.contiguous()


def _dedup_fresh(idx: Tensor, dev, expand_heads: int = 0, distinct: bool = False) -> Tensor:
    """``_dedup_raw(idx)`` on dev, [B, C] -> [B, H, C] when expand_heads = H (no cache); distinct: the caller's
    indices repeat no position already (the kernels need no order), so they are only made int64 and contiguous."""
    out = idx.to(dev).long().contiguous() if distinct else _dedup_raw(idx.to(dev))
    if expand_heads:
        out = out[:, None, :].expand(out.shape[0], expand_heads, out.shape[-1]).contiguous()
    return out


def _dedup(idx: Tensor, dev, expand_heads: int = 0) -> Tensor:
    """``_dedup_raw(idx)`` on dev ([B, C] -> [B, H, C] when expand_heads = H), cached on the identity
    and version of ``idx``: a hook that hands the same column tensor to every decode step of a
    sequence (ACT, Redistribute) pays the sort once per sequence, not once per layer and step."""
    key = (id(idx), idx._version, str(dev), expand_heads)
    hit = _DEDUP.get(key)
    if hit is not None and hit[0]() is idx:
        return hit[1]
    out = _dedup_fresh(idx, dev, expand_heads)
    if len(_DEDUP) >= _DEDUP_MAX:
        _DEDUP.clear()
    _DEDUP[key] = (weakref.ref(idx), out)
    return out


# Tests set this: every output buffer starts as NaN, so an element a kernel never writes fails them.
POISON_OUTPUTS = False


def _alloc(*shape: int, dtype, device) -> Tensor:
    """torch.empty, NaN-filled when ``POISON_OUTPUTS`` (the kernel tests)."""
    t = torch.empty(*shape, dtype=dtype, device=device)
    return t.fill_(float("nan")) if POISON_OUTPUTS else t


_CONST: dict = {}


def _zeros_i64(n: int, dev) -> Tensor:
    """Cached read-only int64 zeros of length n on dev (the default key_start)."""
    key = (n, str(dev))
    t = _CONST.get(key)
    if t is None:
        t = _CONST[key] = torch.zeros(n, dtype=torch.long, device=dev)
    return t


def _received_count(key_start: Tensor, T: int, S: int, window: Optional[int], dtype) -> Tensor:
    """Number of this call's queries that see each key, [B, S] (closed form)."""
    j = torch.arange(S, device=key_start.device)                              # [S]
    first = torch.clamp(j, min=S - T)                                         # first query position >= j
    last = torch.full_like(j, S - 1)
    if window is not None:
        last = torch.clamp(j + int(window) - 1, max=S - 1)
    cnt = (last - first + 1).clamp_min(0)[None, :].expand(key_start.shape[0], S)  # [B, S]
    cnt = torch.where(j[None, :] >= key_start[:, None], cnt, torch.zeros_like(cnt))
    return cnt.to(dtype)


def _on_q_device(fn):
    """Launch under q's CUDA device. Triton launches on the *current* device's stream: with a model
    spread over GPUs (device_map), a layer on cuda:1 while cuda:0 is current ran on cuda:0's stream,
    unordered with cuda:1's work, and its statistics came back stale (found on the H200 x2)."""
    @functools.wraps(fn)
    def on_device(q: Tensor, k: Tensor, v: Tensor, **kw) -> AttentionResult:
        if not q.is_cuda or q.get_device() == torch.cuda.current_device():   # CPU (TRITON_INTERPRET) / already current:
            return fn(q, k, v, **kw)                                          # no device switch (a per-call host cost)
        with torch.cuda.device(q.device):
            return fn(q, k, v, **kw)
    return on_device


class _Edits:
    """The kernel arguments of an ``AttentionEdits`` (None = off), on dev."""

    def __init__(self, ed: Optional[AttentionEdits], B: int, H: int, dev, cached: bool = True, distinct: bool = False):
        ed = ed if ed is not None else AttentionEdits()
        dedup = _dedup if cached else functools.partial(_dedup_fresh, distinct=distinct)
        f32 = torch.float32
        self.var = ed.redist_idx is not None
        self.act = ed.col_idx is not None
        self.probs = ed.edits_probs
        self.rho, self.min_mass = float(ed.redist_rho), float(ed.redist_min_mass)
        if self.var:  # the sink keys, per batch row, take the place of the ACT columns
            self.cols = dedup(ed.redist_idx, dev, expand_heads=H)
            self.span = ed.redist_span.to(dev).long().contiguous()
            self.frm = ed.redist_from.to(dev).long().contiguous()
            self.keep = ed.redist_keep.to(dev).to(f32).contiguous()
        else:
            self.cols = dedup(ed.col_idx, dev) if self.act else None
            self.span = self.frm = self.keep = None
        self.C = self.cols.shape[-1] if self.cols is not None else 0
        self.col_scale = ed.col_scale.to(dev).to(f32).contiguous() if self.act else None
        self.uniform = ed.head_uniform.to(dev).to(torch.int32).contiguous() if ed.head_uniform is not None else None
        on = ed.head_mean_on is not None and ed.head_mean is not None
        self.mean = ed.head_mean.to(dev).contiguous() if on else None
        self.mean_on = ed.head_mean_on.to(dev).to(torch.int32).contiguous() if on else None
        self.scale = ed.head_scale.to(dev).to(f32).contiguous() if ed.head_scale is not None else None


_NO_EDITS = _Edits(None, 0, 0, None)
_PREPARED: dict = {}     # id(AttentionEdits) -> (weakref, scalars, its field tensors, their versions, _Edits)
_PREPARED_MAX = 1024
_EDIT_FIELDS = operator.attrgetter("col_idx", "col_scale", "redist_idx", "redist_span", "redist_from", "redist_keep",
                                   "head_uniform", "head_mean", "head_mean_on", "head_scale")


def _prepared_edits(ed: Optional[AttentionEdits], B: int, H: int, dev) -> _Edits:
    """``_Edits(ed, B, H, dev)``, built once per edit object: the seam hands the same ``AttentionEdits`` to every
    decode step of a sequence (ACT, Redistribute, HeadMask, HeadScale cache theirs), so the conversions,
    deduplication and copies run once per sequence and layer, not once per call. Rebuilt when the shape, device or a
    scalar changes, or any field is replaced (identity) or changed in place (tensor versions); the field tensors are
    held so their identities stay unique."""
    if ed is None:
        return _NO_EDITS
    fs = _EDIT_FIELDS(ed)
    scalars = (B, H, dev, ed.redist_rho, ed.redist_min_mass)
    hit = _PREPARED.get(id(ed))
    if hit is not None and hit[0]() is ed and hit[1] == scalars:
        for a, b in zip(fs, hit[2]):
            if a is not b:
                break
        else:
            if tuple([t._version for t in fs if t is not None]) == hit[3]:
                return hit[4]
    prepared = _Edits(ed, B, H, dev)
    if len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.clear()
    key = id(ed)
    _PREPARED[key] = (weakref.ref(ed, lambda _, k=key: _PREPARED.pop(k, None)), scalars, fs,
                      tuple([t._version for t in fs if t is not None]), prepared)
    return prepared


# ---------------------------------------------------------------------------------------------
# launches: each kernel's @triton.heuristics values depend only on which optional arguments are None, a few
# integers and the dtype, so they are evaluated once per such key and the JIT function is called directly
# ---------------------------------------------------------------------------------------------
_HEURISTICS: dict = {}
# kernel -> (arguments whose None-ness the heuristics read, integer / bool arguments they read)
_HEURISTIC_INPUTS = {
    "attention_fwd_kernel": (("lse", "ent", "spm", "snk", "redist_span", "col_idx", "head_uniform", "head_mean",
                              "head_scale", "kd", "adq"), ("SPAN_POST", "SEG", "NS", "C", "LSUM")),
    "decode_fwd_kernel": (("col_idx", "plr", "ptm", "redist_span", "head_uniform", "n_keys", "done", "lse",
                           "head_mean", "head_scale"), ("C",)),
    "decode_combine_kernel": (("lse", "col_idx", "ptm", "redist_span", "head_uniform", "head_mean", "head_scale",
                               "n_keys"), ()),
    "received_fwd_kernel": (("qd", "ld", "ad"), ("KEYMAJOR", "NPOLY", "RLANES")),
}
# Tests set this: every launch also evaluates the heuristics afresh and checks the cached values against them.
CHECK_HEURISTICS = False


def _evaluate_heuristics(kernel, kw: dict) -> dict:
    """The values ``triton.heuristics`` would add to kw, in its order (each sees the ones before it)."""
    merged, values = dict(kw), {}
    for name, rule in getattr(kernel, "values", {}).items():
        merged[name] = values[name] = rule(merged)
    return values


def _launch(name: str, grid: tuple, kw: dict) -> tuple:
    """(JIT function, grid, complete keyword arguments) of one launch of the kernel ``name``, heuristics included."""
    kernel = globals()[name]
    nones, ints = _HEURISTIC_INPUTS[name]
    key = (name, kw["q"].element_size(), kw["window"] > 0, kw["softcap"] > 0,
           *[kw[a] is None for a in nones], *[kw[a] for a in ints])
    values = _HEURISTICS.get(key)
    if values is None:
        values = _HEURISTICS[key] = _evaluate_heuristics(kernel, kw)
    elif CHECK_HEURISTICS:
        assert values == _evaluate_heuristics(kernel, kw), f"{name}: cached heuristics differ from a fresh evaluation"
    kw.update(values)
    return getattr(kernel, "fn", kernel) if hasattr(kernel, "values") else kernel, grid, kw


def _run(launches: list) -> None:
    for fn, grid, kw in launches:
        fn.run(grid=grid, warmup=False, **kw)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    key_start: Optional[Tensor] = None,
    window: Optional[int] = None,
    softcap: Optional[float] = None,
    sink_pos: Optional[Tensor] = None,
    spans: Optional[Tensor] = None,
    stats: StatsRequest = NO_STATS,
    edits: Optional[AttentionEdits] = None,
    block_q: Optional[int] = None,
    tile: Optional[tuple] = None,
    opts: Optional[dict] = None,
) -> AttentionResult:
    """Causal GQA attention with in-launch statistics and edits, in Triton (see ``kernels.attention.api``).

    Args:
        q: [B, H, T, D]; k, v: [B, KV, S, D] (fp16 / bf16 / fp32, D in 16..256, a power of two).
        scale, key_start [B], window, softcap, sink_pos [B, P], spans [B, NS, 2], stats, edits:
            as in ``reference.attention``.
        block_q: ignored (the reference's memory knob; the kernel tiles by itself).
        tile: (BT, BS, num_warps, num_stages) override of the prefill kernel's tile (tuning runs).
        opts: overrides of the recorded tables (tuning runs and tests): "tile" (as ``tile``), "rtile"
            (the received-mass kernel's tile), the prefill switches "seg" / "span_post" / "reload_q" /
            "tma" / "fma" / "rev" / "p_maxnreg" (see ``tiles.PREFILL_SWITCHES``), the received-mass switches
            "r_<name>" (``tiles.RECEIVED_SWITCHES``), the decode switches "col_mode" (see
            ``DECODE_COL_MODES``; "block_test": True / False = "block" / "chunk"), "nsplit" (a forced
            key-split count), "dtile" (BS, num_warps, num_stages), "maxnreg" (a register cap) and "cols_out" (True:
            ACT's split / bits modes write the columns' mass and P.V, the combine kernel gathers none).
    Returns:
        AttentionResult with out [B, T, H, D] in q's dtype; lse / entropy [B, H, T],
        sink_mass [B, H, T, P], span_mass [B, H, T, NS], received_sum [B, H, S],
        received_count [B, S], topk_idx / topk_val [B, H, R, k], all float32, when requested.
    """
    why = unsupported_reason(q, k, v, {"stats": stats, "edits": edits, "window": window,
                                       "sink_pos": sink_pos, "spans": spans})
    if why is not None:
        raise NotImplementedError(f"triton attention: {why}")
    return attention_validated(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap,
                               sink_pos=sink_pos, spans=spans, stats=stats, edits=edits, tile=tile, opts=opts)


@_on_q_device
def attention_validated(q: Tensor, k: Tensor, v: Tensor, **kw) -> AttentionResult:
    """``attention`` for a request ``unsupported_reason`` has already accepted (the dispatcher checks each
    call once): plan the launches, run them, add the top-k rows. Same arguments and result as ``attention``.
    Decode steps (T == 1) without statistics other than lse and without tuning overrides take ``_decode_step``
    (the same launches, built once per shape and edit)."""
    stats = kw.get("stats", NO_STATS)
    if q.shape[2] == 1 and not (kw.get("opts") or kw.get("tile") is not None or stats.entropy or stats.sink_mass
                                or stats.span_mass or stats.received or stats.topk):
        return _decode_step(q, k, v, scale=kw["scale"], key_start=kw.get("key_start"), window=kw.get("window"),
                            softcap=kw.get("softcap"), edits=kw.get("edits"), lse=stats.lse)
    res, launches = plan(q, k, v, **kw)
    _run(launches)
    T = q.shape[2]
    rows = min(stats.topk_rows, T) if stats.topk else 0
    if rows:
        # exact top-k of the last few rows (edits included) by the reference: O(H * rows * S)
        tail = reference_attention(
            q[:, :, T - rows:], k, v, scale=kw["scale"], key_start=res.extras.pop("key_start"),
            window=kw.get("window"), softcap=kw.get("softcap"), stats=StatsRequest(topk=stats.topk, topk_rows=rows),
            edits=kw.get("edits"))
        res.topk_idx, res.topk_val = tail.topk_idx, tail.topk_val.to(torch.float32)
    else:
        res.extras.pop("key_start", None)
    return res


@_on_q_device
def decode_validated(q: Tensor, k: Tensor, v: Tensor, *, scale: float, key_start: Optional[Tensor] = None,
                     window: Optional[int] = None, softcap: Optional[float] = None,
                     edits: Optional[AttentionEdits] = None) -> AttentionResult:
    """A decode step (q [B, H, 1, D]) ``unsupported_reason`` has accepted, without statistics: ``_decode_step`` under
    q's device (the dispatcher's ``decode_attention``)."""
    return _decode_step(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap, edits=edits)


@_on_q_device
def decode_graph(q: Tensor, k: Tensor, v: Tensor, *, scale: float, key_start: Tensor, n_keys: Tensor,
                 window: Optional[int] = None, softcap: Optional[float] = None,
                 edits: Optional[AttentionEdits] = None, distinct: bool = False) -> Tensor:
    """A decode step whose launches a CUDA graph can capture and replay: q [B, H, 1, D] over k / v [B, KV, S, D], a
    static cache of capacity S whose rows hold n_keys [B] keys (the query sits at n_keys[b] - 1; later slots are
    never read) from key_start [B] on, both on the device -> out [B, 1, H, D]. Every tensor the launches read is
    an argument or made in the call (the edits' conversions and the partial buffers: no per-sequence cache whose
    tensors a replay could outlive), and the launch shape depends only on S, so a replay at another step is the
    same launch over new device values. Same kernels and edit epilogue as ``attention`` (ACT, VAR, uniform heads,
    head mean / scale); no statistics. distinct: the edits' column / sink indices repeat no position per row (ACT's
    and Redistribute's never do), so the step skips their deduplication (a sort and a few small kernels)."""
    B, H, _, D = q.shape
    q, k, v, key_start, common = _launch_inputs(q, k, v, key_start, window, softcap, scale)
    ed = _Edits(edits, B, H, q.device, cached=False, distinct=distinct)
    out = _alloc(B, 1, H, D, dtype=q.dtype, device=q.device)
    n_keys = n_keys.to(q.device).long().contiguous()
    _run(_decode(q, k, v, out, None, key_start, ed, common, n_keys=n_keys))
    return out


def _launch_inputs(q: Tensor, k: Tensor, v: Tensor, key_start: Optional[Tensor], window, softcap, scale) -> tuple:
    """(q, k, v with a unit last stride, key_start [B] int64 on q's device, the launches' common scalars
    {"scale", "softcap" (0.0 = off), "window" (0 = none or wider than the keys)}) of a validated request."""
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    if v.stride(-1) != 1:
        v = v.contiguous()
    B, S = q.shape[0], k.shape[2]
    if key_start is None:
        key_start = _zeros_i64(B, q.device)
    elif key_start.dtype is not torch.int64 or key_start.device != q.device or not key_start.is_contiguous():
        key_start = key_start.to(q.device).long().contiguous()
    win = int(window) if window is not None and int(window) < S else 0
    return q, k, v, key_start, dict(scale=float(scale), softcap=float(softcap) if softcap else 0.0, window=win)


def plan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    key_start: Optional[Tensor] = None,
    window: Optional[int] = None,
    softcap: Optional[float] = None,
    sink_pos: Optional[Tensor] = None,
    spans: Optional[Tensor] = None,
    stats: StatsRequest = NO_STATS,
    edits: Optional[AttentionEdits] = None,
    block_q: Optional[int] = None,
    tile: Optional[tuple] = None,
    opts: Optional[dict] = None,
) -> tuple[AttentionResult, list]:
    """Everything before the kernel launches, for a validated request (arguments as ``attention``): the result
    with its output buffers allocated, and the launches [(JIT function, grid, keyword arguments)] that fill
    them, in order. No host sync. ``res.extras["key_start"]`` holds the key_start [B] the launches use."""
    B, H, T, D = q.shape
    S = k.shape[2]
    dev = q.device
    q, k, v, key_start, common = _launch_inputs(q, k, v, key_start, window, softcap, scale)
    ed = _prepared_edits(edits, B, H, dev)
    if tile is not None:
        opts = dict(opts or {}, tile=tile)

    out = _alloc(B, T, H, D, dtype=q.dtype, device=dev)
    res = AttentionResult(out=out)
    res.extras["key_start"] = key_start
    if T == 1 and not (stats.entropy or stats.sink_mass or stats.span_mass or stats.received):
        lse = _alloc(B, H, 1, dtype=torch.float32, device=dev) if stats.lse else None
        res.lse = lse
        return res, _decode(q, k, v, out, lse, key_start, ed, common, opts)
    launches = [_prefill(q, k, v, out, res, key_start, ed, stats, sink_pos, spans, opts or {}, common)]
    if stats.received:
        lse_all, neg2, split = (res.extras.pop(n) for n in ("lse_all", "lse_neg2", "lse_split"))
        rsum, rlaunch = _received(q, k, lse_all, key_start, common, (opts or {}).get("rtile"), opts, neg2, split)
        launches.append(rlaunch)
        res.received_sum = rsum
        res.received_count = _received_count(key_start, T, S, window, torch.float32)
    return res, launches


def _rows_descriptor(x: Tensor, block_rows: int):
    """A TMA tensor descriptor over x [B, KV, S, D] (k / v; or q [B, H, T, D]) viewed as [B * KV * S, D] with
    [block_rows, D] blocks, or None when that view does not exist (the kernel then uses pointer loads)."""
    B, KV, S, D = x.shape
    if not (x.stride(3) == 1 and x.stride(1) == S * x.stride(2) and x.stride(0) == KV * x.stride(1)):
        return None
    if (x.stride(2) * x.element_size()) % 16 or x.data_ptr() % 16 or D * x.element_size() < 16:
        return None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return None
    return TensorDescriptor(x, shape=[B * KV * S, D], strides=[x.stride(2), 1], block_shape=[block_rows, D])


def _lse_descriptor(lse: Tensor, block: int):
    """A TMA tensor descriptor over lse [B, H, T] (float32) viewed as [B * H, T] with [1, block] blocks, or None when
    that view does not exist (T * 4 bytes not a multiple of 16, say; the kernel then uses pointer loads)."""
    B, H, T = lse.shape
    if not lse.is_contiguous() or lse.data_ptr() % 16 or (T * lse.element_size()) % 16:
        return None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return None
    return TensorDescriptor(lse, shape=[B * H, T], strides=[T, 1], block_shape=[1, block])


_PREFILL_CFG: dict = {}


def _prefill_cfg(variant: str, D: int, itemsize: int, opts: dict) -> tuple:
    """(tile, switches) of the prefill kernel; cached per (variant, D, itemsize) when opts override nothing."""
    if opts:
        return (tiles.prefill_tile(variant, D, itemsize, INTERPRET, opts.get("tile")),
                tiles.prefill_switches(variant, D, opts))
    key = (variant, D, itemsize)
    cfg = _PREFILL_CFG.get(key)
    if cfg is None:
        cfg = _PREFILL_CFG[key] = (tiles.prefill_tile(variant, D, itemsize, INTERPRET),
                                   tiles.prefill_switches(variant, D))
    return cfg


def _prefill(q, k, v, out, res, key_start, ed: _Edits, stats, sink_pos, spans, opts, common) -> tuple:
    """The launch of the prefill kernel; allocates res's lse / entropy / sink / span fields."""
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    dev, f32 = q.device, torch.float32
    empty = lambda *shape: _alloc(*shape, dtype=f32, device=dev)  # noqa: E731
    need_lse = stats.lse or stats.received
    lse = empty(B, H, T) if need_lse else None
    # lse stored as -lse * log2(e) for the received pass (its "lse2" switch) where the caller does not ask for lse
    neg2 = bool(stats.received and not stats.lse and _received_cfg(D, opts)["lse2"])
    # the received pass's addend split for its MMA (its "amma" switch), written by this kernel's epilogue
    adq = _alloc(B, H, T, 16, dtype=torch.bfloat16, device=dev) if _amma_on(q, stats, opts, common) else None
    ent = empty(B, H, T) if stats.entropy else None
    if stats.sink_mass and sink_pos is None:
        sink_pos = key_start.clamp(max=S - 1)[:, None]                       # a fully padded row reports 0
    P = sink_pos.shape[1] if stats.sink_mass else 0
    snk = empty(B, H, T, P) if stats.sink_mass else None
    if stats.span_mass and spans is None:
        raise ValueError("stats.span_mass needs spans [B, NS, 2]")
    NS = spans.shape[1] if stats.span_mass else 0
    spm = empty(B, H, T, NS) if stats.span_mass else None

    variant = ("var" if ed.var else "edit") if ed.probs else (
        "stats" if (stats.entropy or stats.sink_mass or stats.span_mass or stats.received) else "output")
    (BT, BS, nw, ns), sw = _prefill_cfg(variant, D, q.element_size(), opts)
    kd = vd = None
    # TMA only where it was measured and tested on the H200: 2-byte inputs, head_dim 64 / 128
    if sw["tma"] and q.element_size() == 2 and D in (64, 128):
        kd, vd = _rows_descriptor(k, BS), _rows_descriptor(v, BS)
        if kd is None or vd is None:
            kd = vd = None
    sq, sk, sv, so = q.stride(), k.stride(), v.stride(), out.stride()
    kw = dict(
        q=q, k=k, v=v, kd=kd, vd=vd, o=out, lse=lse, ent=ent, spm=spm, snk=snk, adq=adq, key_start=key_start,
        sink_pos=sink_pos.to(dev).long().contiguous() if stats.sink_mass else None,
        spans=spans.to(dev).long().contiguous() if stats.span_mass else None,
        col_idx=ed.cols, col_scale=ed.col_scale, head_uniform=ed.uniform,
        head_mean=ed.mean, head_mean_on=ed.mean_on, head_scale=ed.scale,
        redist_span=ed.span, redist_from=ed.frm, redist_keep=ed.keep,
        redist_rho=ed.rho, redist_min_mass=ed.min_mass,
        s_qb=sq[0], s_qh=sq[1], s_qt=sq[2], s_kb=sk[0], s_kh=sk[1], s_ks=sk[2],
        s_vb=sv[0], s_vh=sv[1], s_vs=sv[2], s_ob=so[0], s_ot=so[1], s_oh=so[2],
        T=T, S=S, H=H, G=H // KV, D=D, BT=BT, BS=BS, NS=NS, P=P, C=ed.C,
        SEG=sw["seg"], SPAN_POST=sw["span_post"], RELOAD_Q=sw["reload_q"], FMA=sw["fma"], REV=sw["rev"],
        TMAX=sw["tmax"], LSUM=sw["lsum"], FIXREF=sw["fixref"], LSE_NEG2=neg2, num_warps=nw, num_stages=ns, **common,
    )
    if sw.get("maxnreg") and not INTERPRET:
        kw["maxnreg"] = int(sw["maxnreg"])
    res.lse, res.entropy, res.sink_mass, res.span_mass = (lse if stats.lse else None), ent, snk, spm
    if stats.received:
        res.extras["lse_all"], res.extras["lse_neg2"], res.extras["lse_split"] = lse, neg2, adq
    return _launch("attention_fwd_kernel", (_cdiv(T, BT), B * H), kw)


def _amma_on(q: Tensor, stats, opts: Optional[dict], common: dict) -> bool:
    """Whether the received pass adds the lse by its MMA (its "amma" switch): key-major, no pipe / polynomial, 2-byte
    inputs, head_dim 64 / 128, no softcap, and q's TMA descriptor exists (the pass then reads the prefill kernel's
    split addend [B, H, T, 16] through one)."""
    D = q.shape[3]
    if not stats.received or q.element_size() != 2 or D not in (64, 128) or common["softcap"]:
        return False
    sw = _received_cfg(D, opts)
    if not (sw["amma"] and sw["keymajor"] and sw["tma"]) or sw["pipe"] or sw["poly"] or sw["pmix"]:
        return False
    return _rows_descriptor(q, tiles.received_tile(D, 2, INTERPRET, (opts or {}).get("rtile"))[0]) is not None


def split_addend(lse: Tensor, scale: float) -> Tensor:
    """The prefill kernel's adq from a natural-log lse [B, H, T]: -lse / scale (the received pass's addend in
    raw-score units) as three bfloat16 parts in columns 0..2 of [B, H, T, 16], zeros after (rows with lse = -inf: 0).
    For benchmarks and tests that time or check the received pass alone."""
    a = torch.where(torch.isfinite(lse), -lse.float() / scale, torch.zeros_like(lse, dtype=torch.float32))
    parts = []
    for _ in range(3):
        p = a.to(torch.bfloat16)
        parts.append(p)
        a = a - p.float()
    out = torch.zeros(*lse.shape, 16, dtype=torch.bfloat16, device=lse.device)
    out[..., :3] = torch.stack(parts, -1)
    return out


def _received(q, k, lse, key_start, common, tile: Optional[tuple] = None, opts: Optional[dict] = None,
              neg2: bool = False, split: Optional[Tensor] = None) -> tuple:
    """(received-mass column sums [B, H, S] (allocated), the launch that fills them from the forward's lse
    [B, H, T] (neg2: stored as -lse * log2(e), the prefill kernel's LSE_NEG2; split: its adq, the addend split for
    the MMA, or None). opts: "r_<switch>" overrides of ``tiles.RECEIVED_SWITCHES``."""
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    rsum = _alloc(B, H, S, dtype=torch.float32, device=q.device)
    RT, RS, nw, ns = tiles.received_tile(D, q.element_size(), INTERPRET, tile)
    sw = _received_cfg(D, opts)
    two = q.element_size() == 2
    npoly = sw["poly"] if sw["keymajor"] and two else 0                    # the polynomial: 2-byte inputs only
    pmix = sw["pmix"] if sw["keymajor"] and two and not npoly else 0
    qd = ld = None
    # TMA only where it was measured and tested on the H200: 2-byte inputs, head_dim 64 / 128
    if sw["tma"] and two and D in (64, 128):
        qd = _rows_descriptor(q, RT // 4 if npoly else RT)
    if sw["ltma"] and sw["keymajor"] and two and D in (64, 128):
        ld = _lse_descriptor(lse, RT // 4 if npoly else RT)
    ad = None
    if split is not None and qd is not None:
        from triton.tools.tensor_descriptor import TensorDescriptor
        ad = TensorDescriptor(split, shape=[B * H * T, 16], strides=[16, 1], block_shape=[RT, 16])
    sq, sk = q.stride(), k.stride()
    nb = _cdiv(S, RS)
    kw = dict(
        q=q, k=k, lse=lse, rsum=rsum, key_start=key_start, qd=qd, ld=ld, ad=ad,
        s_qb=sq[0], s_qh=sq[1], s_qt=sq[2], s_kb=sk[0], s_kh=sk[1], s_ks=sk[2],
        T=T, S=S, H=H, G=H // KV, D=D, BT=RT, BS=RS, KEYMAJOR=sw["keymajor"], FMA=sw["fma"], NPOLY=npoly,
        PMIX=pmix, HMAJ=sw["hmaj"], LSE2=bool(neg2), PIPE=bool(sw["pipe"] and sw["keymajor"] and not npoly),
        LPRE=bool(sw["lpre"] and sw["keymajor"] and not npoly and not pmix and not sw["pipe"]),
        UNROLL=max(1, int(sw["unroll"])), RLANES=sw["rlanes"],
        num_warps=nw, num_stages=ns, **common,
    )
    if sw["maxnreg"] and not INTERPRET:
        kw["maxnreg"] = int(sw["maxnreg"])
    return rsum, _launch("received_fwd_kernel", (B * H, nb) if sw["hmaj"] else (nb, B * H), kw)


_RECEIVED_CFG: dict = {}


def _received_cfg(D: int, opts: Optional[dict]) -> dict:
    """The received kernel's switches; cached per D when opts override none of them."""
    if opts and any("r_" + n in opts for n in tiles.RECEIVED_SWITCH_NAMES):
        return tiles.received_switches(D, opts)
    sw = _RECEIVED_CFG.get(D)
    if sw is None:
        sw = _RECEIVED_CFG[D] = tiles.received_switches(D)
    return sw


_SMS: dict = {}


def _sm_count(dev) -> int:
    """Streaming multiprocessors of dev (132 on an H200; a nominal 4 in the interpreter)."""
    if dev.type != "cuda":
        return 4
    key = str(dev)
    if key not in _SMS:
        _SMS[key] = torch.cuda.get_device_properties(dev).multi_processor_count
    return _SMS[key]


# The decode combine runs inside the split kernel (its last program per (batch, kv head); one launch per step, the
# default) or as its own launch (False; also opts "fused": False per call).
FUSED_DECODE = True

_DECODE_CFG: dict = {}
# where decode_fwd_kernel takes the edited columns (VAR: and its span) out, in a key chunk that holds one (its
# COL_MODE): "chunk" masks every key block of that chunk, "block" tests each block and masks only those that hold
# one, "split" runs the unedited loop between the blocks that hold one, "bits" runs it over every block with those
# masked out (one bit test per block) and then only those blocks (a chunk <= 62 key blocks)
DECODE_COL_MODES = ("chunk", "block", "split", "bits", "span")
_BITS_MAX_BLOCKS = 62    # "bits": a chunk's key blocks in one int64 mask
# decode with edited columns (ACT / VAR): (column mode, register cap (ptxas maxnreg, head_dim 64 / 128 only; None =
# none), ACT's columns out of the split kernel) per edit kind, "wide" when the batch's B x KV programs of one key
# split do not fit one wave at 3 CTAs per SM (the edited kernel's occupancy in the chunk / block modes), else
# "narrow". Session 5 on the H200, Triton 3.6, Llama shape, µs per layer:
# - profile (benchmarks/results/decode_kernels_profile_h200.json; SDPA 121.4 at 16 x 2048): the edited kernels lost
#   at batch 16 because fewer of their CTAs fit an SM: "chunk" / "block" take 69,632 B of shared memory (three
#   loops) -> 3 CTAs per SM, 1.29 waves of the 512 programs: ACT chunk 168.9 (unedited 124.6: 5 CTAs per SM).
#   "split" keeps the unedited kernel's 38,912 B; capped at 128 registers 4 CTAs fit (0.97 waves): 129.8.
# - final call (benchmarks/results/decode_edits_h200_s5.json): 16 x 2048 (wide; SDPA 124.3): ACT split 131.1 (bits
#   132.7, split with the columns out 138.0, chunk 170.1), VAR bits 134.2 (split 136.7, block 160.4); 1 x 4096
#   (narrow, 32 programs; SDPA 22.1): ACT chunk 26.2 (split 26.7, bits 26.6), VAR block 25.7 (bits 27.5, split 29.3).
# wide VAR: "span" since session 8 -- over a 1,023-key span (VAR's use: a whole image's tokens) at 16 x 2048 1.108x SDPA
# per layer against 1.184x for "split", 1.378x "bits", 1.309x "block" (median of 5, benchmarks/results/
# decode_edits_span_s8_h200.json); a static-cache generate step at batch 16 1.00x plain vs 1.16x with split
# (e2e_static_s8_h200.json). Narrow (1 x 4096) span lost: 1.350x against block's 1.165x. Session 7 had moved wide VAR
# from "bits" (session 5's pick on a 32-key span, where it led split by ~3 %) to "split" (1.22x vs 1.42x).
DECODE_EDIT_CFG: dict = {
    "wide": {"act": ("split", 128, False), "var": ("span", 128, False)},
    "narrow": {"act": ("chunk", None, False), "var": ("block", None, False)},
}


def decode_slots(D: int, itemsize: int, sms: int, interpret: bool = False) -> int:
    """CTA slots of one wave of the decode split kernel: SMs x the CTAs per SM its default tile's K / V buffers
    allow (at most 4)."""
    BS, _, stages = tiles.decode_tile(D, itemsize, interpret)
    smem = BS * D * itemsize * 2 * stages + 16 * D * itemsize
    return sms * max(1, min(4, (224 * 1024) // smem))


def decode_edit_config(kind: str, B: int, KV: int, D: int, slots: int) -> dict:
    """The split kernel's default configuration for an edit kind ("act" / "var") at one decode shape:
    {"col_mode", "maxnreg", "cols_out"} from ``DECODE_EDIT_CFG``."""
    mode, cap, cols_out = DECODE_EDIT_CFG["wide" if B * KV > slots else "narrow"][kind]
    return {"col_mode": mode, "maxnreg": cap if D in (64, 128) else None, "cols_out": cols_out}


def _decode_cfg(D: int, itemsize: int, dev) -> tuple:
    """(BS, num_warps, num_stages, slots): the decode tile and the CTA slots of one wave on dev (a few CTAs per
    SM; decode is bandwidth-bound: every SM streams K/V for the whole launch). Cached per (D, itemsize, dev)."""
    key = (D, itemsize, dev)
    cfg = _DECODE_CFG.get(key)
    if cfg is None:
        BS, nw, stages = tiles.decode_tile(D, itemsize, INTERPRET)
        cfg = _DECODE_CFG[key] = (BS, nw, stages, decode_slots(D, itemsize, _sm_count(dev), INTERPRET))
    return cfg


class _DecodeShape:
    """How the decode kernels run at one (shape, edit, opts): tile, column mode, register cap, split rule and the
    partial buffers' layout -- everything of ``_decode`` that does not depend on the key count S."""

    __slots__ = ("BS", "nw", "stages", "slots", "col_mode", "maxnreg", "side", "nsplit_opt", "bits", "B", "KV", "fused")

    def __init__(self, B: int, KV: int, D: int, itemsize: int, dev, ed: _Edits, opts: Optional[dict]):
        BS, nw, stages, slots = _decode_cfg(D, itemsize, dev)
        cfg = decode_edit_config("var" if ed.var else "act", B, KV, D, slots) if ed.cols is not None else {}
        col_mode, maxnreg, cols_out = cfg.get("col_mode", "chunk"), cfg.get("maxnreg"), cfg.get("cols_out", False)
        opts = opts or {}
        if "block_test" in opts:
            col_mode = "block" if opts["block_test"] else "chunk"
        col_mode = opts.get("col_mode", col_mode)
        if "dtile" in opts:                                           # tuning runs: (BS, num_warps, num_stages)
            BS, nw, stages = opts["dtile"]
        cols_out = bool(opts.get("cols_out", cols_out))
        self.maxnreg = opts.get("maxnreg", maxnreg)                    # tuning runs: a register cap (CTAs per SM)
        self.nsplit_opt = opts.get("nsplit")                           # tuning runs: a forced split count
        self.fused = bool(opts.get("fused", FUSED_DECODE))             # the combine inside the split kernel
        self.BS, self.nw, self.stages, self.slots, self.col_mode, self.B, self.KV = BS, nw, stages, slots, col_mode, B, KV
        self.bits = col_mode == "bits" and ed.cols is not None
        # VAR targets, or ACT's columns (split / bits with cols_out: the combine then gathers none)
        self.side = ed.var or (ed.act and col_mode in ("split", "bits", "span") and cols_out)

    def split(self, S: int) -> tuple[int, int]:
        """(nsplit, chunk): key chunks of the split kernel for S keys (chunk a multiple of BS)."""
        BS = self.BS
        blocks = -(-S // BS)                                          # (ceil divisions written out: a step's host work)
        if self.nsplit_opt is not None:
            nsplit = max(1, min(int(self.nsplit_opt), blocks))
        else:
            nsplit = max(1, min(512, self.slots // (self.B * self.KV), blocks))
        if self.bits:
            nsplit = max(nsplit, -(-blocks // _BITS_MAX_BLOCKS))
        chunk = -(-(-(-S // nsplit)) // BS) * BS
        return -(-S // chunk), chunk


def _partials(n: int, D: int, act: bool, side: bool, dev, groups: int = 0) -> tuple:
    """The split kernel's partial buffers for n = B * H * nsplit rows, one allocation cut into views: po [n, D],
    pm, pl [n], plr [n] (ACT, else None), po2 [n, D], ptm [n] (VAR targets or ACT's columns out, else None); and
    the fused launch's done counters [groups] int32 zeros (groups = B * KV; 0: None, two launches)."""
    width = D + 2 + (1 if act else 0) + ((D + 1) if side else 0)
    part = _alloc(n * width, dtype=torch.float32, device=dev)
    views = part.split_with_sizes((n * D, n, n) + ((n,) if act else ()) + ((n * D, n) if side else ()))
    done = torch.zeros(groups, dtype=torch.int32, device=dev) if groups else None
    return (views[0], views[1], views[2], views[3] if act else None) + (
        (views[-2], views[-1]) if side else (None, None)) + (done,)


_PARTIAL_BUFS: dict = {}
_PARTIAL_BUFS_MAX = 64


def _step_partials(n: int, D: int, act: bool, side: bool, dev, groups: int = 0) -> tuple:
    """``_partials`` for a decode step of the dispatcher's lane, allocated once per (layout, device, current
    stream, thread) and reused by every later step and layer of that thread: each step's split kernel writes every
    row its combine kernel reads, and both run on the stream after the previous step's (stream order), so no step
    sees another's partials (a thread of its own: another thread's split kernel could be queued between them). The
    fused launch's done counters are back at zero after every launch, so they are reused the same way.
    Fresh (NaN-filled) buffers when ``POISON_OUTPUTS`` (the tests)."""
    if POISON_OUTPUTS:
        return _partials(n, D, act, side, dev, groups)
    stream = torch._C._cuda_getCurrentRawStream(dev.index) if dev.type == "cuda" else None
    key = (n, D, act, side, groups, dev, stream, threading.get_ident())
    bufs = _PARTIAL_BUFS.get(key)
    if bufs is None:
        if len(_PARTIAL_BUFS) >= _PARTIAL_BUFS_MAX:
            _PARTIAL_BUFS.clear()
        bufs = _PARTIAL_BUFS[key] = _partials(n, D, act, side, dev, groups)
    return bufs


# The per-step arguments of the two decode launches (``launch.Launch``'s dynamic names); the rest of their
# arguments are fixed for a (shape, edit, split count) -- see ``_decode_step``.
_FWD_DYNAMIC = ("q", "k", "v", "po", "pm", "pl", "plr", "po2", "ptm", "key_start", "done", "o", "lse",
                "s_qb", "s_qh", "s_kb", "s_kh", "s_ks", "s_vb", "s_vh", "s_vs", "S", "chunk")
_COMBINE_DYNAMIC = ("po", "pm", "pl", "plr", "po2", "ptm", "o", "lse", "q", "k", "v", "key_start",
                    "s_qb", "s_qh", "s_kb", "s_kh", "s_ks", "s_vb", "s_vh", "s_vs", "s_ob", "s_oh", "S")


def _decode(q, k, v, out, lse, key_start, ed: _Edits, common, opts: Optional[dict] = None,
            shape: Optional[_DecodeShape] = None, n_keys: Optional[Tensor] = None) -> list:
    """Split-KV decode for T == 1: partials per key chunk, then one combine with the edit epilogue -- in the split
    kernel's last program per (batch, kv head) (``FUSED_DECODE``, one launch) or as a second launch.
    lse [B, H, 1] or None; n_keys [B] int64 or None: each row's key count on the device (S = k's capacity)."""
    B, H, _, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    G = H // KV
    sh = shape or _DecodeShape(B, KV, D, q.element_size(), q.device, ed, opts)
    BS = sh.BS
    nsplit, chunk = sh.split(S)
    po, pm, pl, plr, po2, ptm, done = _partials(B * H * nsplit, D, ed.act, sh.side, q.device, B * KV if sh.fused else 0)
    sq, sk, sv, so = q.stride(), k.stride(), v.stride(), out.stride()
    strides = dict(s_qb=sq[0], s_qh=sq[1], s_kb=sk[0], s_kh=sk[1], s_ks=sk[2], s_vb=sv[0], s_vh=sv[1], s_vs=sv[2])
    # the combine's own arguments (the fused split kernel takes them too; None / 0 there when it is not fused)
    epilogue = dict(o=out, lse=lse, col_scale=ed.col_scale, redist_from=ed.frm, redist_keep=ed.keep,
                    head_mean=ed.mean, head_mean_on=ed.mean_on, head_scale=ed.scale, s_ob=so[0], s_oh=so[2])
    nsp = max(2, _pow2(nsplit))
    fwd = dict(
        q=q, k=k, v=v, po=po, pm=pm, pl=pl, plr=plr, po2=po2, ptm=ptm, key_start=key_start, n_keys=n_keys,
        col_idx=ed.cols, head_uniform=ed.uniform, redist_span=ed.span, done=done,
        redist_rho=ed.rho, redist_min_mass=ed.min_mass,
        S=S, chunk=chunk, NSPLIT=nsplit, H=H, KV=KV, G=G, D=D, BG=max(16, _pow2(G)),
        BS=BS, C=ed.C, NSP=nsp if sh.fused else 2, COL_MODE=DECODE_COL_MODES.index(sh.col_mode), num_warps=sh.nw,
        num_stages=sh.stages, **(epilogue if sh.fused else dict.fromkeys(epilogue, None) | {"s_ob": 0, "s_oh": 0}),
        **strides, **common,
    )
    if sh.maxnreg and not INTERPRET:
        fwd["maxnreg"] = int(sh.maxnreg)
    launches = [_launch("decode_fwd_kernel", (nsplit, B * KV), fwd)]
    if not sh.fused:
        combine = dict(
            po=po, pm=pm, pl=pl, plr=plr, po2=po2, ptm=ptm, q=q, k=k, v=v, key_start=key_start,
            n_keys=n_keys, col_idx=ed.cols, head_uniform=ed.uniform, redist_span=ed.span,
            redist_rho=ed.rho, redist_min_mass=ed.min_mass, S=S, NSPLIT=nsplit,
            H=H, G=G, D=D, NSP=nsp, C=ed.C, num_warps=4, **epilogue, **strides, **common,
        )
        launches.append(_launch("decode_combine_kernel", (B * H,), combine))
    return launches


# ---------------------------------------------------------------------------------------------
# decode steps of the dispatcher: the launches of a (shape, edit, split count) are built once and reused; each
# step swaps in its tensors, strides and key count (``launch.Launch``: Triton's direct launch where it is on)
# ---------------------------------------------------------------------------------------------
class _DecodePlan:
    """The reusable part of a decode step at one (shape, edit object, dtype, device, window, softcap, scale, lse,
    thread) key: the ``_DecodeShape`` and, per split count, the ``launch.Launch`` objects and their grids (one, fused;
    or split + combine) (a
    ``Launch`` swaps a call's values into its own keyword dict: one per thread)."""

    __slots__ = ("ed", "shape", "launches")

    def __init__(self, ed: _Edits, shape: _DecodeShape):
        self.ed, self.shape, self.launches = ed, shape, {}


_DECODE_PLANS: dict = {}
_DECODE_PLANS_MAX = 512


def _decode_step(q: Tensor, k: Tensor, v: Tensor, *, scale: float, key_start: Optional[Tensor] = None,
                 window: Optional[int] = None, softcap: Optional[float] = None,
                 edits: Optional[AttentionEdits] = None, lse: bool = False) -> AttentionResult:
    """One decode step (T == 1, no statistics but lse, no opts) through cached launches: the same kernels, the
    same arguments and the same result as ``plan`` + ``_run``, with the host work of a step cut to the tensors it
    changes. q [B, H, 1, D], k / v [B, KV, S, D]; returns out [B, 1, H, D] (and lse [B, H, 1] when asked)."""
    B, H, _, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    dev = q.device
    q, k, v, key_start, common = _launch_inputs(q, k, v, key_start, window, softcap, scale)
    sq, sk, sv = q.stride(), k.stride(), v.stride()
    ed = _prepared_edits(edits, B, H, dev)
    key = (id(ed), B, H, KV, D, q.dtype, dev, common["window"], common["softcap"], common["scale"], lse,
           threading.get_ident())
    plan_ = _DECODE_PLANS.get(key)
    if plan_ is None or plan_.ed is not ed:
        if len(_DECODE_PLANS) >= _DECODE_PLANS_MAX:
            _DECODE_PLANS.clear()
        plan_ = _DECODE_PLANS[key] = _DecodePlan(ed, _DecodeShape(B, KV, D, q.element_size(), dev, ed, None))
    out = _alloc(B, 1, H, D, dtype=q.dtype, device=dev)
    lse_t = _alloc(B, H, 1, dtype=torch.float32, device=dev) if lse else None
    sh = plan_.shape
    nsplit, chunk = sh.split(S)
    pair = plan_.launches.get(nsplit)
    if pair is None:                      # first step of this split count: the plan's own launches, kept
        built = _decode(q, k, v, out, lse_t, key_start, ed, common, None, sh)
        pair = plan_.launches[nsplit] = tuple((launch.Launch(fn, kw, names), grid)
                                              for (fn, grid, kw), names in zip(built, (_FWD_DYNAMIC, _COMBINE_DYNAMIC)))
        for (fn, grid, kw), names, (lau, _) in zip(built, (_FWD_DYNAMIC, _COMBINE_DYNAMIC), pair):
            lau(grid, tuple(kw[n] for n in names))
        return AttentionResult(out=out, lse=lse_t)
    po, pm, pl, plr, po2, ptm, done = _step_partials(B * H * nsplit, D, ed.act, sh.side, dev, B * KV if sh.fused else 0)
    st = (sq[0], sq[1], sk[0], sk[1], sk[2], sv[0], sv[1], sv[2])
    if sh.fused:
        (fwd, fgrid), = pair
        fwd(fgrid, (q, k, v, po, pm, pl, plr, po2, ptm, key_start, done, out, lse_t) + st + (S, chunk))
    else:
        (fwd, fgrid), (comb, cgrid) = pair
        fwd(fgrid, (q, k, v, po, pm, pl, plr, po2, ptm, key_start, None, None, None) + st + (S, chunk))
        comb(cgrid, (po, pm, pl, plr, po2, ptm, out, lse_t, q, k, v, key_start) + st + (H * D, D, S))  # out [B, 1, H, D]
    return AttentionResult(out=out, lse=lse_t)
