"""The seam's mask function: causal / sliding-window / left-padded patterns become a compact
(key_start, window) description checked in row blocks (no N x N tensor); every other pattern keeps
SDPA's dense mask (which the seam refuses)."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.masking_utils import (
    bidirectional_mask_function, causal_mask_function, sdpa_mask, sliding_window_causal_mask_function)

from kernels.attention.api import visible_mask
from probe.capture import causal_mask, seam
from probe.capture.causal_mask import CompactCausalMask, compact_mask


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op creates while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _pad(lengths, S):
    """Left-padding 2-D mask [B, S] with the given real lengths."""
    return torch.stack([torch.arange(S) >= S - n for n in lengths])                # bool, as transformers passes it


@pytest.mark.parametrize("window", [None, 5])
def test_causal_and_window_with_left_padding_are_compact(window):
    B, T, S = 3, 17, 17
    pad = _pad([17, 12, 1], S)
    fn = causal_mask_function if window is None else sliding_window_causal_mask_function(window)
    got = compact_mask(batch_size=B, q_length=T, kv_length=S, mask_function=fn, attention_mask=pad, local_size=window)
    assert isinstance(got, CompactCausalMask)
    assert got.key_start.tolist() == [0, 5, 16] and got.window == window
    dense = sdpa_mask(batch_size=B, q_length=T, kv_length=S, mask_function=fn, attention_mask=pad,
                      local_size=window, allow_is_causal_skip=False)[:, 0]          # [B, T, S]
    expect = visible_mask(got.key_start, torch.arange(T), S, window)
    seen = expect.any(-1, keepdim=True)
    assert torch.equal(dense & seen, expect)                                       # the same pattern
    assert torch.equal(got.dense()[:, 0], dense)                                   # SDPA fallthrough mask


def test_decode_step_with_offsets_is_compact():
    """One query at position 20 over 21 cached keys (q_offset 20), left padding 3."""
    pad = _pad([18], 21)
    got = compact_mask(batch_size=1, q_length=1, kv_length=21, q_offset=20, attention_mask=pad)
    assert isinstance(got, CompactCausalMask) and got.key_start.tolist() == [3]


@pytest.mark.parametrize("case", ["bidirectional", "right_padding", "window_mismatch"])
def test_other_patterns_keep_the_dense_mask(case):
    B, T, S = 2, 9, 9
    kw = dict(batch_size=B, q_length=T, kv_length=S, attention_mask=_pad([9, 6], S))
    if case == "bidirectional":
        kw["mask_function"] = bidirectional_mask_function
    elif case == "right_padding":
        kw["attention_mask"] = _pad([9, 6], S).flip(-1)
    else:                                   # a window transformers did not say (local_size) is not assumed
        kw["mask_function"] = sliding_window_causal_mask_function(4)
    got = compact_mask(**kw)
    assert torch.is_tensor(got) and got.shape == (B, 1, T, S)
    if case != "window_mismatch":           # the seam refuses a non-causal mask, as before
        with pytest.raises(seam.ProbeError, match="not causal"):
            seam._checked_key_start(got, B, T, S, None, "cpu")


def test_check_runs_in_row_blocks(monkeypatch):
    """No tensor of T x S elements: the check's largest tensor is one row block (SDPA's is T x S)."""
    monkeypatch.setattr(causal_mask, "_CHECK_ELEMENTS", 1 << 14)
    T = S = 512
    kw = dict(batch_size=1, q_length=T, kv_length=S, mask_function=sliding_window_causal_mask_function(64),
              attention_mask=_pad([500], S), local_size=64)
    with LargestTensor() as ours:
        got = compact_mask(**kw)
    with LargestTensor() as sdpa:
        sdpa_mask(**kw)
    assert isinstance(got, CompactCausalMask)
    assert sdpa.largest >= T * S                     # the tracker sees N x N tensors when there are some
    assert ours.largest <= (1 << 14) and ours.largest < T * S // 8


def test_seam_takes_the_compact_mask(tiny_gemma3, monkeypatch):
    """A left-padded batch through a sliding-window model: every mask the seam gets is compact, and
    the outputs equal plain SDPA's."""
    import probe

    seen = []

    def spy(*a, **kw):
        m = compact_mask(*a, **kw)
        seen.append(type(m).__name__)
        return m
    monkeypatch.setattr(seam, "compact_mask", spy)
    enc = tiny_gemma3.encode(["It is a truth universally acknowledged, that a single man", "My dear"])
    with torch.no_grad():
        plain = tiny_gemma3.model(**enc).logits
        with probe.capture(tiny_gemma3, stats=("received", "entropy")):
            ours = tiny_gemma3.model(**enc).logits
    real = enc["attention_mask"].bool()
    assert seen and set(seen) == {"CompactCausalMask"}
    assert (ours - plain)[real].abs().max() < 1e-4


def test_generate_with_sliding_cache_offsets():
    """Greedy generate past the window of a sliding-window model with a left-padded row: the masks of the
    decode steps (sliding cache: kv_offset > 0) stay compact and the tokens equal plain SDPA's."""
    import probe
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=5,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                           max_position_embeddings=512, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    ids = torch.randint(0, 300, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0
    seen = []

    def spy(*a, **kw):
        m = compact_mask(*a, **kw)
        seen.append((type(m).__name__, kw.get("kv_offset", 0)))
        return m
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
        with pytest.MonkeyPatch.context() as mp, probe.capture(model, stats=("received", "entropy")):
            mp.setattr(seam, "compact_mask", spy)
            ours = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert torch.equal(plain, ours)
    assert {k for k, _ in seen} == {"CompactCausalMask"} and max(off for _, off in seen) > 0
