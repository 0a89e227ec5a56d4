"""``probe::decode_attention``: the Triton decode step (ACT / VAR edits included) as a PyTorch custom op.

A compiled decode step (``generate(..., cache_implementation="static")`` compiles one and replays it as a CUDA
graph) cannot call the Triton launcher of ``fused.attention`` itself: tracing would look into the launch, and the
launch reads the filled key count as a host integer, different at every step. As an opaque custom op with a fake
(shape-only) implementation, the step stays one graph: the op's body runs at capture, and every replay re-runs the
two launches it recorded, over a static cache whose filled count (``n_keys``) and first key (``key_start``) are
device values (``fused.decode_graph``). Imported by the seam (which registers the op); the body imports the Triton
host module only when called.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .api import AttentionEdits


@torch.library.custom_op("probe::decode_attention", mutates_args=())
def decode_attention(q: Tensor, k: Tensor, v: Tensor, key_start: Tensor, n_keys: Tensor, scale: float, window: int,
                     softcap: float, col_idx: Optional[Tensor], col_scale: Optional[Tensor],
                     redist_idx: Optional[Tensor], redist_span: Optional[Tensor], redist_from: Optional[Tensor],
                     redist_keep: Optional[Tensor], redist_rho: float, redist_min_mass: float,
                     distinct: bool = False) -> Tensor:
    """One decode step: q [B, H, 1, D] over the static cache k / v [B, KV, S, D] whose row b holds n_keys[b] keys from
    key_start[b] on ([B] int64 each) -> out [B, 1, H, D]. window / softcap: 0 = off. ACT: col_idx [B, H, C],
    col_scale [B, H]; VAR: redist_idx [B, C], redist_span [B, 2], redist_from [B], redist_keep [H], redist_rho,
    redist_min_mass (``AttentionEdits``; None = that edit off). distinct: col_idx / redist_idx repeat no position per
    row (ACT's and Redistribute's never do): no deduplication in the step."""
    from . import fused

    edits = AttentionEdits(col_idx=col_idx, col_scale=col_scale, redist_idx=redist_idx, redist_span=redist_span,
                           redist_from=redist_from, redist_keep=redist_keep, redist_rho=redist_rho,
                           redist_min_mass=redist_min_mass)
    return fused.decode_graph(q, k, v, scale=scale, key_start=key_start, n_keys=n_keys, window=window or None,
                              softcap=softcap or None, edits=edits if edits.edits_probs else None, distinct=distinct)


@decode_attention.register_fake
def _decode_attention_shape(q, k, v, key_start, n_keys, scale, window, softcap, col_idx, col_scale, redist_idx,
                            redist_span, redist_from, redist_keep, redist_rho, redist_min_mass, distinct=False) -> Tensor:
    B, H, _, D = q.shape
    return q.new_empty(B, 1, H, D)


def decode_step(q: Tensor, k: Tensor, v: Tensor, key_start: Tensor, n_keys: Tensor, *, scale: float,
                window: Optional[int], softcap: Optional[float], edits: AttentionEdits, distinct: bool = False) -> Tensor:
    """``decode_attention`` with the edits as an ``AttentionEdits`` (its probability edits: ACT or VAR) -> [B, 1, H, D]."""
    return decode_attention(q, k, v, key_start, n_keys, float(scale), int(window or 0), float(softcap or 0.0),
                            edits.col_idx, edits.col_scale, edits.redist_idx, edits.redist_span, edits.redist_from,
                            edits.redist_keep, float(edits.redist_rho), float(edits.redist_min_mass), distinct)
