"""Regression tests for bugs found by reading the code (issue #13)."""
from __future__ import annotations

import pytest
import torch

from interventions import VAR, HeadMask, Redistribute, SinkWindow, intervene
from probe import ProbeError
from probe.models import Handle
from test_vlm import _tiny_tokenizer, tiny  # noqa: F401  (tiny: the LLaVA fixture)


def test_sinkwindow_is_refused_with_subclasses_of_act_and_redistribute(tiny_llama):
    """core.intervene compared class names, so VAR (a Redistribute subclass) slipped past the check."""
    for other in (VAR(sink_dims=[0]), Redistribute("auto", span=(1, 3))):
        with pytest.raises(ProbeError, match=f"SinkWindow cannot be combined with {type(other).__name__}"):
            with intervene(tiny_llama, SinkWindow(sinks=1, window=4), other):
                pass
    with intervene(tiny_llama, SinkWindow(sinks=1, window=4), HeadMask("L1H1")):   # still allowed
        pass


def test_pad_id_zero_is_a_pad_id():
    """`pad_token_id or eos` turned a pad id of 0 into EOS (or None)."""
    tok = _tiny_tokenizer()
    assert tok.pad_token_id == 0
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=5)).eval()
    tok.eos_token = "is"            # eos id 4: a wrong fallback would pad with 4
    handle = Handle(model, tok, "tiny", "object")
    assert handle.pad_id == 0
    enc = handle.encode(["what is this ?", "cat"])
    assert enc["input_ids"][1, :3].tolist() == [0, 0, 0] and enc["attention_mask"][1, :3].tolist() == [0, 0, 0]


def test_var_selection_log_restarts_in_each_block(tiny):
    """VAR.install copied Redistribute.install without the selection reset: counts accumulated over blocks."""
    import numpy as np

    from test_vlm import IMAGE

    model, proc = tiny
    handle = Handle(model, proc.tokenizer, "tiny-llava", "object", processor=proc)
    image = np.random.default_rng(0).integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    enc = proc(text=[f"{IMAGE} what is this ?"], images=[image], return_tensors="pt")
    var = VAR(sink_dims=[0, 1], layers=[0, 1], tau=0.0, rho=1.0, min_mass=0.0, log_selection=True)
    counts = []
    for _ in range(2):
        with torch.no_grad(), intervene(handle, var):
            model(**enc, use_cache=False)
        counts.append(var.selection_table()[["eligible", "selected"]].to_numpy().copy())
    assert counts[0].sum() > 0                      # the log counted something
    assert (counts[1] == counts[0]).all()           # the second block starts from zero


def test_first_real_index_is_the_one_left_padding_helper():
    from probe.backends.reduce import key_start_from_mask
    from probe.models.padding import first_real_index

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert first_real_index(mask).tolist() == [2, 0, 4]
    assert key_start_from_mask(mask, 3, 4).tolist() == [2, 0, 4]
    from interventions.base import as_handle as from_interventions
    from probe.models.handle import as_handle

    assert from_interventions is as_handle                     # one as_handle


def test_sharded_rank_killed_mid_way_resumes_per_batch(tiny_llama, tmp_path, monkeypatch):
    """A rank interrupted after two saved batches recomputes only the batches it had not saved."""
    import probe
    from probe.sharding import Shard

    prompts = [f"Prompt number {i} about the weather and the sea." for i in range(8)]
    opts = {"sinks": {"batch_size": 1}}
    real_save, saves = torch.save, {"n": 0}

    def dies_on_third_batch(obj, path, *a, **k):
        if ".tmp" in str(path) and "rank1-of2.partial" in str(path):
            saves["n"] += 1
            if saves["n"] == 3:
                raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        probe.scan(tiny_llama, prompts, out=tmp_path / "rep", options=opts, shard=Shard(1, 2, barrier=False))
    monkeypatch.setattr(torch, "save", real_save)
    kept = list((tmp_path / "rep.shards").glob("*/rank1-of2.partial/*.pt"))
    assert len(kept) == 2
    rank1 = Shard(1, 2, barrier=False)
    probe.scan(tiny_llama, prompts, out=tmp_path / "rep", options=opts, shard=rank1)
    assert rank1.computed == 4 - 2                       # rank 1 owns batches 1, 3, 5, 7; two were on disk
    assert not list((tmp_path / "rep.shards").glob("*/rank1-of2.partial"))
    assert list((tmp_path / "rep.shards").glob("*/rank1-of2.pt"))
