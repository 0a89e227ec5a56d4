"""Kernel statistics against float64 on real SmolLM2 activations, with and without ``fixref`` (CPU record, GPU check).

The kernel tests hold every statistic to float64 on planted inputs. This checks the same on a real model's attention:
``--record`` runs SmolLM2-135M-Instruct (the embedded GGUF, CPU) over Austen and saves some layers' post-RoPE q, k, v in
bf16; ``--check`` (CUDA) runs the fused kernels on them with every statistic (lse, entropy, sink and span mass,
received mass, top-k) and the recorded defaults, with ``fixref`` on and off, and compares each field with
``reference.attention`` in float64. The pass rule is the kernel tests' (``kernels.attention.naive.allowed_error``): the
kernel's max error <= 4 x the bf16-input reference's + a floor (8e-3 per unit of magnitude for the output, 2e-5 for
statistics).

    PYTHONPATH=. python -m benchmarks.real_parity --record .dev_real/smollm2_qkv.pt --tokens 2048
    PYTHONPATH=. python -m benchmarks.real_parity --check .dev_real/smollm2_qkv.pt --out $OUT/real_parity_smollm2.json
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks.tables import write_json

LAYERS = (0, 4, 8, 12, 16, 20, 24, 29)
FIELDS = ("out", "lse", "entropy", "sink_mass", "span_mass", "received_sum", "topk_val")


def record(path: str, tokens: int) -> None:
    """Saves {"layers", "q" [L] of [1, H, T, D], "k", "v" [L] of [1, KV, T, D]} (bf16) of LAYERS."""
    import torch

    from benchmarks.norm_bound_skip import smollm2_qk
    seen, n = smollm2_qk(tokens, with_v=True)
    pick = [seen[i] for i in LAYERS]
    torch.save({"layers": list(LAYERS), "tokens": n, **{name: [x[j][None].to(torch.bfloat16) for x in pick]
                                                         for j, name in enumerate("qkv")}}, path)


def check(path: str) -> dict:
    """Per layer and field: the kernel's error with fixref on and off, the bf16 reference's, and the tests' verdict."""
    import torch

    from kernels.attention import fused
    from kernels.attention.api import StatsRequest
    from kernels.attention.naive import allowed_error, max_error
    from kernels.attention.reference import attention as reference
    data = torch.load(path)
    dev = "cuda" if torch.cuda.is_available() else "cpu"                     # cpu: TRITON_INTERPRET=1 (small files)
    stats = StatsRequest(lse=True, entropy=True, sink_mass=True, span_mass=True, received=True, topk=4, topk_rows=3)
    rows = []
    for li, q, k, v in zip(data["layers"], data["q"], data["k"], data["v"]):
        q, k, v = q.to(dev), k.to(dev), v.to(dev)
        T, D = q.shape[2], q.shape[3]
        kw = dict(scale=D ** -0.5, stats=stats, sink_pos=torch.tensor([[0]], device=dev),
                  spans=torch.tensor([[[0, 1], [T // 3, T // 3 + 21], [T - 10, T]]], device=dev))
        ref64 = reference(q.double(), k.double(), v.double(), **kw)
        same = reference(q, k, v, **kw)
        got = {on: fused.attention(q, k, v, opts={"fixref": on}, **kw) for on in (True, False)}
        for f in FIELDS:
            e_r, mag = max_error(getattr(same, f), getattr(ref64, f))
            row = {"layer": li, "field": f, "reference_err": e_r, "magnitude": mag,
                   "allowed": allowed_error(f, e_r, mag, q.dtype)}
            for on in (True, False):
                e_k, _ = max_error(getattr(got[on], f), getattr(ref64, f))
                row["fixref" if on else "plain"] = e_k
            row["pass_fixref"] = row["fixref"] <= row["allowed"]
            row["pass_plain"] = row["plain"] <= row["allowed"]
            rows.append(row)
    return {"model": "smollm2", "tokens": data["tokens"], "layers": data["layers"], "rows": rows,
            "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu (Triton interpreter)",
            "torch": torch.__version__,
            "passed_fixref": sum(r["pass_fixref"] for r in rows), "passed_plain": sum(r["pass_plain"] for r in rows),
            "checks": len(rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", default=None, help="save q, k, v of LAYERS to this file (CPU)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--check", default=None, help="check the kernels on a recorded file (CUDA)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.record:
        record(args.record, args.tokens)
    if args.check:
        out = check(args.check)
        out["command"] = "PYTHONPATH=. python -m benchmarks.real_parity " + " ".join(sys.argv[1:] if argv is None
                                                                                     else argv)
        print(json.dumps({k: out[k] for k in ("passed_fixref", "passed_plain", "checks")}))
        for r in out["rows"]:
            print(f"layer {r['layer']:2d} {r['field']:13s} fixref {r['fixref']:.2e} plain {r['plain']:.2e} "
                  f"ref {r['reference_err']:.2e} allowed {r['allowed']:.2e}")
        if args.out:
            write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
