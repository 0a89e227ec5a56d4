"""Regression tests for bugs found by reading the code (issue #13)."""
from __future__ import annotations

import pytest
import torch

from interventions import VAR, HeadMask, Redistribute, SinkWindow, intervene
from probe import ProbeError
from probe.models import Handle
from test_vlm import _tiny_tokenizer


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
