"""Attention-sink detectors: first-token sinks, hidden sinks (ACT) and massive activations.

Definitions (docs/methods.md §1, §6, §8):
  s_j = (1 / N_j) sum_{i sees j} A[i, j]  — mean attention key j receives from the queries that see it.
  key-0 importance = s at the first real token; sink rate (Gu et al.) = % of prompts with s_0 > eps.
  hidden sinks (ACT) = keys after the first whose s_j > threshold (0.1); only keys seen by at least
    ``min_queries`` queries count (a key near the end is seen by few queries, so its s_j is noise).
  massive activations = hidden dims of the residual stream entering a layer whose max |x| dwarfs
    the median |x|: Sun et al. (|x| > 100 and > 1000 x median) or the relative criterion
    (> ``relative_ratio`` x median) that a 135M model needs; sink dims = massive dims that fire on
    the first token in at least half of the layers from 2 on.
"""
from __future__ import annotations

from typing import Callable, Optional

import pandas as pd
import torch

from ..capture import capture
from ..capture.massive import MASSIVE_DEFAULTS, MassiveAccumulator
from .base import DetectorOutput, head_frame

DEFAULTS = dict(eps=0.3, hidden_threshold=0.1, min_queries=8, **MASSIVE_DEFAULTS, batch_size=4)


def _batches(prompts: list[str], tokenizer, batch_size: int) -> list[list[int]]:
    """Prompt indices grouped by similar length (less padding)."""
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run(handle, prompts: list[str], *, chat_template: bool = False, progress: Optional[Callable[[int], None]] = None,
        **options) -> DetectorOutput:
    """Scan ``prompts`` for first-token sinks, hidden sinks and massive activations.

    Returns heads (layer, head, kv_head, key0_mass, sink_rate, hidden_sink_mass, hidden_sink_count,
    entropy), tables "tokens" (one row per prompt x position x layer x head with a hidden sink) and
    "massive" (layer, dim, ...), and a summary (overall sink rate, sink dims, top hidden-sink tokens).
    """
    backend = options.pop("backend", None)           # native | transformer-lens | nnsight (probe.backends)
    backend_options = {k: options.pop(k) for k in ("remote",) if options.get(k)}
    opts = {**DEFAULTS, **options}
    L, H, P = handle.n_layers, handle.n_heads, len(prompts)
    key0 = torch.zeros(P, L, H)
    hidden_max = torch.zeros(P, L, H)
    hidden_count = torch.zeros(P, L, H)
    entropy = torch.zeros(P, L, H)
    token_rows: list[tuple] = []
    massive = MassiveAccumulator(L, handle.hidden_size, opts["relative_ratio"])

    for batch in _batches(prompts, handle.tokenizer, opts["batch_size"]):
        enc = handle.encode([prompts[i] for i in batch], chat_template=chat_template)
        with torch.no_grad(), capture(handle, stats=("received", "entropy"), hidden="summary", backend=backend,
                                      **backend_options) as rec:
            rec.run(**enc, use_cache=False)
        ids = enc["input_ids"].cpu()
        strings = [handle.token_strings(row) for row in ids]
        key_start = rec.layer(0).key_start
        for layer in range(L):
            st = rec.layer(layer)
            s = st.received_mean                                           # [B, H, S]
            counted = st.received_count >= opts["min_queries"]             # [B, S]
            qmask = st.query_mask                                          # [B, T]
            ent = (st.entropy * qmask[:, None]).sum(-1) / qmask.sum(-1).clamp_min(1)[:, None]  # [B, H]
            for b, p in enumerate(batch):
                ks = int(key_start[b])
                key0[p, layer] = s[b, :, ks]
                entropy[p, layer] = ent[b]
                later = s[b, :, ks + 1:] * counted[b, ks + 1:]             # [H, S - ks - 1]
                if later.shape[-1]:
                    hidden_max[p, layer] = later.max(-1).values
                    hot = later > opts["hidden_threshold"]
                    hidden_count[p, layer] = hot.sum(-1).float()
                    for h, j in hot.nonzero().tolist():
                        pos = ks + 1 + j
                        token_rows.append((p, pos - ks, strings[b][pos], layer, h, float(later[h, j])))
        massive.update(rec, strings, key_start, L)
        if progress:
            progress(len(batch))

    heads = head_frame(L, H, handle.n_kv_heads)
    flat = lambda t: t.reshape(-1).numpy()  # noqa: E731  [L, H] -> rows in (layer, head) order
    heads["key0_mass"] = flat(key0.mean(0))
    heads["sink_rate"] = flat((key0 > opts["eps"]).float().mean(0))            # fraction of prompts, 0-1
    heads["hidden_sink_mass"] = flat(hidden_max.mean(0))
    heads["hidden_sink_count"] = flat(hidden_count.mean(0))
    heads["entropy"] = flat(entropy.mean(0))
    tokens = pd.DataFrame(token_rows, columns=["prompt_id", "position", "token", "layer", "head", "received_mass"])
    massive_df, sink_dims = massive.frame(opts["massive_abs"], opts["massive_ratio"])
    top_tokens = (tokens.groupby("token")["received_mass"].agg(["count", "mean"]).sort_values("count", ascending=False)
                  .head(10).reset_index().to_dict("records")) if len(tokens) else []
    summary = {
        "sink_rate_eps": opts["eps"],
        "sink_rate": float((key0 > opts["eps"]).float().mean()),                 # fraction of (prompt, head) pairs
        "mean_key0_mass": float(key0.mean()),
        "hidden_sink_rows": len(tokens),
        "top_hidden_sink_tokens": top_tokens,
        "sink_dims": sink_dims,
    }
    settings = {k: v for k, v in opts.items()}
    settings["backend"] = getattr(rec, "backend", "native") if P else backend
    return DetectorOutput(heads, {"tokens": tokens, "massive": massive_df}, settings, summary)
