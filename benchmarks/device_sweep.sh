#!/usr/bin/env bash
# Issue #15, one device call (results under $1): the GPU kernel tests and, at the same time, NPRE
# processes that compile every kernel of the timed sweep into Triton's cache (one TRITON_CACHE_DIR for
# all); then the timed sweep (benchmarks/bench_sweep.py), which warms every kernel in-process before
# timing, with the time left. Every process logs its compile requests (compiles.jsonl). Whole call
# <= TOTAL_S (+ ~10 s). The timed part also logs the SM clock, power and temperature (smi.csv).
# CPU dry run of this same script: SWEEP_EXTRA="--dry" NPRE=2 PYTEST_K="received_switches and not gpu" TOTAL_S=120
R=${1:-/tmp/res}; mkdir -p "$R"
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton_cache_sweep}
mkdir -p "$TRITON_CACHE_DIR"
T0=$(date +%s)
NPRE=${NPRE:-8}
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader; \
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$R/gpu.txt" 2>&1
PYTEST_N=${PYTEST_N-6}
python3 -c "import xdist" 2>/dev/null || PYTEST_N=""       # pytest-xdist absent: one process
( timeout ${TEST_S:-100} python3 -m pytest tests/kernels -q -p no:cacheprovider ${PYTEST_N:+-n $PYTEST_N} ${PYTEST_K:+-k "$PYTEST_K"} > "$R/pytest.txt" 2>&1
  echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/pytest.txt" ) &
PRE=/tmp/sweep_pre; rm -rf $PRE; mkdir -p $PRE
for i in $(seq 0 $(( NPRE - 1 ))); do
  timeout ${PRE_S:-90} python3 -m benchmarks.bench_sweep $SWEEP_EXTRA --precompile $i/$NPRE \
      --log-compiles $PRE/compiles.jsonl > $PRE/pre_$i.log 2>&1 &
done
wait
echo "tests + precompile s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
LEFT=$(( ${TOTAL_S:-165} - ($(date +%s) - T0) - 10 ))
# SM clock, power and temperature every 200 ms through the timed part (SMI=0: off)
if [ "${SMI:-1}" = 1 ]; then
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
      --format=csv,noheader -lms 200 > "$R/smi.csv" 2>&1 & SMI_PID=$!
fi
python3 -m benchmarks.bench_sweep $SWEEP_EXTRA --budget-s $LEFT --reserve-s ${RESERVE_S:-30} --grace-s ${GRACE_S:-15} \
    --log-compiles $PRE/compiles.jsonl --pytest-log "$R/pytest.txt" --out "$R/sweep_h200.json" > "$R/sweep.log" 2>&1
echo "sweep rc=$? total s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
[ -n "${SMI_PID:-}" ] && kill "$SMI_PID" 2>/dev/null
ls "$TRITON_CACHE_DIR" | wc -l >> "$R/gpu.txt"
tar czf "$R/precompile_logs.tgz" -C /tmp sweep_pre
