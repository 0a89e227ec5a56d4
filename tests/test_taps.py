"""Named taps, the activation cache and edits by name (probe/capture/taps.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import probe
from probe.capture import seam
from probe.capture.taps import TL_NAMES, parse_name
from probe.errors import ProbeError

PROMPTS = ["The capital of France is", "Once upon a time there lived"]
ROOT = Path(__file__).resolve().parents[1]


def hook_ids(model):
    return [(name, tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for name, m in model.named_modules()]


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict(),
            model.config._attn_implementation, hook_ids(model))


def assert_same(model, snap):
    state, cfg, impl, hooks = snap
    now = model.state_dict()
    assert state.keys() == now.keys() and all(torch.equal(state[k], now[k]) for k in state)
    assert model.config.to_dict() == cfg and model.config._attn_implementation == impl
    assert hook_ids(model) == hooks
    assert not any(seam.active_hooks(m) for m in model.modules())


def test_names_parse_and_map_to_transformer_lens():
    assert parse_name("blocks.5.z", 30) == [(5, "z")]
    assert parse_name("blocks.5.attn.hook_z", 30) == [(5, "z")]
    assert parse_name("blocks.2.hook_resid_pre", 30) == [(2, "resid_pre")]
    assert parse_name("mlp_out", 3) == [(0, "mlp_out"), (1, "mlp_out"), (2, "mlp_out")]
    for site, tl in TL_NAMES.items():
        assert parse_name(tl.format(l=4), 30) == [(4, site)]
    with pytest.raises(ProbeError, match="unknown tap"):
        parse_name("blocks.1.hook_nope", 30)
    with pytest.raises(ProbeError, match="no layer 30"):
        parse_name("blocks.30.z", 30)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])
def test_sites_add_up_to_the_residual_stream(name, request):
    """resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out exactly; z through o_proj
    (and Gemma's post-attention norm) is attn_out; layer l's output is layer l+1's input."""
    h = request.getfixturevalue(name)
    c = probe.cache(h, PROMPTS, names=None)
    layers = h.decoder_layers()
    for l in range(h.n_layers):
        pre, mid, post = c[f"blocks.{l}.resid_pre"], c[f"blocks.{l}.resid_mid"], c[f"blocks.{l}.resid_post"]
        assert torch.equal(mid, pre + c[f"blocks.{l}.attn_out"])
        assert torch.equal(post, mid + c[f"blocks.{l}.mlp_out"])
        z = c[f"blocks.{l}.z"]
        assert z.shape[2:] == (h.n_heads, h.head_dim)
        with torch.no_grad():
            out = layers[l].self_attn.o_proj(z.flatten(2))
            if name == "tiny_gemma3":
                out = layers[l].post_attention_layernorm(out)
        torch.testing.assert_close(out, c[f"blocks.{l}.attn_out"], rtol=0, atol=1e-6)
        if l + 1 < h.n_layers:
            assert torch.equal(post, c[f"blocks.{l + 1}.resid_pre"])


def test_q_k_v_pattern_reproduce_z(tiny_llama):
    """softmax(q k^T / sqrt(D) + mask) is the pattern, and pattern @ v is z (GQA: 3 query heads per kv head)."""
    h = tiny_llama
    enc = h.encode(PROMPTS)
    c = probe.cache(h, enc, names=["blocks.1.q", "blocks.1.k", "blocks.1.v", "blocks.1.pattern", "blocks.1.z"])
    q, k, v = c["blocks.1.q"], c["blocks.1.k"], c["blocks.1.v"]                 # [B, T, H|KV, D]
    p, z = c["blocks.1.pattern"], c["blocks.1.z"]                                 # [B, H, T, S], [B, T, H, D]
    G = h.n_heads // h.n_kv_heads
    k, v = k.repeat_interleave(G, 2), v.repeat_interleave(G, 2)
    s = torch.einsum("bthd,bshd->bhts", q, k) * h.head_dim ** -0.5
    T = q.shape[1]
    real = enc["attention_mask"].bool()
    vis = torch.ones(T, T).tril().bool()[None] & real[:, None, :]               # [B, T, S]
    s = s.masked_fill(~vis[:, None], float("-inf"))
    rows = real[:, None, :, None]                                                 # compare real queries only
    torch.testing.assert_close(torch.where(rows, s.softmax(-1), 0), torch.where(rows, p, 0), rtol=0, atol=1e-5)
    zz = torch.einsum("bhts,bshd->bthd", p, v)
    torch.testing.assert_close(zz[real], z[real], rtol=0, atol=1e-5)


def test_one_entry_per_decode_step_inside_capture_and_intervene(tiny_llama):
    from interventions import HeadScale, intervene

    h = tiny_llama
    enc = h.encode(PROMPTS)
    T0 = enc["input_ids"].shape[1]
    with torch.no_grad(), probe.capture(h, stats=("received",)) as rec, intervene(h, HeadScale("L1H2", alpha=0.0)), \
            probe.taps(h, ["blocks.1.z", "blocks.2.k"]) as cache:
        h.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=h.tokenizer.pad_token_id)
    assert len(rec.calls) == 4 and cache.calls("blocks.1.z") == [0, 1, 2, 3]
    assert cache["blocks.1.z", 0].shape == (2, T0, 6, 16)
    assert all(t.shape == (2, 1, 6, 16) for t in cache.steps("blocks.1.z")[1:])
    assert cache["blocks.2.k", -1].shape == (2, 1, 2, 16)
    # HeadScale(0) acts before o_proj reads z: the cached head output of L1H2 is zero at every step
    assert all(float(t[:, :, 2].abs().max()) == 0.0 for t in cache.steps("blocks.1.z"))
    with pytest.raises(ProbeError, match="holds 4 forward calls"):
        cache["blocks.1.z"]


def test_edits_zero_patch_steer(tiny_llama):
    from interventions import HeadMask, intervene

    h, model = tiny_llama, tiny_llama.model
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        base = model(**enc).logits
        with intervene(h, HeadMask("L1H2", mode="zero")):
            masked = model(**enc).logits

        def zero_head(x, ctx):                                                    # x [B, T, H, D]
            x = x.clone()
            x[:, :, 2] = 0
            return x

        with probe.taps(h, edits={"blocks.1.z": zero_head}):
            zeroed = model(**enc).logits
        torch.testing.assert_close(zeroed, masked, rtol=0, atol=1e-5)
        assert float((zeroed - base).abs().max()) > 1e-3

        # patch the whole residual stream entering layer 0 from another prompt (same mask): its logits exactly
        other = {**enc, "input_ids": enc["input_ids"].roll(1, dims=1)}
        src = probe.cache(h, other, names=["blocks.0.resid_pre"])["blocks.0.resid_pre"]
        with probe.taps(h, edits={"blocks.0.resid_pre": lambda x, ctx: src}):
            patched = model(**enc).logits
        assert torch.equal(patched, model(**other).logits)

        # steering through resid_mid moves the output; through attn_out by the same vector: the same output
        vec = torch.randn(h.hidden_size)
        with probe.taps(h, edits={"blocks.1.resid_mid": lambda x, ctx: x + vec}):
            steer_mid = model(**enc).logits
        with probe.taps(h, edits={"blocks.1.attn_out": lambda x, ctx: x + vec}):
            steer_attn = model(**enc).logits
        torch.testing.assert_close(steer_mid, steer_attn, rtol=0, atol=1e-5)
        assert float((steer_mid - base).abs().max()) > 1e-3


def test_model_bit_identical_after_exit_and_errors(tiny_llama):
    h, model = tiny_llama, tiny_llama.model
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        before = model(**enc).logits
        snap = snapshot(model)
        with probe.taps(h, ["q", "pattern", "z"], edits={"resid_pre": lambda x, ctx: x * 2}):
            model(**enc)
        assert_same(model, snap)
        with pytest.raises(RuntimeError, match="boom"):
            with probe.taps(h, ["blocks.0.q"], edits={"blocks.1.z": lambda x, ctx: x * 0}):
                model(**enc)
                raise RuntimeError("boom")
        assert_same(model, snap)

        def bad(x, ctx):
            raise ValueError("inside the forward")

        with pytest.raises(ValueError, match="inside the forward"), probe.taps(h, edits={"blocks.2.mlp_out": bad}):
            model(**enc)
        assert_same(model, snap)
        with pytest.raises(ProbeError, match="expected shape"), probe.taps(h, edits={"blocks.0.z": lambda x, c: x[:, :1]}):
            model(**enc)
        assert_same(model, snap)
        with pytest.raises(ProbeError, match="read-only"):
            with probe.taps(h, edits={"blocks.0.q": lambda x, c: x}):
                pass
        assert_same(model, snap)
        assert torch.equal(model(**enc).logits, before)


def test_pattern_refused_for_long_prompts(tiny_llama, monkeypatch):
    from probe.capture import taps as T

    monkeypatch.setattr(T, "PATTERN_MAX_KEYS", 4)
    with pytest.raises(ProbeError, match="full \\[B, H, T, S\\] map"):
        probe.cache(tiny_llama, PROMPTS, names=["blocks.0.pattern"])


def test_smollm2_massive_activation_in_the_cache(smollm2):
    """Known fact: SmolLM2's residual stream carries a massive activation on dim 507 of the first token."""
    c = probe.cache(smollm2, "The capital of France is", names=["blocks.12.resid_pre"], cpu=True)
    x = c["blocks.12.resid_pre"][0]                                              # [T, d]
    assert int(x.abs().amax(0).argmax()) == 507 and int(x[:, 507].abs().argmax()) == 0
    assert float(x[0, 507].abs()) > 1000


def test_forward_hooks_are_registered_in_exactly_one_module():
    pattern = re.compile(r"register_forward(_pre)?_hook\(")
    found = sorted(str(p.relative_to(ROOT)) for d in ("probe", "interventions", "kernels", "app")
                   for p in (ROOT / d).rglob("*.py") if pattern.search(p.read_text()))
    assert found == ["probe/capture/taps.py"]
