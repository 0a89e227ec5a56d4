#!/usr/bin/env bash
# One device call for the kernel work (repository root on the GPU machine; results under $1):
# GPU kernel tests, decode-with-edits per layer, the 64K kernel table, the per-variant tile sweep.
# Each step writes its own file, so a step that runs out of time leaves the others' results.
R=${1:-/tmp/res}; mkdir -p "$R"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader > "$R/gpu.txt" 2>&1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)" >> "$R/gpu.txt" 2>&1
T0=$(date +%s)
python3 -m pytest tests/kernels -q -p no:cacheprovider > "$R/pytest.txt" 2>&1; echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/pytest.txt"
T0=$(date +%s)
python3 -m benchmarks.bench_decode_edits --out "$R/decode_edits_h200.json" > "$R/decode.log" 2>&1; echo "s=$(( $(date +%s) - T0 ))" >> "$R/decode.log"
T0=$(date +%s)
python3 -m benchmarks.bench_attention --n 65536 --methods ours ours_stats ours_edit --out "$R/attention_64k_h200.json" > "$R/attention.log" 2>&1; echo "s=$(( $(date +%s) - T0 ))" >> "$R/attention.log"
T0=$(date +%s)
timeout ${TUNE_S:-150} python3 -m benchmarks.bench_attention --tune --n 16384 --repeats 1 --out "$R/tiles_h200.json" > "$R/tune.log" 2>&1; echo "s=$(( $(date +%s) - T0 ))" >> "$R/tune.log"
