"""Visual sinks and vision-aware heads on studio-vlm2 (and on early projector snapshots).

- ``detect``: ``probe.detect.vision.analyse`` (VAR's phi rule per image token per layer, the image-centric
  head rule, VHD per head with and without the image) on prompts x test scenes;
- ``massive_landing``: where the LM's massive sink dims land in an image prompt, per layer: the position
  with the largest phi over the whole prompt (image token k, the first text token after the image, a
  later text token), and the largest phi among image tokens vs on the first text token.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from probe.capture import capture
from probe.detect import vision as vd


def detect(handle, prompts: list[str], images: list, names: list[str], batch_size: int = 16):
    """DetectorOutput of both vision detectors (heads: vhd, image_attention_mass, ...; table visual_tokens)."""
    return vd.analyse(handle, prompts, images=images, image_names=names, batch_size=batch_size)


@torch.no_grad()
def massive_landing(handle, prompts: list[str], images: list, sink_dims: list[int], min_layer: int = 2,
                    batch_size: int = 16) -> dict:
    """Per layer >= min_layer: where the largest phi of each prompt sits, and phi on image vs first text token.

    Returns {"by_layer": {layer: {"argmax_role": {role: count}, "phi_image_max_mean", "phi_first_text_mean",
    "phi_argmax_mean"}}, "items"}; roles: "image" (any image token), "first_text" (right after the image),
    "text" (later), "before_image".
    """
    texts = [vd.with_image_token(handle, p) for p in prompts for _ in images]
    ims = [im for _ in prompts for im in images]
    L = handle.n_layers
    roles: dict[int, Counter] = {l: Counter() for l in range(min_layer, L)}
    img_max: dict[int, list] = {l: [] for l in range(min_layer, L)}
    first_txt: dict[int, list] = {l: [] for l in range(min_layer, L)}
    top: dict[int, list] = {l: [] for l in range(min_layer, L)}
    for s in range(0, len(texts), batch_size):
        enc = vd.encode_images(handle, texts[s:s + batch_size], ims[s:s + batch_size])
        spans = vd.image_span_tensor(handle, enc["input_ids"])                 # [B, 1, 2]
        with capture(handle, stats=(), hidden="full") as rec:
            handle.model(**enc, use_cache=False)
        mask = enc["attention_mask"].bool().cpu()                               # [B, T]
        for l in range(min_layer, L):
            ph = vd.phi(rec.hidden(l).full.float(), sink_dims).cpu()            # [B, T]
            ph = ph.masked_fill(~mask, -1.0)
            for b in range(ph.shape[0]):
                a, e = int(spans[b, 0, 0]), int(spans[b, 0, 1])
                j = int(ph[b].argmax())
                role = "image" if a <= j < e else "first_text" if j == e else "text" if j > e else "before_image"
                roles[l][role] += 1
                img_max[l].append(float(ph[b, a:e].max()))
                if e < ph.shape[1]:
                    first_txt[l].append(float(ph[b, e]))
                top[l].append(float(ph[b, j]))
    by_layer = {l: {"argmax_role": dict(roles[l]), "phi_image_max_mean": round(float(np.mean(img_max[l])), 3),
                    "phi_image_max_max": round(float(np.max(img_max[l])), 3),
                    "phi_first_text_mean": round(float(np.mean(first_txt[l])), 3) if first_txt[l] else None,
                    "phi_argmax_mean": round(float(np.mean(top[l])), 3)} for l in roles}
    overall = Counter()
    for c in roles.values():
        overall.update(c)
    return {"items": len(texts), "sink_dims": list(sink_dims), "argmax_role_all_layers": dict(overall),
            "by_layer": by_layer}


def sink_summary(out) -> dict:
    """Compact numbers from a DetectorOutput for the report (phi quantiles, sinks per item-layer, VHD)."""
    t = out.tables["visual_tokens"]
    h = out.heads
    s = out.summary
    per_item_layer = t.groupby(["item", "layer"])["is_visual_sink"].sum()
    return {
        "sink_dims": s.get("sink_dims"),
        "phi_quantiles_p50_p90_p99_max": s.get("phi_quantiles_p50_p90_p99_max"),
        "phi_max_by_layer": {int(k): round(float(v), 3) for k, v in t.groupby("layer")["phi"].max().items()},
        "visual_sink_rows": int(t["is_visual_sink"].sum()),
        "visual_sinks_per_item_layer_mean": round(float(per_item_layer.mean()), 4),
        "items_with_any_visual_sink": int(t.groupby("item")["is_visual_sink"].any().sum()),
        "items": int(t["item"].nunique()),
        "visual_sinks_by_layer": s.get("visual_sinks_by_layer"),
        "visual_sink_image_positions": s.get("visual_sink_image_positions"),
        "image_centric_fraction": s.get("image_centric_fraction"),
        "image_attention_mass_mean": round(float(h["image_attention_mass"].mean()), 4),
        "vision_norm_max_over_median": round(float((t.groupby("item")["vision_norm"].max()
                                                     / t.groupby("item")["vision_norm"].median()).max()), 3),
        "top_vhd_heads": s.get("top_vhd_heads"),
        "vhd_by_layer": s.get("vhd_by_layer"),
    }
