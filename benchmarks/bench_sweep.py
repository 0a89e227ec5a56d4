"""One-call measurement sweep of the attention kernels' variants and tiles against cuDNN SDPA (GPU).

Every candidate (a tile and the kernel switches of ``kernels.attention.tiles``; the lists in ``SWEEP``)
of each variant in ``SWEEP_VARIANTS`` is timed at N = 65,536 for the Llama-7B shape (32 / 32 heads,
d 128) and the SmolLM2 shape (9 / 3 heads, d 64), bf16, causal, batch 1, random tensors; the recorded
defaults are timed first and the best candidate of each variant again at the end, as headlines, against
SDPA measured in the same run. ``--decode`` adds one decode step with ACT / VAR edits (per layer,
CUDA-graph replay) at batch 1 and 16.

Variants: ``output`` (output only), ``edit`` (ACT on key 0, beta 0.5, every head, + head scale),
``stats_fwd`` (the prefill kernel with lse, entropy, key-0 mass and one 576-key span mass),
``received`` (the received-mass pass alone, from that lse), ``stats`` (the whole statistics call:
``stats_fwd`` + ``received``), ``var`` (VAR: sink key 0, span [1, 33), keep 0.5).

Timing: the sweep takes the median of 5 calls, each timed by CUDA events after an L2 flush (after
one warm-up call); the headline takes the median of ``--repeats`` runs of ``triton.testing.do_bench``
(decode: ``do_bench_cudagraph``). Peak memory: ``torch.cuda.max_memory_allocated`` over one call.

Compilation: ``--precompile I/N`` compiles the I-th of N shares of every kernel a timed run launches
(same shapes, so the same specializations) into Triton's on-disk cache, in N processes beside the GPU
tests (``benchmarks/device_sweep.sh``); the timed process then compiles or loads every kernel of a
shape in-process (``warm``, a thread pool) before timing anything, so no timed call compiles.
``--log-compiles`` records each compile request's cache-key pieces (session 4's timed process
recompiled what the precompile had compiled). ``--dry`` runs the whole plan on the CPU under
TRITON_INTERPRET=1 at a tiny N (plumbing check; its times mean nothing).

    python -m benchmarks.bench_sweep --out benchmarks/results/sweep_h200.json
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time

SHAPES = {"llama": (32, 32, 128), "smollm": (9, 3, 64)}
DRY = {"shapes": {"llama": (2, 2, 128), "smollm": (3, 1, 64)}, "max_tiles": 1, "calls": 1}
N_DEFAULT = 65536
GiB = 1024 ** 3
OFF = {"seg": False, "span_post": False, "reload_q": False, "tma": False, "fma": False, "rev": False, "tmax": False,
       "lsum": False, "fixref": False}

ROFF = {"r_keymajor": False, "r_fma": False, "r_tma": False, "r_poly": 0, "r_maxnreg": 0, "r_pmix": 0, "r_ltma": False,
        "r_hmaj": False, "r_lse2": False, "r_pipe": False, "r_lpre": False, "r_unroll": 1, "r_amma": False,
        "r_rlanes": False}
_SP = {"span_post": True, "reload_q": True, "fma": True}        # the statistics switches of session 4
_SEG = {"seg": True, "reload_q": True, "fma": True}             # the ACT switches of session 4
_KM = {"r_keymajor": True, "r_fma": True}                       # the received kernel's key-major form
# candidates per head_dim and variant: (tile (BT, BS, num_warps, num_stages), switches); the first is the
# recorded default (tiles.py). Session 5 call 1 swept 23 (Llama) + 15 (SmolLM2) candidates picked on the CPU from
# the sm_90 build's registers (cuobjdump -res-usage: at d 128 every switch set without TMA spills); its winners
# are the defaults now, its rows are in benchmarks/results/prefill_sweep_h200_call1.json. Call 2 timed the defaults and
# the few candidates left open by call 1 (its list: this file at commit dadeaea; rows in prefill_sweep_h200_call2.json).
_R = {**_KM, "r_tma": True}                                     # the d64 received default's switches
# Session 6 call 1 (the SmolLM2 statistics at 1.779x SDPA, target 1.7x) swept 14 d64 received-mass tiles and 5 d64
# statistics-prefill candidates (its list: this file at commit fcc9f08; rows in prefill_sweep_h200_s6.json). Call 2
# swept the received pass's new switches (lse2, pmix, ltma, hmaj; kernels/attention/tiles.py) on call 1's two best tiles
# and on wider tiles under a register cap, picked from offline sm_90 builds of Triton 3.6 with the device's
# specialization (its list: this file at commit 2cd70c8; rows in prefill_sweep_h200_s6_call2.json); its winner,
# (128, 64, 4, 2) + lse2 + maxnreg 128, is the d64 default now. Next call (not run yet): the new default and call 2's
# runner-up first, then what came after call 2 -- the received pass's pipe switch (the MMA a query block ahead: 94
# registers at (64, 64, 4, 2), 161 at (128, 64, 4, 2) under maxnreg 168, offline; under 128 it spills) and the
# statistics prefill (64, 128, 4, 2) under a 168-register cap (3 CTAs per SM: 73 KiB shared memory each; 243
# registers without the cap, an 8-byte stack with it).
_L = {**_R, "r_lse2": True}
_TFR = {"tma": True, "fma": True, "rev": True}
_T128, _T64 = (128, 128, 8, 3), (64, 128, 4, 3)                # the prefill tiles of the recorded defaults
SWEEP = {
    128: {"stats_fwd": [(_T128, {**_SP, "tma": True, "rev": True}),
                        (_T128, {**_SP, "tma": True, "rev": True, "tmax": True}),
                        (_T128, {**_SP, "tma": True, "rev": True, "tmax": True, "lsum": True})],
          "output": [(_T128, _TFR), (_T128, {**_TFR, "tmax": True}), (_T128, {**_TFR, "tmax": True, "lsum": True})],
          "edit": [(_T128, {**_SEG, "tma": True, "rev": True}),
                   (_T128, {**_SEG, "tma": True, "rev": True, "tmax": True})]},
    64: {"received": [((128, 64, 4, 2), {**_L, "r_maxnreg": 128})],
         "stats_fwd": [(_T64, {**_SP, "tma": True, "rev": True}),
                       (_T64, {**_SP, "tma": True, "rev": True, "lsum": True}),
                       (_T64, {**_SP, "tma": True, "rev": True, "tmax": True, "lsum": True})]},
}
# Session 10's lists: call 3 timed the d64 received default, its lse addend loaded a block ahead (lpre), its fully
# visible loop unrolled twice, and both (all lost; benchmarks/sass_loops.py: 276 instructions per 64 exp2 per thread in
# that loop, 263 per 64 unrolled). Session 11 call 1 the addend added by the MMA (amma: the prefill kernel writes it
# split into three bf16 parts; lost; that list: this file at commit e001e6e; rows in prefill_sweep_h200_s11_call1.json);
# call 2 the fully visible blocks in Gluon at d64 and d128 (this file at commit b5775f6; rows in
# prefill_sweep_h200_s11_call2_gluon.json -- that call's Gluon kernel summed wrongly, see kernels/BENCHMARKS.md). The
# list now holds the defaults only. Session 7's list (pipe, the prefill's register cap) is this file at commit 3ccdf30.
# Session 12 (the code of calls 1-3: commit 52e055d): call 1 (prefill_sweep_h200_s12_call1.json) swept the received
# pass's "mix" switch (a fixed share of each thread's exp2 by exp2_poly's polynomial on the FMA pipe, inline PTX, 1-4
# of every 8 or 3 of 16: 340-404 instructions and 48-56 MUFU.EX2 per 64 exp2 in the sm_90 build against 276 / 64): mix
# 2 6.78 ms against 7.24 for the default (median of 5 calls); call 3's interleaved rounds showed it losing: 7.11 /
# 7.26 ms (mix 2 / 3) against 6.94. Call 2 swept a lazy running max for the prefill (the max moved, and the
# accumulators rescaled, only when some row's grew by more than 8: one CTA-wide test per key block); its rows ran the
# plain kernel (a cached heuristic; prefill_sweep_h200_s12_call2_lazy_cached_off.json); call 3 timed it: 13.20 ms
# against 12.50 (SmolLM2 statistics prefill), 73.4 against 67.4 (Llama) -- lost. Both were removed. Call 4: the
# prefill's row max by a tree in registers ("tmax": depth 9 against ~33 dependent FMNMX / SHFL per row at BS = 128,
# the same 526 instructions), the row and entropy sums kept per lane through the key loop ("lsum": 512 instructions,
# no shuffles), and the received pass's column sums kept per lane ("r_rlanes": 267 instructions against 276, no
# shuffles in its loops); its lists: this file at commit 0286f76, rows in ab_h200_s12_call4.json (tmax + lsum won
# on the statistics prefill: the "stats" default now, kernels/attention/tiles.py). The lists below are the next call's
# (not run: no device time left in session 12): lsum without tmax on the SmolLM2 shape (offline its sm_90 build has
# 534 instructions per loop, shuffles back, 255 registers: unlikely to win), the call 4 Llama arms.
# Session 13, call 1: the statistics call as head chunks ("hchunks": chunk c's received pass on a side stream beside
# chunk c + 1's prefill; "hprio": that stream's priority, -1 = scheduled first, 0 = normal; code at commit 16ba5d4,
# removed) and the received pass at 96 registers (5 CTAs per SM instead of 4; offline sm_90 build: the same
# 279-instruction main loop, an 88-byte stack): neither won (ab_h200_s13_call1.json). Call 3: the received pass with two key blocks per program ("r_kpair": each Q
# tile and lse addend loaded once for both; offline 3.95 instructions per exp2 against 4.31, half the Q reads): lost
# (1.009x, ab_h200_s13_call3.json), removed (code at commit 28014f0).
# Session 14: the prefill's fully visible range against a fixed reference ("fixref": no row max, no rescaling past the
# range's first block; offline sm_90 build of call 1's d64 loop: 395 instructions against 512 (statistics), 335 against
# 448 (output); no FMNMX, 4 FMUL against 38). "edit_fixref" runs ACT without its segments (seg off), where fixref
# applies.
# --ab-only arms per shape: (name, variant, opts); ``_jobs`` adds them to the precompile and the in-process warm-up.
_RD = {"rtile": (128, 64, 4, 2), **ROFF, **_L, "r_maxnreg": 128}         # the recorded d64 received pass, in full
# Call 1's arms: fixref against the defaults of the time (this file at commit 5852f6c). Call 2: the new defaults
# (fixref on for output, d64 statistics and d64 edits) against session 13's ("_s13"), and fixref on the Llama
# shape's statistics and ACT edits once more (this file at commit e022d0b). Call 3: fixref on everywhere (d64 and
# d128) against session 13's defaults.
_S13 = {"fixref": False}
_S13_EDIT = {"seg": True, "fixref": False}
AB_ARMS = {
    "smollm": [("sdpa", "sdpa", {}), ("stats", "stats", {}), ("stats_s13", "stats", _S13), ("output", "output", {}),
               ("output_s13", "output", _S13), ("edit", "edit", {}), ("edit_s13", "edit", _S13_EDIT)],
    "llama": [("sdpa", "sdpa", {}), ("stats", "stats", {}), ("stats_s13", "stats", _S13), ("output", "output", {}),
              ("output_s13", "output", _S13), ("edit", "edit", {}), ("edit_s13", "edit", _S13_EDIT)],
}
# variants swept per shape
SWEEP_VARIANTS = {"llama": ("stats_fwd", "output", "edit"), "smollm": ("received", "stats_fwd")}
DECODE_CASES = [("llama", 32, 32, 128, 1, 4096), ("llama", 32, 32, 128, 16, 2048), ("smollm", 9, 3, 64, 1, 4096)]
BASELINE = os.path.join(os.path.dirname(__file__), "results", "bench_decode_gpu_h200.json")


def _opts(variant: str, tile: tuple, sw: dict) -> dict:
    if variant == "received":
        return {"rtile": tuple(tile), **ROFF, **sw}
    return {"tile": tuple(tile), **OFF, **sw}


def candidates(D: int, variants=None) -> list[tuple[str, dict]]:
    """[(variant, opts)] of the sweep for one head_dim, in a fixed order (shared by the precompile): the
    variants' first candidates, then their second ones, ... (a sweep cut short by its time budget loses
    the last candidates of every variant, not a whole variant)."""
    table = {v: c for v, c in SWEEP[D].items() if variants is None or v in variants}
    n = max(len(c) for c in table.values())
    if os.environ.get("TRITON_INTERPRET") == "1":
        n = min(n, DRY["max_tiles"] + 1)
    out = []
    for i in range(n):
        for variant, cands in table.items():
            if i < len(cands):
                out.append((variant, _opts(variant, *cands[i])))
    return out


class Case:
    """Inputs and call builders of one shape at one length."""

    def __init__(self, shape: str, N: int, dev: str):
        import torch
        from kernels.attention.api import AttentionEdits, StatsRequest
        H, KV, D = SHAPES[shape]
        self.shape, self.N, self.H, self.KV, self.D, self.dev = shape, N, H, KV, D, dev
        g = torch.Generator(device=dev).manual_seed(0)
        mk = lambda n: torch.randn(1, n, N, D, device=dev, dtype=torch.bfloat16, generator=g)  # noqa: E731
        self.q, self.k, self.v = mk(H), mk(KV), mk(KV)
        self.scale = D ** -0.5
        self.spans = torch.tensor([[[N // 4, N // 4 + min(576, N // 4)]]], device=dev)
        self.fwd_stats = StatsRequest(lse=True, entropy=True, sink_mass=True, span_mass=True)
        self.full_stats = StatsRequest(entropy=True, sink_mass=True, span_mass=True, received=True)
        self.act = AttentionEdits(col_idx=torch.zeros(1, H, 1, dtype=torch.long, device=dev),
                                  col_scale=torch.full((1, H), 0.5, device=dev), head_scale=torch.ones(H, device=dev))
        self.var = AttentionEdits(redist_idx=torch.zeros(1, 1, dtype=torch.long, device=dev),
                                  redist_span=torch.tensor([[1, 33]], device=dev),
                                  redist_from=torch.zeros(1, dtype=torch.long, device=dev),
                                  redist_keep=torch.full((H,), 0.5, device=dev))
        self._lse = None
        self.io_gib = (2 * self.q.numel() + self.k.numel() + self.v.numel()) * 2 / GiB

    def sdpa(self):
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backends = [SDPBackend.CUDNN_ATTENTION] if self.dev == "cuda" else [SDPBackend.MATH]
        q, k, v = self.q, self.k, self.v

        def run():
            with sdpa_kernel(backends):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                                      enable_gqa=self.KV != self.H)
        return run

    def call(self, variant: str, opts: dict):
        """A zero-argument callable running one variant with these overrides."""
        from kernels.attention import fused as tri
        q, k, v, s = self.q, self.k, self.v, self.scale
        if variant == "output":
            return lambda: tri.attention(q, k, v, scale=s, opts=opts)
        if variant == "edit":
            return lambda: tri.attention(q, k, v, scale=s, edits=self.act, opts=opts)
        if variant == "var":
            return lambda: tri.attention(q, k, v, scale=s, edits=self.var, opts=opts)
        if variant == "stats_fwd":
            return lambda: tri.attention(q, k, v, scale=s, spans=self.spans, stats=self.fwd_stats, opts=opts)
        if variant == "stats":
            return lambda: tri.attention(q, k, v, scale=s, spans=self.spans, stats=self.full_stats, opts=opts)
        if variant == "received":
            if self._lse is None:
                self._lse = tri.attention(q, k, v, scale=s, stats=self.fwd_stats, spans=self.spans).lse
            neg2 = bool(opts.get("r_lse2"))              # the pass reads -lse * log2(e) (the prefill kernel's form)
            lse = -self._lse * 1.4426950408889634 if neg2 else self._lse
            ks = tri._zeros_i64(1, q.device)
            common = dict(scale=s, softcap=0.0, window=0)
            split = tri.split_addend(self._lse, s) if opts.get("r_amma") else None     # (the prefill kernel's adq)
            return lambda: tri._run([tri._received(q, k, lse, ks, common, opts.get("rtile"), opts, neg2, split)[1]])
        raise ValueError(variant)


# ------------------------------------------------------------------------------------------ timing
class Clock:
    """CUDA-event timing with an L2 flush (GPU) or perf_counter (the --dry CPU run)."""

    def __init__(self, cuda: bool):
        import torch
        self.cuda = cuda
        self.flush = torch.empty(256 * 2 ** 20, dtype=torch.int8, device="cuda") if cuda else None

    def sync(self):
        import torch
        if self.cuda:
            torch.cuda.synchronize()

    def calls(self, fn, n: int) -> list[float]:
        """ms of n calls, each after an L2 flush (one warm-up call first)."""
        import torch
        fn()
        self.sync()
        out = []
        for _ in range(n):
            if self.cuda:
                self.flush.zero_()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                out.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
        return out

    def do_bench(self, fn, repeats: int) -> list[float]:
        if not self.cuda:
            return self.calls(fn, repeats)
        from triton.testing import do_bench
        return [float(do_bench(fn, warmup=25, rep=100)) for _ in range(repeats)]

    def graph(self, fn, repeats: int) -> list[float]:
        if not self.cuda:
            return self.calls(fn, repeats)
        from triton.testing import do_bench_cudagraph
        return [float(do_bench_cudagraph(fn, rep=20)) for _ in range(repeats)]

    def peak(self, fn) -> float:
        import torch
        if not self.cuda:
            return float("nan")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / GiB


class Run:
    """Rows, the deadline, and the JSON file rewritten after every row (a kill keeps what was done)."""

    def __init__(self, args, meta: dict):
        self.rows, self.args, self.meta = [], args, meta
        self.t_end = time.time() + args.budget_s

    def left(self) -> float:
        return self.t_end - time.time()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.args.out:
            tmp = self.args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"meta": self.meta, "rows": self.rows}, f, indent=1)
            os.replace(tmp, self.args.out)


def _jsonable(opts: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}


def _try(run: Run, row: dict, work) -> dict:
    try:
        row.update(work())
    except Exception as e:  # noqa: BLE001 - a sweep reports what failed and goes on
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    run.add(row)
    return row


def sweep(run: Run, clock: Clock, case: Case, reserve_s: float) -> dict:
    """Time every candidate until only reserve_s of the budget is left; returns {variant: best row}."""
    best = {}
    for variant, opts in candidates(case.D, SWEEP_VARIANTS.get(case.shape)):
        if run.left() < reserve_s:
            run.add({"kind": "sweep", "shape": case.shape, "variant": variant, "opts": _jsonable(opts),
                     "skipped": "time budget"})
            continue
        fn = case.call(variant, opts)

        def work():
            t0 = time.time()
            ms = clock.calls(fn, 5 if clock.cuda else DRY["calls"])
            return {"ms": statistics.median(ms), "calls_ms": ms, "s": round(time.time() - t0, 2)}
        row = _try(run, {"kind": "sweep", "shape": case.shape, "N": case.N, "variant": variant,
                         "opts": _jsonable(opts)}, work)
        if "ms" in row and (variant not in best or row["ms"] < best[variant]["ms"]):
            best[variant] = row
    return best


def headline(run: Run, clock: Clock, case: Case, name: str, variant: str, opts: dict, base_ms) -> dict:
    if run.left() < -run.args.grace_s:                  # past the budget and its grace: stop for good
        row = {"kind": "headline", "shape": case.shape, "method": name, "variant": variant,
               "opts": _jsonable(opts), "skipped": "time budget"}
        run.add(row)
        return row
    fn = case.sdpa() if variant == "sdpa" else case.call(variant, opts)

    def work():
        runs = clock.do_bench(fn, run.args.repeats)
        out = {"ms": statistics.median(runs), "runs_ms": runs, "peak_gib": clock.peak(fn), "io_gib": case.io_gib}
        if base_ms:
            out["x_sdpa"] = out["ms"] / base_ms
        return out
    row = {"kind": "headline", "shape": case.shape, "N": case.N, "method": name, "variant": variant,
           "opts": _jsonable(opts)}
    if variant != "sdpa":
        row["resolved"] = _jsonable(resolved(case, variant, opts))
    return _try(run, row, work)


def resolved(case: Case, variant: str, opts: dict) -> dict:
    """The tile and switches a call of this variant runs with (the recorded tables under these overrides)."""
    from kernels.attention import tiles
    kind = {"output": "output", "edit": "edit", "var": "var", "stats": "stats", "stats_fwd": "stats"}.get(variant)
    out = {}
    if kind:
        out["tile"] = tiles.prefill_tile(kind, case.D, 2, False, opts.get("tile"))
        out.update(tiles.prefill_switches(kind, case.D, opts))
    if variant in ("stats", "received"):
        out["rtile"] = tiles.received_tile(case.D, 2, False, opts.get("rtile"))
        out.update({"r_" + k: v for k, v in tiles.received_switches(case.D, opts).items()})
    return out


def _opts_of(row: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in row["opts"].items()}


def prefill_shape(run: Run, clock: Clock, shape: str, N: int, dev: str, shapes_after: int = 0) -> None:
    """Headlines of the recorded defaults, the sweep, headlines of the winners for one shape. The sweep
    stops when what is left of the budget is only this shape's reserve plus an equal share for each of
    the ``shapes_after`` shapes still to come (session 4's run spent it all on the first shape)."""
    case = Case(shape, N, dev)
    share = max(run.left() - run.args.reserve_s, 0.0) / (shapes_after + 1)
    warm_logged(run, case, 0.6 * share)
    base = headline(run, clock, case, "sdpa", "sdpa", {}, None).get("ms")
    for v in ("output", "edit", "stats"):                 # the recorded tables (tiles.py) as they are now
        headline(run, clock, case, f"{v}_default", v, {}, base)
    share = max(run.left() - run.args.reserve_s, 0.0) / (shapes_after + 1)
    best = sweep(run, clock, case, reserve_s=run.args.reserve_s + shapes_after * share)
    # the winners, as headlines, where one beat the recorded default (each variant's first candidate)
    first = {v: _opts(v, *c[0]) for v, c in SWEEP[case.D].items()}
    won = {v: _opts_of(r) for v, r in best.items() if _opts_of(r) != first.get(v)}
    win = {v: won[v] for v in ("output", "edit") if v in won}
    if "stats_fwd" in won or "received" in won:
        win["stats"] = {**(won.get("stats_fwd") or {}), **(won.get("received") or {})}
    for v, o in win.items():
        headline(run, clock, case, f"{v}_best", v, o, base)
    if run.args.sdpa_again:
        headline(run, clock, case, "sdpa_again", "sdpa", {}, base)
    if run.args.ab and "stats" in win:
        arms = {"sdpa": ("sdpa", {}), "stats_default": ("stats", {}), "stats_best": ("stats", win["stats"])}
        ab(run, clock, case, arms, run.args.ab)
    del case
    free_gpu(dev)


def ab_shape(run: Run, clock: Clock, shape: str, N: int, dev: str) -> None:
    """--ab-only: the kernels warmed (at most a minute), then ``run.args.ab_only`` interleaved rounds of AB_ARMS[shape]."""
    case = Case(shape, N, dev)
    warm_logged(run, case, 60.0)
    ab(run, clock, case, {n: (v, o) for n, v, o in AB_ARMS[shape]}, run.args.ab_only)
    del case
    free_gpu(dev)


def warm_logged(run: Run, case: Case, seconds: float) -> None:
    """``warm`` for at most ``seconds``, recorded as a row of kind "warm"."""
    t0 = time.time()
    n_warm, n_all = warm(case, deadline=t0 + seconds)
    run.add({"kind": "warm", "shape": case.shape, "kernels": n_warm, "of": n_all, "s": round(time.time() - t0, 2)})


def free_gpu(dev: str) -> None:
    """Return a finished shape's memory (its Case deleted by the caller) before the next shape."""
    gc.collect()
    if dev == "cuda":
        import torch
        torch.cuda.empty_cache()


def ab(run: Run, clock: Clock, case: Case, arms: dict, rounds: int) -> None:
    """Interleaved timing of arms {name: (variant, opts)}: ``rounds`` rounds of one do_bench per arm, in a fixed order,
    so a slow drift of the GPU (clocks, temperature) reaches every arm alike; rows of kind "ab" (compare the medians, or
    each round's ratio)."""
    fns = {name: case.sdpa() if v == "sdpa" else case.call(v, o) for name, (v, o) in arms.items()}
    for r in range(rounds):
        if run.left() < -run.args.grace_s:
            break
        for name, fn in fns.items():
            _try(run, {"kind": "ab", "shape": case.shape, "N": case.N, "round": r, "method": name,
                       "opts": _jsonable(arms[name][1])},
                 lambda: {"ms": clock.do_bench(fn, 1)[0], "t": round(time.time(), 2)})  # noqa: B023


def _jobs(case: "Case") -> list[tuple[str, dict]]:
    """Every (variant, opts) a timed run of this shape launches: the sweep's candidates and the defaults, and, where
    a received-mass candidate reads the prefill kernel's -lse * log2(e) (r_lse2), the statistics prefill candidates
    in that form (the prefill kernel a winner's whole-call headline launches); then the interleaved rounds' arms."""
    cands = candidates(case.D, SWEEP_VARIANTS.get(case.shape))
    neg2 = [("stats", {**o, "r_lse2": True}) for v, o in cands if v == "stats_fwd"] \
        if any(v == "received" and o.get("r_lse2") for v, o in cands) else []
    arms = [(v, o) for _, v, o in AB_ARMS.get(case.shape, []) if v != "sdpa" and (v, o) not in cands + neg2]
    return cands + neg2 + arms + [(v, {}) for v in ("output", "edit", "stats")]


def _launches(case: "Case", variant: str, opts: dict) -> list:
    """The kernel launches of one candidate (fused.plan; received: its launch from a placeholder lse)."""
    import torch
    from kernels.attention import fused as tri
    c = case
    if variant == "received":
        lse = torch.zeros(1, c.H, c.N, device=c.q.device)
        split = torch.zeros(1, c.H, c.N, 16, dtype=torch.bfloat16, device=c.q.device) if opts.get("r_amma") else None
        return [tri._received(c.q, c.k, lse, tri._zeros_i64(1, c.q.device), dict(scale=c.scale, softcap=0.0, window=0),
                              opts.get("rtile"), opts, bool(opts.get("r_lse2")), split)[1]]
    kw = {"output": {}, "edit": {"edits": c.act}, "var": {"edits": c.var},
          "stats_fwd": {"spans": c.spans, "stats": c.fwd_stats}, "stats": {"spans": c.spans, "stats": c.full_stats}}
    return tri.plan(c.q, c.k, c.v, scale=c.scale, opts=opts, **kw[variant])[1]


def warm(case: "Case", threads: int = 8, deadline: float = float("inf")) -> tuple[int, int]:
    """Compile (or load from Triton's on-disk cache) the kernels this shape's timed run launches, before any
    timing, in this process: ``warmup=True`` launches inside Triton's AsyncCompileMode (a thread pool), in
    chunks of ``threads``, the defaults first, until ``deadline`` (time.time()); a kernel not warmed here
    compiles at its first timed call. Returns (launches warmed, launches in all); (0, n) in the interpreter."""
    jobs = _jobs(case)
    jobs = jobs[-3:] + jobs[:-3]                            # the recorded defaults first (every headline)
    launches = [x for v, o in jobs for x in _launches(case, v, o)]
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 0, len(launches)
    from concurrent.futures import ThreadPoolExecutor
    try:
        from triton.runtime._async_compile import AsyncCompileMode
    except ImportError:                                     # older Triton: compile one after another
        AsyncCompileMode = None
    done = 0
    for c0 in range(0, len(launches), threads):
        if time.time() > deadline:
            break
        try:
            ctx = AsyncCompileMode(ThreadPoolExecutor(threads)) if AsyncCompileMode else contextlib.nullcontext()
        except Exception as e:  # noqa: BLE001 - another Triton's signature: compile one after another
            print(f"warm: no AsyncCompileMode ({type(e).__name__}: {e})", flush=True)
            AsyncCompileMode, ctx = None, contextlib.nullcontext()
        try:
            with ctx:
                for fn, grid, kw in launches[c0:c0 + threads]:
                    try:
                        fn.run(grid=grid, warmup=True, **kw)
                    except Exception as e:  # noqa: BLE001 - the timed call reports it again
                        print(f"warm FAIL {fn}: {type(e).__name__}: {str(e)[:200]}", flush=True)
        except Exception as e:  # noqa: BLE001 - a failed compile surfaces at the context's exit
            print(f"warm FAIL (chunk {c0}): {type(e).__name__}: {str(e)[:200]}", flush=True)
        done = min(c0 + threads, len(launches))
    return done, len(launches)


def decode_variants(shape: str, H: int, KV: int, D: int, B: int, S: int, dev: str) -> dict:
    """name -> zero-argument callable of one decode step (one query over S keys) at this shape."""
    import torch.nn.functional as F
    from benchmarks.bench_decode_edits import decode_inputs
    from kernels.attention import fused as tri
    q, k, v, sc, act, var = decode_inputs(H, KV, D, B, S, dev)
    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, scale=sc, enable_gqa=KV != H),
        "ours": lambda: tri.attention(q, k, v, scale=sc),
        "act": lambda: tri.attention(q, k, v, scale=sc, edits=act),          # the per-shape default mode
        **{f"act_{m}": (lambda m=m: tri.attention(q, k, v, scale=sc, edits=act, opts={"col_mode": m}))
           for m in tri.DECODE_COL_MODES},
        "var": lambda: tri.attention(q, k, v, scale=sc, edits=var),
        **{f"var_{m}": (lambda m=m: tri.attention(q, k, v, scale=sc, edits=var, opts={"col_mode": m}))
           for m in tri.DECODE_COL_MODES},
    }


def decode_cases(run: Run, clock: Clock, dev: str, small: bool) -> None:
    from benchmarks.bench_decode_edits import _baseline
    base_tok = _baseline()
    for shape, H, KV, D, B, S in DECODE_CASES:
        S = 96 if small else S
        base = None
        for name, fn in decode_variants(shape, H, KV, D, B, S, dev).items():
            if run.left() < 3:
                run.add({"kind": "decode", "shape": shape, "B": B, "S": S, "variant": name, "skipped": "time budget"})
                continue

            def work():
                fn()                                    # compile / fill the per-sequence caches outside capture
                clock.sync()
                runs = clock.graph(fn, run.args.repeats)
                return {"ms": statistics.median(runs), "runs_ms": runs}
            row = {"kind": "decode", "shape": shape, "H": H, "KV": KV, "D": D, "B": B, "S": S, "variant": name}
            try:
                row.update(work())
            except Exception as e:  # noqa: BLE001 - a sweep reports what failed and goes on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if name == "sdpa":
                base = row.get("ms")
            elif base and "ms" in row:
                row["x_sdpa"] = row["ms"] / base
                tok = base_tok.get((B, S)) if shape == "llama" else None
                if tok:  # 32 layers of the Llama-7B shape, each paying the per-layer difference
                    row["token_x_est"] = (tok + 32 * (row["ms"] - base)) / tok
            run.add(row)


def precompile(share: str, N: int, dev: str, shapes) -> int:
    """Run every I-th of N candidates' launches with warmup=True (compiles them into Triton's on-disk cache for
    the timed process, which then warms them in-process in seconds when the cache keys match)."""
    i, n = (int(x) for x in share.split("/"))
    cases = {s: Case(s, N, dev) for s in shapes}
    jobs = [(s, v, o) for s in shapes for v, o in _jobs(cases[s])]
    mine = jobs[i::n]
    t0 = time.time()
    for shape, variant, opts in mine:
        t = time.time()
        try:
            for fn, grid, kw in _launches(cases[shape], variant, opts):
                fn.run(grid=grid, warmup=True, **kw)
            print(f"ok {shape} {variant} {_jsonable(opts)} {time.time() - t:.1f}s", flush=True)
        except Exception as e:  # noqa: BLE001 - the timed run reports it again
            print(f"FAIL {shape} {variant} {_jsonable(opts)}: {type(e).__name__}: {str(e)[:300]}", flush=True)
    print(f"share {share}: {len(mine)} candidates in {time.time() - t0:.1f}s", flush=True)
    return 0


def log_compiles(path: str, phase: str) -> None:
    """Append one JSON line per kernel compile request (an in-process cache miss) to path: the pieces of
    Triton's on-disk cache key (function hash, specialization, constants, options, cache-invalidating
    environment) and, where Triton reports it, whether the on-disk cache hit. Used to find why a timed
    process recompiled kernels that other processes had compiled (session 4)."""
    import hashlib
    from triton import knobs

    def h(x) -> str:
        return hashlib.sha256(str(x).encode()).hexdigest()[:12]

    def write(row):
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "phase": phase, "t": round(time.time(), 3), **row}) + "\n")

    def hook(**kw):
        try:
            jf = kw["fn"].jit_function
            c = kw["compile"]
            row = {"kernel": kw["fn"].name, "fn_key": jf.cache_key[:12], "sig": h(sorted(c["signature"].items())),
                   "const": h(sorted((str(k), str(v)) for k, v in c["constants"].items())),
                   "attrs": h(c["configs"]), "warps": c["num_warps"], "stages": c["num_stages"],
                   "globals": h([(n, repr(v)) for (n, _), (v, _) in jf.used_global_vals.items()]),
                   "globals_list": [n for (n, _), _ in jf.used_global_vals.items()]}
            try:
                from triton._C.libtriton import get_cache_invalidating_env_vars
                row["env"] = h(sorted(get_cache_invalidating_env_vars().items()))
            except Exception:  # noqa: BLE001
                pass
            try:
                from triton.compiler.compiler import ASTSource
                row["src"] = ASTSource(jf, c["signature"], c["constants"], c["configs"][0]).hash()[:12]
            except Exception as e:  # noqa: BLE001
                row["src_err"] = str(e)[:100]
            write(row)
        except Exception as e:  # noqa: BLE001 - a log must never break a launch
            write({"hook_err": f"{type(e).__name__}: {str(e)[:200]}"})
        return None

    def listener(**kw):
        try:
            write({"listener": kw.get("src").name if kw.get("src") is not None else None,
                   "cache_hit": kw.get("cache_hit"), "hash": (kw.get("metadata") or {}).get("hash", "")[:12]})
        except Exception as e:  # noqa: BLE001
            write({"listener_err": str(e)[:200]})
    knobs.runtime.jit_cache_hook = hook
    if hasattr(knobs, "compilation") and hasattr(knobs.compilation, "listener"):
        knobs.compilation.listener = listener


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=N_DEFAULT)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=3, help="do_bench runs per headline number (median kept)")
    ap.add_argument("--budget-s", type=float, default=150.0, help="stop starting new sweep candidates after this")
    ap.add_argument("--reserve-s", type=float, default=35.0, help="seconds kept for headlines and decode")
    ap.add_argument("--grace-s", type=float, default=15.0, help="headlines still run this long past the budget")
    ap.add_argument("--precompile", default=None, metavar="I/N")
    ap.add_argument("--decode", action="store_true", help="also time the decode cases (ACT / VAR steps)")
    ap.add_argument("--sdpa-again", action="store_true", help="time SDPA again after each shape (a drift check)")
    ap.add_argument("--ab", type=int, default=0, help="rounds of interleaved SDPA / statistics default / winner timing")
    ap.add_argument("--ab-only", type=int, default=0, metavar="ROUNDS",
                    help="no sweep or headlines: ROUNDS interleaved rounds of the AB_ARMS of each shape")
    ap.add_argument("--log-compiles", default=None, metavar="JSONL",
                    help="append one line per kernel compile request (cache-key pieces, cache hits) to this file")
    ap.add_argument("--pytest-log", default=None, help="the GPU test run's output (its summary goes in meta)")
    ap.add_argument("--dry", action="store_true", help="CPU plumbing check under TRITON_INTERPRET=1, tiny N")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
        args.n = min(args.n, 96)
        SHAPES.update(DRY["shapes"])
        DECODE_CASES[:] = [(s, *DRY["shapes"][s], min(B, 2), S) for s, _, _, _, B, S in DECODE_CASES]
    import torch
    cuda = torch.cuda.is_available() and not args.dry
    if not cuda and not args.dry:
        print("bench_sweep needs CUDA (or --dry)", file=sys.stderr)
        return 2
    dev = "cuda" if cuda else "cpu"
    if args.log_compiles:
        log_compiles(args.log_compiles, f"precompile {args.precompile}" if args.precompile else "timed")
    if args.precompile:
        return precompile(args.precompile, args.n, dev, args.shapes)
    import triton
    meta = {"device": torch.cuda.get_device_name() if cuda else "cpu (dry run)", "torch": torch.__version__,
            "triton": triton.__version__, "argv": sys.argv, "N": args.n, "repeats": args.repeats,
            "baseline_file": BASELINE}
    if args.pytest_log and os.path.exists(args.pytest_log):
        with open(args.pytest_log) as f:
            tail = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        meta["pytest_tail"] = tail[-3:]
    run = Run(args, meta)
    clock = Clock(cuda)
    if args.decode:
        decode_cases(run, clock, dev, small=args.dry)
    order = sorted(args.shapes, key=lambda s: s != "llama")           # the Llama shape first (never swept before)
    if args.ab_only:
        for shape in order:
            ab_shape(run, clock, shape, args.n, dev)
        return 0
    for i, shape in enumerate(order):
        prefill_shape(run, clock, shape, args.n, dev, shapes_after=len(order) - 1 - i)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
