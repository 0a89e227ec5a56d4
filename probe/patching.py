"""Activation patching (``probe.patch``): which sites carry the difference between two prompts.

Convention (denoising, as TransformerLens' ``patching`` module): run the *corrupt* prompt and
overwrite one site with its activation from the *clean* prompt (same token length and mask), then
read a metric at the last position:

  effect            = metric(patched) - metric(corrupt)
  normalized effect = (mean metric(patched) - mean metric(corrupt)) / (mean metric(clean) - mean metric(corrupt))

so 0 = the site carries nothing, 1 = patching it alone restores the clean behaviour. Means run over
prompt pairs; 95% intervals come from a bootstrap over pairs (percentile, ``n_boot`` resamples).

Metrics (at the last position): ``"logit_diff"`` = logit[answer] - logit[other]; ``"logprob"`` =
log p(answer); ``"kl"`` = KL(clean || patched) of the next-token distributions (clean = 0); or a
callable ``fn(logits [B, V], batch) -> [B]`` (batch: {"index": prompt indices [B],
"clean_logits": [B, V]}).

Sites: ``"z"`` (one row per layer and head), ``"resid_pre"``, ``"attn_out"``, ``"mlp_out"`` (one row
per layer); several at once as a list. Positions: None = every position at once; ``"last"``;
``"each"`` = every position separately (offsets -1 .. -T_min from the end, T_min = the shortest
prompt); or a list of offsets (negative = from the end). Edits go through the named taps
(``probe.capture.taps``); many variants run in one forward by stacking copies of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .capture.taps import TapSet, tap_name, taps
from .errors import ProbeError

PATCH_SITES = ("z", "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
METRICS = ("logit_diff", "logprob", "kl")


@dataclass(frozen=True)
class Variant:
    """One patched run: ``site`` of ``layer`` (``head`` for z, else None) at ``positions``
    (None = all; else offsets from the end, e.g. (-1,))."""

    site: str
    layer: int
    head: Optional[int] = None
    positions: Optional[tuple] = None


def variants_for(n_layers: int, n_heads: int, sites: Sequence[str], layers: Sequence[int],
                 positions: Sequence[Optional[tuple]]) -> list[Variant]:
    """Every (site, layer[, head], positions) combination, in table order."""
    out = []
    for site in sites:
        for layer in layers:
            for pos in positions:
                heads = range(n_heads) if site == "z" else [None]
                out.extend(Variant(site, layer, h, pos) for h in heads)
    return out


def _last_logits(model, enc: dict) -> Tensor:
    """Logits at the last position [B, V] (float32)."""
    return model(**enc, use_cache=False, logits_to_keep=1).logits[:, -1].float()


def _assign(x: Tensor, src: Tensor, rows: slice, head: Optional[int], positions: Optional[tuple]) -> None:
    """x[rows, positions(, head)] = src[:, positions(, head)] in place; x [G*B, T, ...], src [B, T, ...]."""
    pos = slice(None) if positions is None else list(positions)
    if head is None:
        x[rows, pos] = src[:, pos].to(x.dtype)
    else:
        x[rows, pos, head] = src[:, pos, head].to(x.dtype)


def _group_edits(variants: Sequence[Variant], source: dict, B: int) -> list:
    """Tap edits for one stacked forward: copy g of the batch gets ``variants[g]``."""
    by_tap: dict[str, list] = {}
    for g, v in enumerate(variants):
        by_tap.setdefault(tap_name(v.layer, v.site), []).append((g, v))

    def make(name, entries):
        def fn(x, ctx):                                                      # x [G*B, T, ...]
            x = x.clone()
            for g, v in entries:
                _assign(x, source[name], slice(g * B, (g + 1) * B), v.head, v.positions)
            return x
        return fn

    return [(name, make(name, entries)) for name, entries in by_tap.items()]


def patched_runs(handle, clean: dict, corrupt: dict, variants: Sequence[Variant],
                 reduce: Callable[[Tensor, Tensor], Tensor] = lambda logits, clean: logits, max_rows: int = 128) -> dict:
    """Run ``corrupt`` once per variant with that site taken from ``clean``; no grad, no KV cache.

    Args:
        clean, corrupt: encoded inputs of the same shape and attention mask ({"input_ids": [B, T], ...}).
        variants: what to patch (``variants_for``).
        reduce: ``reduce(logits [n, V], clean_logits [n, V])`` -> what is kept per row (default: the
            logits); clean_logits are the clean run's, repeated to match the rows.
        max_rows: rows per stacked forward (variants per forward = max(1, max_rows // B)).
    Returns:
        {"clean": reduce(clean logits) [B, ...], "corrupt": [B, ...], "patched": [len(variants), B, ...]} on CPU.
    """
    from .models.handle import as_handle

    handle, model = as_handle(handle)
    if clean["input_ids"].shape != corrupt["input_ids"].shape or not torch.equal(
            clean.get("attention_mask", torch.ones(1)), corrupt.get("attention_mask", torch.ones(1))):
        raise ProbeError("clean and corrupt prompts tokenize to different lengths",
                         "give prompt pairs with the same number of tokens (positions must line up)")
    B = clean["input_ids"].shape[0]
    names = sorted({tap_name(v.layer, v.site) for v in variants})
    with torch.no_grad():
        with taps(handle, names) as source:
            clean_logits = _last_logits(model, clean)                              # [B, V]
        clean_out = reduce(clean_logits, clean_logits).cpu()
        corrupt_out = reduce(_last_logits(model, corrupt), clean_logits).cpu()
        src = {n: source[n] for n in names}
        per = max(1, max_rows // B)
        patched = []
        for i in range(0, len(variants), per):
            group = variants[i:i + per]
            G = len(group)
            big = {k: v.repeat(G, *([1] * (v.dim() - 1))) if isinstance(v, Tensor) else v for k, v in corrupt.items()}
            with TapSet(handle, edits=_group_edits(group, src, B)):
                out = reduce(_last_logits(model, big), clean_logits.repeat(G, 1)).cpu()   # [G*B, ...]
            patched.append(out.reshape(G, B, *out.shape[1:]))
    return {"clean": clean_out, "corrupt": corrupt_out,
            "patched": torch.cat(patched) if patched else torch.empty(0, B)}


# ---- metrics -------------------------------------------------------------------------------------

def _token_ids(handle, values, n: int, what: str) -> Tensor:
    """Answer tokens: one id / string, or one per prompt -> [n] long."""
    if values is None:
        raise ProbeError(f"this metric needs {what}=", f"give {what} as token strings or ids (one per prompt or one for all)")
    vals = [values] if isinstance(values, (str, int)) else list(values.tolist() if isinstance(values, Tensor) else values)
    ids = []
    for v in vals:
        if isinstance(v, str):
            toks = handle.tokenizer.encode(v, add_special_tokens=False)
            if len(toks) != 1:
                raise ProbeError(f"{what} {v!r} is {len(toks)} tokens", "give single-token answers (e.g. ' Paris')")
            v = toks[0]
        ids.append(int(v))
    if len(ids) == 1:
        ids = ids * n
    if len(ids) != n:
        raise ProbeError(f"{len(ids)} {what} for {n} prompt pairs", f"give one {what} per pair or one for all")
    return torch.tensor(ids)


def _metric_fn(metric, answer: Optional[Tensor], other: Optional[Tensor]):
    """fn(logits [b, V], clean_logits [b, V], index [b]) -> [b]."""
    if callable(metric):
        return lambda lg, cl, idx: metric(lg, {"index": idx, "clean_logits": cl})
    if metric == "logit_diff":
        return lambda lg, cl, idx: lg.gather(-1, answer[idx, None].to(lg.device))[:, 0] - \
            lg.gather(-1, other[idx, None].to(lg.device))[:, 0]
    if metric == "logprob":
        return lambda lg, cl, idx: lg.log_softmax(-1).gather(-1, answer[idx, None].to(lg.device))[:, 0]
    if metric == "kl":
        def kl(lg, cl, idx):
            p = cl.to(lg.device).log_softmax(-1)
            return (p.exp() * (p - lg.log_softmax(-1))).sum(-1)
        return kl
    raise ProbeError(f"unknown metric {metric!r}", f"use one of {', '.join(METRICS)} or a callable")


def bootstrap(patched: Tensor, corrupt: Tensor, clean: Tensor, n_boot: int = 1000, seed: int = 0) -> dict:
    """Means and 95% percentile intervals over prompt pairs.

    patched [V, N], corrupt [N], clean [N] -> {"effect", "effect_lo", "effect_hi", "normalized_effect",
    "normalized_lo", "normalized_hi"}: each [V] (numpy).
    """
    patched, corrupt, clean = patched.double(), corrupt.double(), clean.double()
    N = corrupt.shape[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N, (n_boot, N), generator=g)                          # [R, N]

    def stats(p, c, k):                                                          # [..., N] -> effect, normalized
        eff = (p - c).mean(-1)
        denom = (k - c).mean(-1)
        return eff, eff / torch.where(denom.abs() < 1e-12, torch.full_like(denom, float("nan")), denom)

    eff, norm = stats(patched, corrupt, clean)                                   # [V]
    be, bn = stats(patched[:, idx], corrupt[idx], clean[idx])                    # [V, R]
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    lo_e, hi_e = torch.quantile(be, q, dim=-1)
    lo_n, hi_n = torch.nanquantile(bn, q, dim=-1)
    return {k: v.numpy() for k, v in dict(effect=eff, effect_lo=lo_e, effect_hi=hi_e, normalized_effect=norm,
                                          normalized_lo=lo_n, normalized_hi=hi_n).items()}


# ---- the verb -------------------------------------------------------------------------------------

@dataclass
class PatchResult:
    """What ``probe.patch`` returns; ``table, fig = probe.patch(...)`` unpacks the two.

    table: one row per variant (site, layer, head, position, effect, normalized_effect and their
    95% intervals, n_pairs). values: metric of each patched run [V, N]; clean / corrupt: [N];
    clean_top / corrupt_top: argmax next token of the unpatched runs [N].
    """

    table: pd.DataFrame
    values: Tensor
    clean: Tensor
    corrupt: Tensor
    clean_top: Tensor
    corrupt_top: Tensor
    metric: str
    variants: list = field(default_factory=list)

    @property
    def figure(self):
        """plotly heatmap of the normalized effect (``probe.plot.patching``): layer x head (z) or layer x site / position."""
        from .plot import patching

        return patching(self)

    def __iter__(self):
        return iter((self.table, self.figure))


def _as_list(prompts) -> list[str] | dict:
    if isinstance(prompts, dict):
        return prompts
    return [prompts] if isinstance(prompts, str) else list(prompts)


def _batches(handle, clean, corrupt, batch_size: int, chat_template: bool):
    """Yield (index [b], clean enc, corrupt enc) per batch of prompt pairs."""
    if isinstance(clean, dict) != isinstance(corrupt, dict):
        raise ProbeError("clean and corrupt are of different kinds", "give both as texts or both as encoded dicts")
    if isinstance(clean, dict):
        n = clean["input_ids"].shape[0]
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            yield torch.arange(i, min(n, i + batch_size)), \
                {k: v[sl] if isinstance(v, Tensor) else v for k, v in clean.items()}, \
                {k: v[sl] if isinstance(v, Tensor) else v for k, v in corrupt.items()}
        return
    if len(clean) != len(corrupt):
        raise ProbeError(f"{len(clean)} clean and {len(corrupt)} corrupt prompts", "give prompt pairs (equal counts)")
    for i in range(0, len(clean), batch_size):
        yield torch.arange(i, min(len(clean), i + batch_size)), \
            handle.encode(clean[i:i + batch_size], chat_template=chat_template), \
            handle.encode(corrupt[i:i + batch_size], chat_template=chat_template)


def _positions(positions, shortest: int) -> list[Optional[tuple]]:
    if positions is None:
        return [None]
    if positions == "last":
        return [(-1,)]
    if positions == "each":
        return [(-k,) for k in range(shortest, 0, -1)]
    if isinstance(positions, int):
        positions = [positions]
    out = []
    for p in positions:
        if not -shortest <= int(p) < 0:
            raise ProbeError(f"position {p}", f"give offsets from the end, -{shortest}..-1 (-1 = the last token)")
        out.append((int(p),))
    return out


def patch(handle, clean, corrupt, *, metric: Union[str, Callable] = "logit_diff", answer=None, other=None,
          sites: Union[str, Sequence[str]] = "z", positions=None, layers: Optional[Sequence[int]] = None,
          batch_size: int = 8, max_rows: int = 128, n_boot: int = 1000, seed: int = 0,
          chat_template: bool = False) -> PatchResult:
    """Activation patching from ``clean`` into ``corrupt`` over prompt pairs (see the module doc).

    Args:
        handle: a probe Handle (or a bare HF model with encoded inputs and token-id answers).
        clean, corrupt: texts (a string or N strings; each pair must tokenize to the same length)
            or encoded dicts ({"input_ids": [N, T], "attention_mask": [N, T]}).
        metric: "logit_diff" (needs answer and other), "logprob" (needs answer), "kl" or a callable.
        answer, other: token strings or ids, one for all pairs or one per pair.
        sites: "z" | "resid_pre" | "attn_out" | "mlp_out" (also resid_mid, resid_post) or a list.
        positions: None (all at once), "last", "each" or offsets from the end.
        layers: default all. batch_size: prompt pairs per forward; max_rows: rows per stacked forward.
        n_boot, seed: bootstrap resamples for the 95% intervals.
    Returns:
        PatchResult (``table, fig = probe.patch(...)``).
    """
    from .models.handle import as_handle

    handle, model = as_handle(handle)
    sites = [sites] if isinstance(sites, str) else list(sites)
    bad = [s for s in sites if s not in PATCH_SITES]
    if bad:
        raise ProbeError(f"cannot patch site(s) {bad}", f"choose from {', '.join(PATCH_SITES)}")
    layers = list(range(handle.n_layers)) if layers is None else [int(l) for l in layers]
    for l in layers:
        if not 0 <= l < handle.n_layers:
            raise ProbeError(f"no layer {l}", f"layers are 0..{handle.n_layers - 1}")
    clean, corrupt = _as_list(clean), _as_list(corrupt)
    batches = list(_batches(handle, clean, corrupt, batch_size, chat_template))
    N = int(batches[-1][0][-1]) + 1 if batches else 0
    if N == 0:
        raise ProbeError("no prompt pairs", "give at least one clean/corrupt pair")
    shortest = min(int(b[1]["attention_mask"].sum(-1).min()) if "attention_mask" in b[1] else b[1]["input_ids"].shape[1]
                   for b in batches)
    pos = _positions(positions, shortest)
    variants = variants_for(handle.n_layers, handle.n_heads, sites, layers, pos)
    ans = _token_ids(handle, answer, N, "answer") if metric in ("logit_diff", "logprob") else None
    oth = _token_ids(handle, other, N, "other") if metric == "logit_diff" else None
    fn = _metric_fn(metric, ans, oth)

    vals, cl, co, cl_top, co_top = [], [], [], [], []
    for idx, c_enc, x_enc in batches:
        def reduce(lg, cl, idx=idx):                                           # -> [n, 2]: metric, top token
            return torch.stack([fn(lg, cl, idx.repeat(lg.shape[0] // len(idx))), lg.argmax(-1).float()], -1)

        out = patched_runs(handle, c_enc, x_enc, variants, reduce, max_rows)
        vals.append(out["patched"][..., 0])                                         # [V, b]
        cl.append(out["clean"][:, 0])
        co.append(out["corrupt"][:, 0])
        cl_top.append(out["clean"][:, 1].long())
        co_top.append(out["corrupt"][:, 1].long())
    values, clean_m, corrupt_m = torch.cat(vals, -1), torch.cat(cl), torch.cat(co)
    stats = bootstrap(values, corrupt_m, clean_m, n_boot, seed)
    table = pd.DataFrame({
        "site": [v.site for v in variants], "layer": [v.layer for v in variants],
        "head": [-1 if v.head is None else v.head for v in variants],
        "position": ["all" if v.positions is None else str(v.positions[0]) for v in variants],
        **stats, "n_pairs": N,
    })
    return PatchResult(table, values, clean_m, corrupt_m, torch.cat(cl_top), torch.cat(co_top),
                       metric if isinstance(metric, str) else getattr(metric, "__name__", "custom"), variants)
