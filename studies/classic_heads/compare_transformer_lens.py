"""probe's classic head scores vs TransformerLens's own ``detect_head`` on SmolLM2, and the top heads.

Writes ``tl_agreement.json`` next to this file: per detector and exclusion setting, the per-head
absolute difference |probe - TransformerLens| ([layers, heads]) and its maximum; then probe's
scores on longer inputs (the three detectors as ``probe scan`` runs them) with the top heads.

    python -m studies.classic_heads.compare_transformer_lens
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import probe
from probe.backends.transformer_lens import boot
from probe.data.prompts import default_prompts
from probe.detect.classic import head_scores, repeated_random_tokens

TEXTS = ["The cat sat on the mat. The cat sat on the mat.",
         "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
         "When Mr. Bilbo Baggins of Bag End announced that he would shortly be celebrating his eleventy-first birthday"]
KINDS = [("previous-token", "previous_token_head"), ("duplicate-token", "duplicate_token_head"),
         ("induction", "induction_head")]


def tl_scores_of_tokens(bridge, tokens: torch.Tensor, tl_kind: str, **excl) -> torch.Tensor:
    """What detect_head does after tokenizing: the bridge's cached patterns scored by TL's own functions -> [L, H]."""
    from transformer_lens import head_detector as hd

    pattern = getattr(hd, f"get_{tl_kind}_detection_pattern")(tokens[None].cpu())
    _, cache = bridge.run_with_cache(tokens[None], remove_batch_dim=True)
    return torch.tensor([[hd.compute_head_attention_similarity_score(cache["pattern", l, "attn"][h], pattern,
                                                                      error_measure="mul", **excl)
                          for h in range(bridge.cfg.n_heads)] for l in range(bridge.cfg.n_layers)])


def main() -> None:
    from transformer_lens.head_detector import detect_head

    torch.manual_seed(0)
    h = probe.load("smollm2", device="cpu")
    bridge = boot(h)
    ids = [bridge.to_tokens(t)[0] for t in TEXTS]
    rand = [torch.tensor(s) for s in repeated_random_tokens(h, length=20, count=2, seed=0)]
    out = {"model": "smollm2", "texts": TEXTS, "random_repeated": {"length": 20, "count": 2, "seed": 0},
           "convention": "TransformerLens detect_head, error_measure='mul'; list = mean of per-sequence scores",
           "agreement": []}
    for kind, tl_kind in KINDS:
        for excl in (dict(exclude_bos=False, exclude_current_token=False), dict(exclude_bos=True, exclude_current_token=True)):
            if kind == "induction":   # random ids do not round-trip through text: detect_head's own steps on the ids
                seqs = rand
                want = torch.stack([tl_scores_of_tokens(bridge, s, tl_kind, **excl) for s in seqs]).mean(0)
            else:
                seqs = ids
                want = detect_head(bridge, TEXTS, tl_kind, **excl)
            got = head_scores(h, seqs, kind, **excl).mean(0)
            diff = (got - want).abs()
            out["agreement"].append({"detector": kind, **excl, "max_abs_diff": float(diff.max()),
                                     "median_abs_diff": float(diff.median()), "tl_max_score": float(want.max()),
                                     "per_head_abs_diff": diff.tolist()})
            print(kind, excl, f"max |diff| {float(diff.max()):.2e}")
    # probe on its own: the three detectors with their scan defaults
    t = time.perf_counter()
    prompts = default_prompts(h.tokenizer, n=4, tokens=256)            # 4 Austen passages x 256 tokens
    report = probe.scan(h, prompts, detect=["previous-token", "duplicate-token", "induction"])
    out["scan_inputs"] = "previous/duplicate: 4 Austen passages x 256 tokens; induction: 8 x (BOS + 64 random + repeat)"
    out["scan_seconds"] = round(time.perf_counter() - t, 1)
    out["top_heads"] = {c: [(f"L{int(r.layer)}H{int(r.head)}", round(float(getattr(r, c)), 3))
                            for r in report.heads.nlargest(5, c).itertuples()]
                        for c in ("previous_token_score", "duplicate_token_score", "induction_score")}
    Path(__file__).with_name("tl_agreement.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out["top_heads"], indent=1))


if __name__ == "__main__":
    main()
