"""Attention probability of chosen (query, key) pairs, without the N x N map.

Many head scores only need a few entries of each attention map: the previous token (one key per
query), earlier copies of the same token, the token after an earlier copy (induction). For a pair
(query i, key j) of head h the probability is

    A[h, i, j] = exp(s[h, i, j] - lse[h, i]),   s = scale * q_i . k_j  (soft-capped if the model does)

where ``lse`` is the log-sum-exp the attention kernel already computes per query. So this module
asks the seam for ``lse`` only and evaluates the dot products of the requested pairs: memory and
work O(pairs x D) per head on top of the forward, whatever the prompt length.

The probabilities are those of the unedited attention (an intervention's probability edits are not
reflected); pairs whose key the query cannot see (padding, future, outside a sliding window) get 0.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from torch import Tensor

from kernels.attention import StatsRequest

from . import seam
from ..models.handle import as_handle
from .recorder import attention_modules_of

_CHUNK = 4096   # pairs per batched dot product (memory H x chunk x D)


def pair_probs(query: Tensor, key: Tensor, lse: Tensor, q_idx: Tensor, k_idx: Tensor, *, scale: float,
               key_start: Tensor, window: Optional[int] = None, softcap: Optional[float] = None) -> Tensor:
    """Attention probabilities of (query, key) pairs from q, k and the per-query log-sum-exp.

    Args:
        query: [B, H, T, D] (post-RoPE, as the attention function receives it); key: [B, KV, S, D].
        lse: [B, H, T] log-sum-exp of the scaled (soft-capped) logits over the visible keys.
        q_idx, k_idx: [B, P] int64 absolute positions (query position in 0..S-1, i.e. S - T + t;
            key position in 0..S-1); -1 = unused slot.
        scale, key_start [B], window, softcap: as in ``kernels.attention.attention``.
    Returns:
        [B, H, P] float32 (float64 for float64 inputs); 0 where the slot is unused or the key is not visible.
    """
    B, H, T, D = query.shape
    KV, S = key.shape[1], key.shape[2]
    G = H // KV
    cdt = torch.float64 if query.dtype == torch.float64 else torch.float32
    P = q_idx.shape[1]
    out = torch.zeros(B, H, P, dtype=cdt, device=query.device)
    q_idx, k_idx = q_idx.to(query.device), k_idx.to(query.device)
    ks = key_start.to(query.device).long()
    kv_of_head = torch.arange(H, device=query.device) // G                      # [H]
    for b in range(B):
        for p0 in range(0, P, _CHUNK):
            qi, kj = q_idx[b, p0:p0 + _CHUNK], k_idx[b, p0:p0 + _CHUNK]         # [n]
            t = qi - (S - T)
            ok = (qi >= 0) & (kj >= 0) & (t >= 0) & (kj >= ks[b]) & (kj <= qi)
            if window is not None:
                ok &= (qi - kj) < window
            t, kj = t.clamp(0, T - 1), kj.clamp(0, S - 1)
            q = query[b][:, t].to(cdt)                                           # [H, n, D]
            k = key[b][kv_of_head][:, kj].to(cdt)                                # [H, n, D]
            s = (q * k).sum(-1) * scale                                          # [H, n]
            if softcap:
                s = softcap * torch.tanh(s / softcap)
            prob = torch.exp(s - lse[b][:, t].to(cdt))                           # [H, n]
            out[b, :, p0:p0 + len(qi)] = torch.where(ok[None], prob, torch.zeros_like(prob))
    return out


def restricted_mass(query: Tensor, key: Tensor, value: Tensor, lse: Tensor, *, scale: float, key_start: Tensor,
                    window: Optional[int] = None, softcap: Optional[float] = None, skip_first: bool = False,
                    skip_current: bool = False) -> Tensor:
    """Per query, the attention mass on its visible keys minus the first real key and/or itself.

    Computed as exp(lse_restricted - lse) with lse_restricted from one more call of the attention
    kernel over the restricted key set (first key: ``key_start + 1``; current token: keys shifted by
    one so query i sees keys < i), so it stays exact when the excluded key holds ~all the mass
    (1 - A[i, 0] would cancel). Shapes as ``pair_probs``; returns [B, H, T] (0 on rows with no key left).
    """
    B, H, T, D = query.shape
    S = key.shape[2]
    ks = key_start.to(query.device).long() + int(skip_first)
    if skip_current:                       # query at position p sees keys < p: drop the last key, shift by one
        Tn = min(T, S - 1)
        q, k, v = query[:, :, T - Tn:], key[:, :, :S - 1], value[:, :, :S - 1]
        win = None if window is None else window - 1
    else:
        Tn, q, k, v, win = T, query, key, value, window
    out = torch.zeros(B, H, T, dtype=lse.dtype, device=lse.device)
    if Tn <= 0 or (win is not None and win <= 0):
        return out
    from kernels.attention import attention

    res = attention(q, k, v, scale=scale, key_start=ks, window=win, softcap=softcap, stats=StatsRequest(lse=True))
    out[:, :, T - Tn:] = torch.exp(res.lse.to(lse.dtype) - lse[:, :, T - Tn:])   # -inf rows -> 0
    return out.nan_to_num(0.0)


class PairRecorder:
    """Seam hook: per layer, the probabilities of the given pairs in the first forward call.

    ``mass[layer]`` -> [B, H, P] on CPU (float32); with ``restrict=(skip_first, skip_current)`` also
    ``kept[layer]`` -> [B, H], the attention mass summed over queries after removing the first key
    and/or the current token (``restricted_mass``).
    """

    def __init__(self, q_idx: Tensor, k_idx: Tensor, layers: Optional[Sequence[int]] = None,
                 restrict: Optional[tuple[bool, bool]] = None):
        self.q_idx, self.k_idx, self.restrict = q_idx, k_idx, restrict
        self.layers = None if layers is None else set(layers)
        self.mass: dict[int, Tensor] = {}
        self.kept: dict[int, Tensor] = {}

    def stats_request(self, call: seam.AttentionCall) -> StatsRequest:
        wanted = (self.layers is None or call.layer in self.layers) and call.layer not in self.mass
        return StatsRequest(lse=wanted)

    def after(self, call: seam.AttentionCall, result) -> None:
        if result.lse is None or call.layer in self.mass:
            return
        self.mass[call.layer] = pair_probs(
            call.query, call.key, result.lse, self.q_idx, self.k_idx, scale=call.scale, key_start=call.key_start,
            window=call.window, softcap=call.softcap).float().cpu()
        if self.restrict is not None and any(self.restrict):
            kept = restricted_mass(call.query, call.key, call.value, result.lse, scale=call.scale,
                                   key_start=call.key_start, window=call.window, softcap=call.softcap,
                                   skip_first=self.restrict[0], skip_current=self.restrict[1])
            self.kept[call.layer] = kept.double().sum(-1).cpu()                    # [B, H]


@contextlib.contextmanager
def capture_pairs(model_or_handle, q_idx: Tensor, k_idx: Tensor, *, layers: Optional[Sequence[int]] = None,
                  restrict: Optional[tuple[bool, bool]] = None):
    """Record the attention probability of each (query, key) pair in every head of each layer.

    Args:
        model_or_handle: a probe Handle or a Hugging Face model.
        q_idx, k_idx: [B, P] int64 absolute positions in the forward's input (-1 = unused).
        layers: only these layers (default all).
        restrict: (skip_first, skip_current): also keep ``rec.kept[layer]`` [B, H], the mass summed over
            queries without the first real key and/or the current token (``restricted_mass``).
    Yields:
        PairRecorder; after one forward inside the block, ``rec.mass[layer]`` is [B, H, P].
        On exit, even after an exception, the model is exactly as before.
    """
    _, handle_model = as_handle(model_or_handle)
    modules = attention_modules_of(model_or_handle)
    rec = PairRecorder(q_idx, k_idx, layers, restrict)
    with seam.use_seam(handle_model), seam.attached(modules, rec):
        yield rec


def full_pair_probs(probs: Tensor, q_idx: Tensor, k_idx: Tensor, T: int, S: int) -> Tensor:
    """The same pairs gathered from a full map probs [B, H, T, S] (for tests and short prompts) -> [B, H, P]."""
    t = (q_idx - (S - T)).clamp_min(0)
    ok = (q_idx >= 0) & (k_idx >= 0) & (q_idx - (S - T) >= 0)
    flat = probs.flatten(2)                                                        # [B, H, T * S]
    lin = (t * S + k_idx.clamp_min(0))[:, None, :].expand(-1, probs.shape[1], -1)
    return torch.where(ok[:, None], flat.gather(-1, lin), torch.zeros((), dtype=probs.dtype))


__all__ = ["pair_probs", "capture_pairs", "PairRecorder", "full_pair_probs"]
