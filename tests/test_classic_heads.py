"""Classic head detectors (previous-token, duplicate-token, induction).

* pair probabilities from q, k and the kernel's log-sum-exp equal the full map's entries
  (GQA + left padding; sliding window);
* planted heads in a one-layer model are found, and the scores equal TransformerLens's own
  scoring function applied to the full attention map;
* on real SmolLM2, the scores equal TransformerLens's ``detect_head`` through the bridge.
"""
from __future__ import annotations

import pytest
import torch

import probe
from probe.capture.pairs import capture_pairs, full_pair_probs
from probe.report import read_report
from probe.detect.classic import detection_pairs, head_scores, repeated_random_tokens

tl_head_detector = pytest.importorskip("transformer_lens.head_detector")


def _random_pairs(B, S, P, gen):
    q = torch.randint(0, S, (B, P), generator=gen)
    k = (torch.rand(B, P, generator=gen) * (q + 1)).long()             # k <= q
    k[:, :3] = torch.randint(0, S, (B, 3), generator=gen)              # a few invisible (future) keys too
    q[:, -2:] = -1                                                     # unused slots
    return q, k


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma3"])
def test_pair_probs_equal_full_map(fixture, request):
    handle = request.getfixturevalue(fixture)
    enc = handle.encode(["a short one", "a somewhat longer prompt of text for the padding case"])
    B, S = enc["input_ids"].shape
    q_idx, k_idx = _random_pairs(B, S, 40, torch.Generator().manual_seed(0))
    with torch.no_grad(), probe.capture(handle, stats=("full",)) as rec:
        handle.model(**enc, use_cache=False)
    with torch.no_grad(), capture_pairs(handle, q_idx, k_idx) as pairs:
        handle.model(**enc, use_cache=False)
    for layer in range(handle.n_layers):
        want = full_pair_probs(rec.layer(layer).probs, q_idx, k_idx, S, S)
        torch.testing.assert_close(pairs.mass[layer], want, atol=2e-6, rtol=1e-4)
    assert (pairs.mass[0][:, :, -2:] == 0).all()                                  # unused slots
    ks = rec.layer(0).key_start
    for restrict in [(True, False), (False, True), (True, True)]:
        with torch.no_grad(), capture_pairs(handle, q_idx, k_idx, restrict=restrict) as kept:
            handle.model(**enc, use_cache=False)
        for layer in range(handle.n_layers):
            p = rec.layer(layer).probs.clone()                                     # [B, H, S, S]
            if restrict[0]:
                p[torch.arange(B), :, :, ks] = 0
            if restrict[1]:
                p = p * (1 - torch.eye(S))
            torch.testing.assert_close(kept.kept[layer], p.double().sum((-1, -2)), atol=1e-5, rtol=1e-5)
    padded = q_idx[0] >= 0
    assert pairs.mass[0][0][:, padded & (k_idx[0] < int(rec.layer(0).key_start[0]))].abs().max() == 0


def test_detection_pairs_match_transformer_lens_patterns():
    tokens = torch.tensor([[5, 7, 5, 9, 7, 5, 5]])
    for kind, tl in [("previous-token", "previous_token_head"), ("duplicate-token", "duplicate_token_head"),
                     ("induction", "induction_head")]:
        want = getattr(tl_head_detector, f"get_{tl}_detection_pattern")(tokens)
        got = torch.zeros_like(want)
        qs, ks = detection_pairs(tokens[0].tolist(), kind)
        got[qs, ks] = 1
        assert torch.equal(got, want), kind


# ---- a planted model ----------------------------------------------------------------------------
V, HID, HD = 40, 48, 64          # vocab, hidden (a multiple of the 3 heads, >= vocab: one-hot embeddings), head dim


def _usable_dims() -> list[int]:
    """Head dims whose RoPE frequency is ~0 at rope_theta 1e12 (rotate-half pairs i, i + HD/2, i >= 8)."""
    return list(range(8, HD // 2)) + list(range(8 + HD // 2, HD))


@pytest.fixture(scope="module")
def planted(smollm2):
    """One layer, 3 heads planted by content (RoPE ~ identity on the dims used):
    head 0 attends from token t to token t - 1, head 1 from t to t + 1, head 2 from t to t."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from probe.models import Handle

    cfg = LlamaConfig(vocab_size=V, hidden_size=HID, intermediate_size=32, num_hidden_layers=1, num_attention_heads=3,
                      num_key_value_heads=3, head_dim=HD, max_position_embeddings=256,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e12}, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    U = _usable_dims()
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :V] = torch.eye(V)         # token t -> e_t
        attn = model.model.layers[0].self_attn
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        a = 1.75                                                       # match logit: 48 a^2 / sqrt(64) = 18.4 (RMS-normed e_t = sqrt(48) e_t)
        for head, shift in enumerate((-1, +1, 0)):
            for t in range(V):
                if 0 <= t + shift < V:
                    attn.q_proj.weight[head * HD + U[t + shift], t] = a   # q(t) points at the dim of token t + shift
                attn.k_proj.weight[head * HD + U[t], t] = a               # k(t) sits on the dim of token t
    return Handle(model, smollm2.tokenizer, "planted", "object")


def _tl_scores(handle, seq, tl_kind, **excl):
    """TransformerLens's own scoring function on probe's full attention map of one sequence -> [L, H]."""
    pattern = getattr(tl_head_detector, f"get_{tl_kind}_detection_pattern")(torch.tensor([seq]))
    with torch.no_grad(), probe.capture(handle, stats=("full",)) as rec:
        handle.model(input_ids=torch.tensor([seq]), use_cache=False)
    return torch.tensor([[tl_head_detector.compute_head_attention_similarity_score(
        rec.layer(l).probs[0, h], pattern, error_measure="mul", **excl) for h in range(handle.n_heads)]
        for l in range(handle.n_layers)])


@pytest.mark.parametrize("excl", [dict(exclude_bos=False, exclude_current_token=False),
                                  dict(exclude_bos=True, exclude_current_token=True)])
def test_planted_heads_found_and_equal_transformer_lens_scoring(planted, excl):
    counting = list(range(1, 33))                    # token t follows t - 1: head 0 is a previous-token head
    rep = list(range(3, 23)) * 2                     # R R with consecutive ids: head 1 (t -> t + 1) induces
    cases = [("previous-token", "previous_token_head", counting, 0),
             ("induction", "induction_head", rep, 1),
             ("duplicate-token", "duplicate_token_head", rep, 2)]
    for kind, tl_kind, seq, head in cases:
        got = head_scores(planted, [seq], kind, **excl)[0]            # [1, 3]
        torch.testing.assert_close(got, _tl_scores(planted, seq, tl_kind, **excl), atol=1e-5, rtol=1e-4)
        assert int(got[0].argmax()) == head, (kind, got)
    plain = head_scores(planted, [counting], "previous-token")[0, 0, 0]
    assert plain > 0.9                                                 # (n - 1) / n rows hit their target
    batched = head_scores(planted, [counting, rep, counting[:9]], "previous-token", batch_size=3)  # left padding
    single = torch.stack([head_scores(planted, [s], "previous-token")[0] for s in (counting, rep, counting[:9])])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-5)


def test_repeated_random_tokens(smollm2):
    seqs = repeated_random_tokens(smollm2, length=10, count=3, seed=1)
    special = set(smollm2.tokenizer.all_special_ids)
    bos = smollm2.tokenizer.bos_token_id
    for s in seqs:
        assert len(s) == 21 and s[0] == bos and s[1:11] == s[11:] and not special & set(s[1:])
    assert seqs == repeated_random_tokens(smollm2, length=10, count=3, seed=1) != repeated_random_tokens(smollm2, 10, 3, 2)


def test_scan_adds_the_three_columns(tiny_llama, tmp_path):
    report = probe.scan(tiny_llama, ["the cat and the dog and the cat", "one two one two one"],
                        detect=["previous-token", "duplicate-token", "induction"], out=tmp_path / "r",
                        options={"induction": {"length": 8, "count": 2}})
    back = read_report(tmp_path / "r")
    for col in ("previous_token_score", "duplicate_token_score", "induction_score"):
        assert back.heads[col].between(0, 1).all() and back.heads[col].notna().all()
    assert report.manifest["settings"]["induction"]["length"] == 8
    with pytest.raises(probe.ProbeError, match="unknown option"):
        probe.scan(tiny_llama, ["x y"], detect=["induction"], options={"induction": {"lenght": 8}})


@pytest.mark.slow
def test_agrees_with_transformer_lens_detect_head_on_smollm2(smollm2):
    """probe's scores vs TransformerLens's detect_head run through the bridge (eager fp32 maps)."""
    from probe.backends.transformer_lens import boot

    bridge = boot(smollm2)
    texts = ["The cat sat on the mat. The cat sat on the mat.",
             "It is a truth universally acknowledged, that a single man in possession of a good fortune"]
    ids = [bridge.to_tokens(t)[0] for t in texts]
    for kind, tl_kind in [("previous-token", "previous_token_head"), ("duplicate-token", "duplicate_token_head"),
                          ("induction", "induction_head")]:
        for excl in (dict(exclude_bos=False, exclude_current_token=False), dict(exclude_bos=True, exclude_current_token=False)):
            want = tl_head_detector.detect_head(bridge, texts, tl_kind, **excl)
            got = head_scores(smollm2, ids, kind, **excl).mean(0)
            assert (got - want).abs().max() < 2e-5, (kind, excl, (got - want).abs().max())
