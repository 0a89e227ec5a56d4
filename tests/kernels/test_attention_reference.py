"""The PyTorch reference (the CPU path) against a naive float64 softmax, edits included."""
from __future__ import annotations

import pytest
import torch

from kernels.attention.naive import head_edits, naive_out, naive_probs
from kernels.attention import AttentionEdits, StatsRequest, reference_attention

ALL = StatsRequest(lse=True, entropy=True, sink_mass=True, span_mass=True, received=True,
                   topk=3, topk_rows=2, full=True)


def _inputs(B, H, KV, T, S, D, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(B, KV, S, D, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, KV, S, D, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v


@pytest.mark.parametrize("B,H,KV,T,S,D,window,softcap,block_q", [
    (2, 4, 1, 63, 63, 16, None, None, None),
    (2, 9, 3, 17, 111, 32, 20, None, 5),
    (1, 2, 2, 1, 63, 16, None, 3.0, None),
    (2, 4, 2, 40, 40, 16, 7, None, 16),
])
def test_reference_matches_naive(B, H, KV, T, S, D, window, softcap, block_q):
    q, k, v = _inputs(B, H, KV, T, S, D)
    key_start = torch.tensor([0, S - T + 5][:B])                              # rows before it see nothing
    spans = torch.tensor([[[0, 3], [S // 2, S]]] * B)
    sink_pos = torch.tensor([[0, S // 3]] * B)
    scale = D ** -0.5
    r = reference_attention(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap,
                            sink_pos=sink_pos, spans=spans, stats=ALL, block_q=block_q)
    p, s, vis = naive_probs(q, k, v, scale=scale, key_start=key_start, window=window, softcap=softcap)
    torch.testing.assert_close(r.probs, p, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.out.double(), naive_out(p, v, H), rtol=0, atol=1e-12)
    row_ok = vis.any(-1)[:, None].expand(B, H, T)
    lse = torch.where(row_ok, torch.logsumexp(s, -1), torch.full_like(p[..., 0], float("-inf")))
    torch.testing.assert_close(r.lse, lse, rtol=0, atol=1e-12)
    ent = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)
    torch.testing.assert_close(r.entropy, ent, rtol=0, atol=1e-10)
    torch.testing.assert_close(r.sink_mass, p[..., [0, S // 3]], rtol=0, atol=1e-12)
    sm = torch.stack([p[..., 0:3].sum(-1), p[..., S // 2:].sum(-1)], -1)
    torch.testing.assert_close(r.span_mass, sm, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.received_sum, p.sum(2), rtol=0, atol=1e-12)
    torch.testing.assert_close(r.received_count, vis.sum(1).double(), rtol=0, atol=0)
    val, idx = p[:, :, -2:].topk(3, dim=-1)
    torch.testing.assert_close(r.topk_val, val, rtol=0, atol=1e-12)
    assert torch.equal(r.topk_idx, idx)
    # fully masked rows: zero output, zero stats, lse = -inf
    dead = ~vis.any(-1)                                                         # [B, T]
    assert dead.any() == (B > 1)
    assert (r.out[dead] == 0).all() and torch.isinf(r.lse.transpose(1, 2)[dead]).all()


def test_reference_edits_closed_forms():
    B, H, KV, T, S, D = 2, 4, 2, 30, 45, 16
    q, k, v = _inputs(B, H, KV, T, S, D, seed=1)
    key_start = torch.tensor([0, 4])
    scale = D ** -0.5
    p, s, vis = naive_probs(q, k, v, scale=scale, key_start=key_start)
    col_idx = torch.tensor([[[0, 7], [3, -1], [-1, -1], [0, 1]]] * B)
    beta = torch.tensor([[0.3, 2.0, 0.5, 0.0]] * B, dtype=torch.float64)
    uni = torch.tensor([False, False, False, True])
    ed = AttentionEdits(col_idx=col_idx, col_scale=beta, head_uniform=uni,
                        head_mean=torch.randn(H, D, dtype=torch.float64),
                        head_mean_on=torch.tensor([False, True, False, False]),
                        head_scale=torch.tensor([1.0, 0.5, 2.0, 0.0], dtype=torch.float64))
    r = reference_attention(q, k, v, scale=scale, key_start=key_start, edits=ed, stats=StatsRequest(full=True))
    row_ok = vis.any(-1)                                                        # [B, T]
    # rows still sum to one (zero for fully masked rows)
    torch.testing.assert_close(r.probs.sum(-1), row_ok[:, None].expand(B, H, T).double(), rtol=0, atol=1e-12)
    # uniform head: 1 / (number of visible keys) on the visible keys, then ACT on top of it
    base = p.clone()
    base[:, 3] = vis.double() / vis.sum(-1, keepdim=True).clamp_min(1)
    exp = base.clone()
    for b in range(B):
        for h in range(H):
            cols = sorted({int(c) for c in col_idx[b, h] if c >= 0})
            if not cols:
                continue
            be = float(beta[b, h])
            m = base[b, h][:, cols].sum(-1, keepdim=True)                     # [T, 1]
            other = [j for j in range(S) if j not in cols]
            ok = (1 - m) > 1e-12
            exp[b, h][:, other] = torch.where(ok, base[b, h][:, other] * (1 - be * m) / (1 - m), base[b, h][:, other])
            exp[b, h][:, cols] = torch.where(ok, be * base[b, h][:, cols], base[b, h][:, cols])
    torch.testing.assert_close(r.probs, exp, rtol=0, atol=1e-12)
    o = head_edits(naive_out(exp, v, H), ed, row_ok)
    torch.testing.assert_close(r.out.double(), o, rtol=0, atol=1e-12)


def test_reference_var_redistribution():
    B, H, KV, T, S, D = 1, 2, 1, 24, 24, 16
    q, k, v = _inputs(B, H, KV, T, S, D, seed=2)
    k[:, :, 0] += 2 * q[0, :, :, :].mean((0, 1))                                # a sink on key 0
    scale = D ** -0.5
    ed = AttentionEdits(redist_idx=torch.tensor([[0, 5]]), redist_span=torch.tensor([[4, 12]]),
                        redist_from=torch.tensor([14]), redist_keep=torch.tensor([0.25, 1.0], dtype=torch.float64),
                        redist_rho=0.9, redist_min_mass=0.05)
    r = reference_attention(q, k, v, scale=scale, edits=ed, stats=StatsRequest(full=True))
    p, _, _ = naive_probs(q, k, v, scale=scale)
    exp = p.clone()
    sel_rows = 0
    for h in range(H):
        for t in range(T):
            row = p[0, h, t]
            m = row[4:12].sum()
            qs = row[5] / (m + 1e-6)
            target = [j for j in range(4, 12) if j != 5]
            denom = row[target].sum()
            if t < 14 or h == 1 or qs > 0.9 or m < 0.05 or denom <= 0:
                continue
            sel_rows += 1
            budget = 0.75 * (row[0] + row[5])
            new = row.clone()
            new[[0, 5]] = 0.25 * row[[0, 5]]
            new[target] = row[target] + budget * row[target] / denom
            exp[0, h, t] = new
    assert sel_rows > 0
    torch.testing.assert_close(r.probs, exp, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.probs.sum(-1), torch.ones(B, H, T, dtype=torch.float64), rtol=0, atol=1e-12)


def test_stats_from_logits_equals_the_reference_statistics():
    """The statistics of given logits (the hook backends' path) equal those of the reference attention whose
    q.k gave the logits: padding, a sliding window, sinks, spans, top-k and received mass, odd sizes, GQA."""
    from kernels.attention.reference import stats_from_logits
    torch.manual_seed(3)
    B, H, KV, T, S, D = 2, 6, 2, 37, 53, 16
    q = torch.randn(B, H, T, D, dtype=torch.float64)
    k = torch.randn(B, KV, S, D, dtype=torch.float64)
    v = torch.randn(B, KV, S, D, dtype=torch.float64)
    key_start = torch.tensor([0, 9])
    sink_pos = torch.tensor([[0, 3], [9, 10]])
    spans = torch.tensor([[[2, 11]], [[12, 30]]])
    req = StatsRequest(lse=True, entropy=True, sink_mass=True, span_mass=True, received=True, topk=4, topk_rows=5)
    for window in (None, 7):
        ref = reference_attention(q, k, v, scale=0.3, key_start=key_start, window=window, sink_pos=sink_pos,
                                  spans=spans, stats=req, block_q=8)
        G = H // KV
        logits = (q.view(B, KV, G, T, D) @ k[:, :, None].transpose(-1, -2)).view(B, H, T, S) * 0.3
        got = stats_from_logits(logits, key_start=key_start, window=window, sink_pos=sink_pos, spans=spans,
                                stats=req, block_q=5)
        for name in ("lse", "entropy", "sink_mass", "span_mass", "received_sum", "received_count", "topk_val"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-12, atol=1e-12, msg=name)
        assert torch.equal(got.topk_idx, ref.topk_idx)
