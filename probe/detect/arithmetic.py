"""Arithmetic heads (Zhang et al., ICML 2024; methods.md §5): activation patching of head and MLP outputs.

For a clean prompt X_r ("…a op b=") and its counterfactual X_c, at the last position:
  LD(run) = logit[answer_r] - logit[answer_c]
  patch one head's output (its ``head_dim``-wide slice of ``o_proj``'s input) or one MLP's output
  from the X_c run into the X_r run, everything downstream recomputed;
  effect = (LD_r - LD_patched) / (LD_r - LD_c)  over the prompt set's mean LDs
  (0 = no change, 1 = the patched run is as counterfactual as X_c itself).
Two implementations that must agree: ``probe.patching`` (``native_patching``: edits on the named
``z`` and ``mlp_out`` taps, owned by a context manager) and nnsight 0.8
(``nnsight_patching``). Every (layer, head) and MLP is patched in one forward per layer by
stacking (H + 1) copies of the batch, copy g patching head g (copy H the MLP).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..data.arithmetic import OPERATORS, ArithPrompt, check_single_tokens, digit_token_ids, make_prompts
from ..errors import ProbeError
from .base import DetectorOutput, head_frame

DEFAULTS = dict(operators=list(OPERATORS), n=16, shots=4, counterfactual="operands", seed=0, batch_size=8,
                only_correct=True, top_k=10)


# ---- probe's own patching (probe.patching) ----------------------------------------------------

def _last_logits(model, ids: Tensor, mask: Tensor) -> Tensor:
    """Logits at the last position [B, V]."""
    return model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1).logits[:, -1].float()


def _variants(n_layers: int, n_heads: int, layers: Sequence[int]) -> list:
    """Per layer: every head's z at the last position, then the MLP output there (H + 1 variants)."""
    from ..patching import variants_for

    return [v for l in layers for v in variants_for(n_layers, n_heads, ["z", "mlp_out"], [l], [(-1,)])]


def native_patching(model, clean: dict, cf: dict, n_heads: int, head_dim: int,
                    layers: Optional[Sequence[int]] = None) -> dict:
    """Patch every head and MLP of ``layers`` from the counterfactual into the clean run (``probe.patching``).

    clean, cf: {"input_ids": [B, T], "attention_mask": [B, T]} of equal shapes.
    Returns {"clean": [B, V], "cf": [B, V], "heads": [L', H, B, V] logits, "mlp": [L', B, V]} on CPU —
    callers reduce V right away (see ``patching_logit_diffs``).
    """
    from ..patching import patched_runs

    n_layers = len(model.get_decoder().layers)
    layers = list(range(n_layers)) if layers is None else list(layers)
    B = clean["input_ids"].shape[0]
    out = patched_runs(model, cf, clean, _variants(n_layers, n_heads, layers), max_rows=(n_heads + 1) * B)
    per_layer = out["patched"].reshape(len(layers), n_heads + 1, B, -1)          # [L', H+1, B, V]
    return {"clean": out["corrupt"], "cf": out["clean"], "heads": per_layer[:, :-1], "mlp": per_layer[:, -1],
            "layers": layers}


# ---- nnsight ---------------------------------------------------------------------------------

def nnsight_model(handle_or_model, tokenizer=None):
    """nnsight wrapper: ``LanguageModel(model, tokenizer=...)`` when a tokenizer is known (a Handle),
    else the generic ``NNsight(model)`` (tiny test models without a tokenizer)."""
    import warnings

    from nnsight import NNsight

    is_module = isinstance(handle_or_model, torch.nn.Module)
    model = handle_or_model if is_module else handle_or_model.model
    tok = tokenizer if is_module else handle_or_model.tokenizer
    if tok is None:
        return NNsight(model)
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # 0.8 names it TransformersModel; LanguageModel still works
        return LanguageModel(model, tokenizer=tok)


def nnsight_patching(lm, clean: dict, cf: dict, n_layers: int, n_heads: int, head_dim: int,
                     layers: Optional[Sequence[int]] = None) -> dict:
    """The same patching as ``native_patching`` through an nnsight 0.8 ``LanguageModel`` ``lm``:
    the head's slice of ``self_attn.o_proj.input`` and ``mlp.output`` at the last position are
    overwritten inside ``lm.trace``. Returns the same dict."""
    L, H, Dh = n_layers, n_heads, head_dim
    layers = list(range(L)) if layers is None else list(layers)
    # nnsight runs a trace body in its own frame: values leave it only through objects made outside
    zs, ms, got = [], [], {}
    with torch.no_grad():
        with lm.trace(**cf, use_cache=False, logits_to_keep=1):
            for l in range(L):   # reads in execution order: o_proj input, then MLP output, layer by layer
                zs.append(lm.model.layers[l].self_attn.o_proj.input[:, -1].save())
                ms.append(lm.model.layers[l].mlp.output[:, -1].save())
            got["cf"] = lm.lm_head.output[:, -1].save()
        with lm.trace(**clean, use_cache=False, logits_to_keep=1):
            got["clean"] = lm.lm_head.output[:, -1].save()
        B = clean["input_ids"].shape[0]
        G = H + 1
        big = {k: v.repeat(G, 1) for k, v in clean.items()}
        heads, mlps = [], []
        for layer in layers:
            z_src, m_src = zs[layer], ms[layer]
            with lm.trace(**big, use_cache=False, logits_to_keep=1):
                z = lm.model.layers[layer].self_attn.o_proj.input
                for h in range(H):
                    z[h * B:(h + 1) * B, -1, h * Dh:(h + 1) * Dh] = z_src[:, h * Dh:(h + 1) * Dh]
                m = lm.model.layers[layer].mlp.output
                m[H * B:, -1] = m_src
                got["patched"] = lm.lm_head.output[:, -1].save()
            out = got["patched"].float().reshape(G, B, -1)
            heads.append(out[:-1].cpu())
            mlps.append(out[-1].cpu())
    return {"clean": got["clean"].float().cpu(), "cf": got["cf"].float().cpu(), "heads": torch.stack(heads),
            "mlp": torch.stack(mlps), "layers": layers}


# ---- from logits to effects ----------------------------------------------------------------

def logit_diffs(patched: dict, correct: Tensor, counter: Tensor) -> dict:
    """LD = logit[correct] - logit[counter] per prompt. correct, counter: [B] token ids.

    Returns {"clean": [B], "cf": [B], "heads": [L', H, B], "mlp": [L', B]}.
    """
    def ld(x):                                                              # [..., B, V] -> [..., B]
        return x.gather(-1, correct.expand(*x.shape[:-1])[..., None])[..., 0] - \
            x.gather(-1, counter.expand(*x.shape[:-1])[..., None])[..., 0]
    return {k: ld(patched[k]) for k in ("clean", "cf", "heads", "mlp")}


def normalized_effect(lds: dict, rows: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """(LD_clean - LD_patched) / (LD_clean - LD_cf) on the mean over ``rows`` (default all).

    Returns head effects [L', H] and MLP effects [L'].
    """
    rows = torch.ones_like(lds["clean"], dtype=torch.bool) if rows is None else rows
    if not bool(rows.any()):
        return torch.full(lds["heads"].shape[:2], float("nan")), torch.full(lds["mlp"].shape[:1], float("nan"))
    clean, cf = lds["clean"][rows].mean(), lds["cf"][rows].mean()
    denom = clean - cf
    if abs(float(denom)) < 1e-6:
        denom = torch.tensor(1e-6)
    return (clean - lds["heads"][..., rows].mean(-1)) / denom, (clean - lds["mlp"][..., rows].mean(-1)) / denom


# ---- the detector ----------------------------------------------------------------------------

def _encode(handle, texts: Sequence[str]) -> dict:
    return handle.encode(list(texts))


def patch_prompts(handle, prompts: Sequence[ArithPrompt], batch_size: int = 8, backend: str = "native",
                  progress: Optional[Callable[[int], None]] = None) -> dict:
    """Patch every head and MLP for every prompt; return LDs (see ``logit_diffs``) concatenated over
    batches, plus "pred" [N] (the clean run's argmax token) and "correct"/"counter" token ids [N]."""
    digits = digit_token_ids(handle.tokenizer)
    lm = nnsight_model(handle) if backend == "nnsight" else None
    parts = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        clean, cf = _encode(handle, [p.text for p in chunk]), _encode(handle, [p.cf_text for p in chunk])
        if clean["input_ids"].shape != cf["input_ids"].shape:
            raise ProbeError("clean and counterfactual prompts tokenize to different lengths",
                             "use single-token operands (digits) so positions line up")
        correct = torch.tensor([digits[p.answer] for p in chunk])
        counter = torch.tensor([digits[p.cf_answer] for p in chunk])
        if backend == "nnsight":
            out = nnsight_patching(lm, clean, cf, handle.n_layers, handle.n_heads, handle.head_dim)
            lds = logit_diffs(out, correct, counter)
            lds["pred"], lds["cf_pred"] = out["clean"].argmax(-1), out["cf"].argmax(-1)
        else:
            lds = _patch_lds(handle, clean, cf, correct, counter)
        lds["correct"], lds["counter"] = correct, counter
        parts.append(lds)
        if progress:
            progress(len(chunk))
    cat = {k: torch.cat([p[k] for p in parts], dim=-1) for k in ("clean", "cf", "heads", "mlp", "pred", "cf_pred",
                                                                   "correct", "counter")}
    return cat


def _patch_lds(handle, clean: dict, cf: dict, correct: Tensor, counter: Tensor) -> dict:
    """``probe.patch`` (cf into clean, last position, heads and MLPs) as the LD dict of ``logit_diffs``."""
    from ..patching import patch

    L, H = handle.n_layers, handle.n_heads
    res = patch(handle, cf, clean, metric="logit_diff", answer=correct, other=counter, sites=["z", "mlp_out"],
                positions="last", batch_size=clean["input_ids"].shape[0], max_rows=(H + 1) * clean["input_ids"].shape[0],
                n_boot=1)
    B = correct.shape[0]
    return {"clean": res.corrupt, "cf": res.clean, "heads": res.values[:L * H].reshape(L, H, B),
            "mlp": res.values[L * H:], "pred": res.corrupt_top, "cf_pred": res.clean_top}


def run(handle, prompts: Optional[list] = None, *, chat_template: bool = False,
        progress: Optional[Callable[[int], None]] = None, **options) -> DetectorOutput:
    """Arithmetic effect of every head (and MLP) by activation patching (``prompts`` ignored: the
    detector builds "a op b=" prompts itself; raw text, no chat template).

    Options: operators (list of + - * /), n (pairs per operator), shots (few-shot examples),
    counterfactual ("operands" | "operator"), seed, batch_size, only_correct (effects over prompts
    the model answers right), top_k (heads listed in the summary).
    Returns heads with arithmetic_effect and arithmetic_effect_<add|sub|mul|div>, tables
    "arithmetic" (per prompt) and "arithmetic_mlp" (per layer and operator), and a summary.
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ProbeError(f"unknown arithmetic option(s) {sorted(unknown)}", f"choose from {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    ops = [str(o) for o in (opts["operators"] if isinstance(opts["operators"], (list, tuple)) else [opts["operators"]])]
    ops = [{"add": "+", "sub": "-", "mul": "*", "div": "/", "x": "*"}.get(o, o) for o in ops]
    items = make_prompts(ops, int(opts["n"]), shots=int(opts["shots"]), counterfactual=str(opts["counterfactual"]),
                         seed=int(opts["seed"]))
    check_single_tokens(handle.tokenizer, items)
    res = patch_prompts(handle, items, int(opts["batch_size"]), progress=progress)
    right = res["pred"] == res["correct"]                                   # [N]
    op_of = np.array([p.op for p in items])

    def rows_for(mask: np.ndarray) -> Tensor:
        m = torch.tensor(mask)
        if opts["only_correct"] and bool((m & right).any()):
            m = m & right
        return m

    heads = head_frame(handle.n_layers, handle.n_heads, handle.n_kv_heads)
    eff, mlp_eff = normalized_effect(res, rows_for(np.ones(len(items), dtype=bool)))
    heads["arithmetic_effect"] = eff.reshape(-1).numpy()
    mlp_rows = [dict(layer=l, operator="all", effect=float(mlp_eff[l])) for l in range(handle.n_layers)]
    for op in ops:
        e, me = normalized_effect(res, rows_for(op_of == op))
        heads[f"arithmetic_effect_{OPERATORS[op]}"] = e.reshape(-1).numpy()
        mlp_rows += [dict(layer=l, operator=OPERATORS[op], effect=float(me[l])) for l in range(handle.n_layers)]
    H = handle.n_heads
    table = pd.DataFrame([dict(prompt_id=i, operator=p.op, a=p.a, b=p.b, answer=p.answer, cf_operator=p.cf_op,
                               cf_a=p.cf_a, cf_b=p.cf_b, cf_answer=p.cf_answer, counterfactual=p.counterfactual,
                               prompt=p.text, cf_prompt=p.cf_text,
                               predicted=handle.tokenizer.decode([int(res["pred"][i])]), correct=bool(right[i]),
                               cf_predicted=handle.tokenizer.decode([int(res["cf_pred"][i])]),
                               ld_clean=float(res["clean"][i]), ld_cf=float(res["cf"][i]),
                               top_head=f"L{int(k) // H}H{int(k) % H}",
                               top_head_ld_drop=float((res["clean"][i] - res["heads"][..., i]).max()))
                          for i, p in enumerate(items)
                          for k in [(res["clean"][i] - res["heads"][..., i]).argmax()]])
    top = heads.sort_values("arithmetic_effect", ascending=False).head(int(opts["top_k"]))
    summary = {
        "prompts": len(items),
        "accuracy": float(right.float().mean()),
        "accuracy_by_operator": {OPERATORS[o]: float(right[torch.tensor(op_of == o)].float().mean()) for o in ops},
        "top_heads": [f"L{int(r.layer)}H{int(r.head)}: {r.arithmetic_effect:.3f}" for r in top.itertuples()],
        "top_mlps": [f"MLP{int(l)}: {float(mlp_eff[l]):.3f}" for l in mlp_eff.argsort(descending=True)[:5]],
    }
    return DetectorOutput(heads, {"arithmetic": table, "arithmetic_mlp": pd.DataFrame(mlp_rows)},
                          {**opts, "operators": ops}, summary)


def attention_targets(handle, prompts: Sequence[ArithPrompt], heads: Sequence[tuple]) -> pd.DataFrame:
    """Where ``heads`` attend from the last position ("="): mass on operand a, the operator (column
    operator_mass), operand b,
    "=" itself, the few-shot prefix's first token (sink) and the rest of the prefix.

    Uses ``probe.capture(stats=("full",))`` on these short prompts. Rows: layer, head, operator, and
    the mean mass per category.
    """
    from ..capture import capture

    rows = []
    enc = _encode(handle, [p.text for p in prompts])
    with torch.no_grad(), capture(handle, stats=("full",), layers=sorted({l for l, _ in heads})) as rec:
        handle.model(**enc, use_cache=False)
    ks = rec.layer(heads[0][0]).key_start                                   # [B]
    op_of = np.array([p.op for p in prompts])
    for layer, head in heads:
        probs = rec.layer(layer).probs[:, head, -1]                         # [B, S] last query row
        S = probs.shape[-1]
        cat = {"operand_a": probs[:, S - 4], "operator_mass": probs[:, S - 3], "operand_b": probs[:, S - 2],
               "equals_self": probs[:, S - 1], "first_token": probs[torch.arange(len(prompts)), ks]}
        cat["prefix_other"] = probs[:, :S - 4].sum(-1) - cat["first_token"]
        for op in ["all"] + sorted(set(op_of)):
            sel = torch.ones(len(prompts), dtype=torch.bool) if op == "all" else torch.tensor(op_of == op)
            rows.append(dict(layer=layer, head=head, operator=op, **{k: float(v[sel].mean()) for k, v in cat.items()}))
    return pd.DataFrame(rows)
