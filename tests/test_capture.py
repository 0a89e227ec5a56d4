"""The capture seam: statistics equal eager attention maps, outputs equal the model's, no trace left."""
from __future__ import annotations

import pytest
import torch

import probe
from probe.capture import seam
from probe.errors import ProbeError

PROMPTS = ["It is a truth universally acknowledged, that a single man in possession of a good fortune",
           "My dear Mr. Bennet, said his lady"]


def eager_maps(handle, enc):
    """Attention maps [B, H, T, S] per layer from transformers' own eager path."""
    model = handle.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**enc, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return out.attentions, out.logits


def stats_from_maps(A, real_q):
    """The statistics the seam promises, computed from explicit maps A [B, H, T, S] (float64)."""
    A = A.double() * real_q[:, None, :, None]                       # zero padding query rows
    vis = A > 0
    received = A.sum(2)                                             # [B, H, S]
    ent = -(A * torch.log(A.clamp_min(1e-300))).sum(-1)             # [B, H, T]
    return received, ent


@pytest.mark.parametrize("name", ["smollm2", "tiny_llama", "tiny_gemma3"])
def test_stats_match_eager_maps(name, request):
    handle = request.getfixturevalue(name)
    enc = handle.encode(PROMPTS)
    maps, eager_logits = eager_maps(handle, enc)
    with torch.no_grad(), probe.capture(handle, stats=("received", "entropy", "sink", "full", "topk"), topk=3) as rec:
        logits = handle.model(**enc).logits
    real_q = enc["attention_mask"].bool()
    assert (logits - eager_logits)[real_q].abs().max() < 1e-4
    for layer, A in enumerate(maps):
        st = rec.layer(layer)
        received, ent = stats_from_maps(A, real_q)
        assert torch.allclose(st.received_sum.double(), received, atol=1e-5), layer
        assert torch.allclose(st.entropy.double() * real_q[:, None], ent * real_q[:, None], atol=1e-4), layer
        assert torch.allclose((st.probs.double() - A.double())[real_q[:, None, :, None].expand_as(A)].abs().max(),
                              torch.zeros((), dtype=torch.float64), atol=1e-5), layer
        ks = st.key_start
        key0 = A[torch.arange(A.shape[0]), :, :, ks]                # [B, H, T]... first real key per row
        key0 = torch.stack([A[b, :, :, ks[b]] for b in range(A.shape[0])])
        assert torch.allclose(st.sink_mass[..., 0].double() * real_q[:, None], key0.double() * real_q[:, None], atol=1e-5)
        top = A[:, :, -1].topk(3, dim=-1)
        assert torch.allclose(st.topk_val[:, :, 0].double(), top.values.double(), atol=1e-5)


def test_sliding_window_is_applied(tiny_gemma3):
    """Gemma-3 sliding layers (window 5) see only the last 5 keys; the global layer sees all."""
    enc = tiny_gemma3.encode(PROMPTS[0])
    with torch.no_grad(), probe.capture(tiny_gemma3, stats=("full",)) as rec:
        tiny_gemma3.model(**enc)
    assert tiny_gemma3.sliding_windows == {0: 5, 1: 5, 3: 5}
    T = enc["input_ids"].shape[1]
    sliding = rec.layer(0).probs[0, 0, -1]
    assert (sliding[: T - 5] == 0).all() and (sliding[T - 5:] > 0).all()
    assert (rec.layer(2).probs[0, 0, -1] > 0).all()


def hook_ids(model):
    """Every forward (pre-)hook on every module (transformers installs its own output-capturing ones)."""
    return [(name, tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for name, m in model.named_modules()]


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict(),
            model.config._attn_implementation, hook_ids(model))


def assert_same(model, snap):
    state, cfg, impl, hooks = snap
    now = model.state_dict()
    assert state.keys() == now.keys()
    assert all(torch.equal(state[k], now[k]) for k in state)
    assert model.config.to_dict() == cfg
    assert model.config._attn_implementation == impl
    assert hook_ids(model) == hooks
    assert not any(seam.active_hooks(m) for m in model.modules())


def test_no_trace_after_exit_and_after_error(tiny_llama):
    model = tiny_llama.model
    snap = snapshot(model)
    enc = tiny_llama.encode(PROMPTS)
    with torch.no_grad():
        before = model(**enc).logits
    snap = snapshot(model)
    with torch.no_grad():
        with probe.capture(tiny_llama, hidden="summary"):
            model(**enc)
        assert_same(model, snap)
        with pytest.raises(RuntimeError, match="boom"):
            with probe.capture(tiny_llama, stats=("received",)):
                model(**enc)
                raise RuntimeError("boom")
        assert_same(model, snap)
        assert torch.equal(model(**enc).logits, before)


def test_decode_steps_are_captured(tiny_llama):
    enc = tiny_llama.encode(PROMPTS)
    with torch.no_grad(), probe.capture(tiny_llama, stats=("topk", "received"), topk=1) as rec:
        out = tiny_llama.model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4
    assert len(rec.calls) == 4                       # prefill + 3 decode forwards
    T0 = enc["input_ids"].shape[1]
    assert rec.layer(0, call=0).T == T0
    for i in range(1, 4):
        st = rec.layer(1, call=i)
        assert st.T == 1 and st.S == T0 + i
        assert torch.allclose(st.received_sum.sum(-1), torch.ones(2, 6))   # one query row, sums to 1
        assert (st.key_start == rec.layer(1, call=0).key_start).all()


def test_blocked_reference_equals_one_block():
    from kernels.attention import StatsRequest, reference_attention

    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 37, 16), torch.randn(1, 2, 37, 16), torch.randn(1, 2, 37, 16)
    req = StatsRequest(received=True, entropy=True, topk=2, topk_rows=5)
    one = reference_attention(q, k, v, scale=0.25, stats=req)
    blocked = reference_attention(q, k, v, scale=0.25, stats=req, block_q=4)
    for name in ("out", "received_sum", "entropy", "topk_val"):
        assert torch.allclose(getattr(one, name), getattr(blocked, name), atol=1e-6), name


def test_hidden_summary_finds_massive_dim(smollm2):
    enc = smollm2.encode("The quick brown fox jumps over the lazy dog near the river bank.")
    with torch.no_grad(), probe.capture(smollm2, stats=(), hidden="summary", layers=[3, 15]) as rec:
        smollm2.model(**enc)
    hs = rec.hidden(15)
    assert int(hs.first[0].abs().argmax()) == 507            # methods.md §9: dim 507 on token 0
    assert hs.absmax[0, 507] / hs.median_abs[0] > 1000
    assert 3 in rec.calls[0].hidden and 4 not in rec.calls[0].hidden


def test_bad_stat_name_is_a_probe_error(tiny_llama):
    with pytest.raises(ProbeError, match="unknown statistic"):
        with probe.capture(tiny_llama, stats=("bogus",)):
            pass
