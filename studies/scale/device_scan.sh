#!/bin/bash
# Sharded scan (one GPU vs torchrun over two, then a resumed rerun) and device_map parity on nvidia-h200-x2.
#   source scripts/device_env.sh && bash studies/scale/device_scan.sh /tmp/res
R=${1:-/tmp/res}; mkdir -p "$R"; TIMEFORMAT='wall_s %R'
ARGS="--model smollm2 --n-prompts 128 --prompt-tokens 1024 --overwrite --opt sinks.batch_size=8"
python3 -c "import probe; probe.load('smollm2', device='cpu')" > "$R/warm.log" 2>&1
{ time CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m probe.cli scan $ARGS --out /tmp/scan_one; } > "$R/scan_one.log" 2>&1
for f in scan_two scan_two_rerun; do
  { time timeout 150 python3 -m torch.distributed.run --nproc_per_node 2 -m probe scan --shard-by-rank $ARGS --out /tmp/scan_two; } > "$R/$f.log" 2>&1
done
python3 - > "$R/scan_compare.json" 2>&1 <<'PY'
import json, pandas as pd
out = {}
for t in ("heads", "tokens", "massive"):
    a, b = pd.read_parquet(f"/tmp/scan_one/{t}.parquet"), pd.read_parquet(f"/tmp/scan_two/{t}.parquet")
    n = a.select_dtypes("number").columns
    out[t] = {"rows": [len(a), len(b)], "max_abs_diff": float((a[n] - b[n]).abs().max().max()) if len(a) == len(b) else None}
m1, m2 = (json.load(open(f"/tmp/scan_{x}/manifest.json")) for x in ("one", "two"))
out["timings_one"], out["timings_two"] = m1.get("timings"), m2.get("timings")
print(json.dumps(out, indent=1))
PY
timeout 200 python3 -m studies.scale.device_map_parity --out "$R/device_map.json" > "$R/device_map.log" 2>&1
grep -h "batch forwards\|wall_s" "$R"/scan_*.log; cat "$R/scan_compare.json" "$R/device_map.json"
