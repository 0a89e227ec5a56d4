"""ACT head search (the step the paper left to hand-made lists; methods.md §1).

1. Score the task on a dev split without ACT (label-word argmax at the last position).
2. Prune: only heads that *have* something to calibrate matter (a sink besides the dropped first
   one). One received-mass capture over the dev prompts ranks every head of layers 2..L-2 by the
   mean attention per query on its calibrated sinks S'; the top ``candidates`` are tried.
3. Calibrate one head at a time (ACT on that head only) and keep the heads that raise dev accuracy.
4. Evaluate the accepted set together on dev; if it does not beat the best single head, keep that one.
5. Report baseline vs ACT on the held-out test split (Wilson 95% intervals) and save a JSON file
   that ``ACT(heads=FILE)`` / ``probe generate --calibration FILE`` read.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch

from probe.capture.taps import TapSet
from probe.errors import ProbeError

from .act import ACT, sink_columns
from .base import default_layers
from .core import intervene
from .tasks import Task


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval for k successes out of n (``probe.stats.wilson_interval``); (0, 1) when n = 0."""
    from probe.stats import wilson_interval

    if n == 0:
        return 0.0, 1.0
    ci = wilson_interval(k, n)
    return ci.low, ci.high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b, c (``probe.stats.mcnemar_exact``)."""
    from probe.stats import mcnemar_exact as exact

    return exact([True] * b + [False] * c, [False] * b + [True] * c).p_value


def label_ids(handle, task: Task) -> list[int]:
    ids = [handle.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in task.labels]
    if len(set(ids)) != len(ids):
        raise ProbeError(f"task {task.name}: two labels share a first token", "use labels with distinct first tokens")
    return ids


def label_logits(handle, task: Task, interventions: Sequence = (), batch_size: int = 32) -> torch.Tensor:
    """Next-token logits of the K label words' first tokens at the last position: [N, K] float32 on CPU."""
    cols = torch.tensor(label_ids(handle, task))
    out = []
    with torch.no_grad(), intervene(handle, *interventions):
        for i in range(0, len(task.prompts), batch_size):
            enc = handle.encode(task.prompts[i:i + batch_size])
            logits = handle.model(**enc, use_cache=False, logits_to_keep=1).logits[:, -1]      # [b, V]
            out.append(logits[:, cols.to(logits.device)].float().cpu())
    return torch.cat(out)


def predict(handle, task: Task, interventions: Sequence = (), batch_size: int = 32) -> torch.Tensor:
    """Predicted label index per prompt [N] (argmax of the label tokens' next-token logits)."""
    return label_logits(handle, task, interventions, batch_size).argmax(-1)


def accuracy(handle, task: Task, interventions: Sequence = (), batch_size: int = 32) -> float:
    return float((predict(handle, task, interventions, batch_size) == torch.tensor(task.gold)).float().mean())


class PrefixCache:
    """Run the dev prompts once and keep the residual stream entering every layer, so that ACT on a
    head of layer l only recomputes layers l..L-1 (the "cache the prefix" speed-up).

    hidden[b][l]: [B, T, d] for batch b; kwargs[b]: the decoder-layer keyword arguments (mask, RoPE).
    """

    def __init__(self, handle, task: Task, batch_size: int = 32):
        self.handle, self.task, self.cols = handle, task, torch.tensor(label_ids(handle, task))
        self.hidden: list[list[torch.Tensor]] = []
        self.kwargs: list[dict] = []
        preds = []
        with torch.no_grad():
            for i in range(0, len(task.prompts), batch_size):
                store: list = [None] * handle.n_layers
                kw: dict = {}

                def keep(x, ctx):                                                  # x [B, T, d]
                    store[ctx.layer] = x.detach()
                    if ctx.layer == 0:
                        kw.update({k: v for k, v in ctx.layer_kwargs.items() if k != "hidden_states"})

                with TapSet(handle, reads={"resid_pre": keep}):
                    enc = handle.encode(task.prompts[i:i + batch_size])
                    logits = handle.model(**enc, use_cache=False, logits_to_keep=1).logits[:, -1]
                preds.append(logits[:, self.cols.to(logits.device)].argmax(-1).cpu())
                self.hidden.append(store)
                self.kwargs.append(kw)
        self.baseline = torch.cat(preds)

    def logits_from(self, layer: int, interventions: Sequence) -> torch.Tensor:
        """Label logits [N, K] with ``interventions`` active, recomputing layers ``layer``..L-1 only
        (equal to ``label_logits`` on the full forward: tests/test_act_tasks.py)."""
        model = self.handle.model
        decoder = model.get_decoder()
        layers = self.handle.decoder_layers()
        out = []
        with torch.no_grad(), intervene(self.handle, *interventions):
            for store, kw in zip(self.hidden, self.kwargs):
                x = store[layer]                                                   # [B, T, d]
                for lyr in layers[layer:]:
                    x = lyr(x, **kw)
                    x = x[0] if isinstance(x, tuple) else x
                logits = model.lm_head(decoder.norm(x[:, -1:]))[:, -1]             # [B, V]
                out.append(logits[:, self.cols.to(logits.device)].float().cpu())
        return torch.cat(out)

    def predict_from(self, layer: int, interventions: Sequence) -> torch.Tensor:
        """Predictions [N] with ``interventions`` active, recomputing layers ``layer``..L-1 only."""
        return self.logits_from(layer, interventions).argmax(-1)

    def accuracy_from(self, layer: int, interventions: Sequence) -> float:
        return float((self.predict_from(layer, interventions) == torch.tensor(self.task.gold)).float().mean())


def rank_candidates(handle, task: Task, threshold: float, layers: Optional[Sequence[int]] = None,
                    batch_size: int = 32) -> list[tuple[tuple[int, int], float]]:
    """Heads sorted by the mean attention per query on their calibrated sinks S' over the dev prompts."""
    from probe.capture import capture

    layers = list(layers) if layers is not None else default_layers(handle.n_layers)
    score = torch.zeros(handle.n_layers, handle.n_heads)
    with torch.no_grad():
        for i in range(0, len(task.prompts), batch_size):
            enc = handle.encode(task.prompts[i:i + batch_size])
            with capture(handle, stats=("received",), layers=layers) as rec:
                handle.model(**enc, use_cache=False, logits_to_keep=1)
            for l in layers:
                st = rec.layer(l)
                cols, _ = sink_columns(st.received_mean, st.key_start, threshold, torch.ones(handle.n_heads, dtype=torch.bool))
                B, H, S = st.received_mean.shape
                member = torch.zeros(B, H, S + 1)
                member.scatter_(-1, torch.where(cols >= 0, cols, S), 1.0)
                n_real = (S - st.key_start).clamp_min(1).float()                      # [B] real queries
                mass = (st.received_sum * member[..., :S]).sum(-1) / n_real[:, None]  # [B, H]
                score[l] += mass.sum(0)
    score /= len(task.prompts)
    ranked = sorted(((l, h) for l in layers for h in range(handle.n_heads)), key=lambda x: -float(score[x]))
    return [(x, float(score[x])) for x in ranked if score[x] > 0]


def search(handle, dev: Task, test: Optional[Task], beta: float = 0.4, threshold: float = 0.1, candidates: int = 6,
           layers: Optional[Sequence[int]] = None, batch_size: int = 32,
           log: Callable[[str], None] = print) -> dict:
    """Run the head search; returns the calibration record (see module doc). The settings are recorded under
    ``preregistered`` (fixed before the test split is scored); ``test=None`` skips the held-out step.
    The test record holds accuracy with Wilson intervals, exact McNemar and, for baseline and ACT,
    ``probe.stats.label_metrics`` (balanced accuracy, AUC for two labels, log-loss, per-label fractions)."""
    from probe import stats
    t0 = time.time()
    prefix = PrefixCache(handle, dev, batch_size)
    base_dev = float((prefix.baseline == torch.tensor(dev.gold)).float().mean())
    log(f"dev baseline {base_dev:.3f} (n={len(dev.prompts)})")
    ranked = rank_candidates(handle, dev, threshold, layers, batch_size)[:candidates]
    tried = []
    for head, mass in ranked:
        acc = prefix.accuracy_from(head[0], (ACT(beta, threshold, heads=[head]),))
        tried.append({"head": list(head), "sink_mass": round(mass, 4), "dev_acc": acc})
        log(f"  L{head[0]}H{head[1]} (S' mass {mass:.3f}): dev {acc:.3f}{'  +' if acc > base_dev else ''}")
    accepted = [tuple(t["head"]) for t in tried if t["dev_acc"] > base_dev]
    heads, dev_act = [], base_dev
    if accepted:
        together = prefix.accuracy_from(min(l for l, _ in accepted), (ACT(beta, threshold, heads=accepted),))
        best = max((t for t in tried if t["dev_acc"] > base_dev), key=lambda t: t["dev_acc"])
        log(f"accepted set {len(accepted)} heads together: dev {together:.3f}")
        heads, dev_act = (accepted, together) if together >= best["dev_acc"] else ([tuple(best["head"])], best["dev_acc"])
    rec = {
        "model": handle.source, "model_hash": handle.file_hash, "task": dev.name, "threshold": threshold, "beta": beta,
        "preregistered": {"beta": beta, "threshold": threshold, "candidates": candidates,
                          "layers": None if layers is None else list(layers), "dev_n": len(dev.prompts),
                          "test_n": None if test is None else len(test.prompts),
                          "rule": "keep heads that raise dev accuracy; the accepted set if >= the best single head"},
        "heads": [list(h) for h in heads], "candidates": tried,
        "dev": {"n": len(dev.prompts), "baseline": base_dev, "act": dev_act},
    }
    if test is not None:
        n = len(test.prompts)
        gold = torch.tensor(test.gold)
        base_logits = label_logits(handle, test, (), batch_size)                               # [n, K]
        act_logits = label_logits(handle, test, (ACT(beta, threshold, heads=heads),), batch_size) if heads else base_logits
        base_pred, act_pred = base_logits.argmax(-1), act_logits.argmax(-1)
        kb, ka = int((base_pred == gold).sum()), int((act_pred == gold).sum())
        mc = stats.mcnemar_exact((act_pred == gold).numpy(), (base_pred == gold).numpy())
        m_base = stats.label_metrics(test.gold, base_logits.numpy(), test.labels)
        m_act = stats.label_metrics(test.gold, act_logits.numpy(), test.labels)
        log(f"test baseline {kb / n:.3f} -> ACT {ka / n:.3f} (n={n}; ACT-only right {mc.only_a}, baseline-only right {mc.only_b})")
        rec["test"] = {"n": n, "baseline": kb / n, "act": ka / n, "baseline_ci95": wilson(kb, n), "act_ci95": wilson(ka, n),
                       "act_only_right": mc.only_a, "baseline_only_right": mc.only_b, "mcnemar_p": mc.p_value,
                       "baseline_metrics": m_base, "act_metrics": m_act}
    rec["seconds"] = round(time.time() - t0, 1)
    return rec
