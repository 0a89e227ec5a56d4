"""Left padding: the one helper that finds each row's first real token."""
from __future__ import annotations

from torch import Tensor


def first_real_index(mask: Tensor) -> Tensor:
    """Index of the first real (non-padding) position per row.

    mask: [B, S] bool or 0/1 (True / 1 = real token). Returns [B] long on the mask's device; a row
    with no real token gets S. With left padding this is also the number of padding positions.
    """
    m = mask.bool()
    S = m.shape[-1]
    first = m.float().argmax(-1)                                           # [B] first True (0 if none)
    return first.masked_fill(~m.any(-1), S).long()
