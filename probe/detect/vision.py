"""Vision detectors on LLaVA-layout VLMs: visual sinks (VAR) and vision-aware heads (VHD).

Definitions (docs/methods.md §2, §3, §8; x^(l) = residual stream entering decoder layer l):
  sink dims D_sink: found automatically from the LM's massive activations on the first token of the
    text-only prompts (``probe.capture.massive.find_sink_dims``: dims whose first-token |x| is >= 100 x
    the median |x| in at least half of the layers from 2 on).
  phi(x_j) = max_{d in D_sink} |x_j[d] / rms(x_j)|, rms without gain, eps 1e-6. phi <= sqrt(D) always
    (SmolLM2-135M: D = 576, sqrt = 24, so tau = 20 means one dim holds >= 69% of the token's energy).
  visual sinks of layer l = image tokens with phi > tau (strict; tau = 20), layers >= 2.
  image-centric head (VAR's rule, last query): m = attention mass on the image span, q = mass on the
    visual sinks / (m + 1e-6); selected iff q <= rho (0.5) and m >= min_mass (0.2); a layer without
    visual sinks selects nothing.
  VHD_{l,h} = || o_{l,h}(with image) - o_{l,h}(without image) ||_2 at the answer position (the last
    prompt token), o = head output before o_proj; TA_{l,h} = || o_{l,h}(without image) ||^2.
  VHR rule per layer: zero VHD where VHD > mean + std AND TA > mean + std, keep VHD > median.

Registry names: "vhd" (``run_vhd``), "visual-sinks" (``run_visual_sinks``), "vision" (``run``: both).
Prompts are questions; each is paired with images (default: Fashion-MNIST test images + scikit-image
photos). A prompt without the processor's image token gets it in front (studio-vlm's trained layout).
What VHR (``interventions.vlm``) shares with these detectors lives below both: the head-output tap and
the VHD / VHR scores in ``probe.capture.head_outputs``, sink dims and phi in ``probe.capture.massive``,
the image inputs in ``probe.models.vlm_inputs`` (all re-exported here).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..capture import capture
from ..capture.head_outputs import HeadOutputTap, head_outputs, vhd_scores, vhr_layers, vhr_select  # noqa: F401
from ..capture.massive import SINK_DIM_TEXTS, find_sink_dims, massive_phi  # noqa: F401
from ..errors import ProbeError
from ..models.vlm_inputs import drop_image_tokens, encode_images, image_placeholder, with_image_token  # noqa: F401
from .base import DetectorOutput, head_frame

DEFAULTS = dict(tau=20.0, rho=0.5, min_mass=0.2, batch_size=4, n_fashion=8, fashion_seed=0,
                photos="astronaut,camera,coffee,chelsea", pairing="product", min_layer=2)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def _require_vlm(handle) -> None:
    if handle.processor is None or handle.image_token_id is None:
        raise ProbeError(f"model {handle.source} is not a vision-language model (no processor / image token)",
                         "load a LLaVA-style VLM, e.g. --model studio-vlm")


def default_images(n_fashion: int = 8, seed: int = 0, photos: str | Sequence[str] = DEFAULTS["photos"]
                   ) -> tuple[list[np.ndarray], list[str]]:
    """Fashion-MNIST test images (seeded subset) + scikit-image photos (those installed).

    Returns (images uint8 [H, W] or [H, W, 3], names like "fashion:123:Trouser" / "skimage:camera").
    """
    from ..data.images import FASHION_MNIST_CLASSES, fashion_subset, skimage_photo

    images, names = [], []
    if n_fashion:
        ims, labels, idx = fashion_subset("test", int(n_fashion), seed)
        images += list(ims)
        names += [f"fashion:{i}:{FASHION_MNIST_CLASSES[y]}" for i, y in zip(idx.tolist(), labels.tolist())]
    photos = [p for p in (photos.split(",") if isinstance(photos, str) else photos) if p]
    for p in photos:
        try:
            images.append(skimage_photo(p))
            names.append(f"skimage:{p}")
        except ImportError:
            break
    if not images:
        raise ProbeError("no images for the vision detectors", "install scikit-image or Debian's dataset-fashion-mnist")
    return images, names


def image_span_tensor(handle, input_ids: Tensor) -> Tensor:
    """The one image span per row as [B, 1, 2] (start, end) absolute positions; ProbeError otherwise."""
    spans = handle.image_spans(input_ids.cpu())
    if any(len(s) != 1 for s in spans):
        raise ProbeError(f"the vision detectors need exactly one image per prompt (got {[len(s) for s in spans]})",
                         "give prompts with one image token (or none: it is put in front)")
    return torch.tensor([[s[0]] for s in spans], dtype=torch.long)  # [B, 1, 2]


# ---------------------------------------------------------------------------------------------
# sink dims, phi, vision-tower norms
# ---------------------------------------------------------------------------------------------


def phi(x: Tensor, dims: Sequence[int]) -> Tensor:
    """phi(x_j) = max_{d in dims} |x_j[d] / rms(x_j)| (VAR, same function as ``Redistribute``): [..., D] -> [...]."""
    if not dims:
        raise ProbeError("no sink dims: phi needs D_sink", "pass sink_dims=... or check the model has massive activations")
    shape = x.shape[:-1]
    return massive_phi(x.reshape(1, -1, x.shape[-1]), list(dims)).reshape(shape)


@torch.no_grad()
def vision_token_norms(model, pixel_values: Tensor) -> Optional[Tensor]:
    """L2 norm of each image feature the LLaVA projector receives (the vision tower's own high-norm
    tokens, cf. ViT registers): pixel_values [B, 3, S, S] -> [B, N_img].

    None for layouts where the projector's inputs are not one patch grid per image (LLaVA-NeXT /
    OneVision tiles, Qwen2-VL's merged patches): the table then holds NaN."""
    from ..models.studio_vlm import vision_features

    if pixel_values.dim() != 4 or not hasattr(model.config, "vision_feature_layer"):
        return None
    return vision_features(model, pixel_values).float().norm(dim=-1).cpu()  # [B, N_img]


# ---------------------------------------------------------------------------------------------
# the detector
# ---------------------------------------------------------------------------------------------


def _items(handle, prompts, opts) -> tuple[list[str], list, list[str], list[int]]:
    """(texts with image token, images, image names, prompt index) for every prompt x image pair."""
    if opts.get("images") is not None:
        images = list(opts["images"])
        names = list(opts.get("image_names") or [f"image:{i}" for i in range(len(images))])
    else:
        images, names = default_images(opts["n_fashion"], opts["fashion_seed"], opts["photos"])
    P, N = len(prompts), len(images)
    if opts["pairing"] == "product":
        pairs = [(p, i) for p in range(P) for i in range(N)]
    elif opts["pairing"] == "cycle":
        pairs = [(k % P, k % N) for k in range(max(P, N))]
    else:
        raise ProbeError(f"pairing={opts['pairing']!r}", "use pairing=product or pairing=cycle")
    texts = [with_image_token(handle, prompts[p], opts.get("chat_template", False)) for p, _ in pairs]
    return texts, [images[i] for _, i in pairs], [names[i] for _, i in pairs], [p for p, _ in pairs]


def _grid(n: int) -> int:
    side = math.isqrt(n)
    return side if side * side == n else 0


def grid_widths(handle, enc: dict, n_tokens: Sequence[int]) -> list[int]:
    """Patch-grid width of each row's image span (0 when the span is not one row-major grid).

    Qwen2-VL family: from ``image_grid_thw`` (t, h, w patches, merged spatial_merge_size^2 -> 1);
    otherwise a square span (LLaVA-1.5: 24 x 24). LLaVA-NeXT / OneVision spans (tiles + newlines): 0.
    """
    thw = enc.get("image_grid_thw")
    if thw is not None:
        merge = int(getattr(handle.model.config.vision_config, "spatial_merge_size", 1))
        out = []
        for (t, h, w), n in zip(thw.tolist(), n_tokens):
            out.append(w // merge if t * h * w == n * merge * merge else 0)
        return out
    return [_grid(n) for n in n_tokens]


@torch.no_grad()
def analyse(handle, prompts: Sequence[str], *, want_vhd: bool = True, want_sinks: bool = True,
            progress: Optional[Callable[[int], None]] = None, **options) -> DetectorOutput:
    """Both vision detectors (see the module doc); ``run_vhd`` / ``run_visual_sinks`` pick columns.

    Returns heads (layer, head, kv_head + vhd, vhd_ta, vhr_rate, image_attention_mass,
    visual_sink_mass, image_centric_rate), table "visual_tokens" (one row per item x image token x
    layer >= min_layer), settings and summary (sink dims, phi distribution, sink counts per layer,
    image-centric fraction, top VHD heads).
    """
    _require_vlm(handle)
    opts = {**DEFAULTS, **options}
    L, H = handle.n_layers, handle.n_heads
    texts, images, names, prompt_idx = _items(handle, list(prompts), opts)
    n = len(texts)
    sink_dims = opts.get("sink_dims")
    dims_frame = None
    if sink_dims is None:
        sink_dims, dims_frame = find_sink_dims(handle, opts.get("sink_dim_texts") or SINK_DIM_TEXTS)
    sink_dims = [int(d) for d in ([sink_dims] if isinstance(sink_dims, int) else sink_dims)]
    layers = list(range(int(opts["min_layer"]), L))
    tau, rho, min_mass = float(opts["tau"]), float(opts["rho"]), float(opts["min_mass"])

    vhd = torch.zeros(n, L, H)
    ta = torch.zeros(n, L, H)
    img_mass = torch.zeros(n, L, H)
    sink_mass = torch.zeros(n, L, H)
    centric = torch.zeros(n, L, H)
    rows: list[tuple] = []
    bs = int(opts["batch_size"])
    for start in range(0, n, bs):
        sl = slice(start, min(n, start + bs))
        enc = encode_images(handle, texts[sl], images[sl])
        spans = image_span_tensor(handle, enc["input_ids"])                 # [B, 1, 2]
        recording = capture(handle, stats=("received", "full"), hidden="full") if want_sinks else contextlib.nullcontext()
        with head_outputs(handle) as tap, recording as rec:
            handle.model(**enc, use_cache=False)
        o_img = torch.stack([tap.last[l] for l in range(L)], 1)           # [B, L, H, Dh]
        if want_vhd:
            txt = drop_image_tokens(enc["input_ids"], enc["attention_mask"], handle.image_token_id, handle.pad_id)
            with head_outputs(handle) as tap_t:
                handle.model(**txt, use_cache=False)
            o_txt = torch.stack([tap_t.last[l] for l in range(L)], 1)     # [B, L, H, Dh]
            vhd[sl], ta[sl] = vhd_scores(o_img, o_txt)
        if want_sinks:
            norms = vision_token_norms(handle.model, enc["pixel_values"])  # [B, N_img]
            widths = grid_widths(handle, enc, (spans[:, 0, 1] - spans[:, 0, 0]).tolist())
            _sink_stats(handle, rec, spans, norms, sink_dims, layers, tau, rho, min_mass, start,
                        img_mass, sink_mass, centric, rows, names, prompt_idx, widths)
        if progress:
            progress(sl.stop - sl.start)

    heads = head_frame(L, H, handle.n_kv_heads)
    flat = lambda t: t.reshape(-1).numpy()  # noqa: E731  [L, H] -> rows in (layer, head) order
    summary: dict = {"items": n, "prompts": len(prompts), "images": len(set(names))}
    settings = {k: v for k, v in opts.items() if k not in ("images", "image_names", "sink_dim_texts")}
    settings["sink_dims"] = sink_dims
    tables = {}
    if want_vhd:
        chosen = vhr_select(vhd, ta)                                         # [n, L, H]
        heads["vhd"] = flat(vhd.mean(0))
        heads["vhd_ta"] = flat(ta.mean(0))
        heads["vhr_rate"] = flat(chosen.float().mean(0))
        top = heads.sort_values("vhd", ascending=False).head(10)
        summary["top_vhd_heads"] = [f"L{l}H{h}: {v:.3g}" for l, h, v in zip(top["layer"], top["head"], top["vhd"])]
        summary["vhd_by_layer"] = [round(float(x), 4) for x in vhd.mean((0, 2))]
    if want_sinks:
        heads["image_attention_mass"] = flat(img_mass.mean(0))
        heads["visual_sink_mass"] = flat(sink_mass.mean(0))
        heads["image_centric_rate"] = flat(centric.mean(0))
        cols = ["prompt_id", "item", "image", "layer", "image_pos", "position", "patch_row", "patch_col", "phi",
                "sink_dim_abs", "phi_dim", "is_visual_sink", "received_mass", "vision_norm"]
        table = pd.DataFrame(rows, columns=cols).sort_values(["item", "layer", "image_pos"], ignore_index=True)
        tables["visual_tokens"] = table
        summary.update(_sink_summary(table, sink_dims, tau, centric[:, layers], layers))
        if dims_frame is not None:
            summary["sink_dims_source"] = "first-token massive activations of the text-only sink-dim prompts"
    return DetectorOutput(heads, tables, settings, summary)


def _sink_stats(handle, rec, spans, norms, sink_dims, layers, tau, rho, min_mass, start,
                img_mass, sink_mass, centric, rows, names, prompt_idx, widths=None) -> None:
    """Per layer: phi of image tokens, visual sinks, last-query masses and the image-centric rule."""
    B = spans.shape[0]
    s, e = spans[:, 0, 0], spans[:, 0, 1]                                   # [B]
    key_start = rec.layer(0).key_start                                      # [B]
    for layer in range(handle.n_layers):
        st = rec.layer(layer)
        last = st.probs[:, :, -1]                                           # [B, H, S]
        x = rec.hidden(layer).full                                          # [B, T, D]
        ph = phi(x, sink_dims)                                              # [B, T]
        for b in range(B):
            sb, eb = int(s[b]), int(e[b])
            m = last[b, :, sb:eb].sum(-1)                                   # [H]
            is_sink = ph[b, sb:eb] > tau if layer in layers else torch.zeros(eb - sb, dtype=torch.bool)  # [N]
            vs = last[b, :, sb:eb][:, is_sink].sum(-1)                      # [H]
            item = start + b
            img_mass[item, layer] = m
            sink_mass[item, layer] = vs
            q = vs / (m + 1e-6)
            centric[item, layer] = ((q <= rho) & (m >= min_mass) & is_sink.any()).float()
            if layer not in layers:
                continue
            recv = st.received_mean[b, :, sb:eb].mean(0)                    # [N] mean over heads
            side = widths[b] if widths is not None else _grid(eb - sb)
            raw, which = x[b, sb:eb][:, sink_dims].abs().max(-1)            # [N], [N] (dim giving phi)
            for k in range(eb - sb):
                rows.append((prompt_idx[item], item, names[item], layer, k, sb + k - int(key_start[b]),
                             k // side if side else -1, k % side if side else -1, float(ph[b, sb + k]),
                             float(raw[k]), sink_dims[int(which[k])], bool(is_sink[k]), float(recv[k]),
                             float(norms[b, k]) if norms is not None and k < norms.shape[1] else float("nan")))


def _sink_summary(table: pd.DataFrame, sink_dims, tau, centric_layers: Tensor, layers) -> dict:
    if not len(table):
        return {"sink_dims": sink_dims}
    q = table["phi"].quantile([0.5, 0.9, 0.99, 1.0]).round(3).tolist()
    per_layer = table.groupby("layer")["is_visual_sink"].sum().astype(int)
    D_note = "phi <= sqrt(hidden size)"
    per_item_layer = table.groupby(["item", "layer"])["is_visual_sink"].sum()
    positions = table[table.is_visual_sink].groupby("image_pos").size().sort_values(ascending=False).head(8)
    return {
        "sink_dims": sink_dims,
        "tau": tau,
        "phi_quantiles_p50_p90_p99_max": q,
        "phi_note": D_note,
        "visual_sink_rows": int(table["is_visual_sink"].sum()),
        "visual_sink_fraction": round(float(table["is_visual_sink"].mean()), 4),
        "visual_sinks_per_item_layer_mean": round(float(per_item_layer.mean()), 3),
        "visual_sinks_by_layer": {int(k): int(v) for k, v in per_layer.items()},
        "visual_sink_image_positions": {int(k): int(v) for k, v in positions.items()},
        "image_centric_fraction": round(float(centric_layers.mean()), 4),
        "image_centric_layers": [int(layers[0]), int(layers[-1])] if layers else [],
    }


def run(handle, prompts: list[str], *, chat_template: bool = False, progress=None, **options) -> DetectorOutput:
    """Detector "vision": VHD columns + visual-sink columns + visual_tokens table (see ``analyse``)."""
    options.pop("backend", None)
    return analyse(handle, prompts, chat_template=chat_template, progress=progress, **options)


def run_vhd(handle, prompts: list[str], *, chat_template: bool = False, progress=None, **options) -> DetectorOutput:
    """Detector "vhd": per-head vhd, vhd_ta, vhr_rate over prompt x image pairs."""
    options.pop("backend", None)
    return analyse(handle, prompts, want_sinks=False, chat_template=chat_template, progress=progress, **options)


def run_visual_sinks(handle, prompts: list[str], *, chat_template: bool = False, progress=None, **options
                     ) -> DetectorOutput:
    """Detector "visual-sinks": image_attention_mass, visual_sink_mass, image_centric_rate + visual_tokens."""
    options.pop("backend", None)
    return analyse(handle, prompts, want_vhd=False, chat_template=chat_template, progress=progress, **options)


# ---------------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------------


def visual_sink_figure(table: pd.DataFrame, item: int = 0, image: Optional[np.ndarray] = None, title: str = ""):
    """Plotly figure: the image, visual-sink counts over the patch grid (layers where phi > tau) and
    the vision tower's token norms on the same grid, for one item of a ``visual_tokens`` table."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    t = table[table["item"] == item]
    if not len(t) or (t["patch_row"] < 0).any():
        raise ProbeError(f"item {item} has no patch grid in the table (tiled layout)", "pick an item with a patch grid")
    grid = (int(t["patch_row"].max()) + 1, int(t["patch_col"].max()) + 1)   # rows x columns (Qwen2-VL: any shape)
    count = np.zeros(grid)
    phimax = np.zeros(grid)
    norm = np.zeros(grid)
    for r in t.itertuples():
        count[r.patch_row, r.patch_col] += int(r.is_visual_sink)
        phimax[r.patch_row, r.patch_col] = max(phimax[r.patch_row, r.patch_col], r.phi)
        norm[r.patch_row, r.patch_col] = r.vision_norm
    n_layers = t["layer"].nunique()
    cols = 3 if image is not None else 2
    titles = (["image"] if image is not None else []) + [f"visual sink: layers with phi > tau (of {n_layers})",
                                                         "vision tower token norm"]
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.08)
    c = 1
    if image is not None:
        img = np.asarray(image)
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img
        fig.add_trace(go.Image(z=img), 1, 1)
        c = 2
    fig.add_trace(go.Heatmap(z=count, colorscale="Reds", zmin=0, zmax=n_layers, customdata=phimax,
                             hovertemplate="row %{y} col %{x}<br>sink layers %{z}<br>max phi %{customdata:.2f}<extra></extra>",
                             colorbar=dict(x=0.63 if cols == 3 else 0.45, len=0.8)), 1, c)
    fig.add_trace(go.Heatmap(z=norm, colorscale="Blues", hovertemplate="row %{y} col %{x}<br>norm %{z:.1f}<extra></extra>"),
                  1, c + 1)
    for k in (c, c + 1):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{k}", row=1, col=k)
    fig.update_layout(title=title or f"{t['image'].iloc[0]}: visual sinks vs vision-tower high-norm tokens",
                      height=380, width=360 * cols)
    return fig
