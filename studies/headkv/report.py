"""Tables for studies/headkv/README.md from the H200 run's files in results/ (every number in the README comes from here).

    python -m studies.headkv.report
Rewrites the README's ``<!-- table:headkv_* -->`` blocks (``studies/tables.py``) and writes results/summary.json.
``tables(folder)`` is what tests/test_study_tables.py recomputes; ``summary_row(folder)`` is this study's row in the
top-level README.

Analysis (fixed before the H200 run; README "Settings"): needle recall on the prompts every measured policy saw.
Per window and budget, retrieval-head selection is compared with
  * uniform random KV heads and layer-matched random KV heads: effect = exact recall minus the mean over the draws,
    95 % paired bootstrap interval over prompts, two-sided sign-flip permutation p over prompts (prompt
    variation), plus how many single draws reach the retrieval choice's recall (head-choice variation);
  * the lowest-first-token-sink-mass heads: effect = the recall difference, paired bootstrap interval, exact McNemar p.
All p-values are Holm-adjusted together. "Beats" = Holm p < 0.05, the interval above 0, and no random draw at or
above the retrieval choice.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd


from probe.stats import (bootstrap_interval, holm, mcnemar_exact, paired_bootstrap, paired_permutation,  # noqa: E402
                         wilson_interval)
from studies.tables import ci, main_for, markdown_table, num, pval  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY = ["needle", "length", "depth"]
RUN = ["policy", "budget", "window", "draw"]
CHOSEN = ("retrieval", "sinkmass")
RANDOM = ("random", "random-layers")
LABEL = {"full": "full attention", "streaming": "StreamingLLM everywhere", "retrieval": "retrieval heads (probe)",
         "sinkmass": "lowest first-token sink mass", "random": "random KV heads",
         "random-layers": "random, same layers as retrieval", "full-headwise": "HeadwiseKV, every head full",
         "full-nocudnn": "full attention, SDPA without cuDNN"}
KV_HEADS = 90                                         # SmolLM2-135M: 30 layers x 3 KV heads


def common_prompts(items: pd.DataFrame) -> pd.DataFrame:
    """Only the prompts every measured run (policy, budget, window, draw) saw; ``item`` renumbered by prompt."""
    keys = None
    for _, g in items.groupby(RUN):
        k = set(map(tuple, g[KEY].values.tolist()))
        keys = k if keys is None else keys & k
    keep = items[[tuple(r) in keys for r in items[KEY].values.tolist()]].copy()
    order = {k: i for i, k in enumerate(sorted(keys))}
    keep["item"] = [order[tuple(r)] for r in keep[KEY].values.tolist()]
    return keep.sort_values(RUN + ["item"])


def _budget(b: float) -> str:
    return "100 %" if b >= 1 else f"{b:.1%} ({round(b * KV_HEADS) if b else 0})".replace("%", " %")


def _wilson(x: pd.Series) -> str:
    iv = wilson_interval(int(x.sum()), len(x))
    return ci(iv.estimate, iv.low, iv.high, 2)


def _per_item(rows: pd.DataFrame) -> np.ndarray:
    """[items] exact recall per prompt (mean over draws for random policies)."""
    return rows.groupby("item").exact.mean().sort_index().values.astype(float)


def niah_rows(items: pd.DataFrame) -> list[list]:
    rows = []
    full = items[items.policy == "full"]
    if len(full):
        rows.append(["–", LABEL["full"], "100 %", _wilson(full.exact), num(full["first"].mean(), 2), num(full.nll.mean(), 2), ""])
    for W in sorted(items.loc[items.window > 0, "window"].unique()):
        sub = items[items.window == W]
        st = sub[sub.policy == "streaming"]
        if len(st):
            rows.append([int(W), LABEL["streaming"], _budget(0), _wilson(st.exact), num(st["first"].mean(), 2), num(st.nll.mean(), 2), ""])
        for b in sorted(sub.loc[sub.budget.between(0.01, 0.99), "budget"].unique()):
            at = sub[sub.budget == b]
            for name in CHOSEN + RANDOM:
                r = at[at.policy == name]
                if not len(r):
                    continue
                if name in RANDOM:
                    d = r.groupby("draw").exact.mean()
                    rows.append([int(W), LABEL[name], _budget(b), f"{d.mean():.2f} (draws {d.min():.2f}–{d.max():.2f})",
                                 num(r["first"].mean(), 2), num(r.nll.mean(), 2), f"{len(d)} draws"])
                else:
                    rows.append([int(W), LABEL[name], _budget(b), _wilson(r.exact), num(r["first"].mean(), 2),
                                 num(r.nll.mean(), 2), ""])
    return rows


def _against_retrieval(df: pd.DataFrame, per):
    """(window, budget, other policy, ``per``(retrieval's rows), ``per``(the other's rows), the other's rows) for every
    window and partial budget where retrieval ran, the others in the order random, random-layers, sinkmass."""
    for (W, b), at in df[df.budget.between(0.01, 0.99)].groupby(["window", "budget"]):
        ret = at[at.policy == "retrieval"]
        if not len(ret):
            continue
        r = per(ret)
        for other in RANDOM + ("sinkmass",):
            o_rows = at[at.policy == other]
            if len(o_rows):
                yield W, b, other, r, per(o_rows), o_rows


def comparisons(items: pd.DataFrame) -> pd.DataFrame:
    """One row per pre-registered comparison (retrieval vs random / random-layers / sinkmass), Holm over all."""
    out = []
    for W, b, other, r, o, o_rows in _against_retrieval(items, _per_item):
        iv = paired_bootstrap(lambda a, c: a.mean() - c.mean(), r, o)
        row = {"window": int(W), "budget": float(b), "comparison": f"retrieval vs {other}", "effect": iv.estimate,
               "low": iv.low, "high": iv.high, "n_prompts": len(r)}
        if other in RANDOM:
            d = o_rows.groupby("draw").exact.mean()
            row.update(test="sign-flip permutation over prompts", p=paired_permutation(r, o),
                       draws=len(d), draws_at_or_above=int((d >= r.mean()).sum()))
        else:
            m = mcnemar_exact(r.astype(bool), o.astype(bool))
            row.update(test=f"exact McNemar ({m.only_a} vs {m.only_b} discordant)", p=m.p_value, draws=0,
                       draws_at_or_above=0)
        out.append(row)
    df = pd.DataFrame(out)
    if len(df):
        df["p_holm"] = holm(df.p.values)
        df["beats"] = (df.p_holm < 0.05) & (df.low > 0) & (df.draws_at_or_above == 0)
    return df


def by_length_depth(items: pd.DataFrame) -> tuple[list[str], list[list]]:
    lengths = sorted(items.length_bin.unique())
    depths = sorted(items.depth.unique())
    header = ["window", "policy", "KV heads full"] + [f"~{L} tok" for L in lengths] + [f"depth {d:g} %" for d in depths]
    rows = []
    order = [(0, 1.0, "full")] + [(W, b, name) for W in sorted(items.loc[items.window > 0, "window"].unique())
                                  for b, name in [(0.0, "streaming")] + [(0.25, n) for n in CHOSEN + RANDOM]]
    for W, b, name in order:
        g = items[(items.window == W) & ((items.budget - b).abs() < 1e-9) & (items.policy == name)]
        if not len(g):
            continue
        rows.append([int(W) if W else "–", LABEL[name], _budget(b)] +
                    [num(g[g.length_bin == L].exact.mean(), 2) for L in lengths] +
                    [num(g[g.depth == d].exact.mean(), 2) for d in depths])
    return header, rows


def _ppl_chunks(g: pd.DataFrame) -> pd.DataFrame:
    """[book, from_token] -> nll (mean over draws), n: one row per 1024-token chunk."""
    chunk = g.groupby(["book", "from_token", "draw"]).agg(nll=("nll_sum", "sum"), n=("tokens", "sum")).reset_index()
    return chunk.groupby(["book", "from_token"]).agg(nll=("nll", "mean"), n=("n", "mean")).sort_index().reset_index()


def _ordered(df: pd.DataFrame):
    """(window, budget, policy, rows) in reading order: full; per window streaming, then per budget the policies."""
    yield 0, 1.0, "full", df[df.policy == "full"]
    for W in sorted(df.loc[df.window > 0, "window"].unique()):
        sub = df[df.window == W]
        yield W, 0.0, "streaming", sub[sub.policy == "streaming"]
        for b in sorted(sub.loc[sub.budget.between(0.01, 0.99), "budget"].unique()):
            for name in CHOSEN + RANDOM:
                yield W, b, name, sub[((sub.budget - b).abs() < 1e-9) & (sub.policy == name)]


def ppl_rows(ppl: pd.DataFrame) -> tuple[list[list], list[dict]]:
    rows, summary = [], []
    for W, b, name, g in _ordered(ppl):
        if not len(g):
            continue
        chunk = g.groupby(["book", "from_token", "draw"]).agg(nll=("nll_sum", "sum"), n=("tokens", "sum")).reset_index()
        per_draw = chunk.groupby("draw").apply(lambda c: math.exp(c.nll.sum() / c.n.sum()), include_groups=False)
        pooled = _ppl_chunks(g)
        total = math.exp(pooled.nll.sum() / pooled.n.sum())
        late = pooled[pooled.from_token > 4096]
        late_ppl = math.exp(late.nll.sum() / late.n.sum()) if len(late) else float("nan")
        iv = bootstrap_interval((pooled.nll / pooled.n).values, statistic=np.mean)
        draws = f"{len(per_draw)} draws: {per_draw.min():.2f}–{per_draw.max():.2f}" if name in RANDOM else ""
        rows.append([int(W) if W else "–", LABEL[name], _budget(b), ci(total, math.exp(iv.low), math.exp(iv.high), 2),
                     num(late_ppl, 2), draws])
        summary.append({"policy": name, "budget": float(b), "window": int(W), "ppl": total, "ppl_after_4096": late_ppl,
                        "draws": int(len(per_draw))})
    return rows, summary


def ppl_comparisons(ppl: pd.DataFrame) -> list[list]:
    """Exploratory (not pre-registered): retrieval's mean NLL per token minus the other policy's, paired over the
    1024-token chunks (random: mean over draws); paired bootstrap interval, sign-flip p, Holm over the rows."""
    rows, ps = [], []
    for W, b, other, r, o, o_rows in _against_retrieval(ppl, _ppl_chunks):
        x, y = (r.nll / r.n).values, (o.nll / o.n).values
        iv = paired_bootstrap(lambda u, v: u.mean() - v.mean(), x, y)
        p = paired_permutation(x, y)
        ps.append(p)
        below = ""
        if other in RANDOM:
            per_draw = o_rows.groupby("draw").apply(lambda c: c.nll_sum.sum() / c.tokens.sum(), include_groups=False)
            below = f"{int((per_draw <= r.nll.sum() / r.n.sum()).sum())} of {len(per_draw)}"
        rows.append([int(W), _budget(b), f"retrieval vs {other}", ci(iv.estimate, iv.low, iv.high, 3), pval(p), below])
    for row, q in zip(rows, holm(ps) if ps else []):
        row.insert(5, pval(q))
    return rows


ORDER = {"full": 0, "full-nocudnn": 1, "full-headwise": 2, "retrieval": 3, "sinkmass": 4, "streaming": 5}
CALLS = (("results_d", "fourth call: after the second host-path change (fewer ops per streaming layer and step)"),
         ("results_c", "third call: after the first host-path change (no sync or copy per layer and step)"))


def _decode_sorted(dec: pd.DataFrame) -> pd.DataFrame:
    """Longest prompt first, then full attention, HeadwiseKV all full, retrieval budgets, StreamingLLM."""
    key = dec.assign(_p=-dec.prompt_tokens, _o=dec.policy.map(ORDER).fillna(9), _b=-dec.budget)
    return key.sort_values(["_p", "_o", "_b"], kind="stable").drop(columns=["_p", "_o", "_b"])


def decode_rows(dec: pd.DataFrame) -> tuple[list[str], list[list]]:
    """(header, rows) of the memory / speed table; "vs full" against full attention at the same prompt length.
    The third call's columns (repeats, step times, kernel time, syncs) appear when its file has them."""
    timed = "repeats" in dec.columns
    header = ["policy", "window", "KV heads full", "tokens in cache", "KV cache", "bytes / token", "vs full",
              "peak decode memory"]
    header += (["decode tok/s, median of runs [min–max]", "ms / step (median)", "GPU kernels ms / step", "syncs / step",
                "prefill s"] if timed else ["decode tok/s", "prefill s"])
    rows = []
    for r in _decode_sorted(dec).itertuples():
        full = dec[(dec.policy == "full") & (dec.prompt_tokens == r.prompt_tokens)].iloc[0]
        row = [LABEL.get(r.policy, r.policy), r.window or "–", _budget(r.budget), int(r.seq_len),
               f"{r.kv_bytes / 2**20:.1f} MiB", f"{r.kv_bytes_per_token:,.0f}", f"{r.kv_bytes / full.kv_bytes:.1%}",
               f"{r.peak_decode_bytes / 2**20:.0f} MiB"]
        if timed:
            dev = getattr(r, "profile_device_ms", float("nan"))
            syncs = getattr(r, "syncs_per_step", float("nan"))
            row += [f"{r.decode_tok_s:.1f} [{r.decode_tok_s_min:.1f}–{r.decode_tok_s_max:.1f}]", f"{r.step_ms_median:.2f}",
                    "–" if pd.isna(dev) else f"{dev:.2f}", "–" if pd.isna(syncs) else f"{syncs:g}", f"{r.prefill_s:.3f}"]
        else:
            row += [f"{r.decode_tok_s:.1f}", f"{r.prefill_s:.3f}"]
        rows.append(row)
    return header, rows


def decode_notes(dec: pd.DataFrame, syncs_from_first_step: bool = False) -> str:
    """What the decode table says about where a step's time goes (bullets computed from the same file)."""
    if "repeats" not in dec.columns:
        return ("- Timed after a warm-up at ~1K tokens: the decode kernel's split count differs at 8K, so the timed "
                "steps may include Triton compiles; the speeds are not clean measurements.\n")
    n = dec.prompt_tokens.max()
    at = dec[dec.prompt_tokens == n]

    def one(name, b=None, frame=at):
        rows = frame[(frame.policy == name) & (True if b is None else (frame.budget - b).abs() < 1e-9)]
        return rows.iloc[0] if len(rows) else None

    full, hw, ret, st = one("full"), one("full-headwise"), one("retrieval", 0.25), one("streaming")
    out = [f"- **Timing:** per policy one untimed warm-up run (the same {n}-token prompt and "
           f"{int(full.decode_steps)} steps), then {int(full.repeats)} timed runs; a step is timed between CUDA events "
           f"on the model's stream, so host launch gaps count. The warm-up runs' decode took up to "
           f"{(at.warmup_decode_s / at.decode_s).max():.1f}x the timed runs' (Triton compiles and first-use costs, "
           "now outside the timing)."]
    if "profile_device_ms" in at.columns and at.profile_device_ms.notna().any():
        parts = [f"{LABEL.get(r.policy, r.policy)}{'' if r.policy in ('full', 'full-headwise', 'streaming') else ' ' + _budget(r.budget)}: "
                 f"{r.profile_device_ms:.2f} of {r.step_ms_median:.2f} ms ({r.profile_device_ms / r.step_ms_median:.0%})"
                 for r in _decode_sorted(at).itertuples() if not pd.isna(r.profile_device_ms)]
        out.append("- **Where a step's time goes:** the GPU kernels' own time per step (one profiled step) against the "
                   "median step: " + "; ".join(parts) + ". The rest is the host (Python, launches) with the GPU idle: "
                   "at batch 1 a 135M-parameter model's decode is host-bound, so KV bytes barely move the step time.")
    first = [f"full attention (SDPA; cuDNN kernels in the profile) {full.warmup_decode_s:.2f} s vs {full.decode_s:.2f} s"]
    nocudnn = one("full-nocudnn")
    if nocudnn is not None:
        first.append(f"full attention with SDPA's cuDNN backend off {nocudnn.warmup_decode_s:.2f} s vs {nocudnn.decode_s:.2f} s")
    if hw is not None:
        first.append(f"HeadwiseKV with every head full (Triton, no SDPA) {hw.warmup_decode_s:.2f} s vs {hw.decode_s:.2f} s")
    short_full = dec[(dec.policy == "full") & (dec.prompt_tokens < n)]
    again = ""
    if len(short_full) and (short_full.warmup_decode_s / short_full.decode_s).iloc[0] > 1.5:
        r = short_full.iloc[0]
        again = (f" Full attention paid it again at the {int(r.prompt_tokens)}-token prompt after the {n}-token rows had "
                 f"run ({r.warmup_decode_s:.2f} s vs {r.decode_s:.2f} s), so it comes with new cache lengths, not once per "
                 "process: a generation that reaches lengths not seen before pays it, the timed rows (lengths seen in "
                 "the warm-up) do not. The earlier calls' slow full-attention rows (warm-up at other lengths) fit this.")
    out.append("- **First use of a cache length:** decode seconds of the warm-up run (the first time at these cache "
               "lengths) vs a timed run: " + "; ".join(first) + "." + again)
    short = dec[dec.prompt_tokens < n]
    fs = one("full", frame=short) if len(short) else None
    if fs is not None:
        out.append(f"- **Cache length:** full attention's step is {fs.step_ms_median:.2f} ms at {int(fs.seq_len)} tokens "
                   f"and {full.step_ms_median:.2f} ms at {int(full.seq_len)} tokens.")
    if ret is not None and hw is not None:
        extra, seam = ret.step_ms_median - full.step_ms_median, hw.step_ms_median - full.step_ms_median
        out.append(f"- **Head-wise vs full attention:** retrieval heads {_budget(0.25)} take {ret.step_ms_median:.2f} ms "
                   f"per step, full attention {full.step_ms_median:.2f} ms. HeadwiseKV with every head full (the seam and "
                   f"the Triton decode kernel instead of SDPA, no streaming head) takes {hw.step_ms_median:.2f} ms. Of the "
                   f"{extra:+.2f} ms per step, {seam:+.2f} ms is that path and {extra - seam:+.2f} ms the streaming heads "
                   "(their cache update and second attention call per layer).")
    if "syncs_per_step" in at.columns and at.syncs_per_step.notna().any():
        out.append("- **Host syncs per decode step:** " + "; ".join(
            f"{LABEL.get(r.policy, r.policy)}{'' if r.policy in ('full', 'full-headwise', 'streaming') else ' ' + _budget(r.budget)} "
            f"{r.syncs_per_step:g}" for r in _decode_sorted(at).itertuples() if not pd.isna(r.syncs_per_step)) + "." +
            (" Counted over the first 4 steps after the prefill: the head-wise counts equal one sync per layer that has "
             "streaming heads, spread over those steps (the first step copies each such layer's RoPE frequencies to the "
             "device, once per sequence); later calls count from the second step." if syncs_from_first_step else ""))
    return "\n".join(out) + "\n"


def calls_table(folder: Path) -> str:
    """Median ms per decode step at the longest prompt, per policy, in each call timed the same way (one column per
    call: the effect of the host-path changes between them)."""
    found = [(sub, how, pd.read_csv(folder / sub / "decode.csv")) for sub, how in CALLS if (folder / sub / "decode.csv").exists()]
    if not found:
        return "No call with the warm-up at the full length.\n"
    found = found[::-1]                                                  # oldest first
    keys = []
    for _, _, dec in found:
        at = _decode_sorted(dec[dec.prompt_tokens == dec.prompt_tokens.max()])
        keys += [(r.policy, r.budget) for r in at.itertuples() if (r.policy, r.budget) not in keys]
    rows = []
    for name, b in keys:
        cells = []
        for _, _, dec in found:
            at = dec[(dec.prompt_tokens == dec.prompt_tokens.max()) & (dec.policy == name) & ((dec.budget - b).abs() < 1e-9)]
            cells.append(f"{at.step_ms_median.iloc[0]:.2f} ({at.decode_tok_s.iloc[0]:.1f} tok/s)" if len(at) else "–")
        rows.append([LABEL.get(name, name), "" if name.startswith("full") or name == "streaming" else _budget(b)] + cells)
    legend = "".join(f"- `{sub}/`: {how}; {int(dec.decode_steps.iloc[0])} steps, {int(dec.repeats.iloc[0])} timed runs per "
                     "policy.\n" for sub, how, dec in found)
    return legend + "\n" + markdown_table(["policy", "KV heads full"] + [f"ms / step, `{sub}/`" for sub, _, _ in found], rows)


def cudnn_note(folder: Path) -> str:
    """From the fourth call, if it has the row: the first-use cost with and without SDPA's cuDNN backend."""
    path = folder / "results_d" / "decode.csv"
    if not path.exists():
        return ""
    dec = pd.read_csv(path)
    full, off = dec[dec.policy == "full"], dec[dec.policy == "full-nocudnn"]
    if not len(full) or not len(off):
        return ""
    f, o = full.iloc[0], off.iloc[0]
    return (f"\nFirst use in the fourth call (decode seconds, warm-up run vs timed run, {int(f.decode_steps)} steps): full "
            f"attention {f.warmup_decode_s:.2f} vs {f.decode_s:.2f}; with SDPA's cuDNN backend off {o.warmup_decode_s:.2f} "
            f"vs {o.decode_s:.2f} ({o.step_ms_median:.2f} ms per timed step against {f.step_ms_median:.2f} with cuDNN).\n")


def _niah_items(path: Path) -> pd.DataFrame:
    items = common_prompts(pd.read_csv(path))
    items["length_bin"] = items.length.round(-3).astype(int).clip(lower=1000)
    return items


def decode_file(folder: Path) -> tuple[Path, str]:
    """The primary decode results (the third call: every budget; a fourth call, if any, re-timed only a few rows
    and is compared in ``calls_table``) and how that call timed."""
    for sub, how in (("results_c", "third call: a warm-up run at the full length per policy, then the median of the timed runs"),
                     ("results_b", "second call, warm-up at ~1K tokens: compiles may remain in the timed steps"),
                     ("results", "first call: the timed steps include Triton compiles")):
        if (folder / sub / "decode.csv").exists():
            return folder / sub / "decode.csv", how
    raise FileNotFoundError(f"no decode.csv under {folder}")


def _load(folder: Path):
    """(results/ = the first H200 call, results_b/ = the second if present, NIAH items of the primary run).

    The second call re-ran NIAH for every policy with 16 prompts per forward (the random draws did not fit in
    the first); when it is there its NIAH rows are primary and the first call's are the batching check."""
    res, res_b = folder / "results", folder / "results_b"
    primary = res_b if (res_b / "niah_items.csv").exists() else res
    return res, res_b, _niah_items(primary / "niah_items.csv")


def batch_check(res: Path, res_b: Path) -> list[list]:
    """Per policy run in both calls: exact recall one prompt per forward vs 16 per forward, and agreement."""
    one = pd.read_csv(res / "niah_items.csv")
    many = pd.read_csv(res_b / "niah_items.csv")
    m = one.merge(many, on=RUN + KEY, suffixes=("_1", "_16"))
    rows = []
    for (name, b, W, d), g in m.groupby(RUN, sort=False):
        rows.append([int(W) if W else "–", LABEL[name], _budget(b), len(g), num(g.exact_1.mean(), 3),
                     num(g.exact_16.mean(), 3), f"{(g.exact_1 == g.exact_16).mean():.3f}",
                     f"{(g.nll_1 - g.nll_16).abs().max():.3f}"])
    return rows


def _where(rows: pd.DataFrame) -> str:
    return ", ".join(f"window {r.window} / {_budget(r.budget)}" for r in rows.itertuples()) or "nowhere"


def verdict(items: pd.DataFrame, comp: pd.DataFrame, ppl: pd.DataFrame, dec: pd.DataFrame, dec_call: str) -> str:
    """The README's verdict, as bullet points computed from the same files as the tables."""
    out = []
    for other, label in (("random", "uniform random KV heads"), ("random-layers", "layer-matched random KV heads"),
                         ("sinkmass", "the lowest-first-token-sink-mass KV heads")):
        c = comp[comp.comparison == f"retrieval vs {other}"] if len(comp) else comp
        if not len(c):
            out.append(f"- **Needle recall, retrieval heads vs {label}: not measured** (no {other} NIAH run finished).")
            continue
        out.append(f"- **Needle recall, retrieval heads vs {label}** (same memory, pre-registered criterion): beats at "
                   f"{_where(c[c.beats])}; does not at {_where(c[~c.beats])}.")
    full = items[items.policy == "full"].exact.mean()
    for W in sorted(items.loc[items.window > 0, "window"].unique()):
        r = items[(items.window == W) & (items.policy == "retrieval")].groupby("budget").exact.mean()
        st = items[(items.window == W) & (items.policy == "streaming")].exact.mean()
        out.append(f"- **Recall cost, window {int(W)}:** full attention {full:.2f}; StreamingLLM everywhere {st:.2f}; "
                   "retrieval heads full " + ", ".join(f"{_budget(b)} {v:.2f}" for b, v in r.items()) + ".")
    pc = [row for row in ppl_comparisons(ppl) if row[2] != "retrieval vs sinkmass"]
    wins = sum(1 for row in pc if row[-1].startswith("0 of"))
    out.append(f"- **Perplexity (exploratory, not pre-registered):** retrieval heads' NLL is below every random draw in "
               f"{wins} of {len(pc)} (window, budget, random kind) settings; see the perplexity comparisons.")
    dec = dec[dec.prompt_tokens == dec.prompt_tokens.max()]
    f = dec[dec.policy == "full"].iloc[0]
    parts = []
    for name, b in (("retrieval", 0.125), ("retrieval", 0.25), ("retrieval", 0.5), ("streaming", 0.0)):
        r = dec[(dec.policy == name) & ((dec.budget - b).abs() < 1e-9)]
        if len(r):
            r = r.iloc[0]
            parts.append(f"{LABEL[name]} {_budget(b)}: {r.kv_bytes / f.kv_bytes:.3f} of full attention's KV bytes "
                         f"({r.kv_bytes / 2**20:.1f} vs {f.kv_bytes / 2**20:.1f} MiB), {r.decode_tok_s:.1f} vs "
                         f"{f.decode_tok_s:.1f} decode tok/s")
    out.append(f"- **Memory and speed at {int(f.seq_len)} tokens (H200, bf16, batch 1, {dec_call}):** " + "; ".join(parts) + ".")
    return "\n".join(out) + "\n"


def tables(folder: Path = HERE) -> dict[str, str]:
    res, res_b, items = _load(folder)
    out = {}
    par = json.loads((res / "parity.json").read_text())
    out["headkv_parity"] = markdown_table(
        ["check (tiny random Llama, head_dim 64, GQA 6/3, 301 tokens, sinks 4 + window 64)", "max |Δ logit|"],
        [["every KV head full (device fp32) vs the unmodified model (CPU fp64)", f"{par['all_full_vs_unmodified']:.1e}"],
         ["no KV head full, one prefill (device fp32) vs SinkWindow token by token (CPU fp64)",
          f"{par['none_full_prefill_vs_sinkwindow_steps']:.1e}"],
         ["mixed plan, 280-token prefill + 21 decode steps: device fp32 vs CPU fp64",
          f"{par['mixed_prefill_decode_vs_cpu_fp64']:.1e}"],
         ["(scale) full attention vs StreamingLLM, CPU fp64", f"{par['dense_vs_streaming_gap']:.2f}"],
         ["Triton fallback warnings", "; ".join(par["fallback_warnings"]) or "none"]])
    n = items["item"].nunique()
    out["headkv_niah"] = (f"{n} prompts (needles {', '.join(map(str, sorted(items.needle.unique())))}; "
                          f"{items.length.min()}–{items.length.max()} tokens; depths "
                          f"{', '.join(f'{d:g}' for d in sorted(items.depth.unique()))} %), the same for every policy.\n\n" +
                          markdown_table(["window", "policy", "KV heads full", "exact recall [Wilson 95 %]",
                                          "first answer token", "answer NLL (nats)", "random"], niah_rows(items)))
    comp = comparisons(items)
    out["headkv_tests"] = markdown_table(
        ["window", "KV heads full", "comparison", "Δ exact recall [95 % paired bootstrap]", "test", "p", "p (Holm)",
         "random draws ≥ retrieval", "beats"],
        [[r.window, _budget(r.budget), r.comparison, ci(r.effect, r.low, r.high, 2), r.test, pval(r.p), pval(r.p_holm),
          f"{r.draws_at_or_above} of {r.draws}" if r.draws else "–", "yes" if r.beats else "no"]
         for r in comp.itertuples()]) if len(comp) else "No comparison could be made (no retrieval run).\n"
    header, rows = by_length_depth(items)
    out["headkv_niah_length"] = markdown_table(header, rows)
    if (res / "ppl_items.csv").exists():
        prow, _ = ppl_rows(pd.read_csv(res / "ppl_items.csv"))
        out["headkv_ppl"] = markdown_table(["window", "policy", "KV heads full", "perplexity, tokens 2–8000 [95 % bootstrap]",
                                            "perplexity, tokens 4097–8000", "random draws"], prow)
        out["headkv_ppl_tests"] = markdown_table(
            ["window", "KV heads full", "comparison", "Δ NLL / token (nats) [95 % paired bootstrap over chunks]",
             "p (sign-flip)", "p (Holm)", "random draws with NLL ≤ retrieval's"],
            ppl_comparisons(pd.read_csv(res / "ppl_items.csv")))
    if (res_b / "niah_items.csv").exists():
        out["headkv_batch_check"] = markdown_table(
            ["window", "policy", "KV heads full", "prompts", "exact recall, 1 per forward (call 1)",
             "exact recall, 16 per forward (call 2)", "same exact outcome", "max |Δ answer NLL|"], batch_check(res, res_b))
    dec, how = decode_file(folder)
    out["headkv_verdict"] = verdict(items, comp, pd.read_csv(res / "ppl_items.csv"), pd.read_csv(dec), how)
    out["headkv_decode"] = markdown_table(*decode_rows(pd.read_csv(dec)))
    out["headkv_decode_notes"] = decode_notes(pd.read_csv(dec), syncs_from_first_step=dec.parent.name == "results_c")
    out["headkv_decode_calls"] = calls_table(folder) + cudnn_note(folder)
    return out


def summary(folder: Path = HERE) -> dict:
    res, res_b, items = _load(folder)
    comp = comparisons(items)
    s = {"niah": [{"window": int(W), "budget": float(b), "policy": p, "exact": float(g.exact.mean()), "n": int(len(g))}
                  for (p, b, W), g in items.groupby(["policy", "budget", "window"], sort=False)],
         "tests": comp.to_dict("records")}
    if (res / "ppl_items.csv").exists():
        s["ppl"] = ppl_rows(pd.read_csv(res / "ppl_items.csv"))[1]
    s["decode"] = pd.read_csv(decode_file(folder)[0]).to_dict("records")
    return s


def summary_row(folder: Path = HERE) -> dict:
    """This study's row in the top-level README (from results/, the H200 run)."""
    res, res_b, items = _load(folder)
    comp = comparisons(items)
    dec = pd.read_csv(decode_file(folder)[0])
    dec = dec[dec.prompt_tokens == dec.prompt_tokens.max()]
    full = dec[dec.policy == "full"].iloc[0]
    parts = []
    for b in (0.25,):
        for W in sorted(items.loc[items.window > 0, "window"].unique()):
            at = items[(items.window == W) & ((items.budget - b).abs() < 1e-9)]
            rnd = at[at.policy == "random"].groupby("draw").exact.mean()
            cell = ", ".join(f"{p} {at[at.policy == p].exact.mean():.2f}" for p in ("retrieval", "sinkmass") if (at.policy == p).any())
            if len(rnd):
                cell += f", random {rnd.mean():.2f} ({len(rnd)} draws)"
            parts.append(f"window {int(W)}, 25 % of KV heads full: {cell}")
    h = dec[(dec.policy == "retrieval") & ((dec.budget - 0.25).abs() < 1e-9)]
    mem = (f"; KV cache at {int(full.seq_len)} tokens with 25 % of KV heads full: {h.kv_bytes.iloc[0] / full.kv_bytes:.3f} "
           f"of full attention's, decode {h.decode_tok_s.iloc[0]:.1f} vs {full.decode_tok_s:.1f} tok/s") if len(h) else ""
    tests = comp[(comp.budget - 0.25).abs() < 1e-9] if len(comp) else comp
    iv = "; ".join(f"W{r.window} {r.comparison}: Δ {ci(r.effect, r.low, r.high, 2)}, p (Holm) {pval(r.p_holm)}"
                   for r in tests.itertuples()) or "–"
    return dict(study="head-wise KV cache (retrieval heads full, the rest StreamingLLM), H200",
                result=f"NIAH exact recall (full attention {items[items.policy == 'full'].exact.mean():.2f}): "
                       + "; ".join(parts) + mem, interval=iv)


def main() -> None:
    main_for(HERE, tables)
    (HERE / "results" / "summary.json").write_text(json.dumps(summary(HERE), indent=1, default=float))


if __name__ == "__main__":
    main()
