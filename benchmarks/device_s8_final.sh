#!/bin/bash
# Issue #15, session 8's closing measurement with today's defaults (wide VAR decode in column mode span), two H200 calls:
#   source scripts/device_env.sh && bash benchmarks/device_s8_final.sh static   # <= ~330 s
#   source scripts/device_env.sh && bash benchmarks/device_s8_final.sh gen      # <= ~230 s
# static: every GPU kernel test (tests/kernels), then part static of benchmarks/bench_e2e_table.py at batch 16 and 1
#         (static cache + compile / CUDA graphs): plain before and after ACT / VAR / HeadMask;
# gen:    part gen (eager generate) at batch 1 and 16: plain, the seam with no edit, HeadScale, HeadMask, ACT, VAR, with
#         the host thread's CPU time per step.
# $OUT gets: pytest_kernels.txt, e2e_static_s8f_h200.json (+ log) / e2e_gen_s8f_h200.json (+ log).
set -u
export PYTHONUNBUFFERED=1
PART=${1:-static}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
T=$(date +%s)
if [ "$PART" = static ]; then
  PYTEST_N=${PYTEST_N-6}
  python3 -c "import xdist" 2>/dev/null || PYTEST_N=""
  timeout 130 python3 -m pytest -q -p no:cacheprovider tests/kernels ${PYTEST_N:+-n $PYTEST_N} > "$OUT/pytest_kernels.txt" 2>&1
  echo "tests rc=$? $(( $(date +%s) - T )) s"; tail -2 "$OUT/pytest_kernels.txt"
  timeout 210 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_static_s8f_h200.json" --parts static --budget 190 \
      --repeats 4 --static-batches 16,1 --static-variants plain,act,var,headmask,plain > "$OUT/e2e_static_log.txt" 2>&1
  echo "static rc=$? $(( $(date +%s) - T )) s"
  F=e2e_static_s8f_h200.json
else
  timeout 215 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen_s8f_h200.json" --parts gen --budget 195 \
      --repeats 4 --batches 1,16 --variants plain,seam_noop,headscale,headmask,act,var > "$OUT/e2e_gen_log.txt" 2>&1
  echo "gen rc=$? $(( $(date +%s) - T )) s"
  F=e2e_gen_s8f_h200.json
fi
python3 - "$OUT/$F" <<'PY'
import json, os, sys
if os.path.exists(sys.argv[1]):
    for r in json.load(open(sys.argv[1]))["rows"]:
        if r.get("part") in ("static", "gen"):
            print(r.get("batch"), r["variant"], r.get("status"), r.get("x_slower"), r.get("step_ms_median"), r.get("step_ms_p10_p90"),
                  "cpu", r.get("step_cpu_ms_median"), "pre", r.get("preempted_per_step"), r.get("error", ""))
PY
