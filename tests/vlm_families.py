"""Tiny random-init checkpoints of the VLM families researchers bring, saved as Hugging Face folders.

PLUMBING ONLY: the weights are random (plus the planted facts below), so nothing here says anything
about what a real LLaVA or Qwen2.5-VL does. What it proves is that a real checkpoint of the same class
and layout loads through ``probe.load(folder)`` (AutoModelForImageTextToText + the processor read
from local files, no hub) and runs through the detectors, interventions, CLI and app.

Families (exact transformers classes):
  llava-1.5   LlavaForConditionalGeneration, CLIP tower at the real geometry (336 px, patch 14 ->
              576 image tokens), vision_feature_layer=-2, "default" selection (CLS dropped), Llama LM
  llava-next  LlavaNextForConditionalGeneration, CLIP tower, anyres tiles + image_newline, Llama LM
              (scaled copy: 28 px tiles, pinpoints 28x56 / 56x28 / 56x56)
  llava-onevision  LlavaOnevisionForConditionalGeneration, SigLIP tower, "full" selection, Qwen2 LM
              (scaled copy: 28 px tiles)
  qwen2.5-vl  Qwen2_5_VLForConditionalGeneration: 2x2-merged patches, <|vision_start|> <|image_pad|>*N
              <|vision_end|> inline, M-RoPE (mrope_section), windowed vision attention

Planted facts (so the detectors are checked against something known, not just "runs"):
  - LM dim D_SINK is massive on the first word of every sink-dim text (embedding rows of
    "What", "Describe", "The", "Is"): the sink dim the detectors must find by themselves;
  - one image token per tile is a visual sink: LLaVA families through CLIP/SigLIP's position
    embedding of patch PLANTED (vision dim U) and the projector (U -> D_SINK); Qwen2.5-VL through
    the pixels (a white 28x28 block in a black image at merged cell PLANTED_QWEN) and the merger;
  - layer 0, KV group 1 (query heads 2, 3): value weights 0, bias not -> those heads' outputs
    cannot depend on the image (VHD must be 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

D_SINK, U = 11, 0
PLANTED = 5                 # patch index (raster) of the planted visual sink in LLaVA-1.5's 24x24 grid
PLANTED_TILE = 2            # ... in each 2x2 tile of the scaled LLaVA-NeXT / OneVision copies
PLANTED_QWEN = 6            # merged-cell index of the white block (4x4 merged grid -> row 1, col 2)
TAU = 6.0                   # phi <= sqrt(64) = 8 for these 64-dim LMs (20 needs hidden > 400)
SINK_WORDS = ("What", "Describe", "The", "Is")
WORDS = ["<pad>", "<unk>", "<s>", "<image>", "<video>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
         "<|vision_end|>", "USER:", "ASSISTANT:", "what", "is", "this", "?", "answer", ":", "a", "cat", "dog",
         "describe", "the", "picture", "red", "Is", "there", "in", "image?", "What", "item", "of", "clothing?",
         "Answer:", "Describe", "image.", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog.",
         "person", "picture?"]
FAMILIES = ("llava-1.5", "llava-next", "llava-onevision", "qwen2.5-vl")
PROMPT = {  # how each family's users write a one-image prompt (the processor expands the image token)
    "llava-1.5": "USER: <image> what is this ? ASSISTANT:",
    "llava-next": "USER: <image> what is this ? ASSISTANT:",
    "llava-onevision": "USER: <image> what is this ? ASSISTANT:",
    "qwen2.5-vl": "USER: <|vision_start|> <|image_pad|> <|vision_end|> what is this ? ASSISTANT:",
}
QUESTIONS = ("what is this ?", "describe the picture")


def tokenizer(special: list[str]):
    """Word-level tokenizer over WORDS (whitespace split) with the family's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="<s>")
    tok.add_special_tokens({"additional_special_tokens": special})
    return tok


def _text(cls_name: str, **extra) -> dict:
    return dict(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                bos_token_id=2, eos_token_id=2, pad_token_id=0, **extra)


def _plant_lm(lm, tok) -> None:
    """Sink dim on the sink words' embeddings; layer 0's KV group 1 blind to its input."""
    with torch.no_grad():
        for w in SINK_WORDS:
            lm.embed_tokens.weight[tok.convert_tokens_to_ids(w), D_SINK] = 50.0
        v = lm.layers[0].self_attn.v_proj
        hd = lm.config.hidden_size // lm.config.num_attention_heads
        v.weight[hd:2 * hd] = 0.0
        v.bias[hd:2 * hd] = torch.linspace(-1, 1, hd)


def planted(family: str) -> int:
    """Index inside the image span (base tile first) of the planted visual sink."""
    return {"llava-1.5": PLANTED, "qwen2.5-vl": PLANTED_QWEN}.get(family, PLANTED_TILE)


def _plant_llava_tower(model, patch: int, weight: float = 3.0, bias: float = -10.0) -> None:
    """Vision dim U is 0 everywhere but the position embedding of patch PLANTED; the projector maps it
    to a huge D_SINK component (GELU far below its knee for every other token)."""
    with torch.no_grad():
        emb = model.model.vision_tower.embeddings if hasattr(model.model.vision_tower, "embeddings") \
            else model.model.vision_tower.vision_model.embeddings
        emb.patch_embedding.weight[U] = 0.0
        if emb.patch_embedding.bias is not None:
            emb.patch_embedding.bias[U] = 0.0
        emb.position_embedding.weight[:, U] = 0.0
        first = 1 if model.config.vision_feature_select_strategy == "default" else 0   # CLS row
        emb.position_embedding.weight[first + patch, U] = 100.0
        proj = model.model.multi_modal_projector
        proj.linear_1.weight[0] = 0.0
        proj.linear_1.weight[0, U] = weight
        proj.linear_1.bias[0] = bias
        proj.linear_2.weight[:, 0] = 0.0
        proj.linear_2.weight[D_SINK, 0] = 300.0


def _plant_qwen(model) -> None:
    """Patch channel U sums the pixels (white block -> large +, black -> large -); the merger's first
    row fires only when all four merged patches are white; its output goes to D_SINK."""
    with torch.no_grad():
        vis = model.model.visual
        vis.patch_embed.proj.weight[U] = 0.05
        merger = vis.merger
        n = merger.mlp[0].weight.shape[1] // 4           # per-patch width of the merged vector
        merger.mlp[0].weight[0] = 0.0
        for k in range(4):
            merger.mlp[0].weight[0, k * n + U] = 1.0
        merger.mlp[0].bias[0] = -12.0
        merger.mlp[2].weight[:, 0] = 0.0
        merger.mlp[2].weight[D_SINK, 0] = 30.0


def _write_llava(folder: Path) -> None:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = tokenizer(["<image>"])
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=336, patch_size=14)
    cfg = LlavaConfig(vision_config=vision.to_dict(), text_config=LlamaConfig(**_text("llama", attention_bias=True)).to_dict(),
                      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=576,
                      vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(cfg).eval()
    _plant_llava_tower(model, PLANTED)
    _plant_lm(model.model.language_model, tok)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          image_token="<image>", num_additional_image_tokens=1)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)


PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def _write_llava_next(folder: Path) -> None:
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextProcessor)
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tok = tokenizer(["<image>"])
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=28, patch_size=14)
    cfg = LlavaNextConfig(vision_config=vision.to_dict(), text_config=LlamaConfig(**_text("llama", attention_bias=True)).to_dict(),
                          image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                          vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    _plant_llava_tower(model, PLANTED_TILE)
    _plant_lm(model.model.language_model, tok)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                    image_grid_pinpoints=PINPOINTS)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                              image_token="<image>", num_additional_image_tokens=1)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)


def _image_only(cls):
    """The processor class without its video processor (transformers' video processors need torchvision)."""
    from probe.models.processors import image_only_processor_class

    return image_only_processor_class(cls)


def _write_onevision(folder: Path) -> None:
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor,
                              Qwen2Config, SiglipVisionConfig)
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

    tok = tokenizer(["<image>", "<video>"])
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                image_size=28, patch_size=14)
    cfg = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=Qwen2Config(**_text("qwen2")).to_dict(),
                               image_token_index=tok.convert_tokens_to_ids("<image>"),
                               video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
                               vision_feature_select_strategy="full", image_grid_pinpoints=[[28, 28], *PINPOINTS])
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    _plant_llava_tower(model, PLANTED_TILE)
    _plant_lm(model.model.language_model, tok)
    ip = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=[[28, 28], *PINPOINTS])
    proc = _image_only(LlavaOnevisionProcessor)(image_processor=ip, tokenizer=tok, num_image_tokens=4,
                                                vision_feature_select_strategy="full", image_token="<image>",
                                                video_token="<video>")
    model.save_pretrained(folder)
    proc.save_pretrained(folder)


def _write_qwen(folder: Path) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = tokenizer(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
    ids = tok.convert_tokens_to_ids
    text = _text("qwen2_5_vl_text", rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                       "mrope_section": [2, 3, 3]})
    cfg = Qwen2_5_VLConfig(text_config=text,
                           vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                              out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                                              temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
                           image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                           vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    _plant_qwen(model)
    _plant_lm(model.model.language_model, tok)
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14,
                                  merge_size=2, temporal_patch_size=2)
    proc = _image_only(Qwen2_5_VLProcessor)(image_processor=ip, tokenizer=tok)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    _rename_processor_class(folder, "Qwen2_5_VLProcessor")


def _rename_processor_class(folder: Path, name: str) -> None:
    """Saved configs name the stock processor class, as a real checkpoint's do."""
    import json

    for f in folder.glob("*.json"):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and "processor_class" in data:
            data["processor_class"] = name
            f.write_text(json.dumps(data, indent=2))


WRITERS = {"llava-1.5": _write_llava, "llava-next": _write_llava_next, "llava-onevision": _write_onevision,
           "qwen2.5-vl": _write_qwen}


def write(family: str, folder: Path) -> Path:
    """Save the tiny checkpoint of ``family`` (config, safetensors, tokenizer, processor configs) to ``folder``."""
    torch.manual_seed(0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    WRITERS[family](folder)
    if family == "llava-onevision":
        _rename_processor_class(folder, "LlavaOnevisionProcessor")
    return folder


def images(family: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """n uint8 RGB images suited to the family (Qwen2.5-VL: black with the white planted block)."""
    rng = np.random.default_rng(seed)
    if family == "qwen2.5-vl":
        out = []
        for _ in range(n):
            im = np.zeros((112, 112, 3), dtype=np.uint8)
            r, c = divmod(PLANTED_QWEN, 4)
            im[28 * r:28 * (r + 1), 28 * c:28 * (c + 1)] = 255
            out.append(im)
        return out
    shape = (336, 336, 3) if family == "llava-1.5" else (40, 60, 3)   # NeXT / OneVision: a wide image -> anyres tiles
    return list(rng.integers(0, 256, size=(n, *shape), dtype=np.uint8))
