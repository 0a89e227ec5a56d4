"""StreamingLLM on SmolLM2: perplexity of long Austen texts, window-only vs sinks + window vs dense.

Token by token (one forward per token, as StreamingLLM's perplexity script), each config's KV cache
is a ``SinkWindow(sinks, window)``: the first ``sinks`` tokens plus the last ``window`` ones, with
positions re-indexed inside the cache. Several books stream at once, one per batch row (same
length, no padding), so one decode loop measures them all. The dense reference is one causal
forward per book over the same tokens -- past SmolLM2's 8192-token context it runs on positions
the model never saw in training, which is the failure StreamingLLM is about.

    python -m studies.streaming.perplexity --tokens 2000 --configs 4+252,0+256 --books emma --dense \
        --out studies/streaming/results.json                                    # CPU, inside the context
    python -m studies.streaming.perplexity --device cuda --tokens 16384 --books emma,persuasion,prideprejudice,mansfieldpark \
        --configs 4+1020 --dense --out $OUT/long_4+1020.json                   # GPU, 2x the context

Outputs: a JSON of summaries (overall, last 1000 tokens, tokens past the context, per-1024-token
buckets) and, next to it, ``<out>.nll.safetensors`` with the per-token NLL [books, tokens - 1] of every run.
Partial results are written every ``--save-every`` tokens, so a run cut short still reports.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F


import probe  # noqa: E402
from interventions import SinkWindow, intervene  # noqa: E402
from probe.data.texts import austen  # noqa: E402

BUCKET = 1024


def stream_nll(handle, ids: torch.Tensor, sinks: int, window: int, on_progress=None, every: int = 1000) -> torch.Tensor:
    """Per-token NLL [B, N-1] of ids [B, N] predicted one token at a time through a SinkWindow cache.

    ``on_progress(t, nll)`` is called every ``every`` tokens with the NLL filled so far (nan after t).
    """
    model = handle.model
    B, N = ids.shape
    nll = torch.full((B, N - 1), float("nan"), device=ids.device)
    cache = None
    t0 = time.time()
    with torch.inference_mode(), intervene(handle, SinkWindow(sinks=sinks, window=window)):
        for t in range(N - 1):
            out = model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            cache = out.cache
            nll[:, t] = F.cross_entropy(out.logits[:, -1].float(), ids[:, t + 1], reduction="none")
            if (t + 1) % every == 0 or t == N - 2:
                done = nll[:, : t + 1]
                print(f"  {sinks}+{window}: {t + 1} tokens, ppl so far {math.exp(done.mean()):.2f}, "
                      f"{(t + 1) / (time.time() - t0):.1f} steps/s, cache {cache.layers[0].keys.shape[-2]}", flush=True)
                if on_progress is not None:
                    on_progress(t + 1, nll)
    return nll


def dense_nll(handle, ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL [B, N-1] with full causal attention, one forward per row (any N: past the context too)."""
    rows = []
    with torch.inference_mode():
        for row in ids:
            logits = handle.model(input_ids=row[None], use_cache=False).logits[0, :-1].float()   # [N-1, V]
            rows.append(F.cross_entropy(logits, row[1:], reduction="none"))
    return torch.stack(rows)


def summarise(nll: torch.Tensor, cache_size: int, context: int) -> dict:
    """Perplexities of nll [B, n] (nan = not computed yet): overall, after the cache filled, per bucket."""
    done = int((~nll.isnan()).all(0).sum())
    nll = nll[:, :done].double().cpu()
    ppl = lambda x: math.exp(x.mean()) if x.numel() else None  # noqa: E731
    return {
        "predictions": done,
        "ppl": ppl(nll),
        "ppl_per_book": [ppl(r) for r in nll],
        "ppl_after_cache_filled": ppl(nll[:, cache_size:]),
        "ppl_last_1000": ppl(nll[:, -1000:]),
        "ppl_past_context": ppl(nll[:, context:]),           # predictions of tokens at positions > context
        "ppl_by_1024": [ppl(nll[:, i:i + BUCKET]) for i in range(0, done, BUCKET)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--books", default="emma", help="comma-separated Austen books, one batch row each")
    ap.add_argument("--tokens", type=int, default=3500, help="tokens per book")
    ap.add_argument("--configs", default="0+256,4+252", help="sinks+window pairs, comma separated")
    ap.add_argument("--dense", action="store_true", help="also the dense (full causal attention) reference")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", action="store_true", help="keep the runs already in --out (same books and tokens)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    h = probe.load("smollm2", device=args.device, dtype=getattr(torch, args.dtype))
    books = [b for b in args.books.split(",") if b]
    ids = torch.stack([torch.tensor(h.tokenizer(austen(b)[: args.tokens * 8])["input_ids"][: args.tokens]) for b in books])
    ids = ids.to(h.device)                                                     # [B, N]
    print(f"{books}: {ids.shape[1]} tokens each (model context {h.context_length}) on {h.device}", flush=True)
    results = {"model": h.source, "model_hash": h.file_hash, "books": books, "tokens": ids.shape[1],
               "context": h.context_length, "device": str(h.device), "dtype": args.dtype, "runs": {}}
    out = Path(args.out) if args.out else None
    if args.merge and out and out.exists():
        results["runs"].update(json.loads(out.read_text())["runs"])
    curves: dict = {}

    def save() -> None:
        if out:
            out.write_text(json.dumps(results, indent=2))
            from safetensors.torch import save_file

            save_file({k: v.cpu().contiguous() for k, v in curves.items()}, str(out) + ".nll.safetensors")

    for cfg in [c for c in args.configs.split(",") if c]:
        sinks, window = (int(x) for x in cfg.split("+"))
        t0 = time.time()

        def progress(t: int, nll: torch.Tensor, cfg=cfg, size=sinks + window, t0=t0) -> None:
            curves[cfg] = nll
            results["runs"][cfg] = {**summarise(nll, size, h.context_length), "seconds": round(time.time() - t0, 1)}
            save()

        nll = stream_nll(h, ids, sinks, window, on_progress=progress, every=args.save_every)
        progress(ids.shape[1] - 1, nll)
        print(cfg, json.dumps(results["runs"][cfg]), flush=True)
    if args.dense:
        t0 = time.time()
        curves["dense"] = dense_nll(h, ids)
        results["runs"]["dense"] = {**summarise(curves["dense"], 0, h.context_length), "seconds": round(time.time() - t0, 1)}
        save()
        print("dense", json.dumps(results["runs"]["dense"]), flush=True)
    save()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
