"""First-token sink mass per head of SmolLM2 (the sink-mass policy's head score), written before any
HeadwiseKV measurement: probe's sinks detector on 8 Austen passages (Pride and Prejudice) x 512 tokens.

    python -m studies.headkv.sinks        # -> studies/headkv/sinks_heads.csv (layer, head, kv_head, key0_mass, ...)
"""
from pathlib import Path


import probe  # noqa: E402
from probe.data.prompts import default_prompts  # noqa: E402

if __name__ == "__main__":
    h = probe.load("smollm2")
    heads = probe.scan(h, default_prompts(h.tokenizer, n=8, tokens=512)).heads
    heads[["layer", "head", "kv_head", "key0_mass", "sink_rate", "entropy"]].to_csv(
        Path(__file__).parent / "sinks_heads.csv", index=False)
