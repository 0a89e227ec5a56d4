"""Retrieval heads: NIAH builder, the copy score on a planted copy head, and real SmolLM2 samples."""
from __future__ import annotations

import pytest
import torch

from probe.data.niah import NEEDLES, Needle, NIAHSample, build_sample, haystack_text, rouge1_recall, sentence_starts
from probe.causal import retrieval as causal
from probe.detect import retrieval as R
from probe.models import Handle


@pytest.fixture(scope="module")
def smol():
    import probe

    return probe.load("smollm2")


@pytest.fixture(scope="module")
def hay_ids(smol):
    return smol.tokenizer(haystack_text("austen:emma"), add_special_tokens=False)["input_ids"]


# ---- NIAH builder -------------------------------------------------------------------------

def test_sentence_starts_skip_titles():
    text = 'He met Mr. Knightley. "Yes!" she said. Then Mrs. Weston came.'
    assert [text[i:i + 4] for i in sentence_starts(text)] == ["He m", '"Yes', "Then"]


@pytest.mark.parametrize("depth", [0, 30, 70, 100])
def test_needle_span_and_sentence_boundary(smol, hay_ids, depth):
    needle = NEEDLES[2]
    s = build_sample(smol, needle, hay_ids, 400, depth)
    assert smol.tokenizer.decode(s.input_ids[s.span[0]:s.span[1]]).strip() == needle.text
    assert s.input_ids == smol.tokenizer(s.prompt, add_special_tokens=False)["input_ids"]
    assert 350 <= len(s.input_ids) <= 400
    before = s.prompt[:s.prompt.index(needle.text)].rstrip()
    # the needle follows a sentence end (or opens the user turn at depth 0)
    assert before.endswith(("user", ".", "!", "?", '"', "'")), before[-40:]
    assert s.prompt.rstrip().endswith("<|im_start|>assistant")  # SmolLM2's chat template is used
    assert abs(s.actual_depth - depth) < 20


def test_depth_orders_the_needle(smol, hay_ids):
    spans = [build_sample(smol, NEEDLES[0], hay_ids, 600, d).span[0] for d in (0, 25, 50, 75, 100)]
    assert spans == sorted(spans) and spans[0] < spans[-1] - 300


def test_rouge1_recall():
    assert rouge1_recall("It is 4729.", "4729") == 1.0
    assert rouge1_recall("a green teapot", "inside a green copper teapot") == pytest.approx(0.6)
    assert rouge1_recall("nothing", "inside a green copper teapot") == 0.0


# ---- a planted copy head in a tiny model ------------------------------------------------------

WORDS = [" red", " cat", " sun", " box", " key", " map", " hat", " cup"]          # the needle, in order
FILLER = [" the", " and", " was", " her", " for", " she", " not", " very"]


def _copy_model(tokenizer, plant: bool, seed: int = 0):
    """2 layers x 4 heads; with ``plant``, L1H2 attends from token WORDS[i] to the key holding
    WORDS[i + 1] and writes that token into the logits. Every other head has random Q/K (its own
    attention pattern) and a zero output projection, so only L1H2 can drive the greedy answer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in WORDS + FILLER]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=32, max_position_embeddings=512,
                      rope_theta=1e30, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    if not plant:
        return model
    Dh, n = 32, len(ids)
    slots = list(range(8, 16)) + list(range(24, 32))      # head dims RoPE leaves (almost) unrotated at theta 1e30
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.zero_()
        for j, t in enumerate(ids):
            emb[t, j] = 1.0                                # token j -> hidden dim j
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        attn = model.model.layers[1].self_attn
        h = 2
        q, k, v = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
        for w in (q, k, v):
            w[h * Dh:(h + 1) * Dh].zero_()
        for j in range(n):
            k[h * Dh + slots[j], j] = 1.0                   # key of token j -> slot j
        for j in range(len(WORDS) - 1):
            q[h * Dh + slots[j + 1], j] = 3.0               # query of WORDS[j] -> slot of WORDS[j + 1]
        for j in range(n):
            v[h * Dh + slots[j], j] = 1.0
            attn.o_proj.weight[64 + j, h * Dh + slots[j]] = 1.0   # head output -> hidden dim 64 + j
        lm = model.lm_head.weight
        lm.zero_()
        for j, t in enumerate(ids):
            lm[t, 64 + j] = 10.0
    return model


def _copy_sample(tokenizer, n_hay: int = 60, seed: int = 0) -> NIAHSample:
    g = torch.Generator().manual_seed(seed)
    word = lambda w: tokenizer(w, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    hay = [word(FILLER[int(i)]) for i in torch.randint(0, len(FILLER), (n_hay,), generator=g)]
    needle = [word(w) for w in WORDS]
    at = n_hay // 2
    ids = hay[:at] + needle + hay[at:] + [word(WORDS[0])]
    n = Needle("".join(WORDS).strip(), "?", "".join(WORDS[1:]).strip())
    return NIAHSample("", ids, (at, at + len(needle)), n, len(ids), 50.0, 50.0, "synthetic", False)


def test_planted_copy_head_ranks_first(smol):
    tok = smol.tokenizer
    for w in WORDS + FILLER:
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1
    handle = Handle(_copy_model(tok, plant=True), tok, "tiny-copy", "object")
    res = R.generate(handle, [_copy_sample(tok, seed=s) for s in range(2)], max_new_tokens=len(WORDS) - 1, batch_size=2)
    assert all(r.recall == 1.0 for r in res), [r.answer for r in res]
    score, kept = R.head_scores(res)
    assert kept == 2
    assert int(score.flatten().argmax()) == 1 * 4 + 2                # L1H2
    assert score[1, 2] == pytest.approx((len(WORDS) - 1) / len(WORDS))
    others = score.clone()
    others[1, 2] = 0
    # random heads only hit by chance (their top-1 falls on one of the 8 needle keys, the only non-zero keys)
    assert float(others.max()) < 0.25


def test_random_model_has_no_retrieval_heads(smol):
    tok = smol.tokenizer
    handle = Handle(_copy_model(tok, plant=False), tok, "tiny-random", "object")
    res = R.generate(handle, [_copy_sample(tok)], max_new_tokens=len(WORDS) - 1)
    score, kept = R.head_scores(res)
    assert kept == 0 and float(score.max()) == 0.0


# ---- real SmolLM2 ------------------------------------------------------------------------------

def test_smollm2_finds_needle_and_masking_top_heads_hurts(smol, hay_ids):
    samples = [build_sample(smol, NEEDLES[2], hay_ids[6000:], 300, 50)]    # one sample keeps this test ~1 min on 2 cores
    res = R.generate(smol, samples, max_new_tokens=16, batch_size=2)
    assert all(r.recall == 1.0 for r in res), [r.answer for r in res]
    score, kept = R.head_scores(res)
    assert kept == 1 and float(score.max()) > 0.3
    order = score.flatten().argsort(descending=True).tolist()
    top = [(i // smol.n_heads, i % smol.n_heads) for i in order[:5]]
    # control: the five lowest-scoring heads (they never copied). Not a random or layer-matched control;
    # studies/retrieval draws those.
    never_copied = [(i // smol.n_heads, i % smol.n_heads) for i in order[-5:]]
    masked_top = causal.niah_recall(smol, samples, top, max_new_tokens=16, batch_size=2)
    masked_never = causal.niah_recall(smol, samples, never_copied, max_new_tokens=16, batch_size=2)
    assert sum(masked_top) < sum(masked_never), (masked_top, masked_never)
