"""HeadwiseKV on a GPU against the float64 CPU reference, before the study trusts the CUDA path.

A random-init Llama (head_dim 64, GQA 6 query / 3 KV heads, so the Triton kernels take the request)
runs in float32 on the device and in float64 on the CPU, on 301 tokens with sinks 4 / window 64:
  * every KV head full == the unmodified model (test (a) of tests/test_headkv.py);
  * no KV head full == SinkWindow fed one token at a time (test (b));
  * a mixed plan: prefill of 280 tokens, then 21 decode steps on the HeadwiseCache.
Prints one line per check with the largest |logit difference| and returns them as a dict.

    python -m studies.headkv.parity --device cuda
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch


from interventions import HeadwiseKV, SinkWindow, intervene  # noqa: E402

SINKS, WINDOW, N, PREFILL = 4, 64, 301, 280
TOL = 2e-3              # float32 kernels (exact fp32 products) against float64: logits differ by ~1e-5


def tiny(dtype, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=384, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=1024, rope_theta=1000.0,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval().to(dtype).to(device)


def run_policy(m, ids, iv, first: int):
    """Logits [N - first + 1, V] (float64 on CPU): ``first`` tokens in one call, then one per call."""
    out = []
    with torch.inference_mode(), intervene(m, iv):
        res = m(input_ids=ids[:, :first], use_cache=True)
        cache, out = res.cache, [res.logits[0]]
        for t in range(first, ids.shape[1]):
            res = m(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            cache = res.cache
            out.append(res.logits[0])
    return torch.cat(out).double().cpu()


def check(device: str = "cuda") -> dict:
    ref, dev = tiny(torch.float64, "cpu"), tiny(torch.float32, device)
    ids = torch.randint(3, 97, (1, N))
    mixed = torch.tensor([[True, False, False], [False, True, True]])
    ones, zeros = torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool)
    res = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.inference_mode():
            base = ref(input_ids=ids, use_cache=False).logits[0]
            with intervene(dev, HeadwiseKV(plan=ones, sinks=SINKS, window=WINDOW)):
                ours = dev(input_ids=ids.to(device), use_cache=False).logits[0].double().cpu()
        res["all_full_vs_unmodified"] = float((ours - base).abs().max())
        stream_ref = run_policy(ref, ids, SinkWindow(SINKS, WINDOW), 1)
        with torch.inference_mode(), intervene(dev, HeadwiseKV(plan=zeros, sinks=SINKS, window=WINDOW)):
            ours = dev(input_ids=ids.to(device), use_cache=False).logits[0].double().cpu()
        res["none_full_prefill_vs_sinkwindow_steps"] = float((ours - stream_ref).abs().max())
        mix_ref = run_policy(ref, ids, HeadwiseKV(plan=mixed, sinks=SINKS, window=WINDOW), PREFILL)
        mix_dev = run_policy(dev, ids.to(device), HeadwiseKV(plan=mixed, sinks=SINKS, window=WINDOW), PREFILL)
        res["mixed_prefill_decode_vs_cpu_fp64"] = float((mix_dev - mix_ref).abs().max())
        res["dense_vs_streaming_gap"] = float((stream_ref - base).abs().max())   # the policy does something
    res["fallback_warnings"] = sorted({str(w.message) for w in caught if "Triton" in str(w.message)})
    res["ok"] = all(res[k] < TOL for k in ("all_full_vs_unmodified", "none_full_prefill_vs_sinkwindow_steps",
                                           "mixed_prefill_decode_vs_cpu_fp64")) and res["dense_vs_streaming_gap"] > 1e-2
    for k, v in res.items():
        print(f"parity {k}: {v}", flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = check(args.device)
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
