"""Tile tables of the attention kernels, one per variant: (BT, BS, num_warps, num_stages).

BT query rows x BS keys per program step. Keys are head_dim buckets (<= 64, <= 128, <= 256) for
2-byte inputs on an H100 / H200-class GPU; fp32 inputs take smaller tiles, and the interpreter
the smallest. Each entry names where it comes from (a tuning run recorded in
kernels/BENCHMARKS.md, or "carried": the shared table the variant had before it got its own).
"""
from __future__ import annotations

from typing import Optional

# variant -> {head_dim bucket: (BT, BS, num_warps, num_stages)}
PREFILL_TILES: dict = {
    # output only (and output edits): H200 tune at 16K (session 2): d64 0.83 ms vs 0.93 for (128, 64, 4, 3);
    # d128 4.27 ms vs 4.61 for (128, 64, 8, 3). Session 3's sweep (benchmarks/results/tiles_h200.json,
    # 16K, one do_bench each) kept both: d64 0.831 ms, d128 4.297 ms.
    "output": {64: (64, 64, 4, 3), 128: (128, 128, 8, 3), 256: (64, 32, 4, 2)},
    # statistics: tiles_h200.json: d64 1.554 ms vs 1.703 for the output tile; d128 7.309 vs 7.393
    "stats": {64: (64, 128, 4, 3), 128: (64, 64, 4, 3), 256: (64, 32, 4, 2)},
    # probability edits (ACT): tiles_h200.json: d64 0.896 ms vs 1.051; d128 kept (4.902 ms, the best)
    "edit": {64: (64, 128, 4, 3), 128: (128, 128, 8, 3), 256: (64, 32, 4, 2)},
    # VAR: two [BT, D] accumulators (not tuned)
    "var": {64: (64, 64, 4, 3), 128: (64, 128, 8, 3), 256: (32, 32, 4, 2)},
}
# variant -> {head_dim bucket: kernel switches} (prefill_kernel.attention_fwd_kernel's SEG, SPAN_POST,
# RELOAD_Q, FMA; "tma": K / V through tensor descriptors where the layout allows it)
_OFF = {"seg": False, "span_post": False, "reload_q": False, "tma": False, "fma": False}
PREFILL_SWITCHES: dict = {
    "output": {64: dict(_OFF), 128: dict(_OFF), 256: dict(_OFF)},
    "stats": {64: dict(_OFF), 128: dict(_OFF), 256: dict(_OFF)},
    "edit": {64: dict(_OFF), 128: dict(_OFF), 256: dict(_OFF)},
    "var": {64: dict(_OFF), 128: dict(_OFF), 256: dict(_OFF)},
}
RECEIVED_TILES: dict = {64: (64, 128, 4, 3), 128: (64, 128, 4, 3), 256: (32, 64, 4, 2)}
# decode: (BS, num_warps, num_stages); one wave of programs, bandwidth-bound
DECODE_TILES: dict = {64: (64, 4, 2), 128: (64, 4, 2), 256: (32, 4, 2)}
# decode_fwd_kernel's BLOCK_TEST: in a chunk holding an edited column, mask only its blocks that hold one
DECODE_SWITCHES: dict = {"block_test": False}
SWITCH_NAMES = ("seg", "span_post", "reload_q", "tma", "fma")

INTERPRET_TILE = (32, 32, 4, 1)


def _bucket(D: int) -> int:
    return 64 if D <= 64 else (128 if D <= 128 else 256)


def prefill_tile(variant: str, D: int, itemsize: int, interpret: bool,
                 override: Optional[tuple] = None) -> tuple[int, int, int, int]:
    """(BT, BS, num_warps, num_stages) of the prefill kernel for one variant."""
    if interpret:
        return INTERPRET_TILE
    cfg = override or PREFILL_TILES[variant][_bucket(D)]
    if itemsize == 4:
        cfg = (min(cfg[0], 64), min(cfg[1], 32), cfg[2], 2)
    return cfg


def prefill_switches(variant: str, D: int, override: Optional[dict] = None) -> dict:
    """The prefill kernel's switches for one variant ({"seg", "span_post", "reload_q", "tma", "fma"}: bool),
    with the keys of ``override`` that name a switch taking precedence."""
    sw = dict(PREFILL_SWITCHES[variant][_bucket(D)])
    for name in SWITCH_NAMES:
        if override and name in override:
            sw[name] = bool(override[name])
    return sw


def received_tile(D: int, itemsize: int, interpret: bool,
                  override: Optional[tuple] = None) -> tuple[int, int, int, int]:
    """(BT, BS, num_warps, num_stages) of the received-mass kernel (keys stay in registers)."""
    if interpret:
        return INTERPRET_TILE
    cfg = override or RECEIVED_TILES[_bucket(D)]
    if itemsize == 4:
        cfg = (min(cfg[0], 32), min(cfg[1], 64), cfg[2], 2)
    return cfg


def decode_tile(D: int, itemsize: int, interpret: bool) -> tuple[int, int, int]:
    """(BS, num_warps, num_stages) of the split-KV decode kernel."""
    if interpret:
        return 32, 4, 1
    cfg = DECODE_TILES[_bucket(D)]
    if itemsize == 4:
        cfg = (32,) + cfg[1:]
    return cfg
