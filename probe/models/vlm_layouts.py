"""The VLM families probe knows, and the few layout facts that differ between them.

Every family below keeps the image as a run of placeholder tokens inside ``input_ids`` (one
contiguous run per image), so image spans come from the ids alone; what differs is how many
placeholders an image gets, which extra tensors the processor returns and how positions are made.
The vision tower's own attention never goes through probe's hooks (they attach to the text
decoder's layers only); under the seam it falls through to SDPA unchanged.

Tested (tests/test_vlm_families.py) with tiny random-init checkpoints of the exact transformers
classes, saved to a folder and loaded with ``probe.load(folder)``: plumbing tests, not evidence
about what the real models do.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Family:
    """One VLM layout: the transformers class and what a user should know about it in probe."""

    name: str
    hf_class: str
    tower: str
    image_tokens: str     # how one image becomes placeholder tokens
    positions: str        # 1-D positions or M-RoPE
    notes: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("llava-1.5", "LlavaForConditionalGeneration", "CLIP ViT-L/14-336 (any ViT)",
           "one run of image_seq_length placeholders (576 at 336 px: 24x24 patches, CLS dropped)",
           "1-D", "vision_feature_layer=-2, 'default' selection; studio-vlm uses this class with DINOv2"),
    Family("llava-next", "LlavaNextForConditionalGeneration", "CLIP",
           "one run: base tile, then the anyres tiles unpadded with an image_newline per row "
           "(count depends on the image size; the processor computes it)", "1-D", "processor returns image_sizes"),
    Family("llava-onevision", "LlavaOnevisionForConditionalGeneration", "SigLIP",
           "one run: base tile + anyres tiles with image_newline ('full' selection keeps every patch)", "1-D",
           "processor needs a video processor (torchvision); probe falls back to an image-only processor"),
    Family("qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2.5-ViT (windowed attention, 2x2 patch merger)",
           "<|vision_start|> then (h/28)*(w/28) <|image_pad|> then <|vision_end|>, inline in the text", "M-RoPE (3-D)",
           "processor returns image_grid_thw; image-only processor without torchvision"),
    Family("qwen2-vl", "Qwen2VLForConditionalGeneration", "Qwen2-ViT (2x2 patch merger)",
           "as qwen2.5-vl", "M-RoPE (3-D)", "same code paths as qwen2.5-vl; not separately tested"),
)
_BY_CLASS = {f.hf_class: f for f in FAMILIES}


def family_of(model) -> Optional[Family]:
    """The Family of a loaded model (by class name, also for subclasses), or None."""
    for klass in type(model).__mro__:
        if klass.__name__ in _BY_CLASS:
            return _BY_CLASS[klass.__name__]
    return None


def model_inputs(model, enc: dict) -> dict:
    """The processor outputs ``model.forward`` accepts (drops e.g. token_type_ids, batch_num_images
    where the model does not take them). enc: {name: tensor}."""
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in params}


IMAGE_KWARGS = ("pixel_values", "image_sizes", "image_grid_thw", "batch_num_images", "mm_encoder_outputs")


def image_kwargs(inputs: dict) -> dict:
    """The image-carrying keyword arguments of a forward call (pixels and their geometry)."""
    return {k: inputs[k] for k in IMAGE_KWARGS if inputs.get(k) is not None}


def uses_mrope(model) -> bool:
    """True for models whose text positions are 3-D (Qwen2-VL family): probe must not pass 1-D position_ids."""
    cfg = model.config.get_text_config()
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return bool(isinstance(rope, dict) and rope.get("mrope_section"))
