"""What users feel, end to end: ``generate`` tokens/s through the seam, and sink-scan capture wall time and
peak memory against the N x N alternatives.

Part ``gen`` (issue #15, "wall-clock generate speed"): plain HF ``generate`` (SDPA, no probe) vs the same
call inside ``intervene`` with
    seam_noop   HeadScale(alpha=1) on every head of every layer (the seam on every layer, no edit)
    scale1_onehead  HeadScale(alpha=1) on one head (L4H7; the issue's "no-op HeadScale" measurement)
    headscale   HeadScale x2 on head 0 of every layer
    headmask    HeadMask uniform on one head (L4H7)
    act         ACT default (layers 2..L-2, every head)
    var         Redistribute (VAR) sink key 0 -> span [1, 1024) of the prompt, layers 2..L-2
on a random-init Llama-7B-shaped model (8 of its 32 layers, bf16, built on the device), a PROMPT-token
random prompt, NEW greedy tokens, batch 1 and 16; median of --repeats runs after one warm-up run, the
variants interleaved per repeat (a garbage collection before each timed run). ``tokens_per_s`` = NEW / wall
(per sequence; the prefill included). Every timed run carries a stopping criterion that never stops and
records the end of each step (``profile_decode.StepClock``, a few µs per step, in every variant, plain
included): ``step_ms_median`` / ``step_ms_p10_p90`` are the decode steps alone (prefill excluded), over all
runs; ``x_slower_paired_median``: the median over repeats of this variant's wall over plain's in the same round (the
runs interleave, so each pair shares the host's state of the moment); ``prefill_ms_median``: from the call to the
first stopping-criterion call (the prefill's and the first token's host work: the GPU may still be busy) over all runs; ``same_tokens_every_run``: every timed run produced the warm-up run's tokens.
``syncs_per_step``: synchronising CUDA calls per decode step (torch.cuda.set_sync_debug_mode) over a
short generate, minus nothing (HF's generate itself syncs once per step).

Part ``profile``: ``benchmarks/profile_decode.run`` on the same model (batch 1): per variant, step times, a
torch.profiler trace of one decode step and cProfile of eight, and the plain-vs-seam token / logit check,
into ``profile_decode.json`` next to --out (traces under --traces).

Part ``ties``: ``profile_decode.ties`` (plain vs plain again vs the no-edit seam: tokens, logits, per-layer
prefill hidden states) and the same with cuDNN attention off, after parts gen and static (no profiler: a
torch.profiler session slows every later launch of the process, measured in session 5's first call; session
5's second call ran ties before static and ran out of budget before static).

Part ``table`` ("the end-to-end GPU table"): ``probe scan``'s sink capture (received + entropy per head,
hidden-state summaries; ``probe.capture(..., backend=...)`` + ``rec.run``) with the native backend, the
nnsight backend (when importable), the TransformerLens backend (when importable), plain eager
``output_attentions=True`` (+ the same two statistics reduced from the returned maps) and a plain SDPA
forward (no statistics) for scale. Wall seconds (median of --repeats after a warm-up; one timed run when the
warm-up took over --slow seconds) and peak ``torch.cuda.max_memory_allocated`` minus the memory held before
the call. Out-of-memory and refused rows are recorded as such; a row whose predicted time (its method's
run at the model's previous size, scaled by (N / N_prev)^3 for the hook backends -- their maps go through
probe's fp64 reference reduction, a [T, S] x [S, S] product per head -- and ^2 otherwise) exceeds
--row-cap or does not fit twice into the budget left is recorded as skipped with that prediction, and a
first run over --row-cap seconds is stopped (an interval timer) and recorded as such. Gemma-3-270M (real weights, the GGUF of the
gemma3-270m alias) at 8K/32K and SmolLM2-135M (real weights) at 1K/4K/8K, on Austen token ids from
``--make-ids``, then the random Llama-7B shape at 16K/64K (in a table-only call; after the Llama parts
otherwise).

Part ``static``: ``generate(..., cache_implementation="static")`` (batch 1, PROMPT + NEW) per variant, with
generate's automatic compile (inductor, CUDA graphs) wherever it happens: the plain model always, the seam
when every hook is graph-safe (``seam.allow_compile``: no edit, HeadScale, HeadMask, ACT, VAR with explicit
sinks -- ACT and VAR as their tensor-op decode forms), eager otherwise. Tokens equal to the dynamic cache's,
first-run seconds (compile + graph capture), tokens/s and decode ms per step, dynamo's graph / break counts.
``--no-compile``: every run eager.

Every row is appended to --out as soon as it is measured (a killed run keeps what it had).

    python -m benchmarks.bench_e2e_table --out $OUT/e2e.json --budget 220            # the device call
    python -m benchmarks.bench_e2e_table --device cpu --quick --out /tmp/e2e_cpu.json  # CPU dry run / CPU table
    python -m benchmarks.bench_e2e_table --make-ids --smollm-ids s.pt --gemma-ids g.pt --out /dev/null  # token ids
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
import time
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VARIANTS = ("plain", "seam_noop", "headscale", "headmask", "act", "var")   # + scale1_onehead on request (--variants)
T0 = time.time()


class Out:
    """Rows appended to a JSON file after every measurement."""

    def __init__(self, path: str, meta: dict):
        self.path, self.doc = path, {"meta": meta, "rows": []}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.flush()

    def add(self, row: dict) -> None:
        row["t"] = round(time.time() - T0, 1)
        self.doc["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.flush()

    def flush(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1)
        os.replace(tmp, self.path)


def left(budget: float) -> float:
    return budget - (time.time() - T0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def llama(device: str, quick: bool):
    """Random-init Llama-7B shape, 8 of 32 layers, bf16 on CUDA (fp32 tiny dims with --quick on CPU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from probe.models import Handle

    if quick:
        cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=8,
                          num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=70000)
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=8,
                          num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=70000)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(prev)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    return Handle(model, _word_tokenizer(), "llama7b-shape-8layers", "object")


def _word_tokenizer():
    """A one-word tokenizer object: the nnsight backend wants one; the rows feed token ids directly."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                   unk_token="<unk>", pad_token="<unk>")


def interventions_for(name: str, handle, prompt: int):
    from interventions import ACT, HeadMask, HeadScale, Redistribute

    L, H = handle.n_layers, handle.n_heads
    return {
        "plain": None,
        "seam_noop": [HeadScale([(l, h) for l in range(L) for h in range(H)], alpha=1.0)],
        "scale1_onehead": [HeadScale([(min(4, L - 1), min(7, H - 1))], alpha=1.0)],
        "headscale": [HeadScale([(l, 0) for l in range(L)], alpha=2.0)],
        "headmask": [HeadMask([(min(4, L - 1), min(7, H - 1))], mode="uniform")],
        "act": [ACT()],
        "var": [Redistribute(sink_keys=[0], span=(1, min(1024, prompt)))],
    }[name]


def _ctx(handle, ivs):
    from interventions import intervene

    return contextlib.nullcontext() if ivs is None else intervene(handle, *ivs)


def part_gen(out: Out, handle, device: str, batches, prompt: int, new: int, repeats: int, budget: float,
             variants=VARIANTS) -> None:
    from benchmarks.profile_decode import StepClock
    from transformers import StoppingCriteriaList

    model = handle.model
    vocab = model.config.vocab_size
    for B in batches:
        g = torch.Generator().manual_seed(B)
        ids = torch.randint(3, vocab, (B, prompt), generator=g).to(device)
        am = torch.ones_like(ids)
        kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
        ivs = {v: interventions_for(v, handle, prompt) for v in variants}
        results = {v: [] for v in variants}
        steps = {v: [] for v in variants}
        cpu = {v: [] for v in variants}              # the host thread's CPU ms per step
        switches = {v: [] for v in variants}         # involuntary context switches per step
        prefill = {v: [] for v in variants}          # ms from the call to the first step's end (prefill + 1 token)
        tokens, same_runs = {}, {}

        def run(v, n=new, clock=None):
            crit = {"stopping_criteria": StoppingCriteriaList([clock])} if clock is not None else {}
            with torch.no_grad(), _ctx(handle, ivs[v]):
                sync(device)
                t = time.perf_counter()
                if clock is not None:
                    clock.start = t
                o = model.generate(input_ids=ids, attention_mask=am, **{**kw, "max_new_tokens": n, "min_new_tokens": n}, **crit)
                sync(device)
                return time.perf_counter() - t, o

        for v in variants:                                   # warm-up: Triton JIT, cuDNN plans, allocator
            if left(budget) < 30:
                break
            try:
                _, o = run(v)
                tokens[v] = o[:, prompt:].cpu()
            except Exception as err:  # noqa: BLE001 - a benchmark records what failed
                results[v] = None
                out.add({"part": "gen", "batch": B, "variant": v, "error": f"{type(err).__name__}: {str(err)[:200]}"})
        for r in range(repeats):
            for v in variants:
                if results[v] is None or v not in tokens or left(budget) < 20:
                    continue
                gc.collect()
                clock = StepClock()
                wall, o = run(v, clock=clock)
                results[v].append(wall)
                steps[v] += [1e3 * (b - a) for a, b in zip(clock.times, clock.times[1:])]
                cpu[v] += [1e3 * (b - a) for a, b in zip(clock.cpu, clock.cpu[1:])]
                switches[v] += [b - a for a, b in zip(clock.preempted, clock.preempted[1:])]
                prefill[v].append(1e3 * (clock.times[0] - clock.start))
                same_runs[v] = same_runs.get(v, True) and bool(torch.equal(o[:, prompt:].cpu(), tokens[v]))
        base = None
        for v in variants:
            # per repeat, this variant's wall over plain's in the same round (the runs interleave, so a pair shares the
            # host's state of the moment): robust to a host whose speed drifts between rounds
            pairs = [a / b for a, b in zip(results[v] or [], results.get("plain") or [])]
            runs = sorted(results[v] or [])
            if not runs:
                continue
            med = runs[len(runs) // 2]
            tps = new / med
            base = tps if v == "plain" else base
            row = {"part": "gen", "batch": B, "prompt": prompt, "new_tokens": new, "variant": v,
                   "wall_s_runs": [round(x, 4) for x in runs], "tokens_per_s": round(tps, 2),
                   "tokens_per_s_all_rows": round(tps * B, 1),
                   "x_slower": round(base / tps, 3) if base else None,
                   "x_slower_paired_median": round(sorted(pairs)[len(pairs) // 2], 3) if pairs else None,
                   "x_slower_paired_runs": [round(x, 3) for x in pairs],
                   **_spread("step_ms", steps[v]),
                   **_spread("step_cpu_ms", cpu[v]),
                   **_spread("prefill_ms", prefill[v]),
                   "preempted_per_step": round(sum(switches[v]) / len(switches[v]), 3) if switches[v] else None,
                   "same_tokens_every_run": same_runs.get(v),
                   "same_tokens_as_plain": bool(torch.equal(tokens[v], tokens["plain"])) if v in tokens and "plain" in tokens else None}
            if B == 1:
                row.update(sync_count(run, v, device))
            out.add(row)


def _spread(name: str, xs: list) -> dict:
    """{name_median, name_p10_p90} of per-step values xs (empty: {})."""
    if not xs:
        return {}
    st = sorted(xs)
    return {f"{name}_median": round(st[len(st) // 2], 3),
            f"{name}_p10_p90": [round(st[len(st) // 10], 3), round(st[(9 * len(st)) // 10], 3)]}


def sync_count(run, v: str, device: str) -> dict:
    """Synchronising CUDA calls per decode step: (syncs of a 9-token generate - a 1-token one) / 8."""
    if not device.startswith("cuda"):
        return {}
    counts = []
    for n in (1, 9):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(v, n)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    return {"syncs_prefill_call": counts[0], "syncs_per_step": round((counts[1] - counts[0]) / 8, 2)}


# ---------------------------------------------------------------- the end-to-end table
def _peak(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


def _peak_gib(device: str, before: int):
    if device.startswith("cuda"):
        return round((torch.cuda.max_memory_allocated() - before) / 2**30, 3)
    return None


def _eager_stats(handle, enc):
    """Plain transformers: eager attention, output_attentions=True, the same two statistics from the maps."""
    model = handle.model
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        o = model(**enc, output_attentions=True, use_cache=False)
        stats = []
        for a in o.attentions:                                   # [B, H, T, S] each, all held by the output
            p = a.float()
            stats.append((p.sum(2), -(p * p.clamp_min(1e-30).log()).sum(-1)))   # received sum [B, H, S], entropy [B, H, T]
        return stats
    finally:
        model.set_attn_implementation(prev)


def _method(name: str, handle, enc):
    import probe

    if name == "sdpa_forward":
        return lambda: handle.model(**enc, use_cache=False)
    if name == "eager_output_attentions":
        return lambda: _eager_stats(handle, enc)
    backend = {"native": "native", "nnsight": "nnsight", "transformer_lens": "transformer-lens"}[name]

    def cap():
        with probe.capture(handle, stats=("received", "entropy"), hidden="summary", backend=backend) as rec:
            rec.run(**enc, use_cache=False)
        return rec
    return cap


def _available(name: str) -> str | None:
    """None when the backend's package imports, else why not. (TransformerLens boots its bridge on the loaded
    model, ``hf_model=``: a random-init model needs no hub name.)"""
    mod = {"nnsight": "nnsight", "transformer_lens": "transformer_lens.model_bridge"}.get(name)
    if mod is None:
        return None
    try:
        __import__(mod)
        return None
    except Exception as err:  # noqa: BLE001
        return f"not importable here ({type(err).__name__}: {str(err)[:120]})"


HOOK_METHODS = ("nnsight", "transformer_lens")


def _predicted(seen: dict, method: str, N: int):
    """(seconds of one run at N tokens, how) from the method's run at the model's previous size, or None."""
    if method not in seen:
        return None
    n0, t0 = seen[method]
    k = 3 if method in HOOK_METHODS else 2
    return t0 * (N / n0) ** k, f"{t0:.2f} s at {n0:,} tokens x (N / {n0:,})^{k}"


class RowCap(Exception):
    """Raised by the interval timer when a row's first run outlasts its cap."""


@contextlib.contextmanager
def capped(seconds: float):
    """Raise RowCap in the main thread after ``seconds`` (the hook backends' reductions are Python loops over
    query blocks, so the signal lands within one block's kernels)."""
    def fire(signum, frame):
        raise RowCap()
    prev = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.1))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, prev)


def part_table(out: Out, handle, model_name: str, sizes, methods, device: str, repeats: int, budget: float,
               ids_source=None, best: bool = False, slow: float = 3.0, cap: float = 25.0, reserve: float = 10.0) -> None:
    """One row per (size, method); ``ids_source`` [>= N] real token ids (else random ids, seeded by N). A first
    (warm-up) run longer than ``cap`` seconds (or than the budget left) is stopped and recorded as such."""
    vocab = handle.model.config.vocab_size
    seen: dict = {}                                          # method -> (tokens, seconds of one run), last size
    for N in sizes:
        if ids_source is not None and ids_source.numel() >= N:
            ids = ids_source[:N][None].long().to(device)
        else:
            ids = torch.randint(3, vocab, (1, N), generator=torch.Generator().manual_seed(N)).to(device)
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for m in methods:
            row = {"part": "table", "model": model_name, "tokens": N, "method": m,
                   "ids": "real text" if ids_source is not None and ids_source.numel() >= N else "random"}
            why = _available(m)
            if why:
                out.add({**row, "status": why})
                continue
            if left(budget) < 15:
                out.add({**row, "status": "skipped: out of time budget"})
                continue
            pred = _predicted(seen, m, N)
            if pred is not None and (pred[0] > cap or 2 * pred[0] > left(budget) - reserve):
                out.add({**row, "status": f"skipped: predicted {pred[0]:.0f} s per run ({pred[1]}); row cap {cap:.0f} s, "
                         f"{left(budget):.0f} s of the call's budget left", "predicted_s": round(pred[0], 1)})
                continue
            fn = _method(m, handle, enc)
            runs, status, peak, warm = [], "ok", None, None
            limit = min(cap, left(budget) - reserve)
            try:
                with torch.no_grad():
                    before = _peak(device)
                    t = time.perf_counter()
                    with capped(limit):
                        fn()                                       # warm-up (JIT, allocator); its peak is recorded
                        sync(device)
                    warm = time.perf_counter() - t
                    peak = _peak_gib(device, before)
                    for _ in range(repeats if warm < slow else 1):
                        if left(budget) < max(10, warm + 5):
                            break
                        t = time.perf_counter()
                        fn()
                        sync(device)
                        runs.append(time.perf_counter() - t)
            except torch.OutOfMemoryError:
                status = "out of memory"
            except Exception as err:  # noqa: BLE001 - refused / failed rows are results too
                msg = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                status = "out of memory" if "out of memory" in msg.lower() else msg
                if isinstance(err, RowCap) or "RowCap" in msg or isinstance(err.__cause__ or err.__context__, RowCap):
                    status, warm = f"stopped: the first run took over {limit:.0f} s (the row's cap)", limit
            finally:
                fn = None
                sync(device)
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            runs.sort()
            if runs or warm is not None:
                seen[m] = (N, runs[0] if runs else warm)     # a stopped run: its cap, a lower bound
            pick = runs[0] if best else (runs[len(runs) // 2] if runs else None)
            out.add({**row, "status": status, "wall_s": round(pick, 4) if runs else None, "stat": "min" if best else "median",
                     "wall_s_runs": [round(x, 4) for x in runs], "warmup_s": round(warm, 4) if warm is not None else None,
                     "peak_gib_over_weights": peak if status == "ok" else None})


REAL = {"smollm2": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma-3-270M"}   # alias -> the table's model name


def make_ids(alias: str, path: str, n: int) -> None:
    """The first ``n`` tokens of Pride and Prejudice (needs janeaustenr) as the alias' tokenizer reads it
    (BOS first where the handle prepends it), int32, 1-D, into ``path``."""
    import probe
    from probe.data.texts import austen

    h = probe.load(alias, device="cpu")
    ids = h.tokenizer(austen("prideprejudice")[:max(200000, 8 * n)], return_tensors="pt")["input_ids"][0]
    bos = h.tokenizer.bos_token_id
    if h.prepend_bos and bos is not None and int(ids[0]) != bos:
        ids = torch.cat([torch.tensor([bos]), ids])
    if ids.numel() < n:
        raise SystemExit(f"only {ids.numel()} {alias} tokens in the text, {n} asked for")
    torch.save(ids[:n].to(torch.int32).clone(), path)
    print(f"{path}: {n} {alias} token ids")


def part_table_real(out: Out, alias: str, sizes, ids_path, methods, args) -> None:
    """Load a real-weight alias (bf16 on CUDA), run ``part_table`` on it, free it."""
    import probe

    t = time.time()
    try:
        h = probe.load(alias, device=args.device, dtype=torch.bfloat16 if args.device.startswith("cuda") else None)
    except Exception as err:  # noqa: BLE001 - e.g. the weights are not on this machine: record, go on
        out.add({"part": "load", "model": alias, "error": f"{type(err).__name__}: {str(err)[:200]}"})
        return
    out.add({"part": "load", "model": alias, "seconds": round(time.time() - t, 1)})
    ids = torch.load(ids_path) if ids_path else None
    part_table(out, h, REAL[alias], sizes, methods, args.device, args.repeats, args.budget, ids_source=ids,
               best=args.best, slow=args.slow, cap=args.row_cap)
    h = None
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- static cache
STATIC_VARIANTS = ("plain", "seam_noop", "headscale", "act", "headmask", "var")


def part_static(out: Out, handle, device: str, prompt: int, new: int, compile_: bool, budget: float,
                variants=STATIC_VARIANTS, repeats: int = 3, batches=(1,)) -> None:
    """generate(cache_implementation="static") per batch size and variant: tokens equal to the dynamic cache's,
    tokens/s and decode ms per step (median of ``repeats`` after a first run that compiles and records the CUDA
    graphs: its time is ``first_run_s``), whether generate may compile (``compile_allowed``: the seam allows it for
    graph-safe hooks only) and dynamo's graph / graph-break counts of the first run. ``compile_`` False: every run
    eager. A variant ``<name>_tensor`` runs ``<name>`` with the seam's graph-mode ACT / VAR step on its tensor-op
    forms instead of the Triton decode op (``seam.GRAPH_KERNEL``); ``<name>@<mode>`` with the decode split kernel's
    column mode ``<mode>`` for that edit at every shape (``fused.DECODE_EDIT_CFG``; e.g. ``var@split``)."""
    from benchmarks.profile_decode import StepClock
    from torch._dynamo.utils import counters
    from transformers import StoppingCriteriaList

    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)   # one graph per variant
    model = handle.model
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
    for B, v in [(B, v) for B in batches for v in variants]:
        ids = torch.randint(3, model.config.vocab_size, (B, prompt), generator=torch.Generator().manual_seed(7)).to(device)
        am = torch.ones_like(ids)
        if left(budget) < 25:
            out.add({"part": "static", "batch": B, "variant": v, "status": "skipped: out of time budget"})
            continue
        name, _, mode = v.partition("@")
        ivs = interventions_for(name.removesuffix("_tensor"), handle, prompt)
        row = {"part": "static", "batch": B, "variant": v, "compile": compile_, "prompt": prompt, "new_tokens": new,
               "graph_decode": "tensor ops" if name.endswith("_tensor") else "kernel op"}
        try:
            with _graph_decode_path(name, mode), torch.no_grad(), _ctx(handle, ivs):
                dyn = model.generate(input_ids=ids, attention_mask=am, **kw)
                flag = {} if compile_ else {"disable_compile": True}
                if compile_ and not device.startswith("cuda"):   # CPU dry run: dynamo only (generate compiles on CUDA)
                    from transformers.generation.configuration_utils import CompileConfig
                    flag = {"compile_config": CompileConfig(backend="eager", fullgraph=True, mode=None)}
                    flag["compile_config"]._compile_all_devices = True
                row["compile_allowed"] = bool(compile_ and not model.generation_config.disable_compile)
                counters.clear()
                sync(device)
                t = time.perf_counter()
                st = model.generate(input_ids=ids, attention_mask=am, cache_implementation="static", **flag, **kw)
                sync(device)
                row["first_run_s"] = round(time.perf_counter() - t, 2)
                row["dynamo"] = {"graphs": counters["stats"].get("unique_graphs", 0),
                                 "graph_breaks": sum(counters["graph_break"].values()),
                                 "break_reasons": [str(k)[:240] for k in counters["graph_break"]][:6],
                                 "cudagraph_skips": {k: n for k, n in counters["inductor"].items() if "cudagraph" in k}}
                walls, steps, cpus = [], [], []
                for _ in range(repeats):
                    if left(budget) < 10:
                        break
                    clock = StepClock()
                    sync(device)
                    t = time.perf_counter()
                    model.generate(input_ids=ids, attention_mask=am, cache_implementation="static", **flag, **kw,
                                   stopping_criteria=StoppingCriteriaList([clock]))
                    sync(device)
                    walls.append(time.perf_counter() - t)
                    steps += [1e3 * (b - a) for a, b in zip(clock.times, clock.times[1:])]
                    cpus += [1e3 * (b - a) for a, b in zip(clock.cpu, clock.cpu[1:])]
            walls.sort()
            row.update(status="ok", same_tokens_as_dynamic=bool(torch.equal(dyn, st)),
                       wall_s_runs=[round(x, 4) for x in walls],
                       tokens_per_s=round(new / walls[len(walls) // 2], 2) if walls else None,
                       **_spread("step_ms", steps), **_spread("step_cpu_ms", cpus))
        except Exception as err:  # noqa: BLE001
            row.update(status=f"{type(err).__name__}: {str(err).splitlines()[0][:240] if str(err) else ''}")
        out.add(row)


@contextlib.contextmanager
def _graph_decode_path(name: str, mode: str):
    """While a static variant runs: ``<kind>_tensor`` -> the seam's tensor-op graph-mode forms (``seam.GRAPH_KERNEL``
    off); a column mode -> the decode split kernel's mode of that edit kind at every shape (``fused.DECODE_EDIT_CFG``).
    Both are put back on exit."""
    from kernels.attention import fused
    from probe.capture import seam

    kind = name.removesuffix("_tensor")
    saved = {w: dict(c) for w, c in fused.DECODE_EDIT_CFG.items()}
    seam.GRAPH_KERNEL[0] = not name.endswith("_tensor")
    if mode:
        for c in fused.DECODE_EDIT_CFG.values():
            c[kind] = (mode,) + tuple(c[kind][1:])
    try:
        yield
    finally:
        seam.GRAPH_KERNEL[0] = True
        fused.DECODE_EDIT_CFG.update(saved)


def _run_old(out: Out, args) -> None:
    """Part gen on the code before this change (same script, the old packages first on the path)."""
    import subprocess

    path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "e2e_old.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--parts", "gen", "--batches", "1", "--variants", args.old_variants,
           "--out", path, "--device", args.device, "--prompt", str(args.prompt), "--new", str(args.new),
           "--repeats", str(args.repeats), "--budget", str(max(10.0, left(args.budget) - 12))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath(args.old), os.environ.get("PYTHONPATH", "")])}
    try:
        rc = subprocess.run(cmd + (["--quick"] if args.quick else []), env=env, timeout=max(10.0, left(args.budget) - 2)).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    out.add({"part": "old", "code": os.path.abspath(args.old), "rc": rc, "file": path})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU dry run)")
    ap.add_argument("--parts", default="gen,table,static")
    ap.add_argument("--budget", type=float, default=220.0, help="seconds; stages stop starting work past it")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--old", default=None, help="a folder with main's code before this change: rerun part gen "
                    "(batch 1, --old-variants) there in a subprocess with the budget left, into OUT's folder")
    ap.add_argument("--old-variants", default="plain,scale1_onehead,headmask,act")
    ap.add_argument("--llama-sizes", default="16384,65536")
    ap.add_argument("--smollm-sizes", default="1024,4096,8192")
    ap.add_argument("--methods", default="native,sdpa_forward,eager_output_attentions,nnsight,transformer_lens")
    ap.add_argument("--smollm-ids", default=None, help="a .pt file of real token ids (1-D) for the SmolLM2 rows")
    ap.add_argument("--gemma-sizes", default="8192,32768")
    ap.add_argument("--gemma-ids", default=None, help="a .pt file of real token ids (1-D) for the Gemma-3-270M rows")
    ap.add_argument("--slow", type=float, default=3.0, help="table: one timed run after a warm-up slower than this (s)")
    ap.add_argument("--row-cap", type=float, default=25.0, help="table: stop a row whose first run takes longer (s)")
    ap.add_argument("--profile-variants", default=",".join(("plain", "seam_noop", "headmask", "headscale", "act", "var")))
    ap.add_argument("--profile-budget", type=float, default=60.0, help="part profile: no new variant after this second")
    ap.add_argument("--traces", default=None, help="part profile: folder for the chrome traces (default: OUT's folder/traces)")
    ap.add_argument("--no-compile", action="store_true", help="static part: pass disable_compile=True (eager)")
    ap.add_argument("--static-variants", default=",".join(STATIC_VARIANTS))
    ap.add_argument("--static-batches", default="1", help="part static: batch sizes")
    ap.add_argument("--best", action="store_true", help="table: report the fastest run, not the median (a shared CPU)")
    ap.add_argument("--make-ids", action="store_true",
                    help="write --smollm-ids / --gemma-ids (those given) from Pride and Prejudice, as many tokens as "
                    "the largest of --smollm-sizes / --gemma-sizes (needs janeaustenr), and exit")
    args = ap.parse_args(argv)
    if args.make_ids:
        for alias, path, sizes in (("smollm2", args.smollm_ids, args.smollm_sizes), ("gemma3-270m", args.gemma_ids, args.gemma_sizes)):
            if path:
                make_ids(alias, path, max(int(n) for n in sizes.split(",")))
        return 0
    if args.quick:   # CPU dry run: the same code paths at toy sizes
        args.prompt, args.new, args.batches, args.repeats = min(args.prompt, 64), min(args.new, 8), "1,2", 1
        args.llama_sizes = args.llama_sizes and "256"
        args.gemma_sizes = args.gemma_sizes and "256"
    os.environ.setdefault("PROBE_MAX_MAP_BYTES", str(1 << 40))      # measure the hook backends, don't refuse them
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = args.parts.split(",")
    meta = {"argv": sys.argv, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": os.getloadavg(),
            "cpu_count": os.cpu_count()}
    try:
        meta["triton"] = __import__("triton").__version__
    except Exception:  # noqa: BLE001
        meta["triton"] = None
    out = Out(args.out, meta)
    methods = args.methods.split(",")
    h = None
    real = [(alias, sizes, ids) for alias, sizes, ids in (("gemma3-270m", args.gemma_sizes, args.gemma_ids),
                                                          ("smollm2", args.smollm_sizes, args.smollm_ids)) if sizes]
    first = "table" in parts and not {"gen", "profile", "static", "ties"} & set(parts)   # a table-only call:
    for alias, sizes, ids in real if first else []:                   # the real-weight models before the Llama shape
        if left(args.budget) > 30:
            part_table_real(out, alias, [int(n) for n in sizes.split(",")], ids, methods, args)
    if {"gen", "profile", "static", "ties"} & set(parts) or ("table" in parts and args.llama_sizes):
        h = llama(args.device, args.quick)
        out.add({"part": "load", "model": "llama7b-shape-8layers", "seconds": round(time.time() - T0, 1)})
        if "profile" in parts:
            from benchmarks import profile_decode

            profile_decode.T0 = T0
            path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "profile_decode.json")
            profile_decode.run(h, args.device, args.prompt, args.new, 2, args.profile_variants.split(","),
                               ["steps", "profile", "python", "ties"], path, args.traces or os.path.join(os.path.dirname(
                                   os.path.abspath(args.out)), "traces"), args.profile_budget)
            out.add({"part": "profile", "file": path})
        if "gen" in parts:
            part_gen(out, h, args.device, [int(b) for b in args.batches.split(",")], args.prompt, args.new,
                     args.repeats, args.budget, args.variants.split(","))
        if "table" in parts and args.llama_sizes:
            part_table(out, h, "llama7b-shape-8layers (random init)", [int(n) for n in args.llama_sizes.split(",")],
                       methods, args.device, args.repeats, args.budget, best=args.best, slow=args.slow, cap=args.row_cap)
        if "static" in parts and left(args.budget) > 25:
            part_static(out, h, args.device, args.prompt, args.new, not args.no_compile, args.budget,
                        args.static_variants.split(","), batches=[int(b) for b in args.static_batches.split(",")])
        if "ties" in parts and left(args.budget) > 10:      # plain vs plain vs seam, with and without cuDNN (no profiler)
            from benchmarks import profile_decode

            ids = torch.randint(3, h.model.config.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(1)).to(args.device)
            rows: list = []
            try:
                profile_decode.ties(rows, h, ids, args.new, args.device, args.traces or os.path.dirname(os.path.abspath(args.out)),
                                    kernels=False)
                profile_decode.ties_without_cudnn(rows, h, ids, args.new)
            except Exception as err:  # noqa: BLE001
                rows.append({"part": "ties", "error": f"{type(err).__name__}: {str(err)[:300]}"})
            for r in rows:
                out.add(r)
        h = None
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    for alias, sizes, ids in real if "table" in parts and not first else []:
        if left(args.budget) > 30:
            part_table_real(out, alias, [int(n) for n in sizes.split(",")], ids, methods, args)
    if args.old and left(args.budget) > 30:
        _run_old(out, args)
    from probe.capture import seam
    out.doc["meta"]["act_tensor_path_off"] = seam._ACT_TENSOR_PATH[0]      # None: ACT decode steps ran as tensor ops
    out.doc["meta"]["graph_lse_kernel"] = {str(k): v for k, v in seam._LSE_KERNEL.items()}   # ACT / VAR graph-mode calls
    try:                                                                    # None: Triton's direct decode launch was on
        from kernels.attention import launch
        out.doc["meta"]["direct_launch_off"] = launch.launch_off_reason()
    except Exception as err:  # noqa: BLE001 - no Triton
        out.doc["meta"]["direct_launch_off"] = f"{type(err).__name__}: {err}"
    out.doc["meta"]["finished_s"] = round(time.time() - T0, 1)
    out.doc["meta"]["loadavg_end"] = os.getloadavg()
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
