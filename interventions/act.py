"""ACT: Attention Calibration Technique (Yu et al., ICML 2024; methods.md §1).

Per (layer, head, batch row), on the prompt's attention map (the prefill call of a new sequence):
s_j = mean attention key j receives from the queries that see it; the sink set is
{j : s_j > threshold} (or > alpha / N with N the row's real length). The *first* sink in index
order is dropped (recorded in ``ACT.dropped``; normally the first token); the rest, S', are scaled
by beta in every query row and the freed mass goes to every other visible key in proportion to
its attention (``AttentionEdits.col_idx / col_scale``). Decode steps reuse the prefill's sink set,
so the edit is consistent with the KV cache.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from kernels.attention import AttentionEdits
from probe.errors import ProbeError

from .base import Intervention, attach_hook, check_heads, check_layers, head_table, parse_heads, resolve_layers


def load_calibration(path: Union[str, Path]) -> dict:
    """Read an ACT calibration file (JSON with at least "heads": [[layer, head], ...])."""
    p = Path(path)
    if not p.exists():
        raise ProbeError(f"calibration file {p} not found", "run `probe calibrate --out FILE` first or fix the path")
    try:
        data = json.loads(p.read_text())
        data["heads"] = [tuple(int(x) for x in pair) for pair in data["heads"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ProbeError(f"{p} is not an ACT calibration file ({err})",
                         'it must be JSON with "heads": [[layer, head], ...] as written by `probe calibrate`') from err
    return data


def sink_columns(received_mean: Tensor, key_start: Tensor, threshold: Union[float, Tensor], heads_on: Tensor
                 ) -> tuple[Tensor, Tensor]:
    """ACT's sink detection on one layer.

    Args:
        received_mean: s_j [B, H, S] (0 for keys no query sees).
        key_start: [B] first real key per row.
        threshold: scalar or [B] per-row threshold (strict >).
        heads_on: [H] bool, heads whose sinks are calibrated.
    Returns:
        col_idx [B, H, C] int64: absolute positions of S' (sinks minus the first), -1 padded, C >= 1;
        dropped [B, H] int64: absolute position of the dropped first sink (-1 = no sink).
    """
    col_idx, dropped, _ = sink_columns_logged(received_mean, key_start, threshold, heads_on)
    return col_idx, dropped


_LOG_COLS = 16     # sink columns per head read back with the count in the same transfer (more: a second one)


def sink_columns_logged(received_mean: Tensor, key_start: Tensor, threshold: Union[float, Tensor], heads_on: Tensor
                        ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """``sink_columns`` plus its result on the host for the log, relative to each row's first real key (-1 kept):
    (col_idx, dropped, (dropped_rel [B, H], cols_rel [B, H, C]) on the CPU), with one device-to-host transfer (the
    column count C, the dropped sinks and the first 16 columns per head together), where reading C and then the
    log took two, and a scalar threshold compared as a Python number (a tensor made from it is a host-to-device
    copy that waits for the device)."""
    B, H, S = received_mean.shape
    dev = received_mean.device
    if isinstance(threshold, Tensor) and threshold.dim():
        thr = threshold.to(device=dev, dtype=received_mean.dtype).view(-1, 1, 1)     # [B, 1, 1]
    else:
        thr = float(threshold)
    j = torch.arange(S, device=dev)
    sink = (received_mean > thr) & (j[None, None, :] >= key_start[:, None, None])   # [B, H, S]
    has = sink.any(-1)                                                               # [B, H]
    first = sink.float().argmax(-1)                                                  # [B, H]
    dropped = torch.where(has, first, torch.full_like(first, -1))
    rest = sink & (j[None, None, :] != first[..., None]) & heads_on.to(dev).view(1, H, 1)   # [B, H, S]
    order = torch.where(rest, j.expand(B, H, S), torch.full_like(rest, S, dtype=torch.long))
    ranked = order.sort(-1).values                                                   # [B, H, S], S = unused
    K = min(S, _LOG_COLS)
    ks = key_start.to(torch.long)
    pack = torch.cat([rest.sum(-1).max().view(1).long(), ks, dropped.flatten(), ranked[..., :K].flatten()]).cpu()
    C = max(1, int(pack[0]))
    col_idx = ranked[..., :C]                                                        # [B, H, C]
    col_idx = torch.where(col_idx >= S, torch.full_like(col_idx, -1), col_idx)
    ks_h = pack[1:1 + B]
    dropped_h = pack[1 + B:1 + B + B * H].view(B, H)
    cols_h = pack[1 + B + B * H:].view(B, H, K)[..., :C] if C <= K else col_idx.cpu()
    cols_h = torch.where(cols_h >= S, torch.full_like(cols_h, -1), cols_h)
    rel = lambda x: torch.where(x >= 0, x - ks_h.view(-1, *[1] * (x.dim() - 1)), x)  # noqa: E731
    return col_idx, dropped, (rel(dropped_h), rel(cols_h))


class ACT(Intervention):
    """Attention calibration: shrink non-first sink columns by beta in chosen heads.

    Args:
        beta: scale of the calibrated sink columns (0.4; 1 = no-op).
        threshold: sink threshold on s_j (0.1; strict >). Ignored when ``alpha`` is given.
        alpha: optional paper rule threshold = alpha / N per row (N = real prompt length; UNVERIFIED).
        layers: layers to calibrate (default 2..L-2).
        heads: None (all heads of ``layers``), a list of (layer, head) / "LxHy", or a calibration
            file path (JSON from ``probe calibrate``); with heads, ``layers`` defaults to their layers.
    After a forward, ``dropped[layer]`` [B, H] and ``sinks[layer]`` [B, H, C] hold the dropped first
    sink and the calibrated sink columns, as positions relative to each row's first real token (-1 = none).
    """

    order = 2

    def __init__(self, beta: float = 0.4, threshold: float = 0.1, layers: Optional[Sequence[int]] = None,
                 heads=None, alpha: Optional[float] = None):
        if not 0.0 <= float(beta) <= 1.0:
            raise ProbeError(f"ACT beta={beta}", "beta is the kept fraction of the sink columns: 0 <= beta <= 1")
        self.beta, self.threshold, self.alpha = float(beta), float(threshold), alpha
        self.calibration = None
        if isinstance(heads, (str, Path)) and str(heads).endswith(".json"):
            self.calibration = load_calibration(heads)
            heads = self.calibration["heads"]
        self.heads = parse_heads(heads)
        self.layers = None if layers is None else sorted({int(l) for l in layers})
        self.dropped: dict[int, Tensor] = {}
        self.sinks: dict[int, Tensor] = {}

    def __repr__(self) -> str:
        heads = "all" if self.heads is None else f"{len(self.heads)} heads"
        return f"ACT(beta={self.beta}, threshold={self.threshold}, heads={heads})"

    def resolved_layers(self, n_layers: int) -> list[int]:
        return resolve_layers(self.layers, self.heads, n_layers)

    def validate(self, handle) -> None:
        check_layers(handle, self.layers)
        check_heads(handle, self.heads)
        fh = (self.calibration or {}).get("model_hash")
        if fh and handle.file_hash and fh != handle.file_hash:
            raise ProbeError("the calibration file was made for another model (hash mismatch)",
                             "run `probe calibrate` for this model")

    def install(self, handle, stack: contextlib.ExitStack) -> None:
        layers = self.resolved_layers(handle.n_layers)
        heads = None if self.heads is None else [(l, h) for l, h in self.heads if l in layers]
        table = head_table(handle.n_layers, handle.n_heads, layers, heads)
        self.dropped, self.sinks = {}, {}
        attach_hook(handle, layers, _ACTHook(self, table), stack)


class _ACTHook:
    """Finds each layer's sinks at the prefill and builds its edit there; every decode step of that
    sequence gets the same ``AttentionEdits`` object (no tensor work per step)."""

    graph_safe = True     # decode steps: fixed distinct columns per head -> the seam's tensor-op path (seam.allow_compile)

    def __init__(self, act: ACT, table: Tensor):
        self.act = act
        self.table = table                      # [L, H] bool
        self._edits: dict[int, AttentionEdits] = {}   # layer -> col_idx [B, H, C] (absolute positions), col_scale [B, H]
        self._on: dict = {}                     # (layer, device) -> the layer's row of table on that device

    def _heads_on(self, call) -> Tensor:
        """[H] bool: the calibrated heads of call's layer, on its device (copied there once per layer and device)."""
        key = (call.layer, call.device)
        on = self._on.get(key)
        if on is None:
            on = self._on[key] = self.table[call.layer].to(call.device)
        return on

    def needs_received(self, call) -> bool:
        return call.T == call.S                 # a new sequence: find the sinks on its prompt

    def edits(self, call, pre) -> Optional[AttentionEdits]:
        if call.T == call.S:
            s = pre.received_sum / pre.received_count.clamp_min(1)[:, None, :]       # [B, H, S]
            thr = self.act.threshold
            if self.act.alpha is not None:
                thr = self.act.alpha / (call.S - call.key_start).clamp_min(1).to(s.dtype)  # [B]
            cols, dropped, (dropped_h, cols_h) = sink_columns_logged(s, call.key_start, thr, self._heads_on(call))
            scale = torch.full((call.B, call.H), self.act.beta, device=cols.device)      # [B, H]
            self._edits[call.layer] = AttentionEdits(col_idx=cols, col_scale=scale)
            self.act.dropped[call.layer] = dropped_h
            self.act.sinks[call.layer] = cols_h
        edits = self._edits.get(call.layer)
        if edits is None or edits.col_idx.shape[0] != call.B:
            raise ProbeError("ACT saw a decode step without its prompt",
                             "run the whole generation (prefill and decode) inside the intervene block")
        return edits

    after = None          # no callback after the attention call
