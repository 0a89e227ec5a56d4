#!/usr/bin/env bash
# Second device call of session 3 (results under $1): decode with edits after the column-register
# change, seam memory at 32K / 64K, the whole kernel test suite (8 workers).
R=${1:-/tmp/res}; mkdir -p "$R"
# (call 2 carried ../.whl: its huggingface_hub needs httpx2, absent there -- do not carry it; the image's transformers works)
[ -d ../.whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ../.whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" > "$R/gpu.txt" 2>&1
T0=$(date +%s)
python3 -m benchmarks.bench_decode_edits --shapes llama --out "$R/decode_edits_h200.json" > "$R/decode.log" 2>&1; echo "s=$(( $(date +%s) - T0 ))" >> "$R/decode.log"
T0=$(date +%s)
timeout 60 python3 -m benchmarks.bench_seam_memory --out "$R/seam_memory_h200.json" > "$R/memory.log" 2>&1; echo "rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/memory.log"
T0=$(date +%s)
timeout ${TEST_S:-80} python3 -m pytest tests/kernels -q -p no:cacheprovider -n 8 > "$R/pytest.txt" 2>&1; echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/pytest.txt"
T0=$(date +%s)
timeout ${ATT_S:-45} python3 -m benchmarks.bench_attention --shapes smollm --n 65536 --methods ours ours_stats ours_edit --out "$R/attention_64k_smollm_h200.json" > "$R/attention.log" 2>&1; echo "rc=$? s=$(( $(date +%s) - T0 ))" >> "$R/attention.log"
