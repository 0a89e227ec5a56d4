"""Needle recall under a KV-cache policy, teacher-forced (one forward per sample and policy).

A sample is probe's needle-in-a-haystack prompt (``probe.data.niah.build_sample``: haystack, needle
at a depth, question, chat template) followed by the answer's lead-in taken from the needle itself
("The magic number hidden in the old clock tower is") and then the answer tokens (" 4729."). The
model has to copy the answer from the needle, thousands of tokens back. One forward scores every
answer token: ``exact`` = every answer token is the argmax (what greedy decoding would emit, since a
HeadwiseKV prefill equals token-by-token streaming), ``first`` = the first answer token is,
``acc`` = the fraction that are, ``nll`` = their mean negative log-likelihood (nats).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from probe.data.niah import NEEDLES, build_sample, haystack_text


@dataclass
class AnswerSample:
    """input_ids [N] = prompt + lead-in + answer; the answer occupies input_ids[answer[0]:answer[1]]."""

    input_ids: list
    answer: tuple
    needle: int
    length: int
    depth: float
    actual_depth: float
    needle_span: tuple


def lead_in(needle) -> tuple[str, str]:
    """(lead-in, answer) from the needle sentence: the text before the answer, the answer + the rest."""
    at = needle.text.index(needle.answer)
    return needle.text[:at].strip(), needle.text[at:].strip()


def answer_sample(handle, needle: int, length: int, depth: float, source: str = "austen:persuasion",
                  offset: int = 0, hay_ids: Optional[list] = None) -> AnswerSample:
    """One teacher-forced NIAH sample of ~``length`` tokens (answer included) from ``source`` at token ``offset``."""
    tok = handle.tokenizer
    if hay_ids is None:
        hay_ids = tok(haystack_text(source), add_special_tokens=False)["input_ids"]
    lead, answer = lead_in(NEEDLES[needle])
    lead_ids = tok(lead, add_special_tokens=False)["input_ids"]
    answer_ids = tok(" " + answer, add_special_tokens=False)["input_ids"]
    s = build_sample(handle, NEEDLES[needle], hay_ids[offset:], length - len(lead_ids) - len(answer_ids), depth,
                     haystack=source)
    ids = list(s.input_ids) + lead_ids + answer_ids
    start = len(s.input_ids) + len(lead_ids)
    return AnswerSample(ids, (start, start + len(answer_ids)), needle, len(ids), float(depth), s.actual_depth, tuple(s.span))


def score_sample(handle, sample: AnswerSample, policy=None) -> dict:
    """One forward of the sample under ``policy`` (an intervention, or None = unmodified): answer metrics."""
    from .core import intervene

    model = handle if isinstance(handle, torch.nn.Module) else handle.model
    ids = torch.tensor([sample.input_ids], device=model.device)
    a, b = sample.answer
    ctx = intervene(handle, policy) if policy is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=ids.shape[1] - a + 1).logits[0]
    pred = logits[:-1].float()                                   # [b - a, V]: position a-1 .. b-2 predict a .. b-1
    target = ids[0, a:b]
    hit = pred.argmax(-1) == target
    return {"exact": bool(hit.all()), "first": bool(hit[0]), "acc": float(hit.float().mean()),
            "nll": float(F.cross_entropy(pred, target))}


def score_batch(handle, samples: list, policy=None, pad_id: int = 0) -> list[dict]:
    """``score_sample`` for several samples in one forward (the same metrics, one dict per sample).

    Rows are right-padded to the longest sample with ``pad_id``; under causal attention (full heads)
    and StreamingLLM's sinks + window (streaming heads) a position never sees a later one, so the
    padding changes no scored logit and no attention mask is needed (none may be: HeadwiseKV takes
    unpadded rows from position 0).
    """
    from .core import intervene

    model = handle if isinstance(handle, torch.nn.Module) else handle.model
    n = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), n), int(pad_id), dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, :len(s.input_ids)] = torch.tensor(s.input_ids)
    ids = ids.to(model.device)
    first = min(s.answer[0] for s in samples) - 1                 # the earliest predicting position
    ctx = intervene(handle, policy) if policy is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=n - first).logits   # [B, n - first, V]
    out = []
    for i, s in enumerate(samples):
        a, b = s.answer
        pred = logits[i, a - 1 - first:b - 1 - first].float()   # [b - a, V]: positions a-1 .. b-2
        target = ids[i, a:b]
        hit = pred.argmax(-1) == target
        out.append({"exact": bool(hit.all()), "first": bool(hit[0]), "acc": float(hit.float().mean()),
                    "nll": float(F.cross_entropy(pred, target))})
    return out
