"""Baseline, VAR, VHR and matched random-head controls on the studio-vlm2 benchmark, batched.

Each condition is a dict from ``settings.json`` ("method": baseline | no_image | var | vhr | random):
- var:    ``interventions.VAR`` (preset "code": keep 0.6, rho 0.5; "paper": transfer 0.6, nonsink_share 0.5),
          applied with ``intervene`` to whole batches (its sink sets are per row);
- vhr:    VHR's rule (``probe.detect.vision.vhd_scores`` / ``vhr_select``) applied per row in ONE forward on
          the batch [B prompts with image; the same B prompts without the image tokens]: layer by layer the
          heads of each row are chosen at the last prompt position and scaled by alpha in that same forward
          (as ``interventions.VHR.select`` does for one sample). Row b's logits in that forward are the
          reinforced model's logits for prompt b (the chosen heads are scaled at every position), so the
          POPE answer needs no second forward. For captions the chosen heads then stay fixed per row for
          the whole generation. ``check_vhr_parity`` compares this with ``interventions.VHR`` sample by sample;
- random: the same number of heads per (row, layer) as the matched VHR condition chose, drawn uniformly
          from that layer's heads (seeded per draw), scaled by the same alpha (the matched control).
Head scaling goes through the named ``z`` tap (o_proj's input: ``probe.capture.taps.TapSet``).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch

from interventions import VAR, VHR, intervene
from probe.capture.taps import TapSet, tap_name
from probe.data import scenes as sc
from probe.capture.head_outputs import vhd_scores, vhr_layers, vhr_select
from probe.models.vlm_inputs import drop_image_tokens


def make_handle(vlm, processor, name: str = "studio-vlm2"):
    """A probe Handle around an assembled studio VLM (what ``probe.load("studio-vlm2")`` returns)."""
    from probe.models.handle import Handle

    return Handle(vlm, processor.tokenizer, name, "alias", None, processor=processor)


def resolve_layers(spec, n_layers: int) -> list[int]:
    """"default" (1 + last round(14/32 L)), "last" (the last round(14/32 L)), "layer1", "all", or a list."""
    if isinstance(spec, (list, tuple)):
        return sorted(int(x) for x in spec)
    k = int(round(14 / 32 * n_layers))
    return {"default": vhr_layers(n_layers), "last": list(range(n_layers - k, n_layers)), "layer1": [1],
            "all": list(range(n_layers))}[spec]


@contextlib.contextmanager
def row_head_scales(handle, scales: dict[int, torch.Tensor]):
    """Scale head outputs per row: ``scales[layer]`` [B, H] multiplies o_{l,h} of row b (z tap)."""
    def edit(layer):
        s = scales[layer]

        def fn(x, ctx):                                                   # x [B, T, H, Dh]
            return x * s.to(x.device, x.dtype)[:, None, :, None]
        return fn

    with TapSet(handle, edits=[(tap_name(l, "z"), edit(l)) for l in sorted(scales)]):
        yield


def _pair_batch(handle, enc: dict) -> dict:
    """[B with image; B without the image tokens], left padded to one width, with position ids."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    txt = drop_image_tokens(ids, mask, handle.image_token_id, handle.pad_id)
    T = max(ids.shape[1], txt["input_ids"].shape[1])
    pad = lambda t, v: torch.nn.functional.pad(t, (T - t.shape[1], 0), value=v)  # noqa: E731 left pad
    both_ids = torch.cat([pad(ids, handle.pad_id), pad(txt["input_ids"], handle.pad_id)])      # [2B, T]
    both_mask = torch.cat([pad(mask, 0), pad(txt["attention_mask"], 0)])                         # [2B, T]
    pos = (both_mask.cumsum(-1) - 1).clamp_min(0)                                                # [2B, T]
    return {"input_ids": both_ids, "attention_mask": both_mask, "position_ids": pos,
            "pixel_values": enc["pixel_values"]}


@torch.no_grad()
def vhr_forward(handle, enc: dict, alpha: float, layers: list[int], outlier_removal: bool = True):
    """VHR's per-row head choice and reinforcement in one forward (see the module doc).

    Args:
        enc: processor batch (input_ids [B, T], attention_mask, pixel_values), one image per row.
    Returns:
        (logits at the last prompt position [B, V] of the reinforced model with the image,
         chosen heads bool [B, L, H], VHD [B, L, H] (0 outside ``layers``)).
    """
    B = enc["input_ids"].shape[0]
    L, H = handle.n_layers, handle.n_heads
    chosen = torch.zeros(B, L, H, dtype=torch.bool)
    vhd = torch.zeros(B, L, H)

    def edit(layer):
        def fn(x, ctx):                                                   # x [2B, T, H, Dh]
            v, t = vhd_scores(x[:B, -1], x[B:, -1])                       # [B, H], [B, H]
            on = vhr_select(v, t, outlier_removal)                        # [B, H]
            chosen[:, layer], vhd[:, layer] = on.cpu(), v.cpu()
            scale = torch.where(on, alpha, 1.0).to(x.dtype)               # [B, H]
            return x * torch.cat([scale, scale])[:, None, :, None]
        return fn

    both = _pair_batch(handle, enc)
    with TapSet(handle, edits=[(tap_name(l, "z"), edit(l)) for l in layers]):
        logits = handle.model(**both, use_cache=False).logits[:B, -1]    # [B, V]
    return logits, chosen, vhd


def random_scales(chosen: torch.Tensor, layers: list[int], alpha: float, rng: np.random.Generator
                  ) -> dict[int, torch.Tensor]:
    """Matched random heads: per (row, layer) as many heads as ``chosen`` [B, L, H] holds, uniformly drawn."""
    B, _, H = chosen.shape
    counts = chosen.sum(-1).numpy()                                       # [B, L]
    scales = {}
    for l in layers:
        s = torch.ones(B, H)
        for b in range(B):
            k = int(counts[b, l])
            if k:
                s[b, torch.as_tensor(rng.choice(H, size=k, replace=False))] = alpha
        scales[l] = s
    return scales


def _var(cond: dict) -> VAR:
    return (VAR.paper_preset if cond.get("preset", "code") == "paper" else VAR)(log_selection=True)


def _var_counts(var: VAR, B: int) -> tuple[list[int], list[int]]:
    """Per row: (visual-sink entries summed over layers, all sink entries) from ``var.found_sinks``."""
    vis, allk = [0] * B, [0] * B
    for rows in var.found_sinks.values():
        for b, pos in enumerate(rows[:B]):
            s, e = var.spans[b]
            vis[b] += sum(s <= p < e for p in pos)
            allk[b] += len(pos)
    return vis, allk


def _encode(handle, texts, images):
    from probe.models.vlm_inputs import encode_images

    if images is None:
        return handle.processor(text=list(texts), return_tensors="pt", padding=True, padding_side="left").to(handle.device)
    return encode_images(handle, texts, images)


class Runner:
    """Runs the benchmark under each condition; keeps VHR choices for the matched random controls."""

    def __init__(self, handle, scenes, seed: int = 0):
        self.h, self.scenes, self.seed = handle, scenes, seed
        tok = handle.tokenizer
        self.yes = tok(" Yes", add_special_tokens=False).input_ids[0]
        self.no = tok(" No", add_special_tokens=False).input_ids[0]
        self.eos = tok.convert_tokens_to_ids("<|im_end|>")
        self.chosen: dict[tuple[str, str], torch.Tensor] = {}             # (condition, "pope"/"caption") -> [N, L, H]
        self.n_img = int(handle.model.config.image_seq_length)
        self.pix = None                                                   # [N, 3, S, S] on the device, lazily

    def _enc(self, texts: list[str], scene_idx: Optional[list[int]]) -> dict:
        """Processor-equivalent batch from cached pixels: texts with one image token each (left padded).

        The first call checks it against the processor (token ids, mask and pixels must be equal)."""
        from studies.vlm2.train import image_size, pixel_values

        h = self.h
        if scene_idx is None:
            return _encode(h, texts, None)
        if self.pix is None:
            self.pix = pixel_values([s.image for s in self.scenes], image_size(h.processor)).to(h.device)
            ref = _encode(h, texts[:2], [self.scenes[i].image for i in scene_idx[:2]])
            mine = self._enc(texts[:2], scene_idx[:2])
            if any(not torch.equal(ref[k].cpu(), mine[k].cpu()) for k in ("input_ids", "attention_mask")) or \
                    float((ref["pixel_values"] - mine["pixel_values"]).abs().max()) > 1e-5:
                raise RuntimeError("cached encoding differs from the processor's")
        img = h.processor.image_token
        enc = h.tokenizer([t.replace(img, img * self.n_img) for t in texts], return_tensors="pt", padding=True,
                          padding_side="left")
        return {"input_ids": enc["input_ids"].to(h.device), "attention_mask": enc["attention_mask"].to(h.device),
                "pixel_values": self.pix[torch.as_tensor(scene_idx, device=h.device)]}

    # -- one batch of logits at the answer position -----------------------------------------------------
    def _logits(self, name: str, cond: dict, texts, scene_idx, part: str, offset: int, stats: list) -> torch.Tensor:
        h, method = self.h, cond["method"]
        if method == "no_image":
            return h.model(**self._enc(texts, None), use_cache=False).logits[:, -1]
        enc = self._enc([h.processor.image_token + t for t in texts], scene_idx)
        B = enc["input_ids"].shape[0]
        if method == "baseline":
            return h.model(**enc, use_cache=False).logits[:, -1]
        if method == "var":
            var = _var(cond)
            with intervene(h, var):
                logits = h.model(**enc, use_cache=False).logits[:, -1]
            vis, allk = _var_counts(var, B)
            stats.append({"visual_sink_entries": vis, "sink_entries": allk, "selected_fraction": var.selected_fraction})
            return logits
        layers = resolve_layers(cond.get("layers", "default"), h.n_layers)
        if method == "vhr":
            logits, chosen, _ = vhr_forward(h, enc, float(cond["alpha"]), layers)
            self.chosen.setdefault((name, part), []).append(chosen)
            stats.append({"heads": chosen.sum((1, 2)).tolist()})
            return logits
        if method == "random":
            ref = self._matched(cond, part)[offset:offset + B]                      # [B, L, H]
            rng = np.random.default_rng([int(cond.get("seed", 0)), int(cond["draw"]), offset])
            scales = random_scales(ref, layers, float(cond["alpha"]), rng)
            with row_head_scales(h, scales):
                logits = h.model(**enc, use_cache=False).logits[:, -1]
            stats.append({"heads": ref.sum((1, 2)).tolist()})
            return logits
        raise ValueError(f"unknown method {method!r}")

    def _matched(self, cond: dict, part: str) -> torch.Tensor:
        key = (cond["match"], part)
        got = self.chosen.get(key)
        if got is None:
            raise RuntimeError(f"random control needs {cond['match']} run first on {part}")
        if isinstance(got, list):
            got = self.chosen[key] = torch.cat(got)
        return got

    # -- POPE -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def pope(self, name: str, cond: dict, questions: list[dict], batch: int = 64) -> tuple[list[dict], dict]:
        """log p(" Yes"), log p(" No") per unique question; returns (rows, condition stats)."""
        rows, stats = [], []
        for s in range(0, len(questions), batch):
            part = questions[s:s + batch]
            texts = [sc.EXISTS_PROMPT.format(noun=q["noun"]) for q in part]
            idx = [q["scene"] for q in part]
            lp = torch.log_softmax(self._logits(name, cond, texts, idx, "pope", s, stats).float(), -1)   # [b, V]
            for q, a, b in zip(part, lp[:, self.yes].tolist(), lp[:, self.no].tolist()):
                rows.append({**q, "condition": name, "lp_yes": a, "lp_no": b, "pred": "yes" if a > b else "no"})
        if self.chosen.get((name, "pope")) is not None and isinstance(self.chosen[(name, "pope")], list):
            self._matched({"match": name}, "pope")
        return rows, _merge(stats)

    # -- captions -------------------------------------------------------------------------------------
    @torch.no_grad()
    def captions(self, name: str, cond: dict, n: int, batch: int = 64, max_new_tokens: int = 40
                 ) -> tuple[list[dict], dict]:
        h, method = self.h, cond["method"]
        tok = h.tokenizer
        rows, stats = [], []
        for s in range(0, n, batch):
            part = self.scenes[s:min(n, s + batch)]
            enc = self._enc([h.processor.image_token + sc.CAPTION_PROMPT] * len(part), list(range(s, s + len(part))))
            B = len(part)
            gen = dict(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.eos, pad_token_id=h.pad_id)
            if method == "baseline":
                out = h.model.generate(**enc, **gen)
            elif method == "var":
                var = _var(cond)
                with intervene(h, var):
                    out = h.model.generate(**enc, **gen)
                stats.append({"visual_sink_entries": _var_counts(var, B)[0]})
            else:
                layers = resolve_layers(cond.get("layers", "default"), h.n_layers)
                if method == "vhr":
                    _, chosen, _ = vhr_forward(h, enc, float(cond["alpha"]), layers)
                    self.chosen.setdefault((name, "caption"), []).append(chosen)
                    scales = {l: torch.where(chosen[:, l], float(cond["alpha"]), 1.0) for l in layers}
                elif method == "random":
                    ref = self._matched(cond, "caption")[s:s + B]
                    chosen = ref
                    rng = np.random.default_rng([int(cond.get("seed", 0)), int(cond["draw"]), 10 ** 6 + s])
                    scales = random_scales(ref, layers, float(cond["alpha"]), rng)
                else:
                    raise ValueError(f"captions: unknown method {method!r}")
                stats.append({"heads": chosen.sum((1, 2)).tolist()})
                with row_head_scales(h, scales):
                    out = h.model.generate(**enc, **gen)
            for i, seq in enumerate(out[:, enc["input_ids"].shape[1]:]):
                rows.append({"condition": name, "scene": s + i, "caption": tok.decode(seq, skip_special_tokens=True),
                             "objects": part[i].objects, "reference": sc.caption(part[i])})
        if isinstance(self.chosen.get((name, "caption")), list):
            self._matched({"match": name}, "caption")
        return rows, _merge(stats)


def _merge(stats: list[dict]) -> dict:
    out: dict = {}
    for s in stats:
        for k, v in s.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            elif v is not None:
                out.setdefault(k, []).append(v)
    return {k: {"mean": float(np.mean(v)), "max": float(np.max(v))} if v else {} for k, v in out.items()}


@torch.no_grad()
def check_vhr_parity(handle, scenes, questions: list[dict], alpha: float = 2.0, layers: Optional[list] = None) -> dict:
    """The batched VHR above vs ``interventions.VHR`` one sample at a time (select, then intervene).

    Returns the max |difference| of log p(" Yes") - log p(" No") and the share of identical head sets.
    """
    layers = layers or vhr_layers(handle.n_layers)
    tok = handle.tokenizer
    yes, no = tok(" Yes", add_special_tokens=False).input_ids[0], tok(" No", add_special_tokens=False).input_ids[0]
    texts = [handle.processor.image_token + sc.EXISTS_PROMPT.format(noun=q["noun"]) for q in questions]
    images = [scenes[q["scene"]].image for q in questions]
    enc = _encode(handle, texts, images)
    logits, chosen, _ = vhr_forward(handle, enc, alpha, layers)
    lp = torch.log_softmax(logits.float(), -1)
    diffs, same = [], 0
    for b in range(len(questions)):
        one = _encode(handle, texts[b:b + 1], images[b:b + 1])
        v = VHR(alpha=alpha, layers=layers)
        heads = v.select(handle, one)
        with intervene(handle, v):
            lp1 = torch.log_softmax(handle.model(**one, use_cache=False).logits[0, -1].float(), -1)
        mine = sorted((int(l), int(hh)) for l, hh in chosen[b].nonzero().tolist())
        same += mine == sorted(heads)
        diffs.append(abs(float((lp[b, yes] - lp[b, no]) - (lp1[yes] - lp1[no]))))
    return {"n": len(questions), "max_abs_diff_yes_minus_no": max(diffs), "identical_head_sets": same / len(questions)}
