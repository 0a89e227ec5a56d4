"""Memory of the seam's mask handling at long context, on CPU: SDPA's dense mask vs the compact one.

What transformers asks the "probe" attention's mask function for, per mask type of one forward:
``sdpa_mask`` (what the plain SDPA forward builds, and what the seam used to build and then check
with more N x N temporaries) against ``probe.capture.causal_mask.compact_mask`` (key_start, window;
the pattern checked exactly in row blocks). Each case runs in a fresh process; the number is that
process's peak resident memory (ru_maxrss) minus the peak of a process that only imported
everything, plus the largest single tensor any op created (a TorchDispatchMode).
Cases: a Gemma-3-270M sliding layer (window 512) and global layer at 32K tokens; a Llama layer at
64K tokens with 64 left-padding tokens (the dense mask is 4 GiB: measured only with --dense-64k).

    python -m benchmarks.bench_mask_memory --out benchmarks/results/mask_memory_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = [("gemma3-sliding-512", 32768, 512, 0), ("gemma3-global", 32768, None, 0), ("llama-left-pad-64", 65536, None, 64)]

CHILD = r'''
import json, resource, sys, time
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.masking_utils import causal_mask_function, sdpa_mask, sliding_window_causal_mask_function
from probe.capture.causal_mask import CompactCausalMask, compact_mask
kind, N, window, pad = sys.argv[1], int(sys.argv[2]), (None if sys.argv[3] == "None" else int(sys.argv[3])), int(sys.argv[4])

class Largest(TorchDispatchMode):
    largest = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                Largest.largest = max(Largest.largest, t.numel() * t.element_size())
        return out

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pad_mask = (torch.arange(N) >= pad)[None]
fn = causal_mask_function if window is None else sliding_window_causal_mask_function(window)
kw = dict(batch_size=1, q_length=N, kv_length=N, mask_function=fn, attention_mask=pad_mask, local_size=window,
          allow_is_causal_skip=False)
t0 = time.perf_counter()
res = {}
if kind == "import":
    pass
else:
    with Largest():
        m = (sdpa_mask if kind == "dense" else compact_mask)(**kw)
    res["compact"] = isinstance(m, CompactCausalMask)
res.update(seconds=time.perf_counter() - t0, peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           import_rss_kib=base, largest_tensor_bytes=Largest.largest)
print(json.dumps(res))
'''


def child(kind: str, N: int, window, pad: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(N), str(window), str(pad)], capture_output=True,
                         text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dense-64k", action="store_true", help="also build the 4 GiB dense 64K mask")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for name, N, window, pad in CASES:
        imp = child("import", N, window, pad)
        row = {"case": name, "N": N, "window": window, "left_pad": pad,
               "dense_mask_bytes_analytic": N * N, "import_peak_mib": imp["peak_rss_kib"] / 1024}
        kinds = ["compact"] + (["dense"] if N <= 32768 or args.dense_64k else [])
        for kind in kinds:
            r = child(kind, N, window, pad)
            row[f"{kind}_extra_peak_mib"] = (r["peak_rss_kib"] - imp["peak_rss_kib"]) / 1024
            row[f"{kind}_largest_tensor_mib"] = r["largest_tensor_bytes"] / 2 ** 20
            row[f"{kind}_s"] = r["seconds"]
            if kind == "compact":
                row["compact"] = r["compact"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": {"device": "cpu", "argv": sys.argv, "torch": __import__("torch").__version__,
                                "transformers": __import__("transformers").__version__}, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
