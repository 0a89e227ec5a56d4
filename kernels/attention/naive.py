"""Naive float64 attention: repeat_interleave the kv heads, one softmax over the whole map.

The oracle the kernel and reference tests compare against (O(T * S) memory: small shapes only), and the kernels'
parity rule against float64 (``max_error``, ``allowed_error``), shared by those tests and benchmarks/real_parity.py.
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


# absolute error floor per unit of magnitude: the output by input dtype, every statistic alike
OUT_FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
STAT_FLOOR = 2e-5


def max_error(x, ref) -> tuple:
    """(max |x - ref| over ref's finite entries, max |ref| there), in float64 on the CPU."""
    x, ref = x.double().cpu(), ref.double().cpu()
    fin = torch.isfinite(ref)
    if not fin.any():
        return 0.0, 0.0
    return (x[fin] - ref[fin]).abs().max().item(), ref[fin].abs().max().item()


def allowed_error(name: str, ref_err: float, mag: float, dtype) -> float:
    """The kernels' parity rule: a field's error against float64 may be 4 x the same-dtype reference's error
    ``ref_err`` plus a floor per unit of the field's magnitude ``mag`` (the output's by dtype, the statistics' 2e-5)."""
    floor = OUT_FLOOR[dtype] if name == "out" else STAT_FLOOR
    return 4 * ref_err + floor * max(1.0, mag)
