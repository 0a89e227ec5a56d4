"""Tables for studies/streaming/README.md from the files perplexity.py wrote (every number in the README comes from here).

    python -m studies.streaming.report

Rewrites the README's ``<!-- table:stream_* -->`` blocks (``studies/tables.py``); ``tables(folder)`` is what
tests/test_study_tables.py recomputes.

* ``results_16k_h200.json``: 4 books x 16,384 tokens on the H200, every run written by the script itself.
* ``results.json``: Emma, 2,000 tokens on CPU. Its ``4+252`` entry was transcribed by hand from a printed line
  (session 1), so it is left out of every table here; the 16K run measures 4+252 with script-written numbers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


import numpy as np  # noqa: E402

from probe.stats import bootstrap_interval, holm, paired_bootstrap, paired_permutation  # noqa: E402
from studies.tables import main_for, markdown_table, pval  # noqa: E402

# Past-the-context comparisons, fixed here: sinks vs none at each cache size, and StreamingLLM vs dense attention.
COMPARISONS = (("4+1020", "0+1024"), ("4+252", "0+256"), ("4+1020", "dense"))
BLOCK = 1024                       # resampling unit: 1,024-token blocks of one book (tokens are not independent)
HAND_TRANSCRIBED = {"4+252"}       # results.json entries not written by perplexity.py
LABELS = {"dense": "dense (full attention, no cache limit)", "4+1020": "4 sinks + 1020 recent (StreamingLLM)",
          "0+1024": "0 + 1024 (window only)", "4+252": "4 sinks + 252 recent", "0+256": "0 + 256 (window only)"}


def _geo(values) -> float:
    """Geometric mean: the perplexity of equally sized buckets pooled."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _order(runs: dict) -> list[str]:
    return sorted(runs, key=lambda k: (k != "dense", list(LABELS).index(k) if k in LABELS else 99))



def _block_means(nll: np.ndarray, start: int) -> np.ndarray:
    """[books, predictions] per-token NLL -> [books * blocks] mean NLL of each block of ~BLOCK tokens from ``start``
    (every token used: the span is cut into round(len / BLOCK) near-equal blocks per book)."""
    past = nll[:, start:]
    nb = max(1, round(past.shape[1] / BLOCK))
    return np.stack([b.mean(-1) for b in np.array_split(past, nb, axis=1)], 1).reshape(-1)


def _past_context_stats(folder: Path, ctx: int) -> dict[str, str]:
    """Block-bootstrap intervals and paired tests on the per-token NLLs past the context (results_16k_h200.nll)."""
    from safetensors.numpy import load_file

    nll = {k: v.astype(np.float64) for k, v in load_file(str(folder / "results_16k_h200.nll.safetensors")).items()}
    start = ctx                                          # prediction index ctx predicts token ctx + 1 (the JSON's past-context)
    blocks = {k: _block_means(v, start) for k, v in nll.items()}
    rows = []
    for k in _order(nll):
        iv = bootstrap_interval(blocks[k])
        rows.append([LABELS.get(k, k), len(blocks[k]), f"{np.exp(iv.estimate):.2f} [{np.exp(iv.low):.2f}, {np.exp(iv.high):.2f}]"])
    ppl = markdown_table(["cache", f"blocks of ~{BLOCK} tokens past the context", "perplexity past the context [95% block-bootstrap CI]"], rows)
    comp = []
    for a, b in COMPARISONS:
        d = paired_bootstrap(lambda x, y: float(np.mean(x - y)), blocks[a], blocks[b])
        comp.append((a, b, d, paired_permutation(blocks[a], blocks[b])))
    adj = holm([c[3] for c in comp])
    rows = [[f"{a} vs {b}", f"{np.exp(d.estimate):.3f} [{np.exp(d.low):.3f}, {np.exp(d.high):.3f}]", f"{d.estimate:+.3f}",
             "paired sign-flip permutation over blocks", pval(p), pval(h)] for (a, b, d, p), h in zip(comp, adj)]
    tests = markdown_table(["comparison (past the context)", "perplexity ratio [95% paired block-bootstrap CI]",
                            "mean NLL difference (nats)", "test", "p", "p (Holm)"], rows)
    return {"stream_ci": ppl, "stream_tests": tests}

def tables(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    d = json.loads((folder / "results_16k_h200.json").read_text())
    runs, ctx, tokens = d["runs"], d["context"], d["tokens"]
    inside = ctx // 1024                                                     # buckets fully inside the context
    out = {}
    rows = []
    for k in _order(runs):
        v = runs[k]
        rows.append([LABELS.get(k, k), f"{v['ppl']:.2f}", f"{_geo(v['ppl_by_1024'][:inside]):.1f}",
                     f"{v['ppl_past_context']:.2f}", f"{v['ppl_last_1000']:.2f}",
                     " / ".join(f"{x:.1f}" for x in v["ppl_per_book"])])
    out["stream_16k"] = markdown_table(
        ["cache", f"ppl, all {runs['dense']['predictions']:,}", f"tokens 1-{ctx:,} (geometric mean of {inside} buckets)",
         f"past the context ({ctx + 1:,}+)", "last 1,000", "per book (" + " / ".join(d["books"]) + ")"], rows)

    nb = len(runs["dense"]["ppl_by_1024"])
    out["stream_buckets"] = markdown_table(
        ["cache"] + [f"{i + 1}K" for i in range(nb)],
        [[k] + [f"{x:.1f}" for x in runs[k]["ppl_by_1024"]] for k in _order(runs)])

    dense, s1020, w1024 = runs["dense"]["ppl_by_1024"], runs["4+1020"]["ppl_by_1024"], runs["0+1024"]["ppl_by_1024"]
    secs = [v["seconds"] for k, v in runs.items() if k != "dense"]
    out["stream_reading"] = (
        f"- Run: {len(d['books'])} books x {tokens:,} tokens ({runs['dense']['predictions']:,} predictions per book), "
        f"{d['dtype']}, one token per step; each streaming config took {min(secs):.0f}-{max(secs):.0f} s "
        f"({tokens / max(secs):.1f}-{tokens / min(secs):.1f} steps/s), the dense forward {runs['dense']['seconds']:.1f} s.\n"
        f"- Dense attention inside the context: {min(dense[:inside]):.1f}-{max(dense[:inside]):.1f} per bucket "
        f"(the {inside} buckets up to {ctx // 1024}K); past it {dense[inside + 2]:.1f} at {inside + 3}K and "
        f"{dense[-1]:.1f} at {nb}K.\n"
        f"- 4 sinks + 1020 recent: {min(s1020):.1f}-{max(s1020):.1f} per bucket all the way to {nb}K "
        f"({runs['4+1020']['ppl_past_context']:.2f} past the context vs dense's {_geo(dense[:inside]):.1f} inside it).\n"
        f"- Dropping the four sink tokens: {runs['0+1024']['ppl']:.1f} vs {runs['4+1020']['ppl']:.1f} over the whole run "
        f"({runs['0+1024']['ppl'] / runs['4+1020']['ppl']:.2f}x); the 0+1024 curve goes from {w1024[0]:.1f} to "
        f"{w1024[1]:.1f} between the 1K and 2K buckets, when token 0 leaves the window.\n")

    out.update(_past_context_stats(folder, ctx))

    cpu = json.loads((folder / "results.json").read_text())
    crow = [[LABELS.get(k, k), f"{v['ppl']:.2f}", f"{v['ppl_after_window']:.2f}", f"{v['ppl_last_1000']:.2f}"]
            for k, v in sorted(cpu["runs"].items(), key=lambda kv: kv[0] != "dense") if k not in HAND_TRANSCRIBED]
    out["stream_cpu"] = markdown_table(
        [f"cache ({cpu['book']}, first {cpu['tokens']:,} tokens)", "perplexity, all tokens",
         "after the window filled", "last 1000 tokens"], crow)
    return out


def main() -> None:
    main_for(Path(__file__).parent, tables)


if __name__ == "__main__":
    main()
