"""Faults survived: an exception inside the seam in the middle of a forward leaves the model
bit-identical (capture and every intervention, VAR without an image too)."""
from __future__ import annotations

import pytest
import torch

import probe
from interventions import ACT, VAR, HeadMask, HeadScale, Redistribute, SinkWindow, intervene
from probe.capture import seam
from probe.models import Handle
from test_vlm import IMAGE, tiny  # noqa: F401  (the tiny LLaVA fixture)


def snapshot(model):
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, model.config.to_dict(), hooks,
            model.config._attn_implementation, model.config.get_text_config()._attn_implementation)


def assert_same(model, snap):
    state, cfg, hooks, impl, text_impl = snap
    now = model.state_dict()
    assert state.keys() == now.keys() and all(torch.equal(state[k], now[k]) for k in state)
    assert model.config.to_dict() == cfg
    assert (model.config._attn_implementation, model.config.get_text_config()._attn_implementation) == (impl, text_impl)
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert not any(seam.active_hooks(m) for m in model.modules())


class SeamFault(RuntimeError):
    pass


@pytest.fixture
def fault_at_call(monkeypatch):
    """Make the seam's attention op raise on its n-th call (n counted from 1), i.e. mid-forward. A hooked
    layer runs either the attention op or (no statistic, no probability edit) SDPA + ``_output_edits``:
    both count."""
    def arm(n: int):
        count = {"n": 0}

        def flaky(real):
            def run(*args, **kwargs):
                count["n"] += 1
                if count["n"] == n:
                    raise SeamFault(f"injected at attention call {n}")
                return real(*args, **kwargs)
            return run

        monkeypatch.setattr(seam, "attention", flaky(seam.attention))
        monkeypatch.setattr(seam, "_output_edits", flaky(seam._output_edits))
        return count
    return arm


def _text_inputs(handle, padded: bool = True):
    rows = ["It is a truth universally acknowledged", "Mr. Bennet was so odd"] if padded else ["It is a truth universally"]
    return handle.encode(rows)


def _logits(handle, enc):
    with torch.no_grad():
        return handle.model(**enc, use_cache=False).logits


INTERVENTIONS = {
    "capture": None,
    "act": lambda: ACT(beta=0.4, threshold=0.0, layers=[1, 2]),
    "mask-uniform": lambda: HeadMask("L1H2", mode="uniform"),
    "mask-zero": lambda: HeadMask("L2H0", mode="zero"),
    "scale": lambda: HeadScale("L1H1", alpha=2.0),
    "redistribute": lambda: Redistribute("auto", span=(1, 4), layers=[1, 2]),
    "sinkwindow+mask": lambda: (SinkWindow(sinks=1, window=4), HeadMask("L1H1")),
}


@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_exception_inside_the_seam_mid_forward_leaves_the_model_identical(name, tiny_llama, fault_at_call):
    enc = _text_inputs(tiny_llama, padded=not name.startswith("sinkwindow"))   # SinkWindow refuses padded batches
    before = _logits(tiny_llama, enc)
    snap = snapshot(tiny_llama.model)
    count = fault_at_call(2)                    # layer 1 of 3: the first layer already ran through the seam
    make = INTERVENTIONS[name]
    with pytest.raises(SeamFault), torch.no_grad():
        if make is None:
            with probe.capture(tiny_llama, stats=("received", "entropy"), hidden="summary"):
                tiny_llama.model(**enc, use_cache=False)
        else:
            ivs = make()
            ivs = ivs if isinstance(ivs, tuple) else (ivs,)
            with intervene(tiny_llama, *ivs):
                tiny_llama.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert count["n"] == 2                      # the fault really fired inside the forward
    assert_same(tiny_llama.model, snap)
    assert torch.equal(_logits(tiny_llama, enc), before)


def test_var_without_an_image_and_a_seam_fault_leave_the_vlm_identical(tiny, fault_at_call):
    import numpy as np

    model, proc = tiny
    handle = Handle(model, proc.tokenizer, "tiny-llava", "object", processor=proc)
    image = np.random.default_rng(0).integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    enc = proc(text=[f"{IMAGE} what is this ?"], images=[image], return_tensors="pt")
    with torch.no_grad():   # transformers installs its own output-recording hooks on the first vision forward
        before = model(**enc, use_cache=False).logits
    snap = snapshot(model)
    text = proc.tokenizer(["what is this ?"], return_tensors="pt")
    with pytest.raises(probe.ProbeError, match="without an image"), torch.no_grad():
        with intervene(handle, VAR(sink_dims=[0, 1], layers=[0, 1])):
            model(**text, use_cache=False)
    assert_same(model, snap)
    count = fault_at_call(2)
    with pytest.raises(SeamFault), torch.no_grad():
        with intervene(handle, VAR(sink_dims=[0, 1], layers=[0, 1])):
            model(**enc, use_cache=False)
    assert count["n"] == 2
    assert_same(model, snap)
    with torch.no_grad():
        assert torch.equal(model(**enc, use_cache=False).logits, before)
