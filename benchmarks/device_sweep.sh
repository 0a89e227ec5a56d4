#!/usr/bin/env bash
# Session 4 (issue #15), one device call (results under $1, at most 5 files): the GPU kernel tests and,
# at the same time, 8 processes that compile every sweep candidate into Triton's cache; then the
# timed sweep (benchmarks/bench_sweep.py) with its own time budget. Whole call <= ~250 s.
R=${1:-/tmp/res}; mkdir -p "$R"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader; \
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$R/gpu.txt" 2>&1
( timeout ${TEST_S:-120} python3 -m pytest tests/kernels -q -p no:cacheprovider -n 6 > "$R/pytest.txt" 2>&1
  echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/pytest.txt" ) &
mkdir -p /tmp/pre
for i in 0 1 2 3 4 5 6 7 8 9; do
  timeout ${PRE_S:-120} python3 -m benchmarks.bench_sweep --precompile $i/10 > /tmp/pre/pre_$i.log 2>&1 &
done
wait
echo "tests + precompile s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
LEFT=$(( ${TOTAL_S:-250} - ($(date +%s) - T0) - 8 ))
python3 -m benchmarks.bench_sweep --budget-s $LEFT --pytest-log "$R/pytest.txt" --out "$R/sweep_h200.json" > "$R/sweep.log" 2>&1
echo "sweep rc=$? total s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
tar czf "$R/precompile_logs.tgz" -C /tmp pre
