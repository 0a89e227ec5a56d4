"""Head outputs before ``o_proj`` (the named ``z`` tap), and the VHD / VHR scores read from them.

Shared by the vision detectors (``probe.detect.vision``: the vhd columns) and VHR
(``interventions.vlm``: head choice inside the forward). Definitions (docs/methods.md §3):
  VHD_{l,h} = || o_{l,h}(with image) - o_{l,h}(without image) ||_2 at the answer position (the last
    prompt token), o = head output before o_proj; TA_{l,h} = || o_{l,h}(without image) ||^2.
  VHR rule per layer: zero VHD where VHD > mean + std AND TA > mean + std, keep VHD > median.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Sequence

from torch import Tensor

from .taps import TapSet, tap_name


class HeadOutputTap:
    """Reads (and optionally edits) the head outputs through the ``z`` tap (``o_proj``'s input).

    ``last[l]`` holds the head outputs of the latest call at the last position, [B, H, Dh] (float32,
    CPU). ``edit(layer, x)`` with x [B, T, H, Dh] may return a replacement (VHR's in-forward scaling).
    Use through ``head_outputs``; nothing stays attached after the context.
    """

    def __init__(self, edit: Optional[Callable[[int, Tensor], Optional[Tensor]]] = None):
        self.edit = edit
        self.last: dict[int, Tensor] = {}

    def __call__(self, heads: Tensor, ctx) -> Optional[Tensor]:
        """z-tap edit: heads [B, T, H, Dh] -> replacement or None."""
        self.last[ctx.layer] = heads[:, -1].detach().float().cpu()               # [B, H, Dh]
        return None if self.edit is None else self.edit(ctx.layer, heads)


@contextlib.contextmanager
def head_outputs(handle, layers: Optional[Sequence[int]] = None, edit=None) -> Iterator[HeadOutputTap]:
    """Tap the head outputs (before o_proj) of ``layers`` (default all) for the block's forwards."""
    tap = HeadOutputTap(edit)
    wanted = range(handle.n_layers) if layers is None else layers
    with TapSet(handle, edits=[(tap_name(l, "z"), tap) for l in wanted]):
        yield tap


def vhd_scores(with_image: Tensor, without_image: Tensor) -> tuple[Tensor, Tensor]:
    """VHD = ||o_img - o_txt||_2 and TA = ||o_txt||^2 per head: [..., H, Dh] x 2 -> ([..., H], [..., H])."""
    vhd = (with_image.float() - without_image.float()).norm(dim=-1)     # [..., H]
    ta = without_image.float().pow(2).sum(-1)                           # [..., H]
    return vhd, ta


def vhr_select(vhd: Tensor, ta: Tensor, outlier_removal: bool = True) -> Tensor:
    """VHR's head choice per layer (Eqs. 6-7): [..., H] VHD and TA -> [..., H] bool.

    Outliers (VHD > mean + std and TA > mean + std of their layer, std unbiased) get VHD 0, then a
    head is kept iff its VHD > the layer's median (torch's lower median for even H).
    """
    v = vhd.float().clone()
    if outlier_removal:
        out = (v > v.mean(-1, keepdim=True) + v.std(-1, keepdim=True)) & \
              (ta > ta.mean(-1, keepdim=True) + ta.std(-1, keepdim=True))  # [..., H]
        v = v.masked_fill(out, 0.0)
    med = v.median(-1, keepdim=True).values                                  # [..., 1]
    return v > med


def vhr_layers(n_layers: int) -> list[int]:
    """VHR's layers adapted to depth: layer 1 plus the last round(14/32 * L) (32 layers: 1, 18..31)."""
    k = int(round(14 / 32 * n_layers))
    return sorted({1, *range(n_layers - k, n_layers)} & set(range(n_layers)))
