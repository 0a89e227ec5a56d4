"""StreamingLLM on SmolLM2: perplexity of a long Austen text, window-only vs sinks + window.

Token by token (one forward per token, as StreamingLLM's perplexity script), each config's KV cache
is a ``SinkWindow(sinks, window)``: the first ``sinks`` tokens plus the last ``window`` ones, with
positions re-indexed inside the cache. A dense (full causal attention) reference is computed in one
forward when the text fits the model's context.

    python studies/streaming/perplexity.py --tokens 3500 --configs 0+256,4+252,1+255 --out studies/streaming/results.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, ahead of the editable-install finder

import probe  # noqa: E402
from interventions import SinkWindow, intervene
from probe.data.texts import austen  # noqa: E402


def stream_nll(handle, ids: torch.Tensor, sinks: int, window: int, log_every: int = 500) -> torch.Tensor:
    """Per-token NLL [N-1] of ids [N] predicted one token at a time through a SinkWindow cache."""
    model = handle.model
    nll = torch.empty(len(ids) - 1)
    cache = None
    t0 = time.time()
    with torch.inference_mode(), intervene(handle, SinkWindow(sinks=sinks, window=window)):
        for t in range(len(ids) - 1):
            out = model(input_ids=ids[t:t + 1][None], cache=cache, use_cache=True)
            cache = out.cache
            nll[t] = F.cross_entropy(out.logits[0, -1].float(), ids[t + 1])
            if log_every and (t + 1) % log_every == 0:
                print(f"  {sinks}+{window}: {t + 1} tokens, ppl so far {math.exp(nll[:t + 1].mean()):.2f}, "
                      f"{(t + 1) / (time.time() - t0):.1f} tok/s, cache {cache.layers[0].keys.shape[-2]}", flush=True)
    return nll


def dense_nll(handle, ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL [N-1] with full causal attention in one forward (needs N <= context)."""
    with torch.inference_mode():
        logits = handle.model(input_ids=ids[None], use_cache=False).logits[0, :-1].float()   # [N-1, V]
    return F.cross_entropy(logits, ids[1:], reduction="none")


def summarise(nll: torch.Tensor, window: int) -> dict:
    after = nll[window:]                      # predictions made after eviction started
    return {"ppl": math.exp(nll.mean()), "ppl_after_window": math.exp(after.mean()) if len(after) else None,
            "ppl_last_1000": math.exp(nll[-1000:].mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--book", default="emma")
    ap.add_argument("--tokens", type=int, default=3500)
    ap.add_argument("--configs", default="0+256,4+252", help="sinks+window pairs, comma separated")
    ap.add_argument("--dense", action="store_true", help="also compute the dense reference (N <= context)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", action="store_true", help="keep the runs already in --out (same book and tokens)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    h = probe.load("smollm2")
    text = austen(args.book)
    ids = torch.tensor(h.tokenizer(text[: args.tokens * 8])["input_ids"][: args.tokens])
    print(f"{args.book}: {len(ids)} tokens (model context {h.context_length})", flush=True)
    results = {"model": h.source, "model_hash": h.file_hash, "book": args.book, "tokens": len(ids), "runs": {}}
    if args.merge and args.out and Path(args.out).exists():
        results["runs"].update(json.loads(Path(args.out).read_text())["runs"])
    for cfg in [c for c in args.configs.split(",") if c]:
        sinks, window = (int(x) for x in cfg.split("+"))
        t0 = time.time()
        nll = stream_nll(h, ids, sinks, window)
        r = summarise(nll, sinks + window)
        r["seconds"] = round(time.time() - t0, 1)
        results["runs"][cfg] = r
        print(cfg, json.dumps(r), flush=True)
    if args.dense and len(ids) <= h.context_length:
        results["runs"]["dense"] = summarise(dense_nll(h, ids), 256)
        print("dense", json.dumps(results["runs"]["dense"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
