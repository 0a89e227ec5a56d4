"""The contract shared by the PyTorch reference and the Triton kernel.

One op, ``attention(q, k, v, ...)``, computes causal (optionally sliding-window, left-padded)
attention with grouped-query heads and returns the output together with only the per-head
statistics that were asked for, optionally after training-free edits of the probabilities
(ACT column rescaling, VAR redistribution, uniform heads) and of the head outputs (scale, mean).

Shapes (B batch, H query heads, KV key/value heads with H % KV == 0, T queries, S keys, D head dim):
    q: [B, H, T, D]; k, v: [B, KV, S, D]. Query t sits at absolute key position S - T + t.
    Key j is visible to query t iff  key_start[b] <= j <= S - T + t  and, with a window W,
    (S - T + t) - j < W.  Queries that see no key ("fully masked rows", e.g. left padding)
    get a zero output and zero statistics (lse = -inf).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Optional

import torch
from torch import Tensor


@dataclass(frozen=True)
class StatsRequest:
    """Which per-head statistics to compute alongside the output.

    lse: log-sum-exp per query [B, H, T].
    entropy: attention entropy per query, in nats [B, H, T].
    sink_mass: mass on the ``sink_pos`` keys per query [B, H, T, P] (default: the first real key).
    span_mass: mass on each caller-given key span per query [B, H, T, NS].
    received: column sums of the probabilities over this call's queries [B, H, S] and the
        number of this call's queries that see each key [B, S] (their ratio is the mean
        received attention s_j of methods.md).
    topk: the top-k keys (indices and probabilities) of the last ``topk_rows`` queries
        [B, H, R, k]; 0 = off.
    full: the whole probability map [B, H, T, S] (reference only; short prompts only).
    """

    lse: bool = False
    entropy: bool = False
    sink_mass: bool = False
    span_mass: bool = False
    received: bool = False
    topk: int = 0
    topk_rows: int = 1
    full: bool = False

    @functools.cached_property
    def any(self) -> bool:
        """True when any statistic is requested (computed once per request object; the seam asks every call)."""
        return any(bool(getattr(self, f.name)) for f in fields(self) if f.name != "topk_rows")


NO_STATS = StatsRequest()


@dataclass
class AttentionEdits:
    """Training-free edits, as fixed-shape tensors so changing values never recompiles a kernel.

    Probability edits are applied in this order, on each query row, after the softmax:
      1. uniform heads: ``head_uniform[h]`` -> uniform attention over the visible keys.
      2. column rescale (ACT): in head h, the keys ``col_idx[b, h, :]`` (-1 = unused) are scaled
         by ``col_scale[b, h]`` and the freed mass goes to every other visible key in proportion
         to its attention:  A'_ij = beta A_ij (j in C),  A'_ij = A_ij (1 - beta m_i) / (1 - m_i)
         otherwise, with m_i = sum_{j in C} A_ij.  Rows stay normalised.
      3. redistribution (VAR): for heads with ``redist_keep[h] < 1``, on rows whose absolute
         position >= ``redist_from[b]``, with span [s, e) = ``redist_span[b]`` and sink keys
         ``redist_idx[b, :]`` (-1 = unused): let m = mass on the span, q = mass on the sink keys
         inside the span / (m + 1e-6).  If q <= ``redist_rho`` and m >= ``redist_min_mass``,
         sink keys keep ``redist_keep[h]`` of their mass and the rest goes to the span's non-sink
         keys in proportion to their attention.
    Output edits, per head, on the head output before the output projection:
      4. ``head_mean_on[h]`` -> the head output is replaced by ``head_mean[h]`` (mean ablation).
      5. ``head_scale[h]`` multiplies the head output (VHR; 0 = zero ablation).

    Shapes: col_idx [B, H, C] int64, col_scale [B, H]; redist_idx [B, C] int64,
    redist_span [B, 2] int64, redist_from [B] int64, redist_keep [H]; head_uniform [H] bool;
    head_mean [H, D], head_mean_on [H] bool; head_scale [H].  Any field may be None (= off).
    ``uniform_heads``: the heads of ``head_uniform`` as host integers, ascending (optional: with it a decode step
    averages the values of only those heads' KV heads instead of every KV head's).
    """

    col_idx: Optional[Tensor] = None
    col_scale: Optional[Tensor] = None
    redist_idx: Optional[Tensor] = None
    redist_span: Optional[Tensor] = None
    redist_from: Optional[Tensor] = None
    redist_keep: Optional[Tensor] = None
    redist_rho: float = 0.5
    redist_min_mass: float = 0.2
    head_uniform: Optional[Tensor] = None
    head_mean: Optional[Tensor] = None
    head_mean_on: Optional[Tensor] = None
    head_scale: Optional[Tensor] = None
    uniform_heads: Optional[tuple] = None

    @property
    def edits_probs(self) -> bool:
        return self.head_uniform is not None or self.col_idx is not None or self.redist_idx is not None


@dataclass
class AttentionResult:
    """What ``attention`` returns. ``out`` is [B, T, H, D] (the Hugging Face layout, q's dtype);
    every statistic is float32 (float64 for float64 inputs) and None unless requested."""

    out: Tensor
    lse: Optional[Tensor] = None            # [B, H, T]
    entropy: Optional[Tensor] = None        # [B, H, T]
    sink_mass: Optional[Tensor] = None      # [B, H, T, P]
    span_mass: Optional[Tensor] = None      # [B, H, T, NS]
    received_sum: Optional[Tensor] = None   # [B, H, S]
    received_count: Optional[Tensor] = None  # [B, S]
    topk_idx: Optional[Tensor] = None       # [B, H, R, k] int64
    topk_val: Optional[Tensor] = None       # [B, H, R, k]
    probs: Optional[Tensor] = None          # [B, H, T, S]
    extras: dict = field(default_factory=dict)


def check_shapes(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int, int, int, int]:
    """Validate q [B, H, T, D], k/v [B, KV, S, D]; return (B, H, KV, T, S, D)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D: q [B, H, T, D], k and v [B, KV, S, D]")
    B, H, T, D = q.shape
    Bk, KV, S, Dk = k.shape
    if Bk != B or v.shape[:3] != k.shape[:3] or Dk != D:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if H % KV:
        raise ValueError(f"query heads ({H}) must be a multiple of kv heads ({KV})")
    if T > S:
        raise ValueError(f"more queries ({T}) than keys ({S})")
    return B, H, KV, T, S, D


def visible_mask(key_start: Tensor, q_pos: Tensor, S: int, window: Optional[int]) -> Tensor:
    """Boolean visibility [B, Tq, S] for absolute query positions ``q_pos`` [Tq]."""
    j = torch.arange(S, device=q_pos.device)                       # [S]
    vis = j[None, None, :] <= q_pos[None, :, None]                 # [1, Tq, S]
    vis = vis & (j[None, None, :] >= key_start[:, None, None])     # [B, Tq, S]
    if window is not None:
        vis = vis & ((q_pos[None, :, None] - j[None, None, :]) < window)
    return vis
