#!/bin/bash
# Issue #15, session 8: VAR's span column mode and where the eager batch-1 step goes, in two H200 calls:
#   source scripts/device_env.sh && bash benchmarks/device_s8.sh kernels     # (1)-(3), <= ~420 s
#   source scripts/device_env.sh && bash benchmarks/device_s8.sh gen         # (4), <= ~140 s
# 1. the GPU decode-kernel and graph-op tests (tests/kernels -k "decode or graph"), their tail recorded with (2);
# 2. benchmarks/bench_decode_edits.py over VAR's span [1, 1024): the column modes bits / split / block / span
#    (span: each run of span blocks without a sink as one pipelined loop; never timed before);
# 3. part static of benchmarks/bench_e2e_table.py at batch 16 (and 1): plain before and after VAR in the default
#    column mode (split) and in span mode, static cache + compile / CUDA graphs;
# 4. part gen at batch 1 (eager): plain / seam with no edit / ACT / VAR, per step wall time next to the host
#    thread's CPU time and its involuntary context switches (is the gap host work, or the host waiting?).
# $OUT gets: pytest_kernels.txt, decode_edits_span_s8_h200.json (+ log), e2e_static_s8_h200.json (+ log),
# e2e_gen_s8_h200.json (+ log).
set -u
export PYTHONUNBUFFERED=1
PART=${1:-kernels}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
T=$(date +%s)
if [ "$PART" = kernels ]; then
PYTEST_N=${PYTEST_N-6}
python3 -c "import xdist" 2>/dev/null || PYTEST_N=""       # pytest-xdist absent: one process
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/kernels -k "decode or graph" ${PYTEST_N:+-n $PYTEST_N} \
    > "$OUT/pytest_kernels.txt" 2>&1
echo "tests rc=$? $(( $(date +%s) - T )) s"; tail -2 "$OUT/pytest_kernels.txt"
timeout 110 python3 -m benchmarks.bench_decode_edits --var-span 1024 --shapes llama --repeats 5 \
    --variants sdpa var var_bits var_split var_block_s4 var_span --pytest-log "$OUT/pytest_kernels.txt" \
    --out "$OUT/decode_edits_span_s8_h200.json" > "$OUT/decode_edits_log.txt" 2>&1
echo "decode_edits rc=$? $(( $(date +%s) - T )) s"
grep -v '^{' "$OUT/decode_edits_log.txt" | tail -14
timeout 200 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_static_s8_h200.json" --parts static --budget 175 \
    --repeats 4 --static-batches ${STATIC_B:-16,1} --static-variants plain,var,var@span,plain \
    > "$OUT/e2e_static_log.txt" 2>&1
echo "static rc=$? $(( $(date +%s) - T )) s"
else
timeout 130 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen_s8_h200.json" --parts gen --budget 110 \
    --repeats 5 --batches 1 --variants plain,seam_noop,act,var > "$OUT/e2e_gen_log.txt" 2>&1
echo "gen rc=$? $(( $(date +%s) - T )) s"
fi
python3 - "$OUT" <<'PY'
import json, os, sys
for f in ("e2e_static_s8_h200.json", "e2e_gen_s8_h200.json"):
    p = os.path.join(sys.argv[1], f)
    if os.path.exists(p):
        for r in json.load(open(p))["rows"]:
            if r.get("part") in ("static", "gen"):
                print(f[:10], r.get("batch"), r["variant"], r.get("status"), r.get("step_ms_median"), r.get("step_ms_p10_p90"),
                      "cpu", r.get("step_cpu_ms_median"), r.get("step_cpu_ms_p10_p90"), "pre", r.get("preempted_per_step"))
PY
