"""probe.patch: activation patching through the named taps (a known fact on SmolLM2, a planted head)."""
from __future__ import annotations

import pytest
import torch

import probe
from probe.errors import ProbeError

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"


def _live_head_llama(live=(1, 2)):
    """Random-init 2-layer Llama where only head ``live`` writes to the residual stream (every other
    head's slice of o_proj is zero): the only path between positions."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for l, layer in enumerate(model.model.layers):
            for h in range(4):
                if (l, h) != live:
                    layer.self_attn.o_proj.weight[:, h * 16:(h + 1) * 16] = 0
    return model


def _pairs(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (n, 9), generator=g)
    cf = ids.clone()
    cf[:, 2:5] = torch.randint(0, 64, (n, 3), generator=g)      # earlier tokens differ, the last one does not
    mask = torch.ones_like(ids)
    return {"input_ids": ids, "attention_mask": mask}, {"input_ids": cf, "attention_mask": mask}


def test_planted_head_carries_the_whole_effect():
    """Only L1H2 moves information between positions: patching its z restores the clean metric
    (normalized effect 1, interval [1, 1]); every other head and layer-0 residual site ... 0.
    A random ranking of heads fails this."""
    model = _live_head_llama()
    clean, corrupt = _pairs()
    with torch.no_grad():
        c = model(**clean).logits[:, -1]
        x = model(**corrupt).logits[:, -1]
    answer, other = c.argmax(-1), x.argmax(-1)
    keep = answer != other
    assert int(keep.sum()) >= 3
    clean = {k: v[keep] for k, v in clean.items()}
    corrupt = {k: v[keep] for k, v in corrupt.items()}
    table, fig = probe.patch(model, clean, corrupt, answer=answer[keep], other=other[keep], sites="z", n_boot=200)
    eff = torch.tensor(table.pivot(index="layer", columns="head", values="normalized_effect").values)   # [L, H]
    assert float(eff[1, 2]) == pytest.approx(1.0, abs=1e-4)
    rest = eff.clone()
    rest[1, 2] = 0
    assert float(rest.abs().max()) < 1e-4
    row = table[(table.layer == 1) & (table["head"] == 2)].iloc[0]
    assert row.normalized_lo == pytest.approx(1.0, abs=1e-4) and row.normalized_hi == pytest.approx(1.0, abs=1e-4)
    assert row.effect_lo <= row.effect <= row.effect_hi
    assert fig.data[0].z.shape == (2, 4)

    # the same head under the two other metrics: log-prob of the answer and KL to clean
    for metric in ("logprob", "kl"):
        res = probe.patch(model, clean, corrupt, metric=metric, answer=answer[keep], sites="z", layers=[1], n_boot=50)
        norm = res.table.set_index("head").normalized_effect
        assert float(norm[2]) == pytest.approx(1.0, abs=1e-3) and float(norm.drop(2).abs().max()) < 1e-3
    assert float(res.clean.abs().max()) < 1e-5                              # KL(clean || clean) = 0

    # the MLP of layer 0 at the last position sees only the last token, which the pairs share
    res = probe.patch(model, clean, corrupt, answer=answer[keep], other=other[keep], sites=["mlp_out", "attn_out"],
                      positions="last", layers=[0], n_boot=50)
    assert float(res.table.set_index("site").normalized_effect["mlp_out"]) == pytest.approx(0.0, abs=1e-5)


@pytest.fixture(scope="module")
def fact(smollm2):
    h = smollm2
    assert h.encode(CLEAN)["input_ids"].shape == h.encode(CORRUPT)["input_ids"].shape
    return h


def test_smollm2_known_fact_whole_residual_at_last_layer(fact):
    """Patching the whole residual stream entering the last layer restores the clean logit difference
    exactly; patching nothing (a site taken from the corrupt run itself) gives the corrupt one exactly.
    ``max_rows=1``: one variant per forward, so patched and unpatched runs have the same batch shape
    (stacking copies changes float rounding, ~1e-5 here)."""
    h = fact
    last = [h.n_layers - 1]
    res = probe.patch(h, [CLEAN], [CORRUPT], answer=" Paris", other=" Rome", sites="resid_pre", layers=last,
                      n_boot=10, max_rows=1)
    assert float(res.clean[0]) > 2 and float(res.corrupt[0]) < -2               # the model knows both facts
    assert float(res.values[0, 0]) == float(res.clean[0])
    assert float(res.table.normalized_effect[0]) == 1.0
    same = probe.patch(h, [CORRUPT], [CORRUPT], answer=" Paris", other=" Rome", sites=["resid_pre", "attn_out", "z"],
                       layers=last, n_boot=10, max_rows=1)
    assert torch.equal(same.values[:, 0], same.corrupt.expand(len(same.variants)))
    assert float(same.corrupt[0]) == float(res.corrupt[0])
    with torch.no_grad():
        logits = h.model(**h.encode(CORRUPT)).logits[0, -1]
    paris, rome = (h.tokenizer.encode(t, add_special_tokens=False)[0] for t in (" Paris", " Rome"))
    assert float(res.corrupt[0]) == pytest.approx(float(logits[paris] - logits[rome]), abs=1e-4)


def test_smollm2_positions_that_share_a_token_do_nothing_at_layer_0(fact):
    """resid_pre of layer 0 is the token embedding: positions where the prompts share the token give
    exactly the corrupt metric; patching a position of the subject moves it."""
    h = fact
    a, b = (h.encode(t)["input_ids"][0] for t in (CLEAN, CORRUPT))
    res = probe.patch(h, CLEAN, CORRUPT, answer=" Paris", other=" Rome", sites="resid_pre", positions="each",
                      layers=[0], n_boot=10, max_rows=1)
    T = a.shape[0]
    same = {p - T for p in range(T) if a[p] == b[p]}
    assert same and len(same) < T
    for row, val in zip(res.table.itertuples(), res.values[:, 0]):
        if int(row.position) in same:
            assert float(val) == float(res.corrupt[0])
    moved = [abs(float(v - res.corrupt[0])) for r, v in zip(res.table.itertuples(), res.values[:, 0]) if int(r.position) not in same]
    assert max(moved) > 1.0


def test_patch_errors_name_the_fix(fact):
    with pytest.raises(ProbeError, match="different lengths"):
        probe.patch(fact, CLEAN, "Rome", answer=" Paris", other=" Rome", layers=[0])
    with pytest.raises(ProbeError, match="cannot patch"):
        probe.patch(fact, CLEAN, CORRUPT, answer=" Paris", other=" Rome", sites="pattern")
    with pytest.raises(ProbeError, match="single-token"):
        probe.patch(fact, CLEAN, CORRUPT, answer=" Parisians of old", other=" Rome", layers=[0])
