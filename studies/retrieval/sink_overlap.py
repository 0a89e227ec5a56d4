"""First-token sink mass of every SmolLM2 head (the sinks detector on Austen passages) -> sink_mass.csv,
so report.py can show how far the retrieval heads are also sink heads (the confound the masking
controls are matched on).

    python -m studies.retrieval.sink_overlap [--prompts 8 --tokens 256]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import probe
from probe.data.prompts import default_prompts
from probe.detect import get_detector

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    h = probe.load("smollm2", device=args.device)
    out = get_detector("sinks")(h, default_prompts(h.tokenizer, n=args.prompts, tokens=args.tokens), batch_size=4)
    out.heads[["layer", "head", "key0_mass"]].to_csv(Path(__file__).parent / "sink_mass.csv", index=False)
