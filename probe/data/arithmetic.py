"""Arithmetic prompts "a op b=" with counterfactuals, for arithmetic heads (methods.md §5).

Operands are single digits 0..9 and answers single digits too, because SmolLM2's tokenizer (like
LLaMA's) splits numbers into one token per digit: then a, op, b, "=" and the answer are exactly one
token each, clean and counterfactual prompts have identical lengths, and the logit difference is
between two single tokens. A few-shot prefix of the same operator precedes the query (a 135M model
needs it; ``shots=0`` drops it). Operators: "+", "-", "*" (×), "/" (÷, exact division only).

Counterfactuals: ``"operands"`` keeps the prefix and operator and draws new operands whose answer
differs; ``"operator"`` keeps the prefix and operands and swaps the operator for one whose answer
is a different single digit.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import ProbeError

OPERATORS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


def apply(op: str, a: int, b: int) -> Optional[int]:
    """a op b when it is a single digit 0..9 (exact division), else None."""
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        if b == 0 or a % b:
            return None
        r = a // b
    else:
        raise ProbeError(f"unknown operator {op!r}", f"use one of {' '.join(OPERATORS)}")
    return r if 0 <= r <= 9 else None


def valid_pairs(op: str) -> list[tuple[int, int]]:
    """All (a, b) in 0..9 whose result under ``op`` is a single digit."""
    return [(a, b) for a in range(10) for b in range(10) if apply(op, a, b) is not None]


@dataclass
class ArithPrompt:
    """One clean/counterfactual pair. ``text``/``cf_text`` are raw prompts of equal token length;
    ``answer``/``cf_answer`` single digits; positions of a, op, b in the query are counted from the end
    (a at -4, op at -3, b at -2, "=" at -1)."""

    op: str
    a: int
    b: int
    answer: int
    text: str
    cf_op: str
    cf_a: int
    cf_b: int
    cf_answer: int
    cf_text: str
    counterfactual: str


def _prefix(op: str, exclude: tuple, shots: int, rng: random.Random, sep: str) -> str:
    pool = [p for p in valid_pairs(op) if p != exclude]
    rng.shuffle(pool)
    return "".join(f"{x}{op}{y}={apply(op, x, y)}{sep}" for x, y in pool[:shots])


def make_prompts(operators: Sequence[str] = tuple(OPERATORS), n: int = 16, *, shots: int = 4,
                 counterfactual: str = "operands", seed: int = 0, sep: str = "\n") -> list[ArithPrompt]:
    """Up to ``n`` distinct clean/counterfactual pairs per operator (fewer if the operator has fewer
    valid pairs with a valid counterfactual).

    Returns a list of ArithPrompt, operator-major.
    """
    if counterfactual not in ("operands", "operator"):
        raise ProbeError(f"counterfactual={counterfactual!r}", "use 'operands' or 'operator'")
    rng = random.Random(seed)
    out = []
    for op in operators:
        if op not in OPERATORS:
            raise ProbeError(f"unknown operator {op!r}", f"use one of {' '.join(OPERATORS)}")
        pairs = valid_pairs(op)
        rng.shuffle(pairs)
        made = 0
        for a, b in pairs:
            if made >= n:
                break
            ans = apply(op, a, b)
            if counterfactual == "operands":
                options = [(x, y) for x, y in valid_pairs(op) if apply(op, x, y) != ans and x != a and y != b]
                if not options:
                    continue
                ca, cb = rng.choice(options)
                cop = op
            else:
                options = [o for o in OPERATORS if o != op and apply(o, a, b) not in (None, ans)]
                if not options:
                    continue
                cop, ca, cb = rng.choice(options), a, b
            prefix = _prefix(op, (a, b), shots, rng, sep)
            out.append(ArithPrompt(op, a, b, ans, f"{prefix}{a}{op}{b}=", cop, ca, cb, apply(cop, ca, cb),
                                   f"{prefix}{ca}{cop}{cb}=", counterfactual))
            made += 1
    return out


def digit_token_ids(tokenizer) -> list[int]:
    """Token id of each digit 0..9; ProbeError unless every digit is one token on its own."""
    ids = []
    for d in range(10):
        toks = tokenizer(str(d), add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise ProbeError(f"digit {d} is {len(toks)} tokens for this tokenizer",
                             "arithmetic prompts need single-token digits")
        ids.append(toks[0])
    return ids


def check_single_tokens(tokenizer, prompts: Sequence[ArithPrompt]) -> None:
    """Raise unless a, op, b, "=" are one token each at the end of every prompt (clean and counterfactual)."""
    for p in prompts:
        for text, (a, op, b) in ((p.text, (p.a, p.op, p.b)), (p.cf_text, (p.cf_a, p.cf_op, p.cf_b))):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            tail = [tokenizer.decode([i]) for i in ids[-4:]]
            if tail != [str(a), op, str(b), "="]:
                raise ProbeError(f"prompt {text[-8:]!r} ends in tokens {tail}",
                                 "this tokenizer merges operands/operators; use a model with digit-wise numbers")
