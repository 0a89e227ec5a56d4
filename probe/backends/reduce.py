"""Reduce a backend's full attention map to probe's statistics, with probe's own reduction code.

Hook backends (TransformerLens, nnsight) hand back probability maps P [B, H, T, S]. Instead of
re-implementing entropy / received mass / sink mass / top-k / spans, this module feeds log P to
``kernels.attention.reference.stats_from_logits`` — the statistics lines of the reference the native
seam uses, given the logits instead of q.k. The softmax of log P over the visible keys gives back P
(its rows already sum to 1), and every statistic comes out of the same lines as native capture.
Computed in float64, the round trip adds < 1e-12 to the map. Work O(B * H * T * S).

(Until session 6 the map went through ``reference_attention`` itself with identity keys and zero
values of width S: two T x S x S float64 products per layer, O(N^3), which dominated these backends'
time in the end-to-end tables measured before the change.)

Memory: log P in float64 beside the map; the reduction is query blocked, so the extra peak is
O(B * H * block * S) float64 beyond that.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from kernels.attention import AttentionResult, StatsRequest
from kernels.attention.reference import stats_from_logits

from ..capture.recorder import Recorder, _summarise_hidden
from ..capture.seam import AttentionCall
from ..errors import ProbeError
from ..models.padding import first_real_index

_TINY = 1e-300  # log(0) stand-in: exp(log(1e-300)) underflows back to ~0 in the softmax


def key_start_from_mask(attention_mask: Optional[Tensor], B: int, S: int) -> Tensor:
    """First real key per row [B] from a [B, S] 0/1 mask; checks the padding is on the left."""
    if attention_mask is None:
        return torch.zeros(B, dtype=torch.long)
    m = attention_mask[:, -S:].bool().cpu()
    key_start = first_real_index(m)
    expect = torch.arange(S)[None, :] >= key_start[:, None]
    if not torch.equal(expect, m):
        raise ProbeError("the attention mask is not left padding (a gap or right padding in a row)",
                         "encode prompts with handle.encode (left padding, one sequence per row)")
    return key_start


def stats_from_probs(probs: Tensor, key_start: Tensor, request: StatsRequest, *, window: Optional[int] = None,
                     sink_pos: Optional[Tensor] = None, spans: Optional[Tensor] = None) -> AttentionResult:
    """Statistics of a probability map, by the reference's statistics lines (see the module docstring).

    Args:
        probs: [B, H, T, S] attention probabilities (rows of padding queries may hold anything:
            they are zeroed, as in native capture). Query t sits at key position S - T + t.
        key_start: [B] first real key per row; window: sliding window of the layer (None = full).
        request: which statistics; sink_pos [B, P], spans [B, NS, 2] as in ``reference_attention``.
    Returns:
        AttentionResult with the requested statistics (float64 on probs' device); ``out`` is unused.
    """
    dev = probs.device
    logits = probs.detach().to(torch.float64).clamp_min(_TINY).log()                       # [B, H, T, S]
    return stats_from_logits(logits, key_start=key_start.to(dev), window=window,
                             sink_pos=None if sink_pos is None else sink_pos.to(dev),
                             spans=None if spans is None else spans.to(dev), stats=request)


def record_probs(rec: Recorder, layer: int, probs: Tensor, key_start: Tensor, window: Optional[int] = None) -> None:
    """Reduce one layer's map [B, H, T, S] and store it in ``rec`` exactly as the native seam would."""
    B, H, T, S = probs.shape
    dev = probs.device
    call = AttentionCall(layer, None, B, H, H, T, S, 0, key_start.to(dev), window, torch.arange(S - T, S, device=dev))
    request = rec.stats_request(call)
    if not request.any:
        return
    result = stats_from_probs(probs, key_start, request, window=window, sink_pos=rec.sink_pos(call),
                              spans=rec.spans(call) if request.span_mass else None)
    if result.probs is not None:
        result.probs = result.probs.to(torch.float32)
    rec.after(call, result)


def record_hidden(rec: Recorder, layer: int, x: Tensor, attention_mask: Optional[Tensor]) -> None:
    """Summarise the residual stream x [B, T, D] entering ``layer`` with native capture's reduction."""
    if rec.hidden_mode and rec._wants(layer):
        rec._current().hidden[layer] = _summarise_hidden(layer, x, attention_mask, rec.hidden_mode == "full")
