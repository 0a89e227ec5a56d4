"""Host side of the Triton attention path: what runs before the launches makes no host sync, prepares each
edit object once, and rebuilds it when the edit changes (so caching never changes a result)."""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from kernels.attention import AttentionEdits, StatsRequest

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
# Tensor methods that wait for the device on CUDA (a host sync); counted here on whatever device runs the test
SYNCS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")


def _tri():
    from kernels.attention import fused as tri  # after conftest set TRITON_INTERPRET
    return tri


@contextlib.contextmanager
def _count_syncs(monkeypatch):
    """Counts calls of the ``SYNCS`` methods of torch.Tensor inside the block -> dict name -> count."""
    counts = dict.fromkeys(SYNCS, 0)
    for name in SYNCS:
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **kw):
            counts[_name] += 1
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        yield counts
    finally:
        monkeypatch.undo()


def _step(kind: str, S: int = 70):
    """One decode step (B 2, H 4, KV 2, d 32) with one kind of edit; returns q, k, v, keyword arguments."""
    g = torch.Generator().manual_seed(5)
    B, H, KV, D = 2, 4, 2, 32
    q = torch.randn(B, H, 1, D, generator=g).to(DEV)
    k, v = (torch.randn(B, KV, S, D, generator=g).to(DEV) for _ in range(2))
    ed = {
        "none": None,
        "act": AttentionEdits(col_idx=torch.tensor([[[0, 3, 3]] * H] * B, device=DEV),
                              col_scale=torch.full((B, H), 0.4, device=DEV)),
        "var": AttentionEdits(redist_idx=torch.tensor([[0], [1]], device=DEV),
                              redist_span=torch.tensor([[0, 40], [1, 50]], device=DEV),
                              redist_from=torch.zeros(B, dtype=torch.long, device=DEV),
                              redist_keep=torch.tensor([0.2, 1.0, 0.5, 0.0], device=DEV)),
        "heads": AttentionEdits(head_uniform=torch.tensor([True, False, False, False], device=DEV),
                                head_mean=torch.randn(H, D, generator=g).to(DEV),
                                head_mean_on=torch.tensor([False, True, False, False], device=DEV),
                                head_scale=torch.tensor([1.0, 1.0, 2.0, 0.5], device=DEV)),
    }[kind]
    stats = StatsRequest(lse=True) if ed is None or not ed.edits_probs else StatsRequest()
    return q, k, v, dict(scale=D ** -0.5, key_start=torch.tensor([0, 6], device=DEV), edits=ed, stats=stats)


def test_sync_counter_counts():
    """The counter sees a sync (else the test below could not fail)."""
    mp = pytest.MonkeyPatch()
    with _count_syncs(mp) as counts:
        torch.ones(2).sum().item()
        bool(torch.ones(()))
    assert counts["item"] == 1 and counts["__bool__"] == 1


@pytest.mark.parametrize("kind", ["none", "act", "var", "heads"])
def test_decode_host_path_makes_no_host_sync(kind):
    """The dispatcher's check and the plan of a decode step (first step: edits prepared; later steps: reused)
    call no Tensor method that waits for the device."""
    import kernels.attention as ka
    tri = _tri()
    q, k, v, kw = _step(kind)
    mp = pytest.MonkeyPatch()
    with _count_syncs(mp) as counts:
        for S in (69, 70):                     # the same edit object on two steps, as the seam passes it
            ks, vs = k[:, :, :S], v[:, :, :S]
            assert ka.fallback_reason(q, ks, vs, **kw) is None
            res, launches = tri.plan(q, ks, vs, **kw)
            res2, two = tri.plan(q, ks, vs, **kw, opts={"fused": False})
    assert sum(counts.values()) == 0, counts
    assert len(launches) == 1 and launches[0][1] == (3, 2 * 2)            # split-KV with the combine inside (B x KV)
    assert len(two) == 2 and two[0][1][0] >= 2 and two[1][1] == (2 * 4,)  # split-KV, then combine (B x H)


@pytest.mark.parametrize("kind", ["none", "act", "var", "heads"])
def test_fused_decode_equals_two_launches(kind):
    """The combine inside the split kernel (its last program per (batch, kv head)) gives the two-launch result bit for
    bit -- output and lse, over several key splits -- and leaves its done counters at zero, so the next launch on
    the same counters (the lane reuses them) is right too."""
    tri = _tri()
    q, k, v, kw = _step(kind, S=81)
    kw["stats"] = StatsRequest(lse=True)
    for S in (70, 81):
        ks, vs = k[:, :, :S], v[:, :, :S]
        res, launches = tri.plan(q, ks, vs, **kw)
        assert len(launches) == 1 and launches[0][1][0] >= 3                 # several chunks: a real combine
        done = launches[0][2]["done"]
        tri._run(launches)
        assert int(done.abs().sum()) == 0                                    # the counters are reset
        tri._run(launches)                                                   # again, on the same counters
        want, two = tri.plan(q, ks, vs, **kw, opts={"fused": False})
        tri._run(two)
        assert torch.equal(res.out, want.out), S
        assert torch.equal(res.lse, want.lse), S


def test_edits_prepared_once_and_rebuilt_on_change():
    """One ``AttentionEdits`` is converted once per (shape, device); replacing a field or changing one in place
    rebuilds it, and the result then equals that of a fresh edit object with the new values."""
    tri = _tri()
    q, k, v, kw = _step("act")
    ed = kw["edits"]
    a = tri._prepared_edits(ed, 2, 4, q.device)
    assert tri._prepared_edits(ed, 2, 4, q.device) is a
    assert tri._prepared_edits(ed, 1, 4, q.device) is not a                  # other shape: its own
    b = tri._prepared_edits(ed, 2, 4, q.device)
    ed.col_scale.mul_(0.5)                                                    # in place
    c = tri._prepared_edits(ed, 2, 4, q.device)
    assert c is not b
    ed.col_idx = torch.tensor([[[1, 2, -1]] * 4] * 2, device=DEV)            # replaced
    assert tri._prepared_edits(ed, 2, 4, q.device) is not c
    got = tri.attention(q, k, v, **kw)
    fresh = dataclasses.replace(ed, col_idx=ed.col_idx.clone(), col_scale=ed.col_scale.clone())
    want = tri.attention(q, k, v, **dict(kw, edits=fresh))
    assert torch.equal(got.out, want.out)


def test_dispatcher_and_public_entry_agree():
    """``attention`` (validates) and ``attention_validated`` (the dispatcher's entry) give the same result."""
    tri = _tri()
    q, k, v, kw = _step("none")
    a, b = tri.attention(q, k, v, **kw), tri.attention_validated(q, k, v, **kw)
    assert torch.equal(a.out, b.out) and torch.equal(a.lse, b.lse) and "key_start" not in a.extras


@pytest.mark.parametrize("kind", ["none", "act", "var", "heads"])
def test_decode_step_makes_no_host_sync(kind):
    """The dispatcher's decode lane (``_decode_step``: cached launches, Triton's direct launch on a GPU) reads no
    tensor value on the host, on the step that builds its launches and on the steps that reuse them."""
    import kernels.attention as ka
    tri = _tri()
    q, k, v, kw = _step(kind, S=80)
    kw.pop("stats")
    mp = pytest.MonkeyPatch()
    with _count_syncs(mp) as counts:
        for S in (69, 70):
            ks, vs = k[:, :, :S], v[:, :, :S]
            assert ka.fallback_reason(q, ks, vs, **kw) is None
            tri._decode_step(q, ks, vs, **kw)
    assert sum(counts.values()) == 0, counts


@pytest.mark.parametrize("kind", ["none", "act", "var", "heads"])
def test_decode_step_equals_the_planned_launches(kind):
    """Step by step over a growing cache (S = 65 .. 68 and 80: key counts with other remainders mod 16, a new
    split count, a key view at another alignment), the cached decode lane gives bit for bit what ``plan`` +
    ``_run`` give (the launches of every other call), lse included."""
    tri = _tri()
    q, k, v, kw = _step(kind, S=81)
    lse = kw.pop("stats").lse
    for S, off in ((65, 0), (66, 0), (67, 0), (68, 0), (80, 1)):
        ks, vs = k[:, :, off:S + off], v[:, :, off:S + off]
        got = tri._decode_step(q, ks, vs, lse=lse, **kw)
        want, launches = tri.plan(q, ks, vs, stats=StatsRequest(lse=lse), **kw)
        tri._run(launches)
        assert torch.equal(got.out, want.out), S
        assert (got.lse is None) == (not lse) and (not lse or torch.equal(got.lse, want.lse))


def test_decode_step_keeps_no_step_tensor_alive():
    """The cached launches drop a step's tensors after launching them: the previous step's key cache (a
    transformers DynamicCache makes a new one every step) is freed as usual, not held until the layer's next call."""
    import gc
    import weakref
    tri = _tri()
    q, k, v, kw = _step("act")
    kw.pop("stats")
    ks = k.clone()
    ref = weakref.ref(ks)
    tri._decode_step(q, ks, v, **kw)
    del ks
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("kind", ["none", "act", "var", "heads"])
def test_decode_step_reused_partials_hold_nothing_over(kind, monkeypatch):
    """The lane's partial buffers are reused across steps and layers (``_step_partials``): with them NaN-filled
    between steps (and the first step's fresh ones NaN-filled, as in every kernel test), each step still equals
    ``plan`` + ``_run`` bit for bit -- every row a combine reads was written by its own step's split kernel."""
    tri = _tri()
    q, k, v, kw = _step(kind, S=81)
    kw.pop("stats")
    tri._PARTIAL_BUFS.clear()
    for S in (70, 71, 80):
        monkeypatch.setattr(tri, "POISON_OUTPUTS", False)
        for bufs in tri._PARTIAL_BUFS.values():
            for b in bufs:
                if b is not None and b.is_floating_point():                  # (not the fused launch's counters)
                    b.fill_(float("nan"))
        got = tri._decode_step(q, k[:, :, :S], v[:, :, :S], **kw)
        monkeypatch.setattr(tri, "POISON_OUTPUTS", True)
        want, launches = tri.plan(q, k[:, :, :S], v[:, :, :S], **kw)
        tri._run(launches)
        assert torch.equal(got.out, want.out), S
    assert tri._PARTIAL_BUFS                                                   # the reused buffers were used


def test_decode_step_state_is_per_thread():
    """A cached launch swaps a call's values into its own keyword dict and the partial buffers are reused, so a
    second thread decoding the same shape and edit gets launches and buffers of its own (a thread switch between
    one thread's swap and its launch, or between its split and combine kernels, cannot mix two calls), and the
    same result."""
    import threading
    tri = _tri()
    q, k, v, kw = _step("act")
    kw.pop("stats")
    tri._DECODE_PLANS.clear()
    tri._PARTIAL_BUFS.clear()
    mp = pytest.MonkeyPatch()
    mp.setattr(tri, "POISON_OUTPUTS", False)
    try:
        here = [tri._decode_step(q, k[:, :, :S], v[:, :, :S], **kw).out for S in (60, 61)]
        there = []
        t = threading.Thread(target=lambda: there.extend(
            tri._decode_step(q, k[:, :, :S], v[:, :, :S], **kw).out for S in (60, 61)))
        t.start()
        t.join()
    finally:
        mp.undo()
    assert len(tri._DECODE_PLANS) == 2 and len({key[-1] for key in tri._DECODE_PLANS}) == 2
    assert len({key[-1] for key in tri._PARTIAL_BUFS}) == 2
    assert all(torch.equal(a, b) for a, b in zip(here, there))


@pytest.mark.skipif(not CUDA, reason="the dispatcher sends only CUDA tensors to the kernels")
@pytest.mark.parametrize("kind", ["none", "act", "var", "heads"])
def test_decode_attention_checks_once_and_again_on_change(kind, monkeypatch):
    """``decode_attention`` (the seam's eager decode entry) equals ``attention`` bit for bit step after step while the
    dispatcher's check runs once per request; a field replaced by one the kernels refuse (17 ACT columns) is checked
    again and goes to the reference, as ``attention`` would send it."""
    import kernels.attention as ka
    tri = _tri()
    q, k, v, kw = _step(kind, S=81)
    kw.pop("stats")
    checks = []
    real = tri.unsupported_reason
    monkeypatch.setattr(tri, "unsupported_reason", lambda *a, **k_: checks.append(1) or real(*a, **k_))
    ka._DECODE_OK.clear()
    for S in (70, 71, 80):
        got = ka.decode_attention(q, k[:, :, :S], v[:, :, :S], **kw)
        want = ka.attention(q, k[:, :, :S], v[:, :, :S], **kw)
        assert torch.equal(got.out, want.out), S
    assert len(checks) == 1 + 3                                   # decode_attention once, attention every step
    if kind == "act":
        kw["edits"].col_idx = torch.arange(17, device=DEV).expand(2, 4, 17).contiguous()
        got = ka.decode_attention(q, k[:, :, :81], v[:, :, :81], **kw)
        want = ka.reference_attention(q, k[:, :, :81], v[:, :, :81], **kw)
        assert torch.allclose(got.out.float(), want.out.float(), atol=1e-5)
        assert len(checks) == 4 + 1
