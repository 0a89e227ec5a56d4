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
