"""Retrieval heads on SmolLM2 (methods.md §4): detection at two haystack lengths, then masking with
controls matched on layer and on first-token sink mass, and a non-retrieval control task.

Run from the repository root:  python -m studies.retrieval.run [--device cuda]
then:                          python -m studies.retrieval.report   (README tables)

Pre-registered (SETTINGS): per haystack length, heads are scored on detection depths and the top K by
retrieval score are masked (uniform attention at decode steps, ``HeadMask(decode_only=True)``) on
*other* depths of the same needles. Controls, DRAWS draws each, drawn outside the top ``exclude_top``
retrieval heads of that length:
- ``layer_matched``: one random head from the layer of each top head;
- ``sink_matched``: for each top head, one of the ``sink_pool`` heads whose first-token sink mass
  (``key0_mass`` from the sinks detector on Austen prompts, sink_mass.csv) is closest to it.
Control task: next-token NLL on 32 continuation tokens of ordinary text (Austen's *Persuasion*, not
the haystack book) fed one token per step after an unmasked 256-token prefill, under the same masks
(the same decode-only regime).

Writes: heads_<length>.csv (score per head), detect_samples.csv (detection samples), sink_mass.csv,
eval_items.csv (per length x condition x draw x sample: recall), nll_items.csv (per length x
condition x draw x passage: mean NLL), conditions.csv (heads per condition), settings.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import probe
from probe.data.prompts import default_prompts
from probe.detect import get_detector
from probe.causal import retrieval as causal
from probe.detect import retrieval as R

OUT = Path(__file__).parent
SETTINGS = dict(lengths=[1000, 2000], needles=[0, 1, 2, 3], detect_depths=[0, 50, 100], eval_depths=[20, 40, 60, 80],
                k=5, exclude_top=20, draws=10, sink_pool=3, max_new_tokens=20, nll_passages=16, nll_prefix=256,
                nll_tokens=32, nll_source="austen:persuasion", sink_prompts=8, sink_tokens=256)


def head_list(hs) -> str:
    return " ".join(f"L{l}H{h}" for l, h in hs)


def control_sets(top: list, order: list, key0: dict, n_heads: int, s: dict, seed: int) -> dict:
    """{"layer_matched": [draws x K heads], "sink_matched": [...]} drawn outside the top ``exclude_top``."""
    excluded = set(order[:s["exclude_top"]]) | set(top)
    rng = random.Random(seed)
    out = {"layer_matched": [], "sink_matched": []}
    candidates = [hd for hd in key0 if hd not in excluded]
    for _ in range(s["draws"]):
        lm, sm = [], []
        for l, h in top:
            pool = [(l, x) for x in range(n_heads) if (l, x) not in excluded and (l, x) not in lm]
            # a layer whose every head is among the top ``exclude_top``: fall back to its heads outside the
            # masked top K, then to any unmasked head (only degenerate rankings; conditions.csv lists every set)
            pool = pool or [(l, x) for x in range(n_heads) if (l, x) not in top and (l, x) not in lm]
            pool = pool or [c for c in key0 if c not in top and c not in lm]
            lm.append(rng.choice(pool))
            near = sorted((c for c in candidates if c not in sm), key=lambda c: abs(key0[c] - key0[(l, h)]))
            sm.append(rng.choice(near[:s["sink_pool"]]))
        out["layer_matched"].append(lm)
        out["sink_matched"].append(sm)
    return out


def continuation_nll(handle, ids: torch.Tensor, prefix: int, heads) -> np.ndarray:
    """Mean NLL per passage [P] of ids[:, prefix:] given ids[:, :prefix], fed one token per step
    (decode steps) with ``heads`` masked uniform at decode steps. ids: [P, prefix + n]."""
    from interventions import HeadMask, intervene

    ivs = (HeadMask(heads, mode="uniform", decode_only=True),) if heads else ()
    dev = handle.device
    ids = ids.to(dev)
    nll = torch.zeros(ids.shape[0], device=dev)
    with torch.no_grad(), intervene(handle, *ivs):
        out = handle.model(input_ids=ids[:, :prefix], use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
        for t in range(prefix, ids.shape[1]):
            nll += torch.nn.functional.cross_entropy(logits.float(), ids[:, t], reduction="none")
            if t + 1 < ids.shape[1]:
                out = handle.model(input_ids=ids[:, t:t + 1], past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1]
    return (nll / (ids.shape[1] - prefix)).cpu().numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the plumbing, numbers mean nothing")
    args = ap.parse_args()
    s = {**SETTINGS, **(dict(lengths=[300], needles=[2], detect_depths=[50], eval_depths=[30, 70], draws=2, nll_passages=2, nll_prefix=32, nll_tokens=4, sink_prompts=2, sink_tokens=64, max_new_tokens=12) if args.quick else {})}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    h = probe.load(args.model, device=args.device, dtype=torch.float32)

    def write_settings(**extra) -> None:           # at the start (a stopped run keeps it) and at the end
        (out / "settings.json").write_text(json.dumps(
            {**s, "model": h.source, "model_hash": h.file_hash, "device": args.device,
             "command": "python -m studies.retrieval.run " + " ".join(sys.argv[1:]), **extra}, indent=1))

    write_settings(seconds=None)

    sinks = get_detector("sinks")(h, default_prompts(h.tokenizer, n=s["sink_prompts"], tokens=s["sink_tokens"]),
                                  batch_size=8)
    sinks.heads[["layer", "head", "key0_mass"]].to_csv(out / "sink_mass.csv", index=False)
    key0 = {(int(r.layer), int(r.head)): float(r.key0_mass) for r in sinks.heads.itertuples()}
    log("sink mass measured")

    from probe.data.niah import haystack_text
    text_ids = h.tokenizer(haystack_text(s["nll_source"]), add_special_tokens=False)["input_ids"]
    span = s["nll_prefix"] + s["nll_tokens"]
    starts = np.linspace(2000, len(text_ids) - span - 1, s["nll_passages"]).astype(int)
    nll_ids = torch.tensor([text_ids[a:a + span] for a in starts])                        # [P, prefix + n]

    det_rows, items, nll_rows, conds = [], [], [], []
    for length in s["lengths"]:
        det = R.run(h, lengths=[length], depths=s["detect_depths"], needles=s["needles"],
                    max_new_tokens=s["max_new_tokens"], batch_size=args.batch_size)
        heads = det.heads.sort_values("retrieval_score", ascending=False)
        heads.merge(sinks.heads[["layer", "head", "key0_mass"]], on=["layer", "head"]).to_csv(
            out / f"heads_{length}.csv", index=False)
        det_rows.append(det.tables["retrieval"].assign(length_budget=length))
        order = [(int(r.layer), int(r.head)) for r in heads.itertuples()]
        top = order[:s["k"]]
        log(f"length {length}: detection {json.dumps(det.summary)}")
        sets = [("none", 0, []), ("top", 0, top)]
        ctrl = control_sets(top, order, key0, h.n_heads, s, seed=length)
        sets += [(kind, d, hs) for kind in ("layer_matched", "sink_matched") for d, hs in enumerate(ctrl[kind])]
        opts = {**R.DEFAULTS, "lengths": [length], "depths": s["eval_depths"], "needles": s["needles"]}
        evals = R.build_samples(h, opts, chat_template=h.has_chat_template)
        for kind, d, hs in sets:
            rec = causal.niah_recall(h, evals, hs, max_new_tokens=s["max_new_tokens"], batch_size=args.batch_size)
            nll = continuation_nll(h, nll_ids, s["nll_prefix"], hs)
            conds.append(dict(length=length, condition=kind, draw=d, heads=head_list(hs),
                              key0_mass_mean=float(np.mean([key0[x] for x in hs])) if hs else np.nan))
            items += [dict(length=length, condition=kind, draw=d, sample=i, needle=e.needle.answer, depth=e.depth,
                           recall=r) for i, (e, r) in enumerate(zip(evals, rec))]
            nll_rows += [dict(length=length, condition=kind, draw=d, passage=i, nll=float(x)) for i, x in enumerate(nll)]
            log(f"length {length} {kind} {d}: recall {np.mean(rec):.3f}, nll {np.mean(nll):.3f}")
            pd.concat(det_rows).to_csv(out / "detect_samples.csv", index=False)               # after every condition
            pd.DataFrame(items).to_csv(out / "eval_items.csv", index=False)
            pd.DataFrame(nll_rows).to_csv(out / "nll_items.csv", index=False)
            pd.DataFrame(conds).to_csv(out / "conditions.csv", index=False)
    write_settings(seconds=round(time.time() - t0, 1))
    log("done")


if __name__ == "__main__":
    main()
