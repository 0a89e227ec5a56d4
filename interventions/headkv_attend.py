"""The attention of one HeadwiseKV layer: full KV heads see every key, streaming KV heads see
StreamingLLM's ``sinks`` + ``window`` keys.

Streaming heads follow StreamingLLM's re-indexed cache exactly (the same as ``SinkWindow`` fed one
token at a time), also inside a multi-token prefill: query t (absolute position, 0-based) sees
  * the keys with t - j < window at their own positions (the recent window, itself included), and
  * the sink keys j < sinks with j <= t - window (not already in the window). While StreamingLLM
    has evicted nothing yet (t < sinks + window) they sit at their own positions; afterwards they sit
    right before the window, i.e. at distance (sinks + window - 1) - j from the query.
RoPE scores depend only on the query-key distance, so moving every sink by delta_t = t - (sinks +
window - 1) positions equals moving the query back by delta_t: one rotation per query row, applied
to the (at most ``sinks``) sink columns only.

Computation (reference path, CPU and CUDA): the window part is ``kernels.attention.attention``
with ``window`` and its log-sum-exp (the Triton kernel on CUDA); the sink part is a [T, sinks]
score block in PyTorch; the two softmax pieces are merged through their log-sum-exps (exact).
A decode step (one query on the compact cache, whose sinks are already re-rotated) is plain
attention over the whole compact cache.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from kernels.attention import StatsRequest, attention

from .headkv_cache import take


def _rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rotate_rows(x: Tensor, delta: Tensor, inv_freq: Tensor) -> Tensor:
    """Move post-RoPE vectors x [B, H, T, D] by delta [T] positions (one shift per row t)."""
    ang = delta.to(torch.float64)[:, None] * inv_freq.to(device=x.device, dtype=torch.float64)[None, :]  # [T, D/2]
    ang = torch.cat((ang, ang), dim=-1)                                                                  # [T, D]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    return x * cos + _rotate_half(x) * sin


def streaming_prefill(q: Tensor, k: Tensor, v: Tensor, *, sinks: int, window: int, inv_freq: Tensor,
                      scale: float, attend: Callable = attention) -> Tensor:
    """StreamingLLM attention of every query row at once.

    Args:
        q: [B, Hs, T, D] post-RoPE queries at absolute positions S - T .. S - 1.
        k, v: [B, KVs, S, D] post-RoPE keys / values at positions 0 .. S - 1 (no padding).
        sinks, window: StreamingLLM's cache (sinks first tokens + the last ``window`` ones).
        inv_freq: [D/2] the model's RoPE inverse frequencies.
        scale: multiplier of q.k.
    Returns:
        out [B, T, Hs, D] in q's dtype.
    """
    B, Hs, T, D = q.shape
    KVs, S = k.shape[1], k.shape[2]
    n_sink = min(sinks, S)
    q_pos = torch.arange(S - T, S, device=q.device)                                  # [T]
    visible = torch.arange(n_sink, device=q.device)[None, :] <= (q_pos - window)[:, None]   # [T, n_sink]
    if n_sink == 0 or not bool(visible.any()):
        return attend(q, k, v, scale=scale, window=window).out
    res = attend(q, k, v, scale=scale, window=window, stats=StatsRequest(lse=True))
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    delta = -(q_pos - (sinks + window - 1)).clamp(min=0)                              # [T] query moves back
    qr = rotate_rows(q.to(cdt), delta, inv_freq)                                       # [B, Hs, T, D]
    ks = k[:, :, :n_sink].to(cdt).repeat_interleave(Hs // KVs, dim=1)                  # [B, Hs, n_sink, D]
    vs = v[:, :, :n_sink].to(cdt).repeat_interleave(Hs // KVs, dim=1)
    scores = torch.einsum("bhtd,bhsd->bhts", qr, ks) * scale                           # [B, Hs, T, n_sink]
    scores = scores.masked_fill(~visible, float("-inf"))
    lse_s = torch.logsumexp(scores, dim=-1)                                            # [B, Hs, T]
    p = torch.exp(scores - lse_s[..., None]).nan_to_num(0.0)
    out_s = torch.einsum("bhts,bhsd->bthd", p, vs)                                     # [B, T, Hs, D]
    lse_w = res.lse.to(cdt)
    lse = torch.logaddexp(lse_w, lse_s)
    w_w = torch.exp(lse_w - lse).transpose(1, 2)[..., None]                            # [B, T, Hs, 1]
    w_s = torch.exp(lse_s - lse).transpose(1, 2)[..., None]
    return (res.out.to(cdt) * w_w + out_s * w_s).to(q.dtype)


def query_heads(kv: Tensor, G: int) -> Tensor:
    """The query heads of KV heads kv [n] under GQA with G query heads per KV head: [n * G] (h // G = its KV head)."""
    return (kv[:, None] * G + torch.arange(G, device=kv.device)).reshape(-1)


def headwise_attention(q: Tensor, k_full: Tensor, v_full: Tensor, k_stream: Tensor, v_stream: Tensor, *,
                       full_kv: Tensor, stream_kv: Tensor, n_kv: int, prefill: bool, sinks: int, window: int,
                       inv_freq: Tensor, scale: float, key_start: Tensor, q_full: Optional[Tensor] = None,
                       q_stream: Optional[Tensor] = None, q_spans: tuple = (None, None)) -> Tensor:
    """One layer's attention with per-KV-head caches.

    Args:
        q: [B, H, T, D]; H = n_kv * G (query head h belongs to KV head h // G, as transformers' repeat_kv).
        k_full, v_full: [B, KVf, S, D] the full KV heads (``full_kv`` [KVf], in that order).
        k_stream, v_stream: [B, KVs, n, D] the streaming KV heads (``stream_kv`` [KVs]): the whole
            sequence (n = S, positions 0..S-1) when ``prefill``, else the compact StreamingLLM cache.
        prefill: the streaming keys are the uncompacted sequence (first call / no cache).
        q_full, q_stream: ``query_heads(full_kv, G)`` / ``query_heads(stream_kv, G)`` on q's device, if the
            caller keeps them (the decode path: no index arithmetic or copy per call).
        q_spans: (full, stream) ``headkv_cache.span`` of those query heads (slices where contiguous, known on the
            host): q is then viewed instead of copied, and a prefix / suffix split is joined by one cat.
    Returns:
        out [B, T, H, D] in q's dtype.
    """
    B, H, T, D = q.shape
    G = H // n_kv
    if stream_kv.numel() == 0:
        return attention(q, k_full, v_full, scale=scale, key_start=key_start).out
    qs_idx = q_stream if q_stream is not None else query_heads(stream_kv, G).to(q.device)
    f_span, s_span = q_spans
    qs = q if full_kv.numel() == 0 else take(q, qs_idx, s_span)                            # [B, Hs, T, D]
    if prefill:
        out_s = streaming_prefill(qs, k_stream, v_stream, sinks=sinks, window=window,
                                  inv_freq=inv_freq, scale=scale)                        # [B, T, Hs, D]
    else:
        out_s = attention(qs, k_stream, v_stream, scale=scale).out
    if full_kv.numel() == 0:
        return out_s
    qf_idx = q_full if q_full is not None else query_heads(full_kv, G).to(q.device)
    out_f = attention(take(q, qf_idx, f_span), k_full, v_full, scale=scale, key_start=key_start).out  # [B, T, Hf, D]
    if f_span is not None and s_span is not None:                  # one prefix, one suffix of the heads
        return torch.cat([out_f, out_s] if f_span.start == 0 else [out_s, out_f], dim=2)
    out = q.new_empty(B, T, H, D)
    out.index_copy_(2, qf_idx, out_f)
    out.index_copy_(2, qs_idx, out_s)
    return out
