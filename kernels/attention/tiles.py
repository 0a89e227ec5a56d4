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
    # Session 4 sweep at 64K (benchmarks/results/sweep_h200.json, with the switches below): d64 -> (64, 128, 4, 3)
    # + tma + fma, 10.87 ms vs 12.42 for (64, 64, 4, 3) without (median of 3 do_bench; SDPA 10.72). d128 not
    # swept (the sweep ran out of time before the Llama shape): kept.
    # Session 5 call 1 (benchmarks/results/prefill_sweep_h200_call1.json, 64K): d128 tile kept, with tma + fma + rev:
    # 61.21 ms (1.066x SDPA) vs 68.29 all off (median of 3 do_bench); (128, 64, 8, 3) 66.26, (128, 128, 8, 2) 69.76.
    # Session 5 call 2 (prefill_sweep_h200_call2.json): the d128 default 63.26 ms (1.096x); d64 + rev 10.88 ms
    # (0.999x) vs 11.30 without -> rev on at d64.
    "output": {64: (64, 128, 4, 3), 128: (128, 128, 8, 3), 256: (64, 32, 4, 2)},
    # statistics: tiles_h200.json: d64 1.554 ms vs 1.703 for the output tile; d128 7.309 vs 7.393.
    # Session 4 sweep (sweep_h200.json): d64 tile kept, with span_post + reload_q + tma + fma: the whole
    # statistics call 19.71 ms vs 20.37 (prefill part alone 11.48 vs 13.43 ms, median of 5); d128 not swept.
    # Session 5 call 1 (prefill_sweep_h200_call1.json): d128 -> (128, 128, 8, 3) + span_post + reload_q + tma + fma,
    # prefill part 64.57 ms vs 70.79 for (64, 64, 4, 3) with the same switches and 78.53 all off (median of 5).
    # Call 2 (prefill_sweep_h200_call2.json): + rev 67.88 vs 68.81 (median of 5); the whole call with rev and the
    # received pass's fma + tma 97.46 ms (1.689x) vs 102.33 (1.774x) for call 1's winners -> rev on at d128.
    # Session 6 call 1 (prefill_sweep_h200_s6.json, median of 5 calls): d64 + rev 11.84 ms vs 12.12 without -> rev on at
    # d64; the whole statistics call with it and the received tile below 18.82 ms (1.744x SDPA) vs 19.42 (1.799x) for
    # session 5's defaults (median of 5 do_bench, same run).
    # Session 6 call 2 (prefill_sweep_h200_s6_call2.json): d64 + rev 11.995 ms vs 11.851 without -- the opposite of
    # call 1 by about the run-to-run spread (2-3 %); over both calls rev 23.84 ms vs 23.97 -> rev kept at d64.
    "stats": {64: (64, 128, 4, 3), 128: (128, 128, 8, 3), 256: (64, 32, 4, 2)},
    # probability edits (ACT): tiles_h200.json: d64 0.896 ms vs 1.051; d128 kept (4.902 ms, the best).
    # Session 4 sweep (sweep_h200.json): d64 tile kept, with seg + reload_q + tma + fma: 11.29 ms vs 12.97
    # (SDPA 10.72); d128 not swept.
    # Session 5 call 1: d128 tile kept, with seg + reload_q + tma + fma + rev: 63.29 ms (1.102x) vs 73.74 all off.
    # Call 2: that default 60.21 ms (1.044x); d64 + rev 11.51 vs 11.47 without -> d64 unchanged.
    "edit": {64: (64, 128, 4, 3), 128: (128, 128, 8, 3), 256: (64, 32, 4, 2)},
    # VAR: two [BT, D] accumulators (not tuned)
    "var": {64: (64, 64, 4, 3), 128: (64, 128, 8, 3), 256: (32, 32, 4, 2)},
}
# variant -> {head_dim bucket: kernel switches} (prefill_kernel.attention_fwd_kernel's SEG, SPAN_POST, RELOAD_Q, FMA,
# REV (query blocks launched longest first), TMAX, LSUM (no ACT columns / VAR), FIXREF (no SEG); "tma": K / V through
# tensor descriptors where the layout allows it; "maxnreg": a ptxas register cap, 0 = none, GPU builds only: more CTAs per SM
# where shared memory allows, e.g. the d64 statistics tile (64, 128, 4, 2) at 168 registers (offline sm_90 build of
# Triton 3.6: 243 without the cap, an 8-byte stack with it; 73 KiB shared memory) fits 3 CTAs per SM instead of 2 --
# added after session 6's call 2, not measured on a GPU).
# Session 12 (benchmarks/results/ab_h200_s12_call4.json: 9 interleaved rounds, one do_bench per arm per round,
# per-round ratios with 95 % bootstrap intervals): "tmax" (each key block's row max by a tree in registers) and "lsum"
# (the row and entropy sums kept per lane through the key loop, summed once after it) together: the statistics prefill
# 0.986x [0.978, 0.995] of the plain one at d64 and 0.980x [0.973, 0.989] at d128; the whole statistics call 0.983x
# [0.976, 0.995] on the Llama shape and 0.997x [0.988, 1.028] (no clear change) on the SmolLM2 shape -> on for "stats"
# at d64 and d128. tmax alone: 1.016x at d64 (worse); on the output variant tmax + lsum 1.033x at d128 (worse), 1.000x
# at d64; on ACT edits tmax 1.013x at d64 -> off there. lsum alone was not timed (no device time left); its sm_90 build
# (d64 statistics tile) has 534 instructions per loop with the shuffles back and 255 registers, against 512 and 243
# with tmax.
# Winners of the session 4 sweep at 64K on the H200 (benchmarks/results/sweep_h200.json) for d64 and of session
# 5's first call (benchmarks/results/prefill_sweep_h200_call1.json) for d128; d256 was not measured with the
# switches on (parity only), so it keeps the kernel as it was (all off).
_OFF = {"seg": False, "span_post": False, "reload_q": False, "tma": False, "fma": False, "rev": False, "maxnreg": 0,
        "tmax": False, "lsum": False, "fixref": False}
# Session 14 (benchmarks/results/ab_h200_s14_call1.json, 10 interleaved rounds): "fixref" (the fully visible key range
# past its first block against that block's row max: no row max, no rescaling; an overflow check runs the range again
# with the running max) -- statistics 0.966x [0.961, 0.977] of the plain default at d64 (1.653x SDPA) but 1.013x
# [1.003, 1.018] at d128; output 0.934x at d64 (0.950x SDPA) and 0.939x at d128 (1.001x SDPA); ACT edits without
# segments 0.922x of the segmented default at d64 (0.969x SDPA). Call 2 (ab_h200_s14_call2.json; the fallback pass
# then shared one copy of each key loop, 246 registers and no stack at d64 statistics against 255 + 16 B): statistics
# 0.942x of session 13's default at d64 (1.610x SDPA) and 0.971x at d128 (1.605x); output 0.891x at d64 (0.907x
# SDPA), 0.954x at d128 (1.012x); ACT edits 0.892x at d64 (0.943x SDPA), and without segments 0.975x of the segmented
# default at d128 (1.017x SDPA) -> on for every variant at d64 and d128 (edits with seg off: fixref speeds up the
# column-free runs the segments were there for). Call 3 (ab_h200_s14_call3.json, everything on): statistics 1.625x
# / 1.614x SDPA, output 0.913x / 1.016x, ACT edits 0.945x / 1.023x (d64 / d128 shapes).
PREFILL_SWITCHES: dict = {
    "output": {64: dict(_OFF, tma=True, fma=True, rev=True, fixref=True),
               128: dict(_OFF, tma=True, fma=True, rev=True, fixref=True), 256: dict(_OFF)},
    "stats": {64: dict(_OFF, span_post=True, reload_q=True, tma=True, fma=True, rev=True, tmax=True, lsum=True,
                       fixref=True),
              128: dict(_OFF, span_post=True, reload_q=True, tma=True, fma=True, rev=True, tmax=True, lsum=True,
                        fixref=True),
              256: dict(_OFF)},
    "edit": {64: dict(_OFF, reload_q=True, tma=True, fma=True, fixref=True),
             128: dict(_OFF, reload_q=True, tma=True, fma=True, rev=True, fixref=True), 256: dict(_OFF)},
    "var": {64: dict(_OFF), 128: dict(_OFF), 256: dict(_OFF)},
}
# received mass: session 5 call 1 (prefill_sweep_h200_call1.json, median of 5): d64 -> (64, 128, 8, 3) key-major +
# fma + tma, 7.19 ms vs 8.34 for (64, 128, 4, 3) all off; d128 kept: 32.97 ms all off vs 34.57 for the best
# key-major candidate ((64, 128, 8, 3) + fma + tma). The polynomial exp2 was slower in every tile tried.
# Call 2 (prefill_sweep_h200_call2.json, median of 5): d128 + fma + tma 31.70 ms vs 34.35 all off -> on; d64:
# (64, 64, 4, 3) 6.92 vs 7.75 for the default in the sweep, but the whole statistics call with it 19.59 ms vs
# 19.38 with the default (median of 3 do_bench) -> d64 unchanged.
# Session 6 call 1 (prefill_sweep_h200_s6.json, 14 d64 tiles, median of 5 calls): (64, 64, 4, 2) 6.84 ms, (64, 64, 4, 3)
# + maxnreg 128 6.97, (128, 64, 4, 3) 7.13, (64, 64, 4, 3) 7.16, (64, 128, 8, 3) 7.54; the polynomial exp2 12.8 -> d64
# (64, 64, 4, 2).
# Session 6 call 2 (prefill_sweep_h200_s6_call2.json, median of 5 calls, same run): (128, 64, 4, 2) + lse2 + maxnreg 128
# 6.81 ms, the best of 15, vs 7.43 for call 1's (64, 64, 4, 2) (this run; 6.84 in call 1's), 7.06 for it + lse2, 7.60
# for (128, 64, 4, 2) + lse2 without the cap (140 registers: 3 CTAs per SM instead of 4), 7.07 for (128, 64, 4, 3) +
# lse2 + cap; pmix 7.6-8.1, ltma 10.75 -> d64 (128, 64, 4, 2) with lse2 + maxnreg 128. The whole statistics call with
# it (and the prefill without rev) 18.53 ms (1.730x SDPA) vs 18.92 (1.767x) for call 1's defaults, same run.
RECEIVED_TILES: dict = {64: (128, 64, 4, 2), 128: (64, 128, 4, 3), 256: (32, 64, 4, 2)}
# Session 12: "rlanes" (key-major: the column sums kept per lane of the MMA accumulator's quad through the loops, no
# shuffles per query block; 267 instructions against 276 per 64 exp2 in the sm_90 build) timed 1.004x [0.994, 1.009] of
# the default (ab_h200_s12_call4.json) -> off. "mix" (a fixed share of the exp2 by a polynomial on the FMA pipe) lost
# (1.022x / 1.045x, ab_h200_s12_call3.json) and was removed (code at commit 52e055d).
# received_fwd_kernel's switches per head_dim bucket: "keymajor" (S^T = K Q^T, per-step column sums in a warp),
# "fma" (scale and lse in one multiply-add per score), "tma" (Q blocks through a tensor descriptor where the
# layout allows it; 2-byte inputs, head_dim 64 / 128 only), "poly" (key-major, 2-byte inputs: of each query
# block's 4 quarters, how many take exp2 by a polynomial on the FMA pipe; 0 = all on the MUFU).
# All off = the kernel of sessions 3 and 4.
_ROFF = {"keymajor": False, "fma": False, "tma": False, "poly": 0, "maxnreg": 0, "pmix": 0, "ltma": False,
         "hmaj": False, "lse2": False, "pipe": False, "lpre": False, "unroll": 1, "amma": False, "rlanes": False}
RECEIVED_SWITCHES: dict = {64: dict(_ROFF, keymajor=True, fma=True, tma=True, lse2=True, maxnreg=128),
                           128: dict(_ROFF, fma=True, tma=True), 256: dict(_ROFF)}
# "maxnreg": a register cap per thread for ptxas (more CTAs per SM; 0 = none; GPU builds only).
# Session 6 (issue #15; call 2, see kernels/BENCHMARKS.md): "pmix" (key-major, 2-byte inputs, poly 0): every pmix-th
# query block of a program's fully visible range takes the polynomial exp2 for its whole tile (the MMA keeps its width;
# 0 = off; lost: 7.6-8.1 ms against 6.81 -- the pass is bound by issue slots nearly as much as by the MUFU, and the
# polynomial costs ~9 instructions per score); "ltma" (key-major, 2-byte inputs, d 64 / 128): the lse blocks through a
# tensor descriptor (lost: 10.75 ms; Triton waits for each load in the same step); "hmaj": the grid runs (head, key
# block), so the longest key blocks of every head launch first (inconclusive: 7.05 vs 7.06 ms with lse2, 7.13 vs 7.43
# without);
# "lse2": the prefill kernel stores -lse * log2(e) for this pass (the addend of its multiply-adds as it is: 192 -> 176
# instructions per thread and query block at (64, 64, 4, 2), offline sm_90 build of Triton 3.6; 7.06 vs 7.43 ms; only
# where the call does not return lse); "pipe" (key-major, poly 0; added after call 2, not measured on a GPU): the next
# query block's Q K^T issued before this block's exp2 (the MMA under the exponentials).
# Session 10: "lpre" (key-major, poly 0, pmix 0, no pipe; lost in call 3 of prefill_sweep_h200_s10.json: 7.23 ms
# against 6.92 for the default, unroll 2: 7.24, both: 7.20): the next query block's
# lse addend loaded one block ahead in the fully visible range (the sm_90 build issues that load beside the block's MMA
# and waits for it right after: benchmarks/sass_loops.py); "unroll": that loop unrolled n times (1 = not); "amma"
# (key-major with TMA, no pipe / poly / pmix, no softcap): the prefill kernel writes the addend -lse2 / c split into
# three bf16 parts ([B, H, T, 16] bf16: 19 MB at the SmolLM2 shape, 64K), and the fully visible loop adds it to the
# scores in the MMA (ones . A^T) -- no lse load, no trip through shared memory, one multiply per score. Session 11
# call 1 (prefill_sweep_h200_s11_call1.json; its GPU parity tests passed there): lost -- 6.86 ms at (128, 64, 4, 2)
# under the register cap, 7.50 with lse2 also on, 7.25 at (64, 64, 4, 2), against 6.81 for the default.
# Session 11 also built the fully visible loop in Gluon (a TMA ring, the addend and the column sums on the tensor cores,
# each block's MMA issued under the previous block's exponentials, optionally a warp-specialized load warp; 3.3
# instructions per exp2 in the sm_90 build against 4.3 here): correct once its ones operand was stored K-major, but
# slower at every tile (d64 7.6-8.1 ms against 6.81, d128 37.4-38.8 against 31.4; logs_session11/call3_gluon_debug.txt)
# and removed; the code is at commit cdec33d (kernels/attention/received_gluon.py).
# Session 13 (kernels/BENCHMARKS.md "Session 13"): the received pass at 96 registers (5 CTAs per SM) 0.999x of the
# whole statistics call (ab_h200_s13_call1.json) -> the cap stays 128; two key blocks per program sharing each Q tile
# and lse addend ("kpair": 3.95 instructions per exp2 against 4.31 offline, half the Q reads) 1.009x / with rlanes
# 1.004x of the default pass (ab_h200_s13_call3.json) -> removed (code at commit 28014f0). Every piece of the
# statistics call runs at the H200's 700 W power cap (power_profile_s13_h200.json), so a change pays only by saving
# energy; the pass stays at ~72 % of the exp2 unit's rate at its capped clock.
RECEIVED_SWITCH_NAMES = ("keymajor", "fma", "tma", "poly", "maxnreg", "pmix", "ltma", "hmaj", "lse2", "pipe", "lpre",
                         "unroll", "amma", "rlanes")
_RECEIVED_INTS = ("poly", "maxnreg", "pmix", "unroll")
# decode: (BS, num_warps, num_stages); one wave of programs, bandwidth-bound
DECODE_TILES: dict = {64: (64, 4, 2), 128: (64, 4, 2), 256: (32, 4, 2)}
# decode column modes and register caps per shape: kernels.attention.fused.decode_edit_config
SWITCH_NAMES = ("seg", "span_post", "reload_q", "tma", "fma", "rev", "tmax", "lsum", "fixref")

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
    """The prefill kernel's switches for one variant ({"seg", "span_post", "reload_q", "tma", "fma", "rev", "tmax",
    "lsum", "fixref"}: bool; "maxnreg": a ptxas register cap, 0 = none), with the keys of ``override`` that name a
    switch taking precedence (the cap's key: "p_maxnreg"; "maxnreg" is the decode kernel's)."""
    sw = dict(PREFILL_SWITCHES[variant][_bucket(D)])
    for name in SWITCH_NAMES:
        if override and name in override:
            sw[name] = bool(override[name])
    if override and "p_maxnreg" in override:
        sw["maxnreg"] = int(override["p_maxnreg"])
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


def received_switches(D: int, override: Optional[dict] = None) -> dict:
    """The received-mass kernel's switches ({"keymajor", "fma", "tma", "ltma", "hmaj", "lse2", "pipe"}: bool,
    "poly": 0..4, "maxnreg", "pmix") for head_dim D; an ``override`` key "r_<name>" takes precedence (tuning runs and
    tests)."""
    sw = dict(RECEIVED_SWITCHES[_bucket(D)])
    for name in RECEIVED_SWITCH_NAMES:
        if override and "r_" + name in override:
            sw[name] = int(override["r_" + name]) if name in _RECEIVED_INTS else bool(override["r_" + name])
    return sw


def decode_tile(D: int, itemsize: int, interpret: bool) -> tuple[int, int, int]:
    """(BS, num_warps, num_stages) of the split-KV decode kernel."""
    if interpret:
        return 32, 4, 1
    cfg = DECODE_TILES[_bucket(D)]
    if itemsize == 4:
        cfg = (32,) + cfg[1:]
    return cfg
