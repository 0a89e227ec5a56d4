"""Live model work for the app, without Streamlit: token attention, one head's map, A/B generation.

Every function takes a loaded ``probe`` Handle and raises ``ProbeError`` for input a person can fix
(empty prompt, unknown head, bad intervention spec).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from probe.capture import capture
from probe.errors import ProbeError

# Prompts up to this many tokens get the full T x S map; longer ones only the received-mass profile.
FULL_MAP_LIMIT = 160
# One model object is shared by every browser session; captures and interventions patch it, so
# live work on one model runs one at a time.
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(handle) -> threading.Lock:
    """The lock serialising live work on ``handle``'s model."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(handle.model), threading.Lock())


def check_prompt(prompt: Optional[str]) -> str:
    """The prompt, or ProbeError when it is empty."""
    if not prompt or not prompt.strip():
        raise ProbeError("the prompt is empty", "type some text into the prompt box")
    return prompt


@dataclass
class TokenAttention:
    """Received attention of every key of one prompt.

    tokens: the token strings (S); received: s_j per layer and head, [L, H, S]; counted: keys seen by
    at least ``min_queries`` queries, [S]; massive_ratio: max over layers of the token's largest
    |hidden| / median |hidden|, [S]; massive_layer / massive_dim: where that maximum sits, [S].
    """

    tokens: list
    received: np.ndarray
    counted: np.ndarray
    massive_ratio: np.ndarray
    massive_layer: np.ndarray
    massive_dim: np.ndarray

    def scores(self, scope: str, layer: int = 0, head: int = 0) -> np.ndarray:
        """s_j for one head ("head"), a layer's mean over heads ("layer") or the mean over all ("average"): [S]."""
        if scope == "head":
            return self.received[layer, head]
        if scope == "layer":
            return self.received[layer].mean(0)
        return self.received.mean((0, 1))

    def hidden_sinks(self, scope: str, layer: int, head: int, threshold: float) -> np.ndarray:
        """[S] bool: keys after the first whose s_j exceeds ``threshold`` for the chosen head, any head
        of the chosen layer, or any head at all ("average"), counting only keys seen by enough queries."""
        if scope == "head":
            s = self.received[layer, head]
        elif scope == "layer":
            s = self.received[layer].max(0)
        else:
            s = self.received.max((0, 1))
        hot = (s > threshold) & self.counted
        hot[0] = False
        return hot


def token_attention(handle, prompt: str, min_queries: int = 8) -> TokenAttention:
    """One forward over ``prompt`` capturing every layer's received mass and hidden-state summaries."""
    enc = handle.encode(check_prompt(prompt))
    with model_lock(handle), torch.no_grad(), capture(handle, stats=("received",), hidden="summary") as rec:
        handle.model(**enc, use_cache=False)
    L = handle.n_layers
    received = torch.stack([rec.layer(layer).received_mean[0] for layer in range(L)]).numpy()      # [L, H, S]
    counted = (rec.layer(0).received_count[0] >= min(min_queries, received.shape[-1])).numpy()
    ratios = torch.stack([rec.hidden(layer).token_max[0] / rec.hidden(layer).median_abs[0].clamp_min(1e-6)
                          for layer in range(L)])                                                  # [L, S]
    dims = torch.stack([rec.hidden(layer).token_dim[0] for layer in range(L)])
    best, where = ratios.max(0)
    return TokenAttention(handle.token_strings(enc["input_ids"][0].cpu()), received, counted, best.numpy(),
                          where.numpy(), dims.gather(0, where[None])[0].numpy())


@dataclass
class HeadAttention:
    """One head on one prompt: the full map [T, S] for short prompts, else only the received profile [S]."""

    tokens: list
    layer: int
    head: int
    probs: Optional[np.ndarray]
    received: np.ndarray

    @property
    def full(self) -> bool:
        return self.probs is not None


def head_attention(handle, prompt: str, layer: int, head: int, full_limit: int = FULL_MAP_LIMIT) -> HeadAttention:
    """Attention of head L``layer``H``head`` on ``prompt``: the full map when the prompt has at most
    ``full_limit`` tokens, otherwise the received-mass profile only (the T x S map is never built)."""
    handle.check_head(layer, head)
    enc = handle.encode(check_prompt(prompt))
    n = enc["input_ids"].shape[1]
    stats = ("full", "received") if n <= full_limit else ("received",)
    with model_lock(handle), torch.no_grad(), capture(handle, stats=stats, layers=[layer]) as rec:
        handle.model(**enc, use_cache=False)
    st = rec.layer(layer)
    probs = st.probs[0, head].numpy() if n <= full_limit else None
    return HeadAttention(handle.token_strings(enc["input_ids"][0].cpu()), layer, head, probs,
                         st.received_mean[0, head].numpy())


def build_specs(act: bool = False, act_beta: float = 0.4, masks: str = "", mask_mode: str = "uniform",
                scales: str = "", scale_alpha: float = 2.0, extra: str = "") -> list[str]:
    """SPEC strings (``interventions.parse_spec`` forms) from the app's controls.

    masks / scales: heads like "L18H6, L20H6" (commas or spaces); extra: one SPEC per line.
    """
    heads = lambda text: ",".join(h.strip().upper() for h in text.replace(";", ",").replace(" ", ",").split(",") if h.strip())  # noqa: E731
    specs = []
    if act:
        specs.append(f"act:beta={act_beta:g}")
    if heads(masks):
        specs.append(f"mask:{heads(masks)}:mode={mask_mode}")
    if heads(scales):
        specs.append(f"scale:{heads(scales)}:alpha={scale_alpha:g}")
    specs.extend(line.strip() for line in extra.splitlines() if line.strip())
    return specs


def parse_specs(specs: Sequence[str]) -> list:
    """Intervention objects for ``specs``; ProbeError when the interventions package is missing or a spec is bad."""
    try:
        from interventions import parse_spec
    except ImportError as err:
        raise ProbeError(f"interventions are not available in this build ({err})",
                         "install probe with its interventions package") from err
    return [parse_spec(s) for s in specs]


@dataclass
class ABResult:
    """Baseline and intervened continuations of one prompt (greedy)."""

    prompt: str
    specs: list
    baseline: str
    intervened: str
    baseline_ids: list
    intervened_ids: list

    shared: str = ""
    baseline_rest: str = ""
    intervened_rest: str = ""

    @property
    def first_difference(self) -> Optional[int]:
        """Index of the first generated token that differs (None when both are identical)."""
        for i, (a, b) in enumerate(zip(self.baseline_ids, self.intervened_ids)):
            if a != b:
                return i
        return None if len(self.baseline_ids) == len(self.intervened_ids) else min(len(self.baseline_ids), len(self.intervened_ids))


def _greedy(handle, enc: dict, max_new_tokens: int) -> list[int]:
    out = handle.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=handle.pad_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def generate_ab(handle, prompt: str, specs: Sequence[str], max_new_tokens: int = 20,
                chat_template: bool = False) -> ABResult:
    """Greedy continuations of ``prompt`` without and with the interventions in ``specs``."""
    from interventions import intervene

    prompt = check_prompt(prompt)
    if not specs:
        raise ProbeError("no intervention chosen", "tick ACT, name heads to mask or scale, or type a SPEC")
    objs = parse_specs(specs)
    enc = handle.encode(prompt, chat_template=chat_template)
    with model_lock(handle), torch.no_grad():
        base = _greedy(handle, enc, max_new_tokens)
        with intervene(handle, *objs):
            edited = _greedy(handle, enc, max_new_tokens)
    decode = lambda ids: handle.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    result = ABResult(prompt, list(specs), decode(base), decode(edited), base, edited)
    d = result.first_difference
    d = len(base) if d is None else d
    result.shared, result.baseline_rest, result.intervened_rest = decode(base[:d]), decode(base[d:]), decode(edited[d:])
    return result
