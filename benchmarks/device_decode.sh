#!/usr/bin/env bash
# Session 5 (issue #15, decode with ACT / VAR), one device call (results under $1): the decode GPU kernel tests
# of tests/kernels, then benchmarks/bench_decode_edits.py (sdpa / ours / act / var / uniform and the other column
# modes, CUDA-graph replay) with the test summary in its meta. CPU dry run of the plumbing: DRY=1 bash benchmarks/device_decode.sh /tmp/res
R=${1:-/tmp/res}; mkdir -p "$R"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader; \
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$R/gpu.txt" 2>&1
N=${PYTEST_N-4}
python3 -c "import xdist" 2>/dev/null || N=""               # pytest-xdist absent: one process
timeout ${TEST_S:-35} python3 -m pytest tests/kernels/test_attention_triton.py -q -p no:cacheprovider ${N:+-n $N} \
    -k "${PYTEST_K:-decode or split_window or col_mode}" > "$R/pytest.txt" 2>&1
echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/pytest.txt"
EXTRA=""; [ -n "${DRY:-}" ] && EXTRA="--dry --repeats 1"    # dry: the interpreter, tiny sizes, one timed call
V="sdpa ours act var uniform act_bits var_bits act_split_gather var_split_nocap act_chunk_s4 var_block_s4"
# the whole call stays under TOTAL_S: no new row after BUDGET, and a hard stop (rows are saved as they come)
EL=$(( $(date +%s) - T0 )); TOTAL=${TOTAL_S:-88}
timeout $(( TOTAL - EL - 2 )) python3 -m benchmarks.bench_decode_edits $EXTRA --rep ${REP:-20} --variants $V \
    --budget-s $(( TOTAL - EL - 14 )) --pytest-log "$R/pytest.txt" --out "$R/decode_edits_h200_s5.json" > "$R/bench.log" 2>&1
echo "bench rc=$? total s=$(( $(date +%s) - T0 ))" >> "$R/gpu.txt"
tail -3 "$R/pytest.txt"; cat "$R/gpu.txt"
