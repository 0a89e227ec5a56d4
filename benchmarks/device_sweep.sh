#!/usr/bin/env bash
# Session 4 (issue #15), one device call (results under $1, 5 files): the GPU kernel tests and, at
# the same time, NPRE processes that compile every sweep candidate into Triton's cache; then the
# timed sweep (benchmarks/bench_sweep.py) with the time left. Whole call <= TOTAL_S (+ ~10 s).
# CPU dry run of this same script: SWEEP_EXTRA="--dry --shapes smollm" NPRE=2 PYTEST_K=dedup TOTAL_S=60
R=${1:-/tmp/res}; mkdir -p "$R"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
NPRE=${NPRE:-10}
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader; \
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$R/gpu.txt" 2>&1
PYTEST_N=${PYTEST_N-6}
python3 -c "import xdist" 2>/dev/null || PYTEST_N=""       # pytest-xdist absent: one process
( timeout ${TEST_S:-110} python3 -m pytest tests/kernels -q -p no:cacheprovider ${PYTEST_N:+-n $PYTEST_N} ${PYTEST_K:+-k $PYTEST_K} > "$R/pytest.txt" 2>&1
  echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/pytest.txt" ) &
PRE=/tmp/sweep_pre; rm -rf $PRE; mkdir -p $PRE
for i in $(seq 0 $(( NPRE - 1 ))); do
  timeout ${PRE_S:-110} python3 -m benchmarks.bench_sweep $SWEEP_EXTRA --precompile $i/$NPRE > $PRE/pre_$i.log 2>&1 &
done
wait
echo "tests + precompile s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
LEFT=$(( ${TOTAL_S:-240} - ($(date +%s) - T0) - 8 ))
python3 -m benchmarks.bench_sweep $SWEEP_EXTRA --budget-s $LEFT --pytest-log "$R/pytest.txt" --out "$R/sweep_h200.json" > "$R/sweep.log" 2>&1
echo "sweep rc=$? total s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
tar czf "$R/precompile_logs.tgz" -C /tmp sweep_pre
