"""The graph-capturable decode step (``probe::decode_attention``, ``fused.decode_graph``): the Triton decode kernels
over a static cache whose filled key count lives on the device, vs float64 on each row's filled keys; and the
seam's graph-mode ACT / VAR step through it vs its tensor-op forms. On CPU under TRITON_INTERPRET=1 (conftest)."""
from __future__ import annotations

import pytest
import torch

from kernels.attention import AttentionEdits

from tests.kernels.test_attention_triton import DEV, _check_edited, _decode_edits

BATCH_FIELDS = ("col_idx", "col_scale", "redist_idx", "redist_span", "redist_from")


def _row(ed: AttentionEdits, b: int, n: int) -> AttentionEdits:
    """Row b of the edits, as a batch of one over n keys (columns at n or later: unused)."""
    kw = {f: getattr(ed, f) for f in ed.__dataclass_fields__}
    for f in BATCH_FIELDS:
        if kw[f] is not None:
            kw[f] = kw[f][b:b + 1]
    if kw["col_idx"] is not None:
        kw["col_idx"] = torch.where(kw["col_idx"] < n, kw["col_idx"], -1)
    return AttentionEdits(**kw)


def _static(x, cap: int, n_keys):
    """x [B, KV, S, D] in a static cache of capacity cap, every slot at or past a row's key count NaN."""
    B, KV, S, D = x.shape
    out = torch.full((B, KV, cap, D), float("nan"), dtype=x.dtype, device=x.device)
    for b, n in enumerate(n_keys):
        out[b, :, :n] = x[b, :, :n]
    return out


@pytest.mark.parametrize("kind", ["act", "var", "uniform"])
def test_decode_graph_reads_only_the_filled_keys(kind):
    """Rows holding 150 and 131 of a 187-key cache (the rest NaN: a read of it shows): each row's output equals
    float64 attention over its own filled keys, with the same edit (a column at 140 lies past row 1's keys)."""
    from kernels.attention import graph_op

    q, k, v, key_start, ed = _decode_edits(kind, torch.bfloat16, seed=31, span_lo=4)
    n_keys = [150, 131]
    kc, vc = _static(k, 187, n_keys), _static(v, 187, n_keys)
    if kind != "uniform":     # the op takes the probability edits (the seam applies the output edits after it)
        ed = AttentionEdits(**{f: getattr(ed, f) for f in ed.__dataclass_fields__ if not f.startswith("head_")})
        got = graph_op.decode_step(q, kc, vc, key_start, torch.tensor(n_keys, device=DEV), scale=32 ** -0.5,
                                   window=None, softcap=None, edits=ed)
    else:            # uniform heads and head mean / scale: not the op's edits, but the same kernels take them
        from kernels.attention import fused
        got = fused.decode_graph(q, kc, vc, scale=32 ** -0.5, key_start=key_start,
                                 n_keys=torch.tensor(n_keys, device=DEV), edits=ed)
    assert got.shape == (2, 1, 4, 32) and torch.isfinite(got).all()
    for b, n in enumerate(n_keys):
        row = type("R", (), {"out": got[b:b + 1]})
        _check_edited(row, q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], _row(ed, b, n), torch.bfloat16,
                      key_start[b:b + 1], active=b == 0)       # row 1 (key_start 4): its columns barely move P


def test_decode_graph_window_and_gqa():
    """A window of 40 keys over a row's filled keys, GQA 4 / 1, fp32: the window ends at the row's own position."""
    from kernels.attention import fused

    from tests.kernels.test_attention_triton import _inputs
    q, k, v = _inputs(2, 4, 1, 1, 111, 64, torch.float32, seed=3)
    n_keys = [111, 64]
    ed = AttentionEdits(col_idx=torch.tensor([[[90, 100]] * 4, [[30, 50]] * 4], device=DEV),
                        col_scale=torch.full((2, 4), 0.3, device=DEV))
    got = fused.decode_graph(q, _static(k, 127, n_keys), _static(v, 127, n_keys), scale=0.125,
                             key_start=torch.zeros(2, dtype=torch.long, device=DEV),
                             n_keys=torch.tensor(n_keys, device=DEV), window=40, edits=ed)
    for b, n in enumerate(n_keys):
        row = type("R", (), {"out": got[b:b + 1]})
        _check_edited(row, q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], _row(ed, b, n), torch.float32,
                      window=40)


@pytest.mark.parametrize("kind", ["act", "var"])
def test_seam_graph_kernel_step_equals_its_tensor_op_form(kind):
    """The seam's graph-mode step on the kernels (first key and filled count from the dense mask's visible keys)
    equals ``_act_decode`` / ``_var_decode`` on the same static cache: padded rows, GQA 4 / 2."""
    from probe.capture import seam

    g = torch.Generator().manual_seed(11)
    B, KV, H, S, D, filled = 2, 2, 4, 45, 32, 37
    q, k, v = (torch.randn(B, n, t, D, generator=g).to(DEV) for n, t in ((H, 1), (KV, S), (KV, S)))
    k[:, :, 0] *= 4.0
    ks = torch.tensor([0, 5], device=DEV)
    j = torch.arange(S, device=DEV)
    vis = (j[None, :] >= ks[:, None]) & (j[None, :] < filled)                              # [B, S]
    t = lambda x: torch.tensor(x, device=DEV)  # noqa: E731
    if kind == "act":
        ed = AttentionEdits(col_idx=t([[[0, 3]] * H, [[5, 9]] * H]), col_scale=torch.full((B, H), 0.4, device=DEV))
        want = seam._act_decode(q, k, v, vis, ed.col_idx, ed.col_scale, 0.25)
    else:
        ed = AttentionEdits(redist_idx=t([[0, -1], [5, 7]]), redist_span=t([[1, 20], [6, 25]]),
                            redist_from=t([20, 25]), redist_keep=t([0.6, 1.0, 0.3, 0.6]),
                            redist_rho=0.5, redist_min_mass=0.05)
        want = seam._var_decode(q, k, v, vis, ed, 0.25)
    got = seam._graph_kernel_decode(q, k, v, vis, ed, 0.25, None, None)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_decode_attention_is_one_opaque_op_under_compile():
    """``torch.compile(fullgraph=True)`` keeps the op as one node (its fake gives the shape; no graph break)."""
    from torch._dynamo.utils import counters

    from kernels.attention import graph_op

    q, k, v, key_start, ed = _decode_edits("act", torch.float32, seed=2, span_lo=4)
    n = torch.tensor([150, 150], device=DEV)
    torch._dynamo.reset()
    counters.clear()
    fn = torch.compile(lambda q, k, v, ks, n: graph_op.decode_step(q, k, v, ks, n, scale=0.2, window=None, softcap=None,
                                                                  edits=ed), backend="eager", fullgraph=True)
    got = fn(q, k, v, key_start, n)
    torch.testing.assert_close(got, graph_op.decode_step(q, k, v, key_start, n, scale=0.2, window=None, softcap=None,
                                                         edits=ed))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch._dynamo.reset()
