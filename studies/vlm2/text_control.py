"""Can the frozen LM answer the POPE questions when it is TOLD what is in the image? (CPU, no image at all)

    python -m studies.vlm2.text_control          # -> studies/vlm2/results_resolution/text_control.jsonl.gz

studio-vlm2 trains only the projector; SmolLM2-135M-Instruct stays frozen. This control gives the frozen LM
the test scene's reference caption as plain text ("A coat at the top left and a bag at the bottom right.")
followed by the benchmark's question, and scores " Yes" vs " No" exactly as the benchmark does. Two formats:
- "plain": "{caption} Is there a {noun} in the image? Answer:" (the benchmark's prompt after the caption);
- "chat": SmolLM2's chat template, "Image: {caption}\\nIs there a {noun} in the image? Answer yes or no."
  as the user turn, scored "Yes" vs "No" as the assistant's first token.
If the LM cannot answer from a perfect description, a projector that can only feed it (soft) input cannot be
expected to make it answer either. Same 500 test scenes and 1,680 unique questions as the benchmark;
``resolution_report`` computes per-split metrics from the rows.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

from probe.data import scenes as sc
from studies.vlm2 import train as tr

HERE = Path(__file__).resolve().parent
OUT = HERE / "results_resolution" / "text_control.jsonl.gz"
FORMATS = {
    "plain": (lambda cap, noun: f"{cap} " + sc.EXISTS_PROMPT.format(noun=noun), (" Yes", " No")),
    "chat": (lambda cap, noun: f"<|im_start|>user\nImage: {cap}\nIs there a {noun} in the image? Answer yes or no."
                               f"<|im_end|>\n<|im_start|>assistant\n", ("Yes", "No")),
}


@torch.no_grad()
def run(n_test: int = 500, batch: int = 64) -> list[dict]:
    """Rows {scene, cls, noun, answer, condition ("text_plain" / "text_chat"), lp_yes, lp_no, pred} for the
    benchmark's unique questions (questions.json of the retraining call)."""
    import probe

    h = probe.load("smollm2", device="cpu", dtype=torch.float32)
    tok = h.tokenizer
    tests = tr.test_scenes(tr.pools(None), n_test)
    qs = json.loads((HERE / "results_resolution" / "questions.json").read_text())["splits"]
    unique = sorted({(s, c): a for split in qs.values() for s, c, a in split}.items())
    rows = []
    for name, (fmt, (yw, nw)) in FORMATS.items():
        y, n = tok(yw, add_special_tokens=False).input_ids[0], tok(nw, add_special_tokens=False).input_ids[0]
        for s0 in range(0, len(unique), batch):
            part = unique[s0:s0 + batch]
            texts = [fmt(sc.caption(tests[s]).strip(), sc.NOUNS[c]) for (s, c), _ in part]
            enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
            lp = torch.log_softmax(h.model(**enc, use_cache=False).logits[:, -1].float(), -1)     # [b, V]
            for ((s, c), a), ly, ln in zip(part, lp[:, y].tolist(), lp[:, n].tolist()):
                rows.append({"scene": s, "cls": c, "noun": sc.NOUNS[c], "answer": a, "condition": f"text_{name}",
                             "lp_yes": ly, "lp_no": ln, "pred": "yes" if ly > ln else "no"})
    return rows


if __name__ == "__main__":
    rows = run()
    with gzip.open(OUT, "wt") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for cond in sorted({r["condition"] for r in rows}):
        acc = np.mean([r["pred"] == r["answer"] for r in rows if r["condition"] == cond])
        print(f"{cond}: accuracy over unique questions {acc:.3f}")
    print(f"wrote {OUT}")
