"""Arithmetic heads: prompts, patching (own hooks vs nnsight), a planted single path, SmolLM2."""
from __future__ import annotations

import pytest
import torch

from probe.data.arithmetic import apply, check_single_tokens, digit_token_ids, make_prompts, valid_pairs
from probe.detect import arithmetic as A


def _tiny(seed: int = 0, live: tuple = None):
    """Random-init 2-layer Llama; with ``live`` = (layer, head) every other head's output projection is zeroed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    if live is not None:
        Dh = 16
        with torch.no_grad():
            for l, layer in enumerate(model.model.layers):
                for h in range(4):
                    if (l, h) != live:
                        layer.self_attn.o_proj.weight[:, h * Dh:(h + 1) * Dh] = 0
    return model


def _pair(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (3, 9), generator=g)
    cf = ids.clone()
    cf[:, 3:6] = torch.randint(0, 64, (3, 3), generator=g)      # change "operands" in the middle, not the last token
    mask = torch.ones_like(ids)
    return {"input_ids": ids, "attention_mask": mask}, {"input_ids": cf, "attention_mask": mask}


# ---- prompts -----------------------------------------------------------------------------------

def test_prompts_are_valid_and_counterfactuals_differ():
    for cf in ("operands", "operator"):
        ps = make_prompts(n=6, shots=3, counterfactual=cf, seed=2)
        assert {p.op for p in ps} == {"+", "-", "*", "/"}
        for p in ps:
            assert apply(p.op, p.a, p.b) == p.answer and apply(p.cf_op, p.cf_a, p.cf_b) == p.cf_answer
            assert p.answer != p.cf_answer and 0 <= p.answer <= 9
            assert p.text.endswith(f"{p.a}{p.op}{p.b}=") and p.text.count("\n") == 3
            assert p.text[:-4] == p.cf_text[:-4]                   # same few-shot prefix
            if cf == "operator":
                assert (p.cf_a, p.cf_b) == (p.a, p.b) and p.cf_op != p.op
            else:
                assert p.cf_op == p.op and p.cf_a != p.a and p.cf_b != p.b
    assert (7, 0) not in valid_pairs("/") and (6, 3) in valid_pairs("/")


# ---- patching ---------------------------------------------------------------------------------

def test_native_and_nnsight_agree_on_tiny_llama():
    model = _tiny()
    clean, cf = _pair()
    a = A.native_patching(model, clean, cf, 4, 16)
    b = A.nnsight_patching(A.nnsight_model(model), clean, cf, 2, 4, 16)
    for k in ("clean", "cf", "heads", "mlp"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    assert float((a["heads"] - a["clean"]).abs().max()) > 1e-3       # patching changed something


def test_patching_from_the_same_run_changes_nothing():
    model = _tiny()
    clean, _ = _pair()
    out = A.native_patching(model, clean, clean, 4, 16)
    torch.testing.assert_close(out["heads"], out["clean"].expand_as(out["heads"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out["mlp"], out["clean"].expand_as(out["mlp"]), rtol=0, atol=1e-5)


def test_single_live_head_carries_the_whole_effect():
    """Only L1H2 can move information between positions: patching it reproduces the counterfactual
    exactly (effect 1); every other head has effect 0. A random ranking fails this."""
    model = _tiny(live=(1, 2))
    clean, cf = _pair()
    out = A.native_patching(model, clean, cf, 4, 16)
    correct, counter = out["clean"].argmax(-1), out["cf"].argmax(-1)
    keep = correct != counter
    assert bool(keep.any())
    heads, mlps = A.normalized_effect(A.logit_diffs(out, correct, counter), keep)
    assert float(heads[1, 2]) == pytest.approx(1.0, abs=1e-4)
    rest = heads.clone()
    rest[1, 2] = 0
    assert float(rest.abs().max()) < 1e-4
    assert abs(float(mlps[0])) < 1e-4                              # MLP0 at the last position never sees the operands


# ---- SmolLM2 -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol():
    import probe

    return probe.load("smollm2")


def test_smollm2_digits_are_single_tokens(smol):
    assert len(set(digit_token_ids(smol.tokenizer))) == 10
    check_single_tokens(smol.tokenizer, make_prompts(n=4, shots=4))


def test_smollm2_native_matches_nnsight(smol):
    ps = make_prompts(["+", "*"], 1, shots=4, seed=0)
    clean, cf = smol.encode([p.text for p in ps]), smol.encode([p.cf_text for p in ps])
    layers = [2, 29]
    a = A.native_patching(smol.model, clean, cf, smol.n_heads, smol.head_dim, layers=layers)
    b = A.nnsight_patching(A.nnsight_model(smol), clean, cf, smol.n_layers, smol.n_heads, smol.head_dim, layers=layers)
    for k in ("clean", "cf", "heads", "mlp"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-3)
    digits = digit_token_ids(smol.tokenizer)
    lds = A.logit_diffs(a, torch.tensor([digits[p.answer] for p in ps]), torch.tensor([digits[p.cf_answer] for p in ps]))
    # patching the last layer's MLP from the counterfactual moves the logit difference towards it
    assert float(lds["mlp"][1].mean()) < float(lds["clean"].mean())


def test_detector_lds_come_from_probe_patch():
    """The detector's per-prompt logit differences (through ``probe.patch``) equal the logits path's."""
    from probe.models import Handle

    model = _tiny()
    clean, cf = _pair()
    correct, counter = torch.tensor([3, 5, 7]), torch.tensor([4, 6, 8])
    lds = A._patch_lds(Handle(model, None, "tiny", "object"), clean, cf, correct, counter)
    ref = A.logit_diffs(A.native_patching(model, clean, cf, 4, 16), correct, counter)
    for k in ("clean", "cf", "heads", "mlp"):
        torch.testing.assert_close(lds[k], ref[k], rtol=0, atol=1e-5)


def test_detector_runs_on_a_tiny_model(tiny_llama):
    out = A.run(tiny_llama, n=2, operators=["+"], shots=1, only_correct=False)
    assert out.heads["arithmetic_effect"].notna().all() and len(out.tables["arithmetic"]) == 2
