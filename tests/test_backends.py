"""Hook backends (TransformerLens, nnsight) give native capture's statistics and report; sharded scan == unsharded.

Tolerance: heads.parquet numeric columns within 1e-4 across backends (measured ~1e-6);
per-call statistics within 1e-5.
"""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import probe
from probe.backends import support_table
from probe.sharding import Shard
from probe.errors import ProbeError

PROMPTS = ["It is a truth universally acknowledged, that a single man", "My dear Mr. Bennet, said his lady"]
MORE = PROMPTS + ["The capital of France is Paris and the", "Once upon a time there was", "She said that he would come",
                  "A B C D E F G H"]
HOOK_BACKENDS = ("transformer-lens", "nnsight")
HEADS_TOL = 1e-4
STATS = ("received", "entropy", "sink", "topk")


def heads_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    num = [c for c in a.select_dtypes("number").columns if c not in ("layer", "head", "kv_head")]
    assert list(a[["layer", "head"]].itertuples(index=False)) == list(b[["layer", "head"]].itertuples(index=False))
    return float((a[num] - b[num]).abs().max().max())


def stats_diff(r1, r2, real: torch.Tensor, layers) -> float:
    """Max |difference| over every captured LayerStats / HiddenSummary field (hidden: real tokens only)."""
    d = 0.0
    for layer in layers:
        a, b = r1.layer(layer), r2.layer(layer)
        assert torch.equal(a.key_start, b.key_start) and torch.equal(a.received_count, b.received_count)
        for f in ("received_sum", "entropy", "sink_mass", "topk_val"):
            d = max(d, float((getattr(a, f) - getattr(b, f)).abs().max()))
        ha, hb = r1.hidden(layer), r2.hidden(layer)
        for f in ("absmax", "first", "median_abs"):
            d = max(d, float((getattr(ha, f) - getattr(hb, f)).abs().max()))
        for f in ("token_max", "rms"):  # padding positions differ (eager vs seam on fully masked rows)
            d = max(d, float((getattr(ha, f) - getattr(hb, f))[real].abs().max()))
    return d


def test_capture_parity_tiny_llama(tiny_llama):
    h = tiny_llama
    enc = h.encode(PROMPTS)
    recs = {}
    for backend in ("native", *HOOK_BACKENDS):
        with torch.no_grad(), probe.capture(h, stats=STATS, topk=3, hidden="summary", backend=backend) as rec:
            out = rec.run(**enc, use_cache=False)
        recs[backend] = (rec, out.logits)
    real = enc["attention_mask"].bool()
    nat, nat_logits = recs["native"]
    for backend in HOOK_BACKENDS:
        rec, logits = recs[backend]
        assert rec.backend == backend
        assert float((logits - nat_logits)[real].abs().max()) < 1e-4
        assert stats_diff(nat, rec, real, range(h.n_layers)) < 1e-5, backend
    # the user's model is untouched: the bridge lives on a clone, nnsight restored the implementation
    assert type(h.model.model.layers[0].self_attn).__name__ == "LlamaAttention"
    assert h.model.config._attn_implementation == "sdpa"


def test_layers_filter_and_direct_call_refused(tiny_llama):
    enc = tiny_llama.encode(PROMPTS)
    with probe.capture(tiny_llama, stats=("received",), layers=[1], backend="nnsight") as rec:
        rec.run(**enc)
        with pytest.raises(ProbeError, match="rec.run"):
            tiny_llama.model(**enc)
    assert sorted(rec.calls[0].layers) == [1]


@pytest.mark.parametrize("name", ["tiny_llama", "smollm2"])
def test_scan_heads_parity(name, request):
    """The three backends give the same heads.parquet (and tokens / massive tables)."""
    h = request.getfixturevalue(name)
    prompts = MORE if name == "tiny_llama" else PROMPTS
    reports = {b: probe.scan(h, prompts, options={"sinks": {"backend": b, "min_queries": 2}})
               for b in ("native", *HOOK_BACKENDS)}
    for b in HOOK_BACKENDS:
        diff = heads_diff(reports["native"].tables["heads"], reports[b].tables["heads"])
        print(f"{name} {b}: max |heads diff| = {diff:.2e}")
        assert diff < HEADS_TOL, (b, diff)
        assert reports[b].manifest["settings"]["sinks"]["backend"] == b
        for t in ("tokens", "massive"):
            assert len(reports[b].tables[t]) == len(reports["native"].tables[t])


def _fresh_tiny(tiny_llama):
    """A second copy of the tiny Llama (same weights) that a user would hand to their own tools."""
    model = copy.deepcopy(tiny_llama.model)
    return model, copy.deepcopy(tiny_llama.tokenizer)


def test_own_bridge_from_notebook(tiny_llama):
    from transformer_lens.model_bridge import TransformerBridge

    model, tok = _fresh_tiny(tiny_llama)
    bridge = TransformerBridge.boot_transformers("my-tiny-llama", hf_model=model, tokenizer=tok)
    enc = tiny_llama.encode(PROMPTS)
    with probe.capture(tiny_llama, stats=("received", "entropy")) as nat:
        nat.run(**enc)
    with probe.capture(bridge, stats=("received", "entropy")) as rec:   # backend inferred from the object
        rec.run(**enc)
    assert rec.backend == "transformer-lens"
    assert torch.allclose(nat.layer(2).received_sum, rec.layer(2).received_sum, atol=1e-5)
    handle = probe.backends.wrap(bridge)
    # TransformerLens configures its tokenizer (BOS in front): compare with native on the same tokens
    same_tokens = probe.Handle(tiny_llama.model, handle.tokenizer, "tiny-llama", "object")
    ref = probe.scan(same_tokens, MORE).tables["heads"]
    assert heads_diff(ref, probe.scan(handle, MORE).tables["heads"]) < HEADS_TOL
    with pytest.raises(ProbeError, match="TransformerBridge"):
        with probe.capture(handle, backend="native"):
            pass


def test_own_nnsight_model_and_head_ablation(tiny_llama):
    from nnsight import LanguageModel
    from interventions import HeadScale

    model, tok = _fresh_tiny(tiny_llama)
    lm = LanguageModel(model, tokenizer=tok)
    handle = probe.backends.wrap(lm)
    ref = probe.scan(tiny_llama, MORE).tables["heads"]
    assert heads_diff(ref, probe.scan(handle, MORE).tables["heads"]) < HEADS_TOL
    # intervene from the notebook: zero head L1H2 — same logits as probe.intervene(HeadScale) and TransformerLens
    enc = tiny_llama.encode(PROMPTS)
    real = enc["attention_mask"].bool()
    with torch.no_grad(), probe.intervene(tiny_llama, HeadScale("L1H2", alpha=0.0)):
        native = tiny_llama.model(**enc).logits
    plain = tiny_llama.model(**enc).logits
    for obj, backend in ((handle, "nnsight"), (tiny_llama, "transformer-lens")):
        with probe.capture(obj, stats=("received",), backend=backend, head_scale={(1, 2): 0.0}) as rec:
            logits = rec.run(**enc).logits
        assert float((logits - native)[real].abs().max()) < 1e-4, backend
        assert float((logits - plain)[real].abs().max()) > 1e-3, backend   # the ablation did something


def test_remote_request(smollm2, monkeypatch):
    from nnsight import CONFIG

    enc = smollm2.encode(PROMPTS)
    with probe.capture(smollm2, stats=("received",), hidden="summary", layers=[3], backend="nnsight") as local:
        local.run(**enc)
    # nnsight's local simulation serialises the trace exactly as for NDIF and runs it here
    with probe.capture(smollm2, stats=("received",), hidden="summary", layers=[3], backend="nnsight",
                       remote="local") as sim:
        sim.run(**enc)
    assert torch.allclose(local.layer(3).received_sum, sim.layer(3).received_sum, atol=1e-6)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None, raising=False)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with pytest.raises(ProbeError, match="API key"):
        with probe.capture(smollm2, backend="nnsight", remote=True) as rec:
            rec.run(**enc)
    monkeypatch.setenv("NDIF_API_KEY", "not-a-real-key")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ProbeError, match="network"):
        with probe.capture(smollm2, backend="nnsight", remote=True) as rec:
            rec.run(**enc)


@pytest.fixture(scope="module")
def tiny_helium(smollm2):
    """A random-init Helium (an architecture TransformerLens has no adapter for)."""
    from transformers import HeliumConfig, HeliumForCausalLM

    from probe.models import Handle

    cfg = HeliumConfig(vocab_size=len(smollm2.tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, attn_implementation="sdpa")
    torch.manual_seed(0)
    return Handle(HeliumForCausalLM(cfg).eval(), smollm2.tokenizer, "tiny-helium", "object")


def test_unsupported_combinations(tiny_helium, tiny_llama, monkeypatch):
    rows = {(r["backend"], r["capability"]): r["ok"] for r in support_table(tiny_helium)}
    assert rows[("native", "stats")] and rows[("nnsight", "stats")] and not rows[("transformer-lens", "stats")]
    assert not rows[("native", "remote")] and rows[("native", "long_prompts")] and not rows[("nnsight", "long_prompts")]
    enc = tiny_helium.encode(PROMPTS)
    with pytest.raises(ProbeError, match="no adapter"):
        with probe.capture(tiny_helium, backend="transformer-lens"):
            pass
    with probe.capture(tiny_helium, stats=("received",), backend="nnsight") as rec:  # nnsight does support it
        rec.run(**enc)
    with probe.capture(tiny_helium, stats=("received",)) as nat:
        nat.run(**enc)
    assert torch.allclose(rec.layer(1).received_sum, nat.layer(1).received_sum, atol=1e-5)
    with pytest.raises(ProbeError, match="remote execution is not available"):
        with probe.capture(tiny_llama, backend="transformer-lens", remote=True):
            pass
    with pytest.raises(ProbeError, match="hook backend"):
        with probe.capture(tiny_llama, head_scale={(0, 0): 0.0}):
            pass
    with pytest.raises(ProbeError, match="lse"):
        with probe.capture(tiny_llama, stats=("lse",), backend="transformer-lens"):
            pass
    with pytest.raises(ProbeError, match="unknown backend"):
        with probe.capture(tiny_llama, backend="pytorch"):
            pass
    monkeypatch.setenv("PROBE_MAX_MAP_BYTES", "1000")
    with pytest.raises(ProbeError, match="native"):
        with probe.capture(tiny_llama, backend="nnsight") as rec:
            rec.run(**tiny_llama.encode(PROMPTS))


def test_cli_support_and_errors(capsys):
    from probe.cli import main

    main(["support", "smollm2"])
    out = capsys.readouterr().out
    assert "transformer-lens" in out and "long_prompts" in out and "TransformerBridge adapter for LlamaForCausalLM" in out
    for argv, msg in ((["scan", "--backend", "tensorflow"], "unknown backend"), (["scan", "--remote"], "--backend nnsight")):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2 and msg in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_folder(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder


def test_device_map_capture(tiny_llama, tiny_folder, tmp_path):
    """accelerate dispatch (CPU + disk offload of one layer): statistics equal the single-device ones."""
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                  "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    h = probe.load(str(tiny_folder), device="cpu", device_map=device_map, offload_folder=str(tmp_path))
    assert h.model.hf_device_map["model.layers.2"] == "disk"
    enc = h.encode(PROMPTS)
    with probe.capture(h, stats=STATS, topk=3, hidden="summary") as a:
        a.run(**enc)
    with probe.capture(tiny_llama, stats=STATS, topk=3, hidden="summary") as b:
        b.run(**enc)
    assert stats_diff(a, b, enc["attention_mask"].bool(), range(3)) < 1e-5
    rows = {(r["backend"], r["capability"]): r["ok"] for r in support_table(h)}
    assert rows[("native", "device_map")] and rows[("nnsight", "device_map")]


def test_sharded_resumable_in_process(tiny_llama, tmp_path):
    opts = {"sinks": {"batch_size": 2, "min_queries": 2}}
    ref = probe.scan(tiny_llama, MORE, options=copy.deepcopy(opts))
    rank1, rank0 = Shard(1, 2, barrier=False), Shard(0, 2, barrier=False)
    assert probe.scan(tiny_llama, MORE, out=tmp_path / "rep", options=opts, shard=rank1) is None
    report = probe.scan(tiny_llama, MORE, out=tmp_path / "rep", options=opts, shard=rank0)
    assert (rank0.computed, rank1.computed) == (2, 1)   # 3 batches of 2: batches 0, 2 on rank 0; batch 1 on rank 1
    for t in ("heads", "tokens", "massive"):
        pd.testing.assert_frame_equal(ref.tables[t], report.tables[t])
    again = probe.scan(tiny_llama, MORE, out=tmp_path / "rep", options=opts, overwrite=True, shard=rank0)
    assert rank0.computed == 0   # resumable: a finished shard is not recomputed
    pd.testing.assert_frame_equal(ref.tables["heads"], again.tables["heads"])


def test_shard_plan_does_not_depend_on_the_rank_device(tiny_llama):
    """Each torchrun rank holds the model on cuda:LOCAL_RANK: the plan (and shard folder) must match."""
    from probe.sharding import plan_id

    class OnOtherGPU(type(tiny_llama)):
        def describe(self):
            return {**super().describe(), "device": "cuda:1"}

    other = copy.copy(tiny_llama)
    other.__class__ = OnOtherGPU
    args = (MORE, ("sinks",), {}, False, 2)
    assert plan_id(tiny_llama, *args) == plan_id(other, *args)
    assert plan_id(tiny_llama, *args) != plan_id(tiny_llama, MORE[:2], *args[1:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_scan_two_gloo_processes(tiny_llama, tiny_folder, tmp_path):
    """torchrun with 2 CPU ranks (gloo barrier): the merged report equals the unsharded scan."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(pd.Series(MORE).to_frame("text").to_json(orient="records", lines=True)))
    out = tmp_path / "sharded"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PROBE_DISABLE_TRITON="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "probe", "scan", "--shard-by-rank", "--model", str(tiny_folder), "--prompts", str(prompts), "--out", str(out),
           "--device", "cpu", "--opt", "sinks.batch_size=2", "--opt", "sinks.min_queries=2"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0/2: 2 batch forwards" in run.stderr and "rank 1/2: 1 batch forwards" in run.stderr
    from probe.data.prompts import load_prompts

    ref = probe.scan(probe.load(str(tiny_folder), device="cpu"), load_prompts(prompts),
                     options={"sinks": {"batch_size": 2, "min_queries": 2}})
    for t in ("heads", "tokens", "massive"):
        merged = pd.read_parquet(out / f"{t}.parquet")
        pd.testing.assert_frame_equal(ref.tables[t].reset_index(drop=True), merged, check_dtype=False)
    assert len(list(Path(f"{out}.shards").glob("*/rank*-of2.pt"))) == 2
