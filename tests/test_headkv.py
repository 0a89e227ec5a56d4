"""HeadwiseKV: plumbing on tiny random Llamas (fp64), the phenomenon on real SmolLM2."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from interventions import HeadMask, HeadwiseKV, SinkWindow, intervene, parse_spec
from interventions.headkv_cache import HeadwiseCache, HeadwiseLayer, kv_bytes, stream_lengths
from interventions.headkv_export import read_duo_tsv, write_duo_tsv
from interventions.headkv_select import budget_count, pool_kv, random_plan, top_plan
from probe.capture import seam
from probe.errors import ProbeError


def tiny(layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=96, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=512, rope_theta=100.0,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval().to(torch.float64)


@pytest.fixture(scope="module")
def model():
    return tiny()


def plan_of(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


MIXED = [[True, False, False], [False, False, True]]          # [L=2, KV=3]


def snapshot(m):
    hooks = [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in m.modules()]
    return {k: v.clone() for k, v in m.state_dict().items()}, m.config.to_dict(), hooks, m.config._attn_implementation


def assert_same(m, snap):
    state, cfg, hooks, impl = snap
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert m.config.to_dict() == cfg and m.config._attn_implementation == impl
    assert [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in m.modules()] == hooks
    assert not any(seam.active_hooks(x.self_attn) for x in m.model.layers)


def stream_steps(m, ids, iv, first: int = 1):
    """Logits [N - first + 1, V]: the first ``first`` tokens in one call, then one token per call."""
    out = []
    with torch.no_grad(), intervene(m, iv):
        res = m(input_ids=ids[:, :first], use_cache=True)
        cache, out = res.cache, [res.logits[0]]
        for t in range(first, ids.shape[1]):
            res = m(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            cache = res.cache
            out.append(res.logits[0])
    return torch.cat(out), cache


# ---- (a) every head full == the unmodified model --------------------------------------------------

def test_all_full_equals_unmodified(model):
    ids = torch.randint(3, 97, (2, 40))
    iv = HeadwiseKV(plan=torch.ones(2, 3, dtype=torch.bool), sinks=2, window=4)
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits
        base_gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                  do_sample=False, pad_token_id=0, return_dict_in_generate=True)
        with intervene(model, iv):
            ours = model(input_ids=ids, use_cache=False).logits
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                 do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    assert torch.allclose(ours, base, atol=1e-10, rtol=0)
    assert torch.equal(gen.sequences, base_gen.sequences)
    assert all(isinstance(layer, HeadwiseLayer) for layer in gen.cache.layers)
    assert kv_bytes(gen.cache) == kv_bytes(base_gen.cache)


# ---- (b) no head full == SinkWindow everywhere --------------------------------------------------

def test_no_full_head_equals_sinkwindow_token_by_token(model):
    """One 40-token prefill under HeadwiseKV == SinkWindow fed one token at a time (StreamingLLM)."""
    ids = torch.randint(3, 97, (1, 40))
    k, W = 3, 8
    ref, _ = stream_steps(model, ids, SinkWindow(k, W))
    with torch.no_grad(), intervene(model, HeadwiseKV(plan=torch.zeros(2, 3, dtype=torch.bool), sinks=k, window=W)):
        prefill = model(input_ids=ids, use_cache=False).logits[0]
    assert torch.allclose(prefill, ref, atol=1e-9, rtol=0)
    stepped, cache = stream_steps(model, ids, HeadwiseKV(plan=torch.zeros(2, 3, dtype=torch.bool), sinks=k, window=W))
    assert torch.allclose(stepped, ref, atol=1e-9, rtol=0)
    with torch.no_grad():
        dense = model(input_ids=ids, use_cache=False).logits[0]
    assert not torch.allclose(prefill[k + W:], dense[k + W:], atol=1e-3)          # the policy did something


def test_no_full_head_generate_equals_sinkwindow(model):
    ids = torch.randint(3, 97, (2, 6))
    gen = dict(attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False, pad_token_id=0,
               output_scores=True, return_dict_in_generate=True)
    with torch.no_grad(), intervene(model, SinkWindow(2, 7)):
        ref = model.generate(input_ids=ids, **gen)
    with torch.no_grad(), intervene(model, HeadwiseKV(plan=torch.zeros(2, 3, dtype=torch.bool), sinks=2, window=7)):
        ours = model.generate(input_ids=ids, **gen)
    assert torch.equal(ours.sequences, ref.sequences)
    assert torch.allclose(torch.stack(ours.scores), torch.stack(ref.scores), atol=1e-9, rtol=0)


# ---- mixed plans: prefill == token-by-token; (c) the streaming cache stays bounded -----------------

SCATTERED = [[False, True, False], [True, False, True]]     # heads that are no prefix / suffix of their layer


@pytest.mark.parametrize("rows", [MIXED, SCATTERED], ids=["prefix-suffix", "scattered"])
def test_mixed_prefill_equals_token_by_token_and_cache_is_bounded(model, rows):
    ids = torch.randint(3, 97, (1, 37))
    k, W = 2, 5
    iv = lambda: HeadwiseKV(plan=plan_of(rows), sinks=k, window=W)  # noqa: E731
    with torch.no_grad(), intervene(model, iv()):
        res = model(input_ids=ids[:, :30], use_cache=True)
        cache, logits = res.cache, [res.logits[0]]
        assert stream_lengths(cache) == [k + W, k + W]                 # compacted right after the prompt
        for t in range(30, 37):
            res = model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            logits.append(res.logits[0])
            for layer, row in zip(cache.layers, rows):
                assert layer.stream.keys.shape[1:3] == (row.count(False), k + W)   # never more than sinks + window
                assert layer.keys.shape[1:3] == (row.count(True), t + 1)          # full heads grow
    prefill = torch.cat(logits)
    stepped, _ = stream_steps(model, ids, iv())
    assert torch.allclose(prefill, stepped, atol=1e-9, rtol=0)
    full = HeadwiseKV(plan=torch.ones(2, 3, dtype=torch.bool))
    none = HeadwiseKV(plan=torch.zeros(2, 3, dtype=torch.bool), sinks=k, window=W)
    with torch.no_grad():
        others = []
        for other in (full, none):
            with intervene(model, other):
                others.append(model(input_ids=ids, use_cache=False).logits[0])
    assert all(not torch.allclose(prefill[-5:], o[-5:], atol=1e-4) for o in others)


def test_decode_step_reads_no_tensor_value_and_copies_no_index(model, monkeypatch):
    """A decode step under a mixed plan never reads a tensor value on the host outside the attention op (on a GPU
    each read is a sync that stalls the launch queue; the op is the Triton kernel there, which reads none, and the
    CPU reference here) and builds no head index: the hook keeps them on the device from the first call."""
    from interventions import headkv, headkv_attend

    ids = torch.randint(3, 97, (1, 20))
    iv = HeadwiseKV(plan=torch.tensor([[True, False, False], [False, True, True]]), sinks=2, window=5)
    names = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__")
    real = {name: getattr(torch.Tensor, name) for name in names}
    inside = [0]

    def guarded(name):
        def read(self, *a, **k):
            if inside[0]:
                return real[name](self, *a, **k)
            raise AssertionError(f"a decode step read a tensor value on the host (Tensor.{name})")
        return read

    def op(*a, **k):
        inside[0] += 1
        try:
            return real_attention(*a, **k)
        finally:
            inside[0] -= 1

    real_attention = headkv_attend.attention
    with torch.no_grad(), intervene(model, iv):
        res = model(input_ids=ids, use_cache=True)                    # the prompt may read (padding check)
        cache, nxt = res.cache, res.logits[:, -1].argmax(-1, keepdim=True)
        built = []
        with monkeypatch.context() as mp:
            mp.setattr(headkv, "query_heads", lambda *a: built.append(a))
            mp.setattr(headkv_attend, "attention", op)
            for name in names:
                mp.setattr(torch.Tensor, name, guarded(name))
            for _ in range(3):
                nxt = model(input_ids=nxt, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)  # [1, 1]
    assert not built and cache.get_seq_length() == 23


@pytest.mark.parametrize("rows", [MIXED, SCATTERED], ids=["prefix-suffix", "scattered"])
def test_mixed_plan_with_a_window_longer_than_the_text_equals_the_unmodified_model(model, rows):
    """Streaming heads whose window covers the whole text see what full heads see: any plan must then give the
    unmodified model's logits, prefill and decode steps (checks how head outputs are split and joined)."""
    ids = torch.randint(3, 97, (1, 30))
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits[0]
    ours, _ = stream_steps(model, ids, HeadwiseKV(plan=plan_of(rows), sinks=2, window=64), first=20)
    assert ours.shape == base.shape and torch.allclose(ours, base, atol=1e-10, rtol=0)


def test_cache_bytes_match_the_policy(model):
    ids = torch.randint(3, 97, (1, 50))
    iv = HeadwiseKV(plan=plan_of(MIXED), sinks=2, window=5)
    with torch.no_grad(), intervene(model, iv):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             pad_token_id=0, return_dict_in_generate=True)
    n = out.cache.get_seq_length()
    assert n == 59
    per_entry = 2 * 16 * 8                                               # key + value, head_dim 16, fp64
    assert kv_bytes(out.cache) == per_entry * (2 * n + 4 * 7)
    h = type("H", (), {"head_dim": 16})()
    assert iv.kv_bytes_per_token(h, torch.float64, n) * n == pytest.approx(kv_bytes(out.cache))
    own = HeadwiseCache(plan_of(MIXED), 2, 5, model.model.rotary_emb.inv_freq)
    with torch.no_grad(), intervene(model, iv):
        model(input_ids=ids, cache=own, use_cache=True)
    assert own.kv_bytes() == per_entry * (2 * 50 + 4 * 7)


# ---- (d) bit-identical model after exit; errors ----------------------------------------------------

def test_model_bit_identical_after_exit_and_errors(model):
    snap = snapshot(model)
    ids = torch.randint(3, 97, (1, 12))
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), intervene(model, HeadwiseKV(plan=plan_of(MIXED))):
        model(input_ids=ids)
        raise RuntimeError("boom")
    assert_same(model, snap)
    padded = {"input_ids": torch.tensor([[0, 5, 6], [7, 8, 9]]), "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]])}
    with pytest.raises(ProbeError, match="padded"), intervene(model, HeadwiseKV(plan=plan_of(MIXED))):
        model(**padded)
    with pytest.raises(ProbeError, match="apply it alone"), intervene(model, HeadwiseKV(plan=plan_of(MIXED)), HeadMask("L0H1")):
        pass
    with pytest.raises(ProbeError, match="shape"), intervene(model, HeadwiseKV(plan=torch.ones(3, 3, dtype=torch.bool))):
        pass
    with pytest.raises(ProbeError, match="needs a head choice"):
        HeadwiseKV()
    assert_same(model, snap)


# ---- head choice, SPEC, export -------------------------------------------------------------------

def test_selection_pools_query_heads_and_matches_budgets():
    scores = torch.tensor([[0.9, 0.0, 0.1, 0.2, 0.0, 0.0], [0.0, 0.5, 0.3, 0.3, 0.0, 0.05]], dtype=torch.float64)
    kv = pool_kv(scores, 3)                                              # G = 2 query heads per KV head
    assert kv.tolist() == [[0.9, 0.2, 0.0], [0.5, 0.3, 0.05]]
    assert pool_kv(scores, 3, "mean")[0].tolist() == pytest.approx([0.45, 0.15, 0.0])
    assert top_plan(kv, 2).tolist() == [[True, False, False], [True, False, False]]
    assert top_plan(kv, 2, lowest=True).tolist() == [[False, False, True], [False, False, True]]
    assert budget_count("0.25", 90) == 22 and budget_count("11", 90) == 11 and budget_count(0.5, 6) == 3
    with pytest.raises(ProbeError, match="outside"):
        budget_count("1.5", 90)
    draws = [random_plan(30, 3, 11, seed) for seed in range(5)]
    assert all(int(d.sum()) == 11 for d in draws) and torch.equal(draws[0], random_plan(30, 3, 11, 0))
    assert len({tuple(d.flatten().tolist()) for d in draws}) == 5
    like = top_plan(kv, 3)
    matched = random_plan(2, 3, 3, 1, like=like)
    assert matched.sum(-1).tolist() == like.sum(-1).tolist()


def test_report_choice_spec_and_duo_export(model, tmp_path):
    table = pd.DataFrame({"layer": [0] * 6 + [1] * 6, "head": list(range(6)) * 2,
                          "retrieval_score": [0, 0, 0, 0, 0.7, 0.1, 0.2, 0, 0, 0, 0, 0.05],
                          "key0_mass": [0.9, 0.8, 0.1, 0.2, 0.5, 0.5, 0.3, 0.3, 0.95, 0.9, 0.4, 0.2]})
    csv = tmp_path / "heads.csv"
    table.to_csv(csv, index=False)
    iv = parse_spec(f"headkv:report={csv},full=2,sinks=2,window=16")
    assert isinstance(iv, HeadwiseKV) and (iv.sinks, iv.window) == (2, 16)
    with intervene(model, iv):
        pass
    assert iv.plan.tolist() == [[False, False, True], [True, False, False]]
    low = parse_spec(f"headkv:report={csv},column=key0_mass,select=bottom,full=0.34")
    assert low.resolve(_handle(model)).tolist() == [[False, True, False], [False, False, True]]
    listed = parse_spec("headkv:heads=L1H5,L0H2,window=8")
    assert listed.resolve(_handle(model)).tolist() == [[False, True, False], [False, False, True]]
    rnd = parse_spec("headkv:select=random,full=3,seed=4")
    assert int(rnd.resolve(_handle(model)).sum()) == 3
    with pytest.raises(ProbeError, match="no column"):
        parse_spec(f"headkv:report={csv},column=nope").resolve(_handle(model))
    out = write_duo_tsv(iv, tmp_path / "duo")
    plan, sinks, window = read_duo_tsv(out)
    assert torch.equal(plan, iv.plan) and (sinks, window) == (2, 16)
    assert (out / "full_attention_heads.tsv").read_text().splitlines()[0].split("\t") == ["0", "0", "1"]
    assert json.loads((out / "config.json").read_text()) == {"sink_size": 2, "recent_size": 16}
    tidy = pd.read_csv(out / "heads.tsv", sep="\t")
    assert list(tidy.columns[:4]) == ["layer", "kv_head", "query_heads", "full"] and tidy.full.sum() == 2


def _handle(m):
    from interventions.base import as_handle

    return as_handle(m)[0]


def test_sink_mass_scores_file_is_current():
    """studies/headkv/sinks_heads.csv (the sink-mass policy's scores) has every SmolLM2 head once, sink_rate as a
    fraction (report schema 2; it was stored in percent before) and key0_mass a probability."""
    heads = pd.read_csv(Path(__file__).resolve().parents[1] / "studies" / "headkv" / "sinks_heads.csv")
    assert len(heads) == 30 * 9 and not heads.duplicated(["layer", "head"]).any()
    assert heads.sink_rate.between(0, 1).all() and heads.sink_rate.max() == 1.0
    assert heads.key0_mass.between(0, 1).all()


def test_decode_measurement_rows(model):
    """studies.headkv.decode on a tiny Llama: repeats, the median run inside the spread, and KV bytes that follow the
    plan (full heads hold every token, streaming heads sinks + window)."""
    from probe.models.handle import Handle
    from studies.headkv.decode import decode_policy

    h = Handle(model, None, "tiny", "object")
    ids = torch.randint(3, 97, (1, 30))
    full, _ = decode_policy(h, ids, lambda: None, steps=3, repeats=2)
    mixed, text = decode_policy(h, ids, lambda: HeadwiseKV(plan=plan_of(MIXED), sinks=2, window=5), steps=3, repeats=2)
    entry = 2 * 16 * 8                                                      # key + value, head_dim 16, fp64
    assert full["seq_len"] == mixed["seq_len"] == 33 and full["repeats"] == mixed["repeats"] == 2
    assert full["kv_bytes"] == 2 * 3 * 33 * entry                           # 2 layers x 3 KV heads
    assert mixed["kv_bytes"] == 2 * (1 * 33 + 2 * (2 + 5)) * entry          # per layer: 1 full, 2 streaming
    for row in (full, mixed):
        assert row["decode_tok_s_min"] <= row["decode_tok_s"] <= row["decode_tok_s_max"]
        assert row["profile_aten_ops"] > 0 and "diagnostics_error" not in row
    assert "one decode step" in text


# ---- real SmolLM2: retrieval heads keep a needle that StreamingLLM loses -----------------------------

@pytest.mark.slow
def test_smollm2_retrieval_heads_keep_the_needle(smollm2):
    """A needle ~400 tokens back (600-token prompt): full attention and the probe-chosen retrieval KV heads
    (25 %) reproduce its answer greedily; StreamingLLM everywhere (4 + 256) cannot see it."""
    from interventions.headkv_niah import answer_sample, score_sample

    sample = answer_sample(smollm2, needle=2, length=600, depth=30.0, offset=4000)
    report = Path(__file__).resolve().parents[1] / "studies" / "retrieval" / "heads.csv"
    policies = {"full": None, "streaming": HeadwiseKV(select="random", full=0, sinks=4, window=256),
                "retrieval": HeadwiseKV(report=report, full=0.25, sinks=4, window=256)}
    exact = {name: score_sample(smollm2, sample, iv)["exact"] for name, iv in policies.items()}
    assert exact == {"full": True, "streaming": False, "retrieval": True}
    assert sample.answer[0] - sample.needle_span[1] > 256 + 4       # the needle is outside the window


@pytest.mark.slow
def test_probe_generate_runs_headkv_spec(smollm2):
    """`probe generate -i headkv:...` path: the CLI's generate_pair with a parsed SPEC on real SmolLM2."""
    from interventions.commands import generate_pair

    report = Path(__file__).resolve().parents[1] / "studies" / "retrieval" / "heads.csv"
    iv = parse_spec(f"headkv:report={report},full=0.25,sinks=4,window=8")
    res = generate_pair(smollm2, "The capital of France is Paris. The capital of Italy is", [iv], max_new_tokens=4)
    assert res["interventions"] == [repr(iv)] and res["intervened"]
    assert iv.summary()["full_kv_heads"] == 22


def test_probe_generate_console_script_runs_headkv(tiny_dir):
    """The real `probe generate -i headkv:...` command on a tiny Llama: exit 0, the policy named in its output."""
    from clirun import run_probe

    res = run_probe("generate", "--model", tiny_dir, "--device", "cpu", "--max-new-tokens", "3",
                    "-i", "headkv:heads=L1H0,sinks=2,window=4", "one two three four five six seven eight nine ten")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HeadwiseKV" in res.stdout + res.stderr and "Traceback" not in res.stderr


def test_batched_needle_scoring_equals_one_sample_at_a_time(model):
    """score_batch (right-padded rows, one forward) == score_sample per sample, under a mixed HeadwiseKV plan."""
    from interventions.headkv_niah import AnswerSample, score_batch, score_sample

    g = torch.Generator().manual_seed(3)
    samples = []
    for n in (31, 40, 37):                                                   # the answer ends each sample
        ids = torch.randint(3, 97, (n,), generator=g).tolist()
        samples.append(AnswerSample(ids, (n - 3, n), 0, n, 50.0, 50.0, (2, 5)))
    iv = HeadwiseKV(plan=plan_of(MIXED), sinks=2, window=5)
    one = [score_sample(model, s, iv) for s in samples]
    many = score_batch(model, samples, iv, pad_id=0)
    for x, y in zip(one, many):
        assert x["exact"] == y["exact"] and x["first"] == y["first"] and x["acc"] == y["acc"]
        assert abs(x["nll"] - y["nll"]) < 1e-9
    assert len({round(x["nll"], 6) for x in one}) == 3                       # three different samples
