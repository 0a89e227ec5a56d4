"""Sink tokens inside the image span of studio-vlm (SmolLM2's massive-activation dim 507).

    python -m studies.vlm.sinks        # 20 held-out images, writes studies/vlm/results/sinks.json

For each prompt arrangement, with eager attention and all hidden states:
- massive activation: phi = |x[d]| / rms(x) for the sink dim d (found automatically as the dim with the
  largest mean |x| on the first token of a text-prefixed prompt in layers >= 12; expected 507) at each
  decoder layer's output; an image token is a "visual sink" when phi > 20 (the VAR default tau);
- received attention: attention from the question's text tokens (queries from the second post-image
  token on, so the first post-image token is only a key) to each key position, averaged over heads,
  images and queries, then over layers >= 12; also from the answer position alone.
Arrangements: "image_first" ([16 image tokens] + question, the trained layout) and "text_prefix"
("<|im_start|>user\\n" + image + question; out of the training distribution, so only the LM's sink
placement is of interest there).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]

from probe.data.images import fashion_subset  # noqa: E402
import probe  # noqa: E402
from probe.data import fashion  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402

TAU = 20.0
LATE = 12  # "late" layers: from here on SmolLM2's sink on the first token is strong (env-notes)


@torch.no_grad()
def run(vlm, processor, images, prompt: str):
    """Returns hidden [L+1, B, T, D], attn [L, B, H, T, T], span (s, e), input ids [T]."""
    enc = processor(text=[prompt] * len(images), images=sv._as_pil(images), return_tensors="pt")
    out = vlm(**enc, output_attentions=True, output_hidden_states=True)
    hidden = torch.stack(out.hidden_states)  # [L+1, B, T, D]
    attn = torch.stack(out.attentions)  # [L, B, H, T, T]
    (span,) = sv.image_token_spans(enc["input_ids"][:1], processor.image_token_id)[0]
    return hidden, attn, span, enc["input_ids"][0]


def sink_dim(hidden: torch.Tensor) -> tuple[int, list[int]]:
    """The dim with the largest mean |x| on token 0 over layers >= LATE; also the top 3."""
    mag = hidden[LATE + 1 :, :, 0].abs().mean(dim=(0, 1))  # [D]
    top = mag.topk(3).indices.tolist()
    return top[0], top


def analyse(hidden, attn, span, dim: int) -> dict:
    s, e = span
    L = attn.shape[0]
    x = hidden[1:]  # [L, B, T, D]: output of decoder layer l
    rms = x.pow(2).mean(-1).sqrt()  # [L, B, T]
    big = x[..., dim].abs()  # [L, B, T]
    phi = big / rms  # [L, B, T]
    img_phi, img_big = phi[:, :, s:e], big[:, :, s:e]  # [L, B, 16]
    sinks = img_phi > TAU  # [L, B, 16]
    # attention from the text queries after the first post-image token to every key (so that token is
    # only ever a key), mean over B, H, queries -> [L, T]; and from the answer position alone
    recv = attn[:, :, :, e + 1 :, :].mean(dim=(1, 2, 3))  # [L, T]
    recv_answer = attn[:, :, :, -1, :].mean(dim=(1, 2))  # [L, T]
    late = slice(LATE, L)
    recv_late = recv[late].mean(0)  # [T]
    # image-token attention split by visual-sink status, per (layer, image, token), late layers
    a_img = attn[late, :, :, e + 1 :, s:e].mean(dim=(2, 3))  # [L', B, 16]
    sk = sinks[late]
    per_layer = []
    for l in range(L):
        per_layer.append({
            "layer": l,
            "n_visual_sinks": int(sinks[l].sum()),
            "sink_positions": sorted(set((torch.nonzero(sinks[l])[:, 1]).tolist())),
            "max_abs_x_dim_image": float(img_big[l].max()),
            "max_abs_x_dim_image_excl_first": float(img_big[l, :, 1:].max()) if e - s > 1 else 0.0,
            "median_abs_x_dim_image": float(img_big[l].median()),
            "first_token_abs_x_dim": float(big[l, :, 0].mean()),
            "attn_to_image_span": float(recv[l, s:e].sum()),
            "attn_to_first_image_token": float(recv[l, s]),
            "attn_to_pos0": float(recv[l, 0]),
        })
    emb_rms = hidden[0].pow(2).mean(-1).sqrt()  # [B, T]: LM input (embeddings / projected image)
    late_big = big[late].mean(dim=(0, 1))  # [T]
    return {
        "span": [s, e],
        "input_rms_image_tokens": float(emb_rms[:, s:e].mean()),
        "input_rms_text_tokens": float(emb_rms[:, e:].mean()),
        "late_mean_abs_x_dim_per_position": [round(float(v), 1) for v in late_big],
        "late_max_phi_per_position": [round(float(v), 2) for v in phi[late].amax(dim=(0, 1))],
        "massive_position_per_layer": big.mean(1).argmax(-1).tolist(),
        "late_answer_attention_to_image_span": float(recv_answer[late, s:e].sum(-1).mean()),
        "late_answer_attention_per_position": [round(float(v), 4) for v in recv_answer[late].mean(0)],
        "n_images": int(x.shape[1]),
        "per_layer": per_layer,
        "late_layers": f"{LATE}..{L - 1}",
        "late_mean_attention_per_image_position": [round(float(v), 4) for v in recv_late[s:e]],
        "late_mean_attention_per_text_position": [round(float(v), 4) for v in recv_late[e:]],
        "late_attention_to_image_span": float(recv_late[s:e].sum()),
        "late_visual_sink_tokens_per_image": float(sk.sum(dim=(0, 2)).float().mean() / sk.shape[0]),
        "late_mean_attention_sink_vs_nonsink_image_tokens": [
            float(a_img[sk].mean()) if sk.any() else None,
            float(a_img[~sk].mean()) if (~sk).any() else None,
        ],
        "late_visual_sinks_excluding_first_image_token": int(sk[:, :, 1:].sum()),
        "late_images_with_a_sink_beyond_first_image_token": int(sk[:, :, 1:].any(dim=(0, 2)).sum()),
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--projector", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "studies" / "vlm" / "results" / "sinks.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, labels, _ = fashion_subset("test", 500, seed=0)
    images = images[: args.n]
    handle = probe.load("studio-vlm", device="cpu", dtype=torch.float32, attn_implementation="eager")
    vlm, processor = handle.model, handle.processor
    sv.load_projector(vlm, args.projector)

    res = {"tau": TAU}
    runs = {
        "image_first": fashion.fashion_prompt(),
        "text_prefix": "<|im_start|>user\n" + fashion.fashion_prompt(),
    }
    hs = {}
    for name, prompt in runs.items():
        hs[name] = run(vlm, processor, images, prompt)
    dim, top3 = sink_dim(hs["text_prefix"][0])
    res["sink_dim"] = dim
    res["top3_dims_first_token"] = top3
    for name, (hidden, attn, span, ids) in hs.items():
        r = analyse(hidden, attn, span, dim)
        r["prompt"] = runs[name]
        res[name] = r
        print(f"\n== {name}: image span {span}, sink dim {dim} (top3 on token 0: {top3})")
        print("layer  sinks  positions            max|x_d| img  max excl first  median  attn->img  attn->img[0]  attn->pos0")
        for p in r["per_layer"]:
            print(f"{p['layer']:5d}  {p['n_visual_sinks']:5d}  {str(p['sink_positions'])[:20]:20s} "
                  f"{p['max_abs_x_dim_image']:12.0f}  {p['max_abs_x_dim_image_excl_first']:14.0f}  "
                  f"{p['median_abs_x_dim_image']:6.0f}  {p['attn_to_image_span']:9.3f}  "
                  f"{p['attn_to_first_image_token']:12.3f}  {p['attn_to_pos0']:10.3f}")
        print("late mean attention per image position:", r["late_mean_attention_per_image_position"])
        print("late mean attention per text position:", r["late_mean_attention_per_text_position"])
        print("late mean |x_d| per position:", r["late_mean_abs_x_dim_per_position"])
        print("massive position per layer:", r["massive_position_per_layer"])
        print("input rms image / text:", round(r["input_rms_image_tokens"], 3), round(r["input_rms_text_tokens"], 3),
              " answer-position attention to image (late):", round(r["late_answer_attention_to_image_span"], 3))
        print("late visual sinks per image:", round(r["late_visual_sink_tokens_per_image"], 2),
              " sinks beyond first image token:", r["late_visual_sinks_excluding_first_image_token"],
              " mean attn sink vs non-sink image token:", r["late_mean_attention_sink_vs_nonsink_image_tokens"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
