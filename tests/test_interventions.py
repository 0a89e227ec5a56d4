"""Interventions: plumbing on a tiny random Llama, behaviour on real SmolLM2 (one module-scoped load)."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interventions import ACT, HeadMask, HeadScale, Redistribute, SinkWindow, intervene, parse_spec
from interventions.core import ordered
from probe.capture import capture, seam
from probe.errors import ProbeError


# ---------------------------------------------------------------------------------------------
# fixtures

def tiny(layers: int = 3, dtype=torch.float32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rope_theta=100.0,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval().to(dtype)


@pytest.fixture(scope="module")
def tiny_model():
    return tiny()


@pytest.fixture(scope="module")
def smol():
    import probe

    return probe.load("smollm2")                   # a missing model package fails loudly: no skip


PARAGRAPH = ("The old house at the end of the lane had been empty for years. Every morning the baker walked past it, "
             "and every morning he wondered who had lived there, and why the garden was still so carefully kept.")


class OutHook:
    """Records each call's head outputs [B, T, H, D] and (optionally) full probabilities per layer."""

    def __init__(self, full: bool = False):
        self.full = full
        self.out, self.probs = {}, {}

    def stats_request(self, call):
        from kernels.attention import StatsRequest

        return StatsRequest(full=self.full)

    def after(self, call, result):
        self.out[call.layer] = result.out.detach().clone()
        if result.probs is not None:
            self.probs[call.layer] = result.probs.detach().clone()


def run_with_hook(model, modules, inputs, *ivs, full=False, layers=None):
    """Forward once with interventions and a recording hook on ``layers`` (default every layer).

    Large vocabularies (SmolLM2) return last-position logits only, to keep the tests fast.
    """
    hook = OutHook(full)
    if layers is not None:
        modules = [modules[l] for l in layers]
    with torch.no_grad(), intervene(model, *ivs), seam.use_seam(model):
        for m in modules:
            seam.attach(m, hook)
        try:
            keep = 1 if model.config.vocab_size > 1000 else 0
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
        finally:
            for m in modules:
                seam.detach(m, hook)
    return logits, hook


def attn_modules(model):
    return [layer.self_attn for layer in model.model.layers]


def snapshot(model):
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, model.config.to_dict(), hooks,
            model.config._attn_implementation)


def assert_same(model, snap):
    state, cfg, hooks, impl = snap
    now = model.state_dict()
    assert state.keys() == now.keys() and all(torch.equal(state[k], now[k]) for k in state)
    assert model.config.to_dict() == cfg and model.config._attn_implementation == impl
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert not any(seam.active_hooks(m) for m in attn_modules(model))


def left_padded(rows: list[list[int]]):
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(r)
        mask[b, width - len(r):] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------------------------------------
# plumbing on the tiny model

def test_noops_are_exact(tiny_model):
    inputs = {"input_ids": torch.randint(3, 97, (2, 10))}
    base, _ = run_with_hook(tiny_model, attn_modules(tiny_model), inputs)
    got, _ = run_with_hook(tiny_model, attn_modules(tiny_model), inputs, HeadScale([(1, 2), (2, 0)], alpha=1.0))
    assert torch.equal(got, base)
    # beta = 1: the column formula's (1 - m) / (1 - m) is 1 up to the CPU's vectorised division
    got, _ = run_with_hook(tiny_model, attn_modules(tiny_model), inputs, ACT(beta=1.0, layers=[0, 1, 2], threshold=0.0))
    assert torch.allclose(got, base, atol=1e-6, rtol=0)
    changed, _ = run_with_hook(tiny_model, attn_modules(tiny_model), inputs, ACT(beta=0.0, layers=[0, 1, 2], threshold=0.0))
    assert not torch.allclose(changed, base)


def test_model_bit_identical_after_exit_and_exception(tiny_model):
    snap = snapshot(tiny_model)
    ivs = (ACT(layers=[1]), HeadMask("L0H1", mode="zero"), HeadScale("L2H3", alpha=2.0),
           Redistribute([0], span=(2, 6), layers=[1]))
    inputs = {"input_ids": torch.randint(3, 97, (1, 9))}
    with torch.no_grad(), intervene(tiny_model, *ivs):
        tiny_model(**inputs)
    assert_same(tiny_model, snap)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), intervene(tiny_model, *ivs):
        tiny_model(**inputs)
        raise RuntimeError("boom")
    assert_same(tiny_model, snap)
    with pytest.raises(RuntimeError, match="boom"), intervene(tiny_model, SinkWindow(2, 4), HeadMask("L1H1")):
        tiny_model(**inputs)
        raise RuntimeError("boom")
    assert_same(tiny_model, snap)


def test_composition_order_is_fixed(tiny_model):
    ivs = [HeadScale("L1H0"), Redistribute([0], span=(1, 3)), ACT(), HeadMask("L1H1"), SinkWindow(1, 4)]
    assert [type(iv).__name__ for iv in ordered(ivs)] == ["SinkWindow", "HeadMask", "ACT", "Redistribute", "HeadScale"]
    # mean ablation (step 4) happens before scaling (step 5): output = alpha * mean, whatever the argument order
    H, D = 4, 16
    means = torch.randn(3, H, D)
    inputs = {"input_ids": torch.randint(3, 97, (1, 7))}
    mods = attn_modules(tiny_model)
    a = run_with_hook(tiny_model, mods, inputs, HeadScale("L1H2", alpha=3.0), HeadMask("L1H2", mode="mean", means=means))
    b = run_with_hook(tiny_model, mods, inputs, HeadMask("L1H2", mode="mean", means=means), HeadScale("L1H2", alpha=3.0))
    assert torch.equal(a[0], b[0])
    assert torch.allclose(a[1].out[1][0, :, 2], 3.0 * means[1, 2].expand(7, D), atol=1e-6)
    # uniform mask (step 1) precedes ACT (step 2): ACT rescales the uniform map of that head
    got = run_with_hook(tiny_model, mods, inputs, ACT(beta=0.5, layers=[1], threshold=0.0), HeadMask("L1H2"), full=True)[1]
    p = got.probs[1][0, 2]                                       # [T, S]
    T = p.shape[0]
    uni = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    assert not torch.allclose(p, uni, atol=1e-4)                 # ACT changed the uniform map ...
    assert torch.allclose(p.sum(-1), torch.ones(T), atol=1e-5)   # ... and rows still sum to 1


def test_decode_only_mask(tiny_model):
    ids = torch.randint(3, 97, (1, 8))
    with torch.no_grad():
        base = tiny_model(input_ids=ids[:, :7], use_cache=True)
        base_step = tiny_model(input_ids=ids[:, 7:], cache=base.cache, use_cache=True).logits
        with intervene(tiny_model, HeadMask([(0, 1), (2, 3)], mode="zero", decode_only=True)):
            pre = tiny_model(input_ids=ids[:, :7], use_cache=True)
            step = tiny_model(input_ids=ids[:, 7:], cache=pre.cache, use_cache=True).logits
    assert torch.allclose(pre.logits, base.logits, atol=1e-5)
    assert not torch.allclose(step, base_step, atol=1e-3)


def test_batched_left_padded_generate_equals_per_row(tiny_model):
    rows = [[5, 17, 33, 9, 41, 8, 22, 61, 7, 12], [44, 3, 19, 70], [8, 8, 31, 90, 55, 6, 27]]
    ivs = lambda: (ACT(beta=0.3, threshold=0.05, layers=[1, 2]), HeadMask("L0H1", decode_only=True),  # noqa: E731
                   HeadScale("L2H2", alpha=1.5), Redistribute([0], span=(1, 3), layers=[1], rho=1.0, min_mass=0.0))
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad(), intervene(tiny_model, *ivs()):
        batched = tiny_model.generate(**left_padded(rows), **gen)[:, -6:]
    with torch.no_grad():
        base = tiny_model.generate(**left_padded(rows), **gen)[:, -6:]
    for b, r in enumerate(rows):
        with torch.no_grad(), intervene(tiny_model, *ivs()):
            single = tiny_model.generate(**left_padded([r]), **gen)[:, -6:]
        assert torch.equal(single[0], batched[b])
    assert not torch.equal(base, batched)


def test_sinkwindow_reindexes_positions():
    """1-layer model: each streamed step equals a fresh forward over sinks + window at positions 0..n-1."""
    model = tiny(layers=1, dtype=torch.float64)
    ids = torch.randint(3, 97, (1, 30))
    k, W = 3, 8
    with torch.no_grad(), intervene(model, SinkWindow(k, W)):
        cache = model(input_ids=ids[:, :5], use_cache=True).cache
        for t in range(5, 30):
            out = model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            cache = out.cache
            ref_ids = torch.cat([ids[:, :k], ids[:, max(k, t - W + 1):t + 1]], 1)
            ref = model(input_ids=ref_ids, use_cache=False).logits[:, -1]
            assert torch.allclose(out.logits[:, -1], ref, atol=1e-5), t
            assert cache.layers[0].keys.shape[-2] == min(t + 1, k + W)


def test_sinkwindow_generate_keeps_k_plus_window(tiny_model):
    snap = snapshot(tiny_model)
    ids = torch.randint(3, 97, (2, 12))
    with torch.no_grad(), intervene(tiny_model, SinkWindow(sinks=2, window=6)):
        out = tiny_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=15,
                                  do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    assert out.sequences.shape == (2, 27)
    assert all(layer.keys.shape[-2] == 8 for layer in out.cache.layers)
    assert out.cache.get_seq_length() == 26
    assert_same(tiny_model, snap)
    with pytest.raises(ProbeError, match="padded"), intervene(tiny_model, SinkWindow()):
        tiny_model(**left_padded([[5, 6, 7], [8, 9]]))
    with pytest.raises(ProbeError, match="SinkWindow cannot be combined"), intervene(tiny_model, SinkWindow(), ACT()):
        pass


def test_parse_spec_forms_and_errors():
    assert isinstance(parse_spec("act"), ACT) and parse_spec("act").beta == 0.4
    a = parse_spec("act:beta=0.3,threshold=0.15,layers=4,8,12")
    assert (a.beta, a.threshold, a.layers) == (0.3, 0.15, [4, 8, 12])
    m = parse_spec("mask:L18H6")
    assert isinstance(m, HeadMask) and m.mode == "uniform" and m.heads == [(18, 6)]
    assert parse_spec("mask:L18H6,L20H6:mode=zero,decode_only=1").decode_only
    s = parse_spec("scale:L3H2:alpha=2")
    assert isinstance(s, HeadScale) and s.alpha == 2.0
    w = parse_spec("sinkwindow:sinks=4,window=1020")
    assert (w.sinks, w.window) == (4, 1020)
    r = parse_spec("redistribute:span=5-20,transfer=0.6")
    assert r.spans == [(5, 20)] and abs(r.keep - 0.4) < 1e-12 and not r.log_selection
    assert parse_spec("redistribute:span=5-20,sinks=0,log=1").log_selection
    assert parse_spec("var:log=1").log_selection
    for bad in ("actt", "mask", "mask:L18H6:mode=blur", "scale:alpha=2", "act:beta=x", "act:gamma=1", "sinkwindow:window=0",
                "redistribute:span=5-20,log=maybe"):
        with pytest.raises(ProbeError, match="valid forms"):
            parse_spec(bad)


def test_bad_head_and_layer_name_valid_ranges(tiny_model):
    for iv in (HeadMask("L3H0"), HeadScale("L0H4"), ACT(heads=[(9, 1)]), ACT(layers=[5]), Redistribute([0], span=(0, 2), layers=[7])):
        with pytest.raises(ProbeError, match=r"layers are 0\.\.2"):
            with intervene(tiny_model, iv):
                pass
    with pytest.raises(ProbeError, match="heads 0..3"):
        with intervene(tiny_model, HeadMask("L1H7")):
            pass
    with pytest.raises(ProbeError, match="means"):
        with intervene(tiny_model, HeadMask("L1H1", mode="mean")):
            pass
    assert not any(seam.active_hooks(m) for m in attn_modules(tiny_model))


# ---------------------------------------------------------------------------------------------
# behaviour on SmolLM2

def act_reference(A: torch.Tensor, beta: float, thr: float) -> torch.Tensor:
    """methods.md §1, literally: A [T, T] (one head, one unpadded row) -> calibrated A''."""
    T = A.shape[0]
    s = A.sum(0) / (T - torch.arange(T, dtype=A.dtype))
    S = [j for j in range(T) if s[j] > thr]
    Sp = S[1:]
    if not Sp:
        return A.clone()
    A1 = A.clone()
    A1[:, Sp] *= beta
    removed = (1 - beta) * A[:, Sp].sum(-1)                                  # [T]
    C = A.clone()
    C[1:, Sp] = 0
    r = C / C.sum(-1, keepdim=True)
    A2 = A1 + removed[:, None] * r
    A2[0, 0] = 1.0
    return A2


def test_act_matches_closed_form_on_smollm2(smol):
    layer = 5
    inputs = smol.encode(PARAGRAPH)
    mods = smol.attention_modules()
    _, base = run_with_hook(smol.model, mods, inputs, full=True, layers=[layer - 1, layer])
    act = ACT(beta=0.4, threshold=0.1, layers=[layer])
    _, got = run_with_hook(smol.model, mods, inputs, act, full=True, layers=[layer - 1, layer])
    A = base.probs[layer][0].double()                                       # [H, T, T]
    edited = 0
    for h in range(smol.n_heads):
        ref = act_reference(A[h], 0.4, 0.1)
        assert torch.allclose(got.probs[layer][0, h].double(), ref, atol=1e-5), h
        edited += int(not torch.allclose(ref, A[h]))
    assert edited >= 1                                                      # secondary sinks exist in layer 5
    assert (act.dropped[layer][0] == 0).sum() >= smol.n_heads // 2           # the first token is the usual dropped sink
    # layers before the edited one are untouched; beta=1 changes nothing
    assert torch.equal(got.out[layer - 1], base.out[layer - 1])
    same, _ = run_with_hook(smol.model, mods, inputs, ACT(beta=1.0, layers=[layer]), layers=[layer])
    assert torch.allclose(same, run_with_hook(smol.model, mods, inputs, layers=[layer])[0], rtol=1e-5, atol=1e-4)


def test_headmask_modes_change_only_that_head(smol):
    inputs = smol.encode(PARAGRAPH)
    mods = smol.attention_modules()
    L, Hh = 18, 6
    rec = [L - 1, L]
    _, base = run_with_hook(smol.model, mods, inputs, full=True, layers=rec)
    means = HeadMask.compute_means(smol, [PARAGRAPH, "Jane went to the market and bought three apples."])
    assert means.shape == (smol.n_layers, smol.n_heads, smol.head_dim)
    for mode in ("zero", "uniform", "mean"):
        _, got = run_with_hook(smol.model, mods, inputs, HeadMask((L, Hh), mode=mode, means=means), full=True, layers=rec)
        assert torch.equal(got.out[L - 1], base.out[L - 1])
        diff = (got.out[L] - base.out[L]).abs().amax(dim=(0, 1, 3))          # [H]
        assert diff[Hh] > 1e-3 and torch.all(diff[torch.arange(smol.n_heads) != Hh] == 0), mode
        o = got.out[L][0, :, Hh]                                             # [T, D]
        if mode == "zero":
            assert torch.all(o == 0)
        if mode == "mean":
            assert torch.allclose(o, means[L, Hh].expand_as(o), atol=1e-6)
        if mode == "uniform":
            T = o.shape[0]
            assert torch.allclose(got.probs[L][0, Hh], torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None], atol=1e-6)
    _, scaled = run_with_hook(smol.model, mods, inputs, HeadScale((L, Hh), alpha=2.0), layers=rec)
    assert torch.allclose(scaled.out[L][0, :, Hh], 2 * base.out[L][0, :, Hh], atol=1e-5)


def var_reference(A: torch.Tensor, sinks: list, span: tuple, keep: float, rho: float, min_mass: float) -> torch.Tensor:
    """methods.md §2 on one head's map A [T, T]: rows after the span, paper head/query selection."""
    out = A.clone()
    s, e = span
    target = [j for j in range(s, e) if j not in sinks]
    for i in range(e, A.shape[0]):
        a = A[i]
        m = a[s:e].sum()
        q = sum(a[j] for j in sinks if s <= j < e) / (m + 1e-6)
        if not (q <= rho and m >= min_mass):
            continue
        budget = (1 - keep) * a[sinks].sum()
        out[i, sinks] = keep * a[sinks]
        out[i, target] = a[target] + budget * a[target] / a[target].sum()
    return out


def test_redistribute_matches_reference_on_text_span(smol):
    layer, span, sinks = 6, (3, 14), [0, 3]
    inputs = smol.encode(PARAGRAPH)
    mods = smol.attention_modules()
    _, base = run_with_hook(smol.model, mods, inputs, full=True, layers=[layer])
    red = Redistribute(sinks, span=span, keep=0.6, rho=0.5, min_mass=0.2, layers=[layer], log_selection=True)
    _, got = run_with_hook(smol.model, mods, inputs, red, full=True, layers=[layer])
    A = base.probs[layer][0].double()
    changed, picked = 0, []
    for h in range(smol.n_heads):
        ref = var_reference(A[h], sinks, span, 0.6, 0.5, 0.2)
        assert torch.allclose(got.probs[layer][0, h].double(), ref, atol=1e-5), h
        changed += int(not torch.allclose(ref, A[h]))
        picked.append(int((~torch.isclose(ref[span[1]:], A[h, span[1]:], atol=1e-9)).any(-1).sum()))
    assert changed >= 1
    # the selection log counts exactly the (head, query) rows the edit changed, from span/sink scores only
    T = A.shape[-1]
    assert red.selection[layer].tolist() == [[T - span[1]] * smol.n_heads, picked]
    table = red.selection_table()
    assert list(table.columns) == ["layer", "head", "eligible", "selected", "fraction"] and len(table) == smol.n_heads
    assert red.selected_fraction == pytest.approx(sum(picked) / (smol.n_heads * (T - span[1])))
    assert 0 < red.selected_fraction < 1
    assert red.transfer == pytest.approx(0.4)
    # "auto": SmolLM2's massive activation (dim 507) marks token 0 as a sink from layer 12 on (methods.md §9)
    auto = Redistribute("auto", span=(0, 10), layers=[14])
    run_with_hook(smol.model, mods, inputs, auto, layers=[])
    assert 0 in auto.found_sinks[14][0]


def test_act_generate_batched_on_smollm2(smol):
    prompts = ["The capital of France is", "Once upon a time, in a small village by the sea, there lived"]
    gen = dict(max_new_tokens=3, do_sample=False, pad_token_id=smol.tokenizer.pad_token_id)
    snap = snapshot(smol.model)
    act = lambda: ACT(layers=[10, 11, 14])  # noqa: E731
    with torch.no_grad(), intervene(smol, act()) as iv:
        batched = smol.model.generate(**smol.encode(prompts), **gen)[:, -3:]
        assert iv.interventions[0].dropped[14].shape == (2, smol.n_heads)
    with torch.no_grad(), intervene(smol, act()):
        single = smol.model.generate(**smol.encode(prompts[:1]), **gen)[:, -3:]
    assert torch.equal(single[0], batched[0])
    assert_same(smol.model, snap)


def test_act_calibration_file_roundtrip(tiny_model, tmp_path):
    import json

    from interventions.calibrate import mcnemar_exact, wilson

    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"model_hash": "abc", "task": "sentiment", "threshold": 0.1, "beta": 0.4,
                                "heads": [[1, 2], [2, 0]]}))
    act = ACT(heads=str(path))
    assert act.heads == [(1, 2), (2, 0)] and act.resolved_layers(3) == [1, 2]
    inputs = {"input_ids": torch.randint(3, 97, (1, 9))}
    with torch.no_grad(), intervene(tiny_model, act):            # a bare model has no file hash: no check
        tiny_model(**inputs)
    assert set(act.sinks) == {1, 2}
    with pytest.raises(ProbeError, match="calibration file"):
        ACT(heads=str(tmp_path / "missing.json"))
    lo, hi = wilson(60, 100)
    assert 0.50 < lo < 0.60 < hi < 0.70
    assert mcnemar_exact(7, 0) == pytest.approx(2 / 2 ** 7) and mcnemar_exact(3, 3) == 1.0


def test_generate_reports_redistribute_selection(smol):
    from interventions.commands import generate_pair

    red = parse_spec("redistribute:span=2-8,sinks=0,log=1")
    res = generate_pair(smol, "The capital of France is Paris. The capital of Germany is", [red], max_new_tokens=3)
    (sel,) = res["selection"]
    assert 0 < sel["selected_rows"] <= sel["eligible_rows"] and sel["selected_fraction"] == red.selected_fraction
    assert len(sel["top_heads"]) == 5
    assert generate_pair(smol, "The capital of France is", [parse_spec("scale:L3H2:alpha=1")], 2)["selection"] == []
