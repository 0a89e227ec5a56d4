#!/bin/bash
# Issue #15, graph-mode decode on the Triton kernels (probe::decode_attention), one H200 call (<= ~480 s):
#   source scripts/device_env.sh && bash benchmarks/device_graph_final.sh
# 1. every GPU kernel test (tests/kernels: the decode kernels' n_keys, the graph op, the parity grid);
# 2. part static of benchmarks/bench_e2e_table.py: generate with a static cache + compile / CUDA graphs, batch 1
#    and 16, plain before and after the edited variants (drift), VAR also with the split column mode;
# 3. benchmarks/bench_graph_decode.py: one layer's graph-mode step, the op vs its tensor-op forms, batch 1 and 16;
# 4. benchmarks/bench_decode_edits.py with VAR's span [1, 1024) (bench_e2e_table's VAR): the split kernel's
#    column modes for a long span (session 5 picked them on [1, 33)).
# $OUT gets: pytest_kernels.txt, decode_edits_span1024_h200.json (+ log), graph_decode_h200.json (+ log),
# e2e_h200.json, e2e_log.txt.
set -u
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
T=$(date +%s)
PYTEST_N=${PYTEST_N-6}
python3 -c "import xdist" 2>/dev/null || PYTEST_N=""       # pytest-xdist absent: one process
timeout 110 python3 -m pytest -q -p no:cacheprovider tests/kernels ${PYTEST_N:+-n $PYTEST_N} > "$OUT/pytest_kernels.txt" 2>&1
echo "tests rc=$? $(( $(date +%s) - T )) s"; tail -2 "$OUT/pytest_kernels.txt"
E2E_ARGS="--static-batches 1,16 --static-variants plain,act,var,var@split,plain" \
    bash benchmarks/device_e2e.sh static ${STATIC_S:-200} > /dev/null 2>&1
echo "static $(( $(date +%s) - T )) s"
python3 - "$OUT/e2e_h200.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["rows"]:
    if r.get("part") == "static":
        print(r["batch"], r["variant"], r.get("status"), r.get("step_ms_median"), r.get("wall_s_runs"))
PY
timeout $((${GRAPH_S:-50} + 40)) python3 -m benchmarks.bench_graph_decode --out "$OUT/graph_decode_h200.json" --budget ${GRAPH_S:-50} \
    --variants plain act_op var_op act var > "$OUT/graph_decode_log.txt" 2>&1
echo "graph_decode rc=$? $(( $(date +%s) - T )) s"
grep -v '^{' "$OUT/graph_decode_log.txt" | grep -v USDT | grep "B=" | tail -12
timeout 90 python3 -m benchmarks.bench_decode_edits --var-span 1024 --shapes llama --repeats 3 \
    --variants sdpa ours act var var_bits var_split var_block_s4 --pytest-log "$OUT/pytest_kernels.txt" \
    --out "$OUT/decode_edits_span1024_h200.json" > "$OUT/decode_edits_log.txt" 2>&1
echo "decode_edits rc=$? $(( $(date +%s) - T )) s"
