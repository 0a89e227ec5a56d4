"""Naive float64 attention: repeat_interleave the kv heads, one softmax over the whole map.

The oracle the kernel and reference tests compare against (O(T * S) memory: small shapes only).
"""
from __future__ import annotations

import torch


def naive_probs(q, k, v, *, scale, key_start=None, window=None, softcap=None):
    """Float64 probability map p [B, H, T, S], scores s (-inf where hidden), visibility [B, T, S]."""
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    kk = k.double().repeat_interleave(H // KV, dim=1)                       # [B, H, S, D]
    s = (q.double() @ kk.transpose(-1, -2)) * scale                          # [B, H, T, S]
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    ks = torch.zeros(B, dtype=torch.long) if key_start is None else key_start.cpu().long()
    pos = torch.arange(S - T, S)[:, None]                                    # [T, 1]
    j = torch.arange(S)[None, :]                                             # [1, S]
    vis = (j <= pos)[None] & (j[None] >= ks[:, None, None])                   # [B, T, S]
    if window is not None:
        vis = vis & ((pos - j) < window)[None]
    s = s.cpu().masked_fill(~vis[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)                             # fully masked rows -> 0
    return p, s, vis


def naive_out(p, v, H):
    """p [B, H, T, S] @ v (kv heads repeated) -> [B, T, H, D] float64."""
    vv = v.double().cpu().repeat_interleave(H // v.shape[1], dim=1)
    return (p @ vv).transpose(1, 2)


def head_edits(o, edits, row_ok):
    """Mean / scale output edits on o [B, T, H, D] (float64), row_ok [B, T]."""
    if edits is None:
        return o
    if edits.head_mean_on is not None:
        on = edits.head_mean_on.cpu().bool()[None, None, :, None] & row_ok[:, :, None, None]
        o = torch.where(on, edits.head_mean.double().cpu()[None, None], o)
    if edits.head_scale is not None:
        o = o * edits.head_scale.double().cpu()[None, None, :, None]
    return o
