"""Classic head detectors: previous-token, duplicate-token and induction heads.

Scores follow TransformerLens's ``detect_head`` with ``error_measure="mul"`` exactly, so numbers
compare across tools. For one sequence of n tokens (position 0 = its first token, BOS or not),
a 0/1 detection pattern D [n, n] and a head's attention map A [n, n]:

    A' = A with column 0 set to 0 if exclude_bos, and the diagonal set to 0 if exclude_current_token
    score = sum(A' * D) / sum(A')

and a list of sequences scores the mean of the per-sequence scores. The patterns:
    previous token   D[i, i-1] = 1                                   (i >= 1)
    duplicate token  D[i, j] = 1 iff token[j] == token[i] and j < i
    induction        D[i, j] = 1 iff token[j-1] == token[i] and j - 1 < i   (the token after an earlier copy)
Every row of A sums to 1, so without exclusions sum(A') = n; with them, sum(A') comes from one
more kernel pass over the restricted keys (``restricted_mass``: exact even when key 0 holds ~all of
a row, where n minus the excluded mass would cancel). Each (i, j) entry of D is computed from q, k
and the kernel's log-sum-exp (``probe.capture.pairs``): no N x N map, so the text detectors run on
long prompts.

Induction is scored on repeated random tokens (the standard test): ``count`` sequences of
``length`` random non-special tokens, each repeated twice, BOS in front when the tokenizer has one
(TransformerLens's ``to_tokens`` default). Under "mul" the first copy's queries count in the
denominator but have (almost) no targets, so a perfect induction head scores about
length / (2 * length + 1) ~ 0.5, not 1.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..capture.pairs import capture_pairs
from ..errors import ProbeError
from .base import DetectorOutput, head_frame

KINDS = ("previous-token", "duplicate-token", "induction")
COLUMNS = {"previous-token": "previous_token_score", "duplicate-token": "duplicate_token_score",
           "induction": "induction_score"}
DEFAULTS = dict(exclude_bos=False, exclude_current_token=False, batch_size=4)
INDUCTION_DEFAULTS = dict(length=64, count=8, seed=0, prepend_bos=None, exclude_bos=False,
                          exclude_current_token=False, batch_size=8)


def detection_pairs(tokens: Sequence[int], kind: str) -> tuple[list[int], list[int]]:
    """The (query, key) positions where the detection pattern of ``kind`` is 1, for one sequence."""
    n = len(tokens)
    if kind == "previous-token":
        return list(range(1, n)), list(range(0, n - 1))
    if kind not in ("duplicate-token", "induction"):
        raise ProbeError(f"unknown head kind '{kind}'", f"choose from {', '.join(KINDS)}")
    seen: dict = defaultdict(list)
    qs, ks = [], []
    shift = 1 if kind == "induction" else 0
    for i, tok in enumerate(tokens):
        for j in seen[tok]:                   # earlier copies j < i of the same token
            qs.append(i)
            ks.append(j + shift)              # induction: the token after the earlier copy (j + 1 <= i)
        seen[tok].append(i)
    return qs, ks


def _as_list(seq) -> list[int]:
    return seq.reshape(-1).tolist() if isinstance(seq, Tensor) else list(seq)


def head_scores(handle, sequences: Sequence, kind: str, *, exclude_bos: bool = False,
                exclude_current_token: bool = False, batch_size: int = 4) -> Tensor:
    """Per-sequence detection scores of every head (TransformerLens ``detect_head`` "mul" convention).

    Args:
        handle: a loaded model (``probe.load``) or a Handle over a Hugging Face model.
        sequences: token id sequences (lists or 1-D tensors), scored one by one; batched with left padding.
        kind: "previous-token", "duplicate-token" or "induction" (the detection pattern).
        exclude_bos, exclude_current_token: as in ``detect_head``.
    Returns:
        [n_sequences, n_layers, n_heads] float32 scores (mean over dim 0 = ``detect_head`` on the list).
    """
    seqs = [_as_list(s) for s in sequences]
    if any(len(s) < 2 for s in seqs):
        raise ProbeError("a sequence shorter than 2 tokens cannot be scored", "give sequences of at least 2 tokens")
    L, H = handle.n_layers, handle.n_heads
    out = torch.zeros(len(seqs), L, H)
    pad = handle.pad_id
    if pad >= int(handle.text_config.vocab_size):
        pad = 0                                       # any id the embedding has: padded keys are masked
    device = next(handle.model.parameters()).device
    for b0 in range(0, len(seqs), batch_size):
        batch = seqs[b0:b0 + batch_size]
        S = max(len(s) for s in batch)
        ids = torch.full((len(batch), S), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), S, dtype=torch.long)
        groups = []                                   # per row: (number of pattern pairs, sequence length)
        rows_q, rows_k = [], []
        for r, s in enumerate(batch):
            n, off = len(s), S - len(s)
            ids[r, off:] = torch.tensor(s)
            mask[r, off:] = 1
            qs, ks = detection_pairs(s, kind)
            keep = [(i, j) for i, j in zip(qs, ks)
                    if not (exclude_bos and j == 0) and not (exclude_current_token and i == j)]
            rows_q.append([off + i for i, _ in keep] or [-1])      # a row with no pattern entry: one unused slot
            rows_k.append([off + j for _, j in keep] or [-1])
            groups.append((len(keep), n))
        P = max(len(q) for q in rows_q)
        q_idx = torch.full((len(batch), P), -1, dtype=torch.long)
        k_idx = torch.full((len(batch), P), -1, dtype=torch.long)
        for r, (q, k) in enumerate(zip(rows_q, rows_k)):
            q_idx[r, :len(q)], k_idx[r, :len(k)] = torch.tensor(q, dtype=torch.long), torch.tensor(k, dtype=torch.long)
        restrict = (exclude_bos, exclude_current_token)     # sum(A') from the kernel, not n - excluded mass
        with torch.no_grad(), capture_pairs(handle, q_idx, k_idx, restrict=restrict) as rec:
            handle.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        for layer in range(L):
            m = rec.mass[layer].double()                                       # [B, H, P]
            for r, (n_pat, n) in enumerate(groups):
                num = m[r, :, :n_pat].sum(-1)                                  # [H]
                if exclude_bos or exclude_current_token:
                    den = rec.kept[layer][r]                                   # [H] sum(A') over the row's queries
                else:
                    den = torch.full_like(num, float(n))                      # every row of A sums to 1
                out[b0 + r, layer] = (num / den).float()
    return out


def repeated_random_tokens(handle, length: int = 64, count: int = 8, seed: int = 0,
                           prepend_bos: Optional[bool] = None) -> list[list[int]]:
    """``count`` sequences [BOS] + R + R with R ``length`` random non-special token ids (seeded)."""
    tok = handle.tokenizer
    vocab = min(len(tok), int(handle.text_config.vocab_size)) if tok is not None else int(handle.text_config.vocab_size)
    special = set(getattr(tok, "all_special_ids", []) or [])
    allowed = torch.tensor([i for i in range(vocab) if i not in special])
    bos = getattr(tok, "bos_token_id", None)
    if prepend_bos is None:
        prepend_bos = bos is not None
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(int(count)):
        r = allowed[torch.randint(len(allowed), (int(length),), generator=gen)].tolist()
        out.append(([bos] if prepend_bos and bos is not None else []) + r + r)
    return out


def _check_options(given: dict, defaults: dict, kind: str) -> None:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ProbeError(f"unknown option(s) {unknown} for detector '{kind}'", f"valid options: {', '.join(defaults)}")


def _output(handle, kind: str, scores: Tensor, settings: dict) -> DetectorOutput:
    col = COLUMNS[kind]
    heads = head_frame(handle.n_layers, handle.n_heads, handle.n_kv_heads)
    mean = scores.mean(0)                                                       # [L, H]
    heads[col] = mean.reshape(-1).numpy()
    top = heads.nlargest(5, col)
    summary = {"sequences": int(scores.shape[0]), "max_score": float(mean.max()),
               "top_heads": [f"L{int(r.layer)}H{int(r.head)}" for r in top.itertuples()],
               "convention": "TransformerLens detect_head, error_measure='mul'"}
    return DetectorOutput(heads, {}, settings, summary)


def _run_text(kind: str, handle, prompts: list[str], chat_template: bool,
              progress: Optional[Callable[[int], None]], options: dict) -> DetectorOutput:
    _check_options(options, DEFAULTS, kind)
    opts = {**DEFAULTS, **options}
    seqs = [handle.encode(p, chat_template=chat_template)["input_ids"][0] for p in prompts]
    scores = []
    for b0 in range(0, len(seqs), opts["batch_size"]):
        chunk = seqs[b0:b0 + opts["batch_size"]]
        scores.append(head_scores(handle, chunk, kind, exclude_bos=bool(opts["exclude_bos"]),
                                  exclude_current_token=bool(opts["exclude_current_token"]),
                                  batch_size=opts["batch_size"]))
        if progress:
            progress(len(chunk))
    return _output(handle, kind, torch.cat(scores), dict(opts))


def run_previous_token(handle, prompts: list[str], *, chat_template: bool = False,
                       progress: Optional[Callable[[int], None]] = None, **options) -> DetectorOutput:
    """Previous-token heads on the scan's prompts -> heads column ``previous_token_score``."""
    return _run_text("previous-token", handle, prompts, chat_template, progress, options)


def run_duplicate_token(handle, prompts: list[str], *, chat_template: bool = False,
                        progress: Optional[Callable[[int], None]] = None, **options) -> DetectorOutput:
    """Duplicate-token heads on the scan's prompts -> heads column ``duplicate_token_score``."""
    return _run_text("duplicate-token", handle, prompts, chat_template, progress, options)


def run_induction(handle, prompts: list[str], *, chat_template: bool = False,
                  progress: Optional[Callable[[int], None]] = None, **options) -> DetectorOutput:
    """Induction heads on repeated random tokens (the prompts are not used) -> ``induction_score``."""
    _check_options(options, INDUCTION_DEFAULTS, "induction")
    opts = {**INDUCTION_DEFAULTS, **options}
    seqs = repeated_random_tokens(handle, int(opts["length"]), int(opts["count"]), int(opts["seed"]),
                                  opts["prepend_bos"])
    scores = head_scores(handle, seqs, "induction", exclude_bos=bool(opts["exclude_bos"]),
                         exclude_current_token=bool(opts["exclude_current_token"]), batch_size=int(opts["batch_size"]))
    if progress:
        progress(len(prompts))
    return _output(handle, "induction", scores, dict(opts))
