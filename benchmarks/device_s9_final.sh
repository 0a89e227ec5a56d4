#!/bin/bash
# Issue #15, session 9's closing measurement (one launch per eager decode step, decode_attention, HeadMask without
# host syncs), two H200 calls back to back:
#   source scripts/device_env.sh && bash benchmarks/device_s9_final.sh static   # <= ~330 s
#   source scripts/device_env.sh && bash benchmarks/device_s9_final.sh gen      # <= ~260 s
# static: every GPU kernel test (tests/kernels) and the seam's GPU tests (tests/test_seam_fast_path.py), then part
#         static of benchmarks/bench_e2e_table.py at batch 16 and 1 (static cache + compile / CUDA graphs);
# gen:    part gen (eager generate): batch 1 with 12 interleaved rounds (per-round paired ratios against plain), then
#         batch 16 with 4, each over plain, the seam with no edit, HeadScale, HeadMask, ACT, VAR.
# $OUT gets: pytest_kernels.txt, pytest_seam.txt, e2e_static_s9f_h200.json / e2e_gen_s9f_b1_h200.json,
# e2e_gen_s9f_b16_h200.json (+ logs).
set -u
export PYTHONUNBUFFERED=1
PART=${1:-static}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
T=$(date +%s)
show() {
python3 - "$1" <<'PY'
import json, os, sys
if os.path.exists(sys.argv[1]):
    for r in json.load(open(sys.argv[1]))["rows"]:
        if r.get("part") in ("static", "gen"):
            print(r.get("batch"), r["variant"], r.get("status"), r.get("x_slower"), "paired", r.get("x_slower_paired_median"),
                  "step", r.get("step_ms_median"), r.get("step_ms_p10_p90"), r.get("error", ""))
PY
}
if [ "$PART" = static ]; then
  PYTEST_N=${PYTEST_N-6}
  python3 -c "import xdist" 2>/dev/null || PYTEST_N=""
  timeout 130 python3 -m pytest -q -p no:cacheprovider tests/kernels ${PYTEST_N:+-n $PYTEST_N} > "$OUT/pytest_kernels.txt" 2>&1
  echo "tests rc=$? $(( $(date +%s) - T )) s"; tail -2 "$OUT/pytest_kernels.txt"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_seam_fast_path.py > "$OUT/pytest_seam.txt" 2>&1
  echo "seam tests rc=$? $(( $(date +%s) - T )) s"; tail -1 "$OUT/pytest_seam.txt"
  timeout 190 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_static_s9f_h200.json" --parts static --budget 170 \
      --repeats 4 --static-batches 16,1 --static-variants plain,act,var,headmask,plain > "$OUT/e2e_static_log.txt" 2>&1
  echo "static rc=$? $(( $(date +%s) - T )) s"
  show "$OUT/e2e_static_s9f_h200.json"
else
  timeout 150 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen_s9f_b1_h200.json" --parts gen --budget 135 \
      --repeats 10 --batches 1 --variants plain,seam_noop,headscale,headmask,act,var > "$OUT/e2e_gen_b1_log.txt" 2>&1
  echo "gen b1 rc=$? $(( $(date +%s) - T )) s"
  show "$OUT/e2e_gen_s9f_b1_h200.json"
  timeout 100 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen_s9f_b16_h200.json" --parts gen --budget 90 \
      --repeats 4 --batches 16 --variants plain,seam_noop,headscale,headmask,act,var > "$OUT/e2e_gen_b16_log.txt" 2>&1
  echo "gen b16 rc=$? $(( $(date +%s) - T )) s"
  show "$OUT/e2e_gen_s9f_b16_h200.json"
fi
