"""Triton attention kernels vs float64: the kernel's error must stay within a small multiple of the
error that the same-dtype PyTorch reference makes. On CPU these run under TRITON_INTERPRET=1
(set in conftest.py); the kernel module is imported inside the tests, after that."""
from __future__ import annotations

import pytest
import torch

from kernels.attention.naive import allowed_error, head_edits, max_error, naive_out, naive_probs
from kernels.attention import AttentionEdits, StatsRequest, reference_attention
from kernels.attention.reference import _edit_probs

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="big shapes: GPU only (the interpreter is too slow)")

ALL = StatsRequest(lse=True, entropy=True, sink_mass=True, span_mass=True, received=True, topk=4, topk_rows=3)
FIELDS = ("out", "lse", "entropy", "sink_mass", "span_mass", "received_sum", "received_count", "topk_val")


def _tri():
    from kernels.attention import fused as tri  # after conftest set TRITON_INTERPRET
    return tri


def _inputs(B, H, KV, T, S, D, dtype, seed=0, sink=0.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g)
    k = torch.randn(B, KV, S, D, generator=g)
    v = torch.randn(B, KV, S, D, generator=g)
    if sink:  # key 0 attracts every query along a shared direction u: an attention sink
        u = torch.randn(D, generator=g)
        u = u / u.norm()
        q = q + 1.5 * u
        k[:, :, 0] = sink * D ** 0.5 * u
    return (x.to(dtype).to(DEV) for x in (q, k, v))


def _err(x, ref):
    assert torch.equal(torch.isfinite(x.cpu()), torch.isfinite(ref.cpu())), "non-finite entries differ"
    return max_error(x, ref)


def _check(name, got, ref64, ref_same, dtype, log):
    e_k, mag = _err(got, ref64)
    e_r, _ = _err(ref_same, ref64)
    allowed = allowed_error(name, e_r, mag, dtype)
    log.append(f"{name}: kernel {e_k:.2e} reference {e_r:.2e}")
    assert e_k <= allowed, f"{name}: kernel error {e_k:.3e} > 4 x reference {e_r:.3e} + {allowed - 4 * e_r:.1e}"


def _parity(q, k, v, stats, opts=None, **kw):
    tri = _tri()
    assert tri.supports(q, k, v, stats=stats, **kw)
    got = tri.attention(q, k, v, stats=stats, opts=opts, **kw)
    ref64 = reference_attention(q.double(), k.double(), v.double(), stats=stats, **kw)
    same = reference_attention(q, k, v, stats=stats, **kw)
    log = []
    for f in FIELDS:
        r = getattr(ref64, f)
        if r is None:
            assert getattr(got, f) is None, f
            continue
        assert getattr(got, f).shape == r.shape, f
        _check(f, getattr(got, f), r, getattr(same, f), q.dtype, log)
    if stats.topk:
        # indices agree in every row whose top-k probabilities are not tied within rounding (per row:
        # one near-tie elsewhere must not switch the check off for the whole tensor)
        gi, ri = got.topk_idx.cpu(), ref64.topk_idx.cpu()                   # [B, H, rows, k]
        rv = ref64.topk_val.cpu()
        tol = 1e-5 if q.dtype == torch.float32 else 1e-3
        gap = (rv[..., :-1] - rv[..., 1:]).abs().amin(-1) if rv.shape[-1] > 1 else torch.full(rv.shape[:-1], 1.0)
        clear = gap > tol                                                     # [B, H, rows]
        assert torch.equal(gi[clear], ri[clear])
        log.append(f"topk idx checked in {int(clear.sum())}/{clear.numel()} rows")
    print("; ".join(log))
    return got, ref64


def _spans(B, S):
    return torch.tensor([[[0, 1], [S // 3, S // 3 + 21], [S - 10, S]]] * B, device=DEV)


@pytest.mark.parametrize("B,H,KV,T,S,D,dtype,window,softcap,ks", [
    (2, 4, 1, 63, 63, 64, torch.float32, None, None, [0, 20]),
    (1, 9, 3, 111, 111, 64, torch.bfloat16, None, None, None),
    (2, 9, 3, 33, 111, 64, torch.float16, 40, 20.0, [0, 90]),
    (1, 2, 1, 63, 63, 256, torch.bfloat16, 17, None, [5]),
    (1, 4, 4, 70, 100, 32, torch.float32, 33, None, None),
])
def test_forward_parity(B, H, KV, T, S, D, dtype, window, softcap, ks):
    q, k, v = _inputs(B, H, KV, T, S, D, dtype)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    sink_pos = torch.tensor([[0, S // 2]] * B, device=DEV)
    got, ref = _parity(q, k, v, ALL, scale=D ** -0.5, key_start=key_start, window=window, softcap=softcap,
                       sink_pos=sink_pos, spans=_spans(B, S))
    if ks is not None and max(ks) > S - T:  # fully masked rows: zero output and stats, lse = -inf
        dead = (S - T + torch.arange(T)) < max(ks)
        b = ks.index(max(ks))
        assert (got.out[b, dead.to(DEV)] == 0).all()
        assert torch.isinf(got.lse[b][:, dead.to(DEV)]).all()
        assert (got.entropy[b][:, dead.to(DEV)] == 0).all()


@pytest.mark.parametrize("B,H,KV,S,D,dtype,window,ks,stats", [
    (1, 9, 3, 111, 64, torch.bfloat16, None, None, StatsRequest(lse=True)),
    (2, 4, 1, 63, 64, torch.float32, 10, [0, 40], StatsRequest()),
    (2, 4, 1, 63, 64, torch.float16, None, [3, 63], StatsRequest(lse=True)),   # row 1 fully masked
    (1, 9, 3, 111, 64, torch.bfloat16, None, [7], ALL),                        # stats: the prefill kernel
    (1, 2, 2, 65, 256, torch.float32, None, None, StatsRequest()),
])
def test_decode_parity(B, H, KV, S, D, dtype, window, ks, stats):
    q, k, v = _inputs(B, H, KV, 1, S, D, dtype, seed=3)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    kw = dict(spans=_spans(B, S)) if stats.span_mass else {}
    got, _ = _parity(q, k, v, stats, scale=D ** -0.5, key_start=key_start, window=window, **kw)
    if ks is not None and ks[-1] >= S:
        assert (got.out[-1] == 0).all()


def _edits(B, H, D, S, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    col_idx = torch.tensor([[[0, 5, 0], [3, -1, -1], [-1, -1, -1], [0, 1, S - 1]]] * B)[:, :H]
    return AttentionEdits(
        col_idx=col_idx.to(DEV),
        col_scale=torch.tensor([[0.3, 2.0, 0.5, 0.1]] * B)[:, :H].to(DEV),
        head_uniform=torch.tensor([False, True, False, False])[:H].to(DEV),
        head_mean=torch.randn(H, D, generator=g).to(dtype).to(DEV),
        head_mean_on=torch.tensor([False, False, True, False])[:H].to(DEV),
        head_scale=torch.tensor([1.0, 0.5, 2.0, -1.5])[:H].to(DEV),
    )


def _edited_expectation(q, k, v, ed, *, scale, key_start=None, window=None):
    """The reference edits applied to the explicit float64 probability map, then P @ V."""
    B, H, T, _ = q.shape
    S = k.shape[2]
    p, _, vis = naive_probs(q.cpu(), k.cpu(), v.cpu(), scale=scale, key_start=key_start, window=window)
    ed64 = AttentionEdits(**{f: (getattr(ed, f).cpu() if torch.is_tensor(getattr(ed, f)) else getattr(ed, f))
                             for f in ed.__dataclass_fields__})
    pe = _edit_probs(p, vis, torch.arange(S - T, S), ed64)
    return head_edits(naive_out(pe, v.cpu(), H), ed64, vis.any(-1)), p, pe


@pytest.mark.parametrize("B,H,KV,T,S,D,dtype,window,ks,sink", [
    (1, 4, 2, 45, 70, 64, torch.float32, None, [2], 0.0),
    (2, 4, 1, 63, 63, 64, torch.bfloat16, 20, [0, 9], 0.0),
    (1, 4, 2, 40, 40, 64, torch.bfloat16, None, None, 4.0),   # strong sink: mass on key 0 near 1
    (1, 4, 4, 1, 63, 64, torch.float16, 50, None, 4.0),      # decode with edits
])
def test_edits_parity(B, H, KV, T, S, D, dtype, window, ks, sink):
    tri = _tri()
    q, k, v = _inputs(B, H, KV, T, S, D, dtype, seed=5, sink=sink)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    ed = _edits(B, H, D, S, dtype)
    scale = D ** -0.5
    assert tri.supports(q, k, v, edits=ed, key_start=key_start, window=window)
    got = tri.attention(q, k, v, scale=scale, key_start=key_start, window=window, edits=ed,
                        stats=StatsRequest(topk=3, topk_rows=2))
    exp, p, pe = _edited_expectation(q, k, v, ed, scale=scale, key_start=None if ks is None else key_start.cpu(),
                                 window=window)
    same = reference_attention(q, k, v, scale=scale, key_start=key_start, window=window, edits=ed)
    if sink:
        assert p[:, 0, :, 0].mean() > 0.5 or window is not None  # the sink case really is sink-heavy (before editing)
    log = []
    _check("out", got.out, exp, same.out, dtype, log)
    print(log)
    val, _ = pe[:, :, -2:].topk(3, dim=-1)
    torch.testing.assert_close(got.topk_val.cpu().double(), val, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("B,H,KV,S,D,dtype,window,ks,sink", [
    (1, 4, 2, 111, 64, torch.float32, None, None, 4.0),      # GQA, strong sink: column mass near 1
    (2, 4, 1, 63, 64, torch.bfloat16, 20, [0, 9], 0.0),      # window: some columns out of sight
    (2, 4, 4, 63, 64, torch.float16, None, [3, 63], 0.0),    # row 1 fully masked
    (1, 4, 2, 1000, 32, torch.float32, None, [2], 0.0),
])
def test_decode_act_parity(B, H, KV, S, D, dtype, window, ks, sink):
    """ACT's column edits at a one-query step (what every decode step of an ACT generation runs)."""
    tri = _tri()
    q, k, v = _inputs(B, H, KV, 1, S, D, dtype, seed=7, sink=sink)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    ed = _edits(B, H, D, S, dtype)
    ed.head_uniform = None                                       # columns only (+ head mean / scale)
    scale = D ** -0.5
    got = tri.attention(q, k, v, scale=scale, key_start=key_start, window=window, edits=ed)
    exp, p, _ = _edited_expectation(q, k, v, ed, scale=scale, key_start=None if ks is None else key_start.cpu(),
                                    window=window)
    same = reference_attention(q, k, v, scale=scale, key_start=key_start, window=window, edits=ed)
    log = []
    _check("out", got.out, exp, same.out, dtype, log)
    if ks is not None and ks[-1] >= S:
        assert (got.out[-1] == 0).all()


def _var_edits(B, H, S, T, dtype):
    return AttentionEdits(
        redist_idx=torch.tensor([[0, 5, 5]] * B, device=DEV),            # repeated sink keys count once
        redist_span=torch.tensor([[4, min(S, 30)]] * B, device=DEV),
        redist_from=torch.tensor([S - T + 2] * B, device=DEV),
        redist_keep=torch.tensor([0.25, 1.0, 0.0, 0.5])[:H].to(DEV),
        redist_rho=0.9, redist_min_mass=0.02,
        head_uniform=torch.tensor([False, False, True, False])[:H].to(DEV),
        head_scale=torch.tensor([1.0, 2.0, 0.5, 1.0])[:H].to(DEV))


@pytest.mark.parametrize("B,H,KV,T,S,D,dtype,window,ks", [
    (1, 2, 1, 24, 24, 64, torch.float32, None, None),
    (2, 4, 2, 45, 70, 64, torch.bfloat16, None, [0, 3]),
    (1, 4, 4, 40, 63, 256, torch.float16, 50, None),
    (2, 4, 2, 1, 70, 64, torch.float32, None, [0, 2]),                   # decode
])
def test_var_parity(B, H, KV, T, S, D, dtype, window, ks):
    tri = _tri()
    q, k, v = _inputs(B, H, KV, T, S, D, dtype, seed=19, sink=4.0)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    ed = _var_edits(B, H, S, T, dtype)
    if T == 1:
        ed.redist_from = torch.zeros(B, dtype=torch.long, device=DEV)
    scale = D ** -0.5
    assert tri.supports(q, k, v, edits=ed, key_start=key_start, window=window)
    got = tri.attention(q, k, v, scale=scale, key_start=key_start, window=window, edits=ed)
    exp, p, pe = _edited_expectation(q, k, v, ed, scale=scale, key_start=None if ks is None else key_start.cpu(),
                                     window=window)
    keep_heads = ed.redist_keep.cpu() < 1
    assert (pe - p)[:, keep_heads & ~ed.head_uniform.cpu()].abs().max() > 1e-3  # the edit is active
    same = reference_attention(q, k, v, scale=scale, key_start=key_start, window=window, edits=ed)
    log = []
    _check("out", got.out, exp, same.out, dtype, log)
    print(log)


def _decode_edits(kind, dtype, seed, span_lo):
    """A one-query step over 150 keys (B 2, H 4, KV 2, d 32, key_start [0, 4]) with one kind of probability edit:
    "act" columns (one in the last chunk), "var" (sinks {0}, span [span_lo, 100)) or "uniform" heads.
    Returns q, k, v, key_start, edits."""
    B, H, KV, S, D = 2, 4, 2, 150, 32
    q, k, v = _inputs(B, H, KV, 1, S, D, dtype, seed=seed, sink=4.0)
    key_start = torch.tensor([0, 4], device=DEV)
    if kind == "var":
        ed = _var_edits(B, H, S, 1, dtype)
        ed.redist_from = torch.zeros(B, dtype=torch.long, device=DEV)
        ed.redist_span = torch.tensor([[span_lo, 100]] * B, device=DEV)
    else:
        ed = _edits(B, H, D, S, dtype)
        ed.col_idx[:, 3, 1] = 140                                     # a column in the last chunk
        if kind == "uniform":
            ed = AttentionEdits(head_uniform=ed.head_uniform, head_scale=ed.head_scale)
        else:
            ed.head_uniform = None
    return q, k, v, key_start, ed


def _check_edited(got, q, k, v, ed, dtype, key_start=None, active=True, window=None):
    """The kernel's output against the float64 edited expectation (and the edit visibly changes P if ``active``)."""
    scale = q.shape[-1] ** -0.5
    exp, p, pe = _edited_expectation(q, k, v, ed, scale=scale, key_start=None if key_start is None else key_start.cpu(),
                                     window=window)
    if active:
        assert (pe - p).abs().max() > 1e-3                             # the edit is active
    same = reference_attention(q, k, v, scale=scale, key_start=key_start, edits=ed, window=window)
    log = []
    _check("out", got.out, exp, same.out, dtype, log)
    print(log)


@pytest.mark.parametrize("kind", ["act", "var", "uniform"])
def test_decode_edits_run_split_kv(kind, monkeypatch):
    """A one-query step with probability edits runs the split-KV decode kernels (never the prefill
    kernel at T = 1), with the same parity as the prefill epilogue; columns sit in two chunks."""
    tri = _tri()
    q, k, v, key_start, ed = _decode_edits(kind, torch.bfloat16, seed=29, span_lo=4)

    def no_prefill(*a, **kw):
        raise AssertionError("the prefill kernel ran a decode step")
    monkeypatch.setattr(tri, "_prefill", no_prefill)
    got = tri.attention(q, k, v, scale=q.shape[-1] ** -0.5, key_start=key_start, edits=ed)
    _check_edited(got, q, k, v, ed, torch.bfloat16, key_start)


SWITCHES = [{"seg": True}, {"span_post": True, "reload_q": True},
            {"seg": True, "span_post": True, "reload_q": True, "tma": True, "fma": True, "rev": True},
            # session 12: the row max by a tree in registers, the row sums kept per lane
            {"seg": True, "span_post": True, "reload_q": True, "tma": True, "fma": True, "rev": True, "tmax": True,
             "lsum": True},
            {"tmax": True}, {"lsum": True, "fma": True},
            # session 14: the fully visible range against a fixed reference (no row max, no rescaling)
            {"fixref": True}, {"span_post": True, "reload_q": True, "tma": True, "fma": True, "rev": True, "tmax": True,
                               "lsum": True, "fixref": True}]


@pytest.mark.parametrize("opts", [{"fma": True, "span_post": True}, {"fma": True, "tmax": True, "span_post": True},
                                  {"tmax": True, "lsum": True}, {"fixref": True},
                                  {"fma": True, "tmax": True, "lsum": True, "span_post": True, "fixref": True}])
@pytest.mark.parametrize("D,T,S,dtype", [(64, 70, 130, torch.bfloat16), (64, 40, 97, torch.float32),
                                         (128, 33, 160, torch.bfloat16)])
def test_growing_max_parity(D, T, S, dtype, opts):
    """Rows whose max grows over many key blocks (~30, base 2) and jumps by ~20 at one key (every key block rescales
    the running output and sums): float64 parity of the output, every statistic and ACT columns, with the row max by a
    chain or by a tree (tmax), with and without the FMA path, and against a fixed reference (fixref: the max grows ~50
    above it, so the entropy sum is taken far from the max). A kernel that dropped the accumulators' rescale fails this
    (checked in session 12 against a lazily rescaling variant)."""
    g = torch.Generator().manual_seed(D + S)
    u = torch.randn(D, generator=g)
    u = u / u.norm()
    q = torch.randn(1, 2, T, D, generator=g) + 1.5 * u
    k = torch.randn(1, 1, S, D, generator=g)
    v = torch.randn(1, 1, S, D, generator=g)
    ramp = 110.0 * torch.arange(S) / S * (D / 64) ** 0.5              # ~30 (base 2) over the sequence
    k = k + ramp[:, None] * u
    k[:, :, S // 2] += 75.0 * (D / 64) ** 0.5 * u                      # one key ~20 above its neighbours
    q, k, v = (x.to(dtype).to(DEV) for x in (q, k, v))
    _parity(q, k, v, ALL, scale=D ** -0.5, sink_pos=torch.tensor([[0, S // 2]], device=DEV), spans=_spans(1, S),
            opts=opts)
    ed = _edits(1, 2, D, S, dtype)
    ed.col_idx[0, 0] = torch.tensor([S // 2, 0, 5])
    got = _tri().attention(q, k, v, scale=D ** -0.5, edits=ed, opts=opts)
    _check_edited(got, q, k, v, ed, dtype, active=False)


@pytest.mark.parametrize("jump", [150.0, 110.0, 60.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fixref_overflow_parity(jump, dtype):
    """fixref takes the fully visible keys against the first block's row max. A key whose base-2 logit is ``jump``
    above it: at 150 exp2 overflows (inf), at 110 the sums pass 1e30; both send the program back over the range with
    the running max (without that fallback the 150 cases come out inf / NaN and fail); at 60 the fixed reference
    holds. Output, every statistic, ACT and VAR edits keep float64 parity."""
    B, H, KV, T, S, D = 1, 2, 1, 70, 130, 64
    g = torch.Generator().manual_seed(int(jump))
    u = torch.randn(D, generator=g)
    u = u / u.norm()
    q = torch.randn(B, H, T, D, generator=g) * 0.5 + 20.0 * u
    k = torch.randn(B, KV, S, D, generator=g) * 0.5
    v = torch.randn(B, KV, S, D, generator=g)
    k[:, :, 90] += jump / 1.4427 * D ** 0.5 / 20.0 * u                 # q . k * scale * log2(e) ~ jump at key 90
    q, k, v = (x.to(dtype).to(DEV) for x in (q, k, v))
    opts = {"fixref": True, "fma": True, "lsum": True, "span_post": True}
    # sinks and ACT columns away from key 90: its own mass, p ~ 1 from a logit ~150 in float32, is off by ~2e-5
    # with or without fixref, and ACT on a column holding all of a row's mass is ill-conditioned in float64 too
    _parity(q, k, v, ALL, scale=D ** -0.5, sink_pos=torch.tensor([[0, 40]], device=DEV), spans=_spans(1, S),
            opts=opts)
    ed = _edits(1, H, D, S, dtype)
    ed.col_idx[0, 0] = torch.tensor([40, 0, 5])
    got = _tri().attention(q, k, v, scale=D ** -0.5, edits=ed, opts=opts)
    _check_edited(got, q, k, v, ed, dtype, active=False)
    ed = _var_edits(1, H, S, T, dtype)                                # VAR: sinks {0, 5}, span [4, 30)
    got = _tri().attention(q, k, v, scale=D ** -0.5, edits=ed, opts=opts)
    _check_edited(got, q, k, v, ed, dtype, active=False)


RECEIVED_SWITCHES = [{"r_keymajor": True}, {"r_fma": True}, {"r_keymajor": True, "r_fma": True, "r_tma": True},
                     {"r_tma": True}, {"r_keymajor": True, "r_fma": True, "r_poly": 1},
                     {"r_keymajor": True, "r_poly": 4, "r_tma": True}]


@pytest.mark.parametrize("opts", RECEIVED_SWITCHES)
@pytest.mark.parametrize("B,H,KV,T,S,D,dtype,window,softcap,ks", [
    (2, 4, 2, 63, 111, 64, torch.bfloat16, None, None, [0, 20]),     # odd lengths, GQA, left padding
    (1, 2, 1, 70, 70, 128, torch.bfloat16, 33, None, [5]),           # window, d 128
    (1, 2, 2, 33, 47, 64, torch.float32, None, 20.0, None),          # softcap (FMA falls back), fp32 (no TMA)
])
def test_received_switches_parity(opts, B, H, KV, T, S, D, dtype, window, softcap, ks):
    """Every received-mass kernel switch keeps the float64 parity of the column sums."""
    q, k, v = _inputs(B, H, KV, T, S, D, dtype, seed=41, sink=3.0)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    _parity(q, k, v, StatsRequest(lse=True, received=True), scale=D ** -0.5, key_start=key_start, window=window,
            softcap=softcap, opts=opts)


# session 6: lse through a descriptor, the forward's base-2 lse, the (head, key block) grid, the polynomial exp2 on
# every n-th query block, the MMA issued a block ahead (lse2 acts only where the call does not return lse: entropy and
# received mass here)
RECEIVED_SWITCHES_S6 = [{"r_keymajor": True, "r_fma": True, "r_tma": True, "r_ltma": True, "r_lse2": True,
                         "r_hmaj": True},
                        {"r_keymajor": True, "r_fma": True, "r_pmix": 2},
                        {"r_lse2": True},
                        {"r_keymajor": True, "r_fma": True, "r_tma": True, "r_pipe": True, "r_pmix": 3},
                        {"r_keymajor": True, "r_pipe": True, "r_lse2": True},
                        # session 10: the lse addend a block ahead, the fully visible loop unrolled
                        {"r_keymajor": True, "r_fma": True, "r_tma": True, "r_lse2": True, "r_lpre": True},
                        {"r_keymajor": True, "r_fma": True, "r_lpre": True, "r_unroll": 2},
                        {"r_keymajor": True, "r_unroll": 3},
                        # the addend -lse2 / c added by the MMA (from the prefill kernel's split of it)
                        {"r_keymajor": True, "r_fma": True, "r_tma": True, "r_lse2": True, "r_amma": True},
                        {"r_keymajor": True, "r_tma": True, "r_amma": True},
                        # session 12: the column sums kept per lane through the loops
                        {"r_keymajor": True, "r_fma": True, "r_tma": True, "r_lse2": True, "r_rlanes": True},
                        {"r_keymajor": True, "r_tma": True, "r_amma": True, "r_rlanes": True},
                        {"r_keymajor": True, "r_pipe": True, "r_rlanes": True, "r_poly": 1}]


@pytest.mark.parametrize("opts", RECEIVED_SWITCHES_S6)
@pytest.mark.parametrize("B,H,KV,T,S,D,dtype,window,softcap,ks", [
    (2, 4, 2, 68, 111, 64, torch.bfloat16, None, None, [0, 20]),     # odd S, GQA, left padding, T * 4 B % 16 = 0
    (1, 2, 1, 70, 70, 128, torch.bfloat16, 33, None, [5]),           # window, d 128, dead rows, lse by pointers
    (1, 2, 2, 33, 47, 64, torch.float32, None, 20.0, None),          # softcap, fp32 (lse2 only)
    (1, 3, 1, 200, 213, 64, torch.bfloat16, None, None, None),       # several pairs of fully visible query blocks
])
def test_received_switches_s6_parity(opts, B, H, KV, T, S, D, dtype, window, softcap, ks):
    q, k, v = _inputs(B, H, KV, T, S, D, dtype, seed=43, sink=3.0)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    _parity(q, k, v, StatsRequest(entropy=True, received=True), scale=D ** -0.5, key_start=key_start, window=window,
            softcap=softcap, opts=opts)


@pytest.mark.parametrize("opts", SWITCHES)
def test_prefill_switches_parity(opts):
    """Every prefill variant switch (tuning picks them per variant) keeps the float64 parity:
    statistics (span mass in the post-pass), and ACT columns in several key blocks (segments)."""
    B, H, KV, T, S, D = 1, 4, 2, 40, 110, 64                            # TMA: 2-byte inputs, d 64 / 128
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=37, sink=3.0)
    key_start = torch.tensor([9], device=DEV)
    spans = torch.tensor([[[0, 1], [20, 75], [100, 110]]] * B, device=DEV)
    _parity(q, k, v, StatsRequest(lse=True, entropy=True, sink_mass=True, span_mass=True), scale=D ** -0.5,
            key_start=key_start, window=70 if opts.get("tma") else None, spans=spans, opts=opts)
    ed = _edits(B, H, D, S, torch.bfloat16)
    ed.col_idx[:, 0] = torch.tensor([70, 33, 40])                    # columns in two middle blocks, unsorted
    ed.col_idx[:, 3] = torch.tensor([0, 1, S - 1])
    got = _tri().attention(q, k, v, scale=D ** -0.5, key_start=key_start, edits=ed, opts=opts)
    _check_edited(got, q, k, v, ed, torch.bfloat16, key_start, active=False)


@pytest.mark.parametrize("kind", ["act", "var"])
@pytest.mark.parametrize("opts", [{"col_mode": "block"}, {"col_mode": "split"}, {"col_mode": "split", "nsplit": 1},
                                  {"col_mode": "chunk", "nsplit": 2}, {"col_mode": "bits"},
                                  {"col_mode": "bits", "nsplit": 1}, {"col_mode": "span"},
                                  {"col_mode": "span", "nsplit": 1}])
def test_decode_col_mode_parity(kind, opts):
    """Every decode column mode (mask every block of a chunk holding an edited column or VAR's span, test each
    block, split the loop around the blocks that hold one, or -- span -- also run the span's sink-free blocks as
    one loop of targets), with several chunks and with one."""
    q, k, v, key_start, ed = _decode_edits(kind, torch.float16, seed=41, span_lo=40)
    got = _tri().attention(q, k, v, scale=q.shape[-1] ** -0.5, key_start=key_start, edits=ed, opts=opts)
    _check_edited(got, q, k, v, ed, torch.float16, key_start)


@pytest.mark.parametrize("kind", ["act", "var"])
def test_decode_split_window_sink_parity(kind):
    """Split mode under a window and key_start, GQA, a strong sink (column mass near 1: the kept keys' sum must not
    come from a subtraction), columns before the window, in the first visible block and in the last, odd length."""
    B, H, KV, S, D = 2, 4, 2, 173, 32
    q, k, v = _inputs(B, H, KV, 1, S, D, torch.float32, seed=53, sink=4.0)
    key_start = torch.tensor([0, 21], device=DEV)
    if kind == "var":
        ed = _var_edits(B, H, S, 1, torch.float32)
        ed.redist_from = torch.zeros(B, dtype=torch.long, device=DEV)
        ed.redist_idx = torch.tensor([[0, 90, 172]] * B, device=DEV)
        ed.redist_span = torch.tensor([[60, 131]] * B, device=DEV)
    else:
        ed = _edits(B, H, D, S, torch.float32)
        ed.head_uniform = None
        ed.col_idx = torch.tensor([[[0, 5, 172], [3, 70, -1], [-1, -1, -1], [0, 96, 40]]] * B, device=DEV)
    for opts in ({"col_mode": "split"}, {"col_mode": "split", "nsplit": 1}, {"col_mode": "bits"},
                 {"col_mode": "bits", "nsplit": 1}, {"col_mode": "span"}, {"col_mode": "span", "nsplit": 1}):
        got = _tri().attention(q, k, v, scale=D ** -0.5, key_start=key_start, window=120, edits=ed, opts=opts)
        exp, p, pe = _edited_expectation(q, k, v, ed, scale=D ** -0.5, key_start=key_start.cpu(), window=120)
        same = reference_attention(q, k, v, scale=D ** -0.5, key_start=key_start, window=120, edits=ed)
        _check("out", got.out, exp, same.out, torch.float32, [])


def test_dedup_cached_per_tensor():
    """Edit columns are deduplicated once per tensor (per sequence), and again after an in-place change."""
    tri = _tri()
    cols = torch.tensor([[[3, 3, 0]]], device=DEV)
    a = tri._dedup(cols, cols.device)
    assert a.tolist() == [[[0, 3, -1]]] and tri._dedup(cols, cols.device) is a
    cols[0, 0, 2] = 5
    b = tri._dedup(cols, cols.device)
    assert b is not a and b.tolist() == [[[3, -1, 5]]]


def test_fallback_warns_once_with_reason(monkeypatch):
    """A CUDA request the kernel cannot serve runs the reference and says why, once per reason."""
    import kernels.attention as ka
    monkeypatch.setattr(ka, "_WARNED", set())
    q, k, v = _inputs(1, 2, 1, 4, 4, 16, torch.float32)
    assert "stats.full" in ka.fallback_reason(q, k, v, scale=0.25, stats=StatsRequest(full=True))
    assert "float64" in ka.fallback_reason(q.double(), k.double(), v.double(), scale=0.25)
    assert "head_dim 48" in ka.fallback_reason(*_inputs(1, 2, 1, 4, 4, 48, torch.float32), scale=0.2)
    ka._warn_fallback("head_dim 48")
    with pytest.warns(RuntimeWarning, match="Triton kernel is not used \\(head_dim 12\\)"):
        ka._warn_fallback("head_dim 12")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ka._warn_fallback("head_dim 12")                               # second time: silent


def test_default_sink_of_a_fully_padded_row():
    """key_start = S (a row of nothing but padding): the default sink key is clamped, its mass is 0."""
    q, k, v = _inputs(2, 4, 2, 9, 9, 32, torch.float32, seed=31)
    got, _ = _parity(q, k, v, StatsRequest(lse=True, sink_mass=True), scale=32 ** -0.5,
                     key_start=torch.tensor([0, 9], device=DEV))
    assert (got.sink_mass[1] == 0).all() and (got.sink_mass[0] > 0).all()


def test_head_edits_alone_parity():
    q, k, v = _inputs(2, 4, 2, 33, 50, 64, torch.bfloat16, seed=7)
    ed = _edits(2, 4, 64, 50, torch.bfloat16)
    ed = AttentionEdits(head_mean=ed.head_mean, head_mean_on=ed.head_mean_on, head_scale=ed.head_scale)
    _parity(q, k, v, StatsRequest(lse=True, entropy=True), scale=0.125, edits=ed,
            key_start=torch.tensor([0, 20], device=DEV))


def test_supports_refusals():
    tri = _tri()
    q, k, v = _inputs(1, 4, 2, 8, 8, 64, torch.float32)
    assert tri.supports(q, k, v, scale=0.1)
    assert not tri.supports(q, k, v, scale=0.1, stats=StatsRequest(full=True))
    assert not tri.supports(q.double(), k.double(), v.double(), scale=0.1)
    q48, k48, v48 = _inputs(1, 4, 2, 8, 8, 48, torch.float32)
    assert not tri.supports(q48, k48, v48, scale=0.1)
    ed = _edits(1, 4, 64, 8, torch.float32)
    assert tri.supports(q, k, v, edits=ed, stats=StatsRequest(topk=2))
    assert not tri.supports(q, k, v, edits=ed, stats=StatsRequest(entropy=True))
    var = AttentionEdits(redist_idx=torch.tensor([[0]]), redist_span=torch.tensor([[1, 4]]),
                         redist_from=torch.tensor([2]), redist_keep=torch.zeros(4))
    assert tri.supports(q, k, v, edits=var)
    var.col_idx, var.col_scale = ed.col_idx, ed.col_scale
    assert not tri.supports(q, k, v, edits=var)  # ACT and VAR together: the reference
    with pytest.raises(NotImplementedError):
        tri.attention(q, k, v, scale=0.1, stats=StatsRequest(full=True))


# ---------------------------------------------------------------- GPU: big and odd shapes
@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("B,H,KV,T,S,D,window,ks", [
    (1, 32, 32, 1000, 1000, 128, None, None),
    (2, 9, 3, 1000, 1000, 64, 256, [0, 300]),
    (1, 8, 2, 777, 2049, 256, None, [11]),
    (1, 4, 1, 4096, 4096, 64, 1000, None),
])
def test_forward_parity_gpu(B, H, KV, T, S, D, window, ks):
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=11)
    key_start = None if ks is None else torch.tensor(ks, device=DEV)
    _parity(q, k, v, ALL, scale=D ** -0.5, key_start=key_start, window=window,
            sink_pos=torch.tensor([[0, 1, S // 2]] * B, device=DEV), spans=_spans(B, S))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("H,KV,S,D", [(32, 32, 65537, 128), (9, 3, 4097, 64), (16, 8, 3001, 256)])
def test_decode_parity_gpu(H, KV, S, D):
    q, k, v = _inputs(1, H, KV, 1, S, D, torch.bfloat16, seed=13)
    _parity(q, k, v, StatsRequest(lse=True), scale=D ** -0.5)


@gpu
@pytest.mark.gpu
def test_edits_parity_gpu_and_no_recompile():
    tri = _tri()
    B, H, KV, T, S, D = 1, 4, 2, 1000, 1000, 128
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=17, sink=4.0)
    ed = _edits(B, H, D, S, torch.bfloat16)
    got = tri.attention(q, k, v, scale=D ** -0.5, edits=ed)
    exp, _, _ = _edited_expectation(q, k, v, ed, scale=D ** -0.5)
    same = reference_attention(q, k, v, scale=D ** -0.5, edits=ed)
    _check("out", got.out, exp, same.out, torch.bfloat16, [])
    caches = getattr(tri.attention_fwd_kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this Triton has no device_caches to count compilations")
    n = sum(len(c[0]) for c in caches.values())
    ed.col_scale.mul_(0.5)
    ed.head_scale.add_(1.0)
    ed.col_idx[0, 1, 1] = 17
    tri.attention(q, k, v, scale=D ** -0.5, edits=ed)
    assert sum(len(c[0]) for c in caches.values()) == n


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("opts", SWITCHES)
def test_prefill_switches_parity_gpu(D, opts):
    B, H, KV, T, S = 1, 4, 2, 1000, 1500
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=43, sink=4.0)
    spans = torch.tensor([[[0, 1], [300, 876], [1400, 1500]]], device=DEV)
    _parity(q, k, v, ALL, scale=D ** -0.5, key_start=torch.tensor([3], device=DEV), spans=spans,
            sink_pos=torch.tensor([[0, 700]], device=DEV), opts=opts)
    ed = _edits(B, H, D, S, torch.bfloat16)
    ed.col_idx[0, 0] = torch.tensor([900, 0, 700])
    got = _tri().attention(q, k, v, scale=D ** -0.5, edits=ed, opts=opts)
    _check_edited(got, q, k, v, ed, torch.bfloat16, active=False)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
def test_window_defaults_parity_gpu(D):
    """The recorded defaults with a sliding window and left padding (rows whose first key blocks hold no visible
    key: the FMA path once turned those into inf on the GPU only), for statistics, output and ACT edits."""
    B, H, KV, T, S = 2, 4, 2, 1000, 1500
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=53, sink=4.0)
    ks = torch.tensor([0, 333], device=DEV)
    _parity(q, k, v, ALL, scale=D ** -0.5, key_start=ks, window=300, spans=_spans(B, S),
            sink_pos=torch.tensor([[0, 700]] * B, device=DEV))
    _parity(q, k, v, StatsRequest(), scale=D ** -0.5, key_start=ks, window=300)
    ed = _edits(B, H, D, S, torch.bfloat16)
    got = _tri().attention(q, k, v, scale=D ** -0.5, key_start=ks, window=300, edits=ed)
    _check_edited(got, q, k, v, ed, torch.bfloat16, ks, window=300, active=False)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("opts", [
    {"rtile": (64, 128, 4, 3), "r_keymajor": True},
    {"rtile": (64, 128, 8, 3), "r_keymajor": True, "r_fma": True, "r_tma": True},
    {"rtile": (64, 256, 8, 3), "r_keymajor": True, "r_fma": True, "r_tma": True},
    {"rtile": (128, 128, 8, 3), "r_keymajor": True, "r_fma": True},
    {"rtile": (128, 128, 8, 3), "r_keymajor": True, "r_fma": True, "r_poly": 1, "r_tma": True},
])
def test_received_switches_parity_gpu(D, opts):
    """The received-mass kernel's switches and the sweep's larger tiles at GPU sizes (odd lengths, GQA, left
    padding; a window on the d 64 case)."""
    B, H, KV, T, S = 2, 4, 2, 1000, 1500
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=47, sink=4.0)
    _parity(q, k, v, StatsRequest(lse=True, received=True), scale=D ** -0.5,
            key_start=torch.tensor([0, 333], device=DEV), window=300 if D == 64 else None, opts=opts)


_KMT = {"r_keymajor": True, "r_fma": True, "r_tma": True}


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("opts", [
    {"rtile": (64, 64, 4, 2), **_KMT, "r_lse2": True, "r_hmaj": True, "r_pmix": 5, "r_maxnreg": 72,
     "tile": (64, 128, 4, 2), "span_post": True, "reload_q": True, "tma": True, "fma": True, "rev": True,
     "p_maxnreg": 168},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_pmix": 4, "r_maxnreg": 128},
    {"rtile": (64, 64, 4, 2), **_KMT, "r_ltma": True, "r_lse2": True},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_pipe": True, "r_pmix": 6, "r_maxnreg": 168},
    {"rtile": (64, 64, 4, 2), **_KMT, "r_pipe": True},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_maxnreg": 128, "r_lpre": True},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_maxnreg": 128, "r_unroll": 2},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_maxnreg": 128, "r_lpre": True, "r_unroll": 2},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_maxnreg": 128, "r_amma": True},
    {"rtile": (64, 64, 4, 2), **_KMT, "r_amma": True},
    {"rtile": (128, 64, 4, 2), **_KMT, "r_lse2": True, "r_maxnreg": 128, "r_rlanes": True},
    {"rtile": (64, 64, 4, 2), **_KMT, "r_rlanes": True, "r_amma": True},
])
def test_received_switches_s6_parity_gpu(D, opts):
    """Session 6's received-mass switches (and the statistics prefill under a register cap) at GPU sizes (as
    test_received_switches_parity_gpu; entropy instead of lse requested, so the prefill kernel stores -lse * log2(e)
    for the pass)."""
    B, H, KV, T, S = 2, 4, 2, 1000, 1500
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=47, sink=4.0)
    _parity(q, k, v, StatsRequest(entropy=True, received=True), scale=D ** -0.5,
            key_start=torch.tensor([0, 333], device=DEV), window=300 if D == 64 else None, opts=opts)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("col_mode", ["chunk", "block", "split", "bits"])
def test_decode_col_mode_gpu(col_mode):
    B, H, KV, S, D = 16, 32, 32, 2048, 128
    q, k, v = _inputs(B, H, KV, 1, S, D, torch.bfloat16, seed=47, sink=4.0)
    cols = torch.tensor([0, 7, S // 2], device=DEV).expand(B, H, 3).contiguous()
    ed = AttentionEdits(col_idx=cols, col_scale=torch.full((B, H), 0.4, device=DEV))
    got = _tri().attention(q, k, v, scale=D ** -0.5, edits=ed, opts={"col_mode": col_mode})
    _check_edited(got, q, k, v, ed, torch.bfloat16, active=False)


@gpu
@pytest.mark.gpu
def test_var_parity_gpu():
    B, H, KV, T, S, D = 1, 4, 2, 1000, 1000, 128
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=23, sink=4.0)
    ed = _var_edits(B, H, S, T, torch.bfloat16)
    ed.redist_span = torch.tensor([[4, 300]], device=DEV)
    got = _tri().attention(q, k, v, scale=D ** -0.5, edits=ed)
    exp, p, pe = _edited_expectation(q, k, v, ed, scale=D ** -0.5)
    assert (pe - p).abs().max() > 1e-3
    same = reference_attention(q, k, v, scale=D ** -0.5, edits=ed)
    _check("out", got.out, exp, same.out, torch.bfloat16, [])


@gpu
@pytest.mark.gpu
def test_dispatcher_uses_kernel_on_cuda():
    from kernels.attention import attention
    q, k, v = _inputs(1, 4, 2, 64, 64, 64, torch.bfloat16)
    a = attention(q, k, v, scale=0.125, stats=StatsRequest(entropy=True))
    b = _tri().attention(q, k, v, scale=0.125, stats=StatsRequest(entropy=True))
    assert torch.equal(a.out, b.out)
    full = attention(q, k, v, scale=0.125, stats=StatsRequest(full=True))   # falls back to the reference
    assert full.probs is not None


def test_prefill_split_addend_equals_host_split():
    """The prefill kernel's split addend (amma): its three bfloat16 parts sum to -lse / scale within float32
    rounding, as ``split_addend``'s of the same lse do (a dead row: zeros)."""
    tri = _tri()
    B, H, KV, T, S, D = 2, 3, 1, 40, 70, 64
    q, k, v = _inputs(B, H, KV, T, S, D, torch.bfloat16, seed=5)
    ks = torch.tensor([0, 45], device=DEV)                   # row 1: queries before key 45 see nothing
    opts = {"r_keymajor": True, "r_tma": True, "r_amma": True}
    stats = StatsRequest(lse=True, received=True)
    res, launches = tri.plan(q, k, v, scale=D ** -0.5, key_start=ks, stats=stats, opts=opts)
    (fn, grid, kw), = [x for x in launches if "adq" in x[2]]
    assert kw["adq"] is not None
    tri._run(launches)
    fin = torch.isfinite(res.lse)
    exact = -res.lse.double() / D ** -0.5
    for split in (kw["adq"], tri.split_addend(res.lse, D ** -0.5)):
        total = split[..., :3].double().sum(-1)
        assert torch.allclose(total[fin], exact[fin], rtol=1e-6, atol=0), (total[fin] - exact[fin]).abs().max()
        assert (split[..., 3:] == 0).all()
    assert (kw["adq"][~fin] == 0).all() and (~fin).any()


def test_exp2_poly_accuracy():
    """``exp2_poly`` (the received pass's polynomial exp2 on the FMA pipe: its poly / pmix switches) against float64
    2^x: relative error <= 4e-6 where 2^x is a normal float32, and 0 <= result < 2^-125 below -127 (masked and
    negligible scores; at the old clamp of -127 the result's exponent bits wrapped to a NaN)."""
    from tests.kernels.exp2_kernel import apply_exp2_poly

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.linspace(-126.0, 0.0, 3000), -40 * torch.rand(1000, generator=g),
                   torch.tensor([0.0, -1e-7, 1e-7, -0.5, 0.5, -126.5, -127.0, -127.4, -300.0, -1e30]),
                   torch.zeros(86)])                                              # 4096 values
    xd, yd = x.to(DEV), torch.empty_like(x).to(DEV)
    apply_exp2_poly[(1,)](xd, yd, N=x.numel(), num_warps=4)
    y, exact = yd.cpu().double(), torch.exp2(x.double())
    normal = x >= -126.0
    rel = ((y[normal] - exact[normal]) / exact[normal]).abs().max().item()
    assert rel <= 4e-6, rel
    low = x < -127.0
    assert (y[low] >= 0).all() and (y[low] < 2.0 ** -125).all()
