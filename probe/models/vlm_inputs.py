"""Inputs of LLaVA-layout VLMs, shared by the vision detectors and the VLM interventions.

Every family probe knows keeps one image as one contiguous run of placeholder tokens inside
``input_ids`` (``vlm_layouts``); the helpers here find those runs, put an image placeholder into
a prompt, batch prompts with images through the processor, and remove the image tokens again
(the "without image" run of VHD / VHR).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def as_pil(images) -> list:
    """PIL images from a uint8 array [N, H, W] / [N, H, W, 3], a list of arrays, or PIL images."""
    from PIL import Image

    if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype == np.uint8:
        return [Image.fromarray(im) for im in images]
    return [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]


def image_token_spans(input_ids: Tensor, image_token_id: int) -> list[list[tuple[int, int]]]:
    """Contiguous runs of the image placeholder token, per batch row.

    Args:
        input_ids: [B, T] (or [T], treated as one row)
        image_token_id: the placeholder id (``processor.image_token_id``, ``vlm.config.image_token_id``)
    Returns:
        for each row, a list of half-open (start, end) position pairs, in order; [] for a row without image.
        One image in LLaVA-1.5 layout gives one span of ``image_seq_length`` tokens.
    """
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 1:
        ids = ids[None]  # [1, T]
    is_img = (ids == image_token_id).to(torch.int8)  # [B, T]
    padded = torch.nn.functional.pad(is_img, (1, 1))  # [B, T + 2]
    edges = padded[:, 1:] - padded[:, :-1]  # [B, T + 1]: +1 at a run start, -1 one past its end
    spans = []
    for row in edges:
        starts = (row == 1).nonzero().flatten().tolist()
        ends = (row == -1).nonzero().flatten().tolist()
        spans.append(list(zip(starts, ends)))
    return spans


def image_placeholder(handle) -> str:
    """The text one image stands for in a prompt: the processor's image token, bracketed by the vision
    start / end tokens where the model has them (Qwen2-VL family: <|vision_start|><|image_pad|><|vision_end|>)."""
    tok = handle.processor.image_token
    cfg = handle.model.config
    start, end = getattr(cfg, "vision_start_token_id", None), getattr(cfg, "vision_end_token_id", None)
    if start is None or end is None:
        return tok
    name = handle.tokenizer.convert_ids_to_tokens
    return f"{name(int(start))}{tok}{name(int(end))}"


def with_image_token(handle, prompt: str, chat_template: bool = False) -> str:
    """The prompt with the image placeholder in front if it has no image token (image-first layout)."""
    text = prompt if handle.processor.image_token in prompt else image_placeholder(handle) + prompt
    return handle.format_prompt(text, chat_template) if chat_template else text


def encode_images(handle, texts: Sequence[str], images: Sequence) -> dict:
    """Processor batch with left padding, on the model's device.

    Args:
        texts: B prompts, each with exactly one image token. images: B images (uint8 arrays or PIL).
    Returns:
        {"input_ids" [B, T], "attention_mask" [B, T], "pixel_values" [B, 3, S, S], plus what the family's
        processor adds and the model takes: image_sizes (LLaVA-NeXT / OneVision), image_grid_thw (Qwen2.5-VL)}.
    """
    from .vlm_layouts import model_inputs

    enc = handle.processor(text=list(texts), images=as_pil(list(images)), return_tensors="pt", padding=True,
                           padding_side="left")
    return {k: v.to(handle.device) for k, v in model_inputs(handle.model, dict(enc)).items()}


def drop_image_tokens(input_ids: Tensor, attention_mask: Tensor, image_token_id: int, pad_id: int) -> dict:
    """The same prompts with every image token removed, re-left-padded (the "without image" run).

    input_ids, attention_mask [B, T] (left padded) -> {"input_ids" [B, T'], "attention_mask" [B, T']}.
    """
    rows = [ids[(m.bool()) & (ids != image_token_id)] for ids, m in zip(input_ids, attention_mask)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)  # [B, T']
    mask = torch.zeros_like(ids)                                                                     # [B, T']
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = r
        mask[b, width - len(r):] = 1
    return {"input_ids": ids, "attention_mask": mask}
