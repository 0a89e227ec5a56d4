"""Put a trained studio-vlm2 projector into the repository's assets, in fp16 (half the size), metadata kept.

    python -m studies.vlm2.install_projector RUN/studio_vlm2_projector.safetensors
    # -> probe/assets/studio_vlm2_projector.safetensors; probe.load("studio-vlm2") then works offline

``load_projector`` copies the weights into the fp32 projector (the fp16 rounding is the only change;
``studies/vlm2/README.md`` reports the benchmark of the fp32 weights as trained).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

DEST = Path(__file__).resolve().parents[2] / "probe" / "assets" / "studio_vlm2_projector.safetensors"

if __name__ == "__main__":
    src = Path(sys.argv[1])
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
    meta["stored_dtype"] = json.dumps({"dtype": "float16", "trained_in": "float32", "source": src.name})
    save_file({k: v.half().contiguous() for k, v in load_file(str(src)).items()}, str(DEST), metadata=meta)
    print(f"wrote {DEST} ({DEST.stat().st_size / 1e6:.2f} MB)")
