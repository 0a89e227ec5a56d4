#!/bin/bash
# Issue #15, graph mode (static cache + generate's compile / CUDA graphs): the seam's ACT / VAR decode steps on one H200.
#   source scripts/device_env.sh && bash benchmarks/device_graph.sh [E2E_BUDGET_S]
# 1. the graph-mode tests: the decode op (tests/kernels/test_graph_op.py), the launch tests, the CUDA cases of
#    tests/test_seam_fast_path.py (both attention kernels of the graph-mode calls vs fp64);
# 2. benchmarks/bench_graph_decode.py: one layer's decode step per variant, CUDA-graph replay (budget 100 s);
# 3. with E2E_BUDGET_S > 0 (default 0 = skip): benchmarks/device_e2e.sh static E2E_BUDGET_S (generate, every variant;
#    E2E_ARGS reaches bench_e2e_table, e.g. "--static-batches 1,16 --static-variants plain,act,var").
# CPU dry run: OUT=/tmp/o GRAPH_ARGS=--dry bash benchmarks/device_graph.sh
# $OUT gets: pytest_graph.txt, graph_decode_h200.json, graph_decode_log.txt (+ device_e2e.sh's files with step 3).
set -u
export PYTHONUNBUFFERED=1
E2E=${1:-0}
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_graph_op.py tests/kernels/test_launch.py \
    tests/test_seam_fast_path.py -k "graph or launch or cuda_kernels or act_decode or var_decode or span_plan or heavy" \
    > "$OUT/pytest_graph.txt" 2>&1
tail -3 "$OUT/pytest_graph.txt"
timeout $((${GRAPH_S:-100} + 40)) python3 -m benchmarks.bench_graph_decode --out "$OUT/graph_decode_h200.json" \
    --budget ${GRAPH_S:-100} ${GRAPH_ARGS:-} \
    > "$OUT/graph_decode_log.txt" 2>&1
echo "bench rc=$?"
grep -v '^{' "$OUT/graph_decode_log.txt" | grep -v USDT | tail -20
if [ "$E2E" -gt 0 ]; then
  bash benchmarks/device_e2e.sh static "$E2E"
fi
