"""Retrieval heads (Wu et al., ICLR 2025; methods.md §4) and their causal check by masking.

Score of head (l, h) on one needle-in-a-haystack sample, during greedy decoding:
  at the step that emits token w, j* = argmax_j A_lh[query, j] (the decode row only: captured as
  top-1 through ``probe.capture(stats=("topk",), topk=1, topk_rows=1)``, never the full map);
  if s <= j* < e (the needle's token span) and prompt[j*] == w: score += 1 / (e - s).
Only samples whose answer recalls the needle (ROUGE-1 recall > 0.5) are kept; a head's retrieval
score is the mean over kept samples; retrieval heads have score > 0.1.

The causal check (NIAH recall with the top-K heads masked vs K random heads) applies an
intervention, so it lives above both detectors and interventions: ``probe.causal.retrieval``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..capture import capture
from ..data.niah import NEEDLES, NIAHSample, grid, rouge1_recall
from ..errors import ProbeError
from .base import DetectorOutput, head_frame

DEFAULTS = dict(lengths=[512, 1024, 2048], depths=[0, 25, 50, 75, 100], needles=len(NEEDLES), samples=0,
                max_new_tokens=24, batch_size=4, source="austen:emma", threshold=0.1, recall_gate=0.5, seed=0)


@dataclass
class SampleResult:
    """One decoded sample: its answer text, ROUGE-1 recall and per-head score [L, H]."""

    sample: NIAHSample
    answer: str
    recall: float
    scores: torch.Tensor      # [L, H] sum over copy events of 1 / (e - s)
    steps: int


def _pad_batch(samples: Sequence[NIAHSample], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Left-pad token lists -> input_ids [B, W], attention_mask [B, W], pad widths [B]."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    pads = []
    for b, s in enumerate(samples):
        pad = width - len(s.input_ids)
        ids[b, pad:] = torch.tensor(s.input_ids, dtype=torch.long)
        mask[b, pad:] = 1
        pads.append(pad)
    return ids.to(device), mask.to(device), pads


def _answer_steps(tokenizer, new_ids: Sequence[int]) -> tuple[str, int]:
    """The answer text and how many generated tokens belong to it: stop at EOS / end-of-turn or at
    the first newline after some text (the paper stops at a newline)."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    text, n = "", 0
    for tok_id in new_ids:
        if int(tok_id) in stops:
            break
        piece = tokenizer.decode([int(tok_id)])
        if "\n" in piece and text.strip():
            text += piece.split("\n")[0]
            break
        text += piece
        n += 1
    return text.strip(), n


def generate(handle, samples: Sequence[NIAHSample], max_new_tokens: int = 24, *, score: bool = True,
             batch_size: int = 4, progress: Optional[Callable[[int], None]] = None) -> list[SampleResult]:
    """Greedy-decode every sample; with ``score`` also accumulate each head's copy events.

    Per decode step c (= forward call c of ``model.generate``), the captured top-1 key of the
    newest query row, topk_idx [B, H, 1, 1] per layer, is compared with the token emitted at c.
    Returns one SampleResult per sample (scores [L, H]; zeros when ``score`` is False).
    """
    L, H = handle.n_layers, handle.n_heads
    tok = handle.tokenizer
    out: list[SampleResult] = []
    for i in range(0, len(samples), batch_size):
        chunk = list(samples[i:i + batch_size])
        ids, mask, pads = _pad_batch(chunk, handle.pad_id, handle.device)
        W = ids.shape[1]
        gen_kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=handle.pad_id)
        with torch.no_grad():
            if score:
                with capture(handle, stats=("topk",), topk=1, topk_rows=1) as rec:
                    seqs = handle.model.generate(**gen_kwargs)
            else:
                seqs = handle.model.generate(**gen_kwargs)
        seqs = seqs.cpu()                                                   # [B, W + n]
        n_new = seqs.shape[1] - W
        if score:
            # top-1 key per (step, layer, batch row, head): [n, L, B, H]
            top = torch.stack([torch.stack([rec.layer(l, call=c).topk_idx[:, :, -1, 0] for l in range(L)])
                               for c in range(min(n_new, len(rec.calls)))])
        for b, s in enumerate(chunk):
            new = seqs[b, W:].tolist()
            text, n = _answer_steps(tok, new)
            scores = torch.zeros(L, H)
            if score and n:
                lo, hi = s.span[0] + pads[b], s.span[1] + pads[b]
                j = top[:n, :, b, :]                                        # [n, L, H] key index in padded coordinates
                emitted = torch.tensor(new[:n])[:, None, None]              # [n, 1, 1]
                key_tok = seqs[b][j.clamp(max=seqs.shape[1] - 1)]           # [n, L, H] token at j*
                hit = (j >= lo) & (j < hi) & (key_tok == emitted)           # [n, L, H]
                scores = hit.float().sum(0) / (s.span[1] - s.span[0])       # [L, H]
            out.append(SampleResult(s, text, rouge1_recall(text, s.needle.answer), scores, n))
        if progress:
            progress(len(chunk))
    return out


def head_scores(results: Sequence[SampleResult], recall_gate: float = 0.5) -> tuple[torch.Tensor, int]:
    """Retrieval score per head [L, H] = mean over samples with recall > ``recall_gate``; and that count."""
    kept = [r.scores for r in results if r.recall > recall_gate]
    if not kept:
        L, H = results[0].scores.shape if results else (0, 0)
        return torch.zeros(L, H), 0
    return torch.stack(kept).mean(0), len(kept)


def _select(samples: list, n: int, seed: int) -> list:
    if not n or n >= len(samples):
        return samples
    rng = random.Random(seed)
    return sorted(rng.sample(samples, n), key=samples.index)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def build_samples(handle, opts: dict, chat_template: Optional[bool] = None) -> list[NIAHSample]:
    """The NIAH grid named by the options (lengths, depths, needles = count or list of indices, samples)."""
    needles = opts["needles"]
    chosen = [NEEDLES[i] for i in _as_list(needles)] if isinstance(needles, (list, tuple)) else list(NEEDLES[:int(needles)])
    if not chosen:
        raise ProbeError("no needles selected", f"needles=1..{len(NEEDLES)} or a list of indices")
    samples = grid(handle, [int(x) for x in _as_list(opts["lengths"])], [float(x) for x in _as_list(opts["depths"])],
                   chosen, source=opts["source"], chat_template=chat_template)
    return _select(samples, int(opts["samples"] or 0), int(opts["seed"]))


def results_table(results: Sequence[SampleResult]) -> pd.DataFrame:
    """Per-sample rows: needle, length, depth, span, answer, recall, kept, steps, best head."""
    rows = []
    for i, r in enumerate(results):
        s = r.sample
        flat = int(r.scores.argmax())
        H = r.scores.shape[1]
        rows.append(dict(sample=i, needle=s.needle.answer, length=s.length, depth=s.depth, actual_depth=s.actual_depth,
                         span_start=s.span[0], span_end=s.span[1], answer=r.answer, recall=r.recall, steps=r.steps,
                         best_layer=flat // H, best_head=flat % H, best_score=float(r.scores.max())))
    return pd.DataFrame(rows)


def run(handle, prompts: Optional[list] = None, *, chat_template: bool = False,
        progress: Optional[Callable[[int], None]] = None, **options) -> DetectorOutput:
    """Retrieval score of every head on a NIAH grid (``prompts`` are ignored: NIAH builds its own).

    Options: lengths (tokens), depths (%), needles (count or indices), samples (0 = whole grid,
    else a random subset), max_new_tokens, batch_size, source ("austen:<book>" / "shakespeare:<play>"),
    threshold (0.1), recall_gate (0.5), seed. The chat template is used when the model has one.
    Returns heads (layer, head, kv_head, retrieval_score, retrieval_samples, retrieval_head) and
    table "retrieval" (one row per sample).
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ProbeError(f"unknown retrieval option(s) {sorted(unknown)}", f"choose from {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    use_chat = bool(chat_template or handle.has_chat_template)
    samples = build_samples(handle, opts, chat_template=use_chat)
    results = generate(handle, samples, int(opts["max_new_tokens"]), batch_size=int(opts["batch_size"]),
                       progress=progress)
    score, kept = head_scores(results, float(opts["recall_gate"]))
    heads = head_frame(handle.n_layers, handle.n_heads, handle.n_kv_heads)
    heads["retrieval_score"] = score.reshape(-1).numpy()
    heads["retrieval_samples"] = kept
    heads["retrieval_head"] = heads["retrieval_score"] > float(opts["threshold"])
    top = heads.sort_values("retrieval_score", ascending=False).head(10)
    summary = {
        "samples": len(results),
        "samples_kept": kept,
        "niah_recall_mean": float(np.mean([r.recall for r in results])) if results else 0.0,
        "retrieval_heads": int(heads["retrieval_head"].sum()),
        "retrieval_head_fraction": float(heads["retrieval_head"].mean()),
        "top_heads": [f"L{int(r.layer)}H{int(r.head)}: {r.retrieval_score:.3f}" for r in top.itertuples()],
    }
    settings = {**opts, "chat_template": use_chat}
    return DetectorOutput(heads, {"retrieval": results_table(results)}, settings, summary)
