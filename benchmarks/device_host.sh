#!/bin/bash
# Issue #15, host path of eager ACT / VAR decode steps (kernels/attention/launch.py, fused._decode_step, the
# seam's kernel decode): one H200 call, <= 200 s (timeouts 70 + 30 + 100). Run from the repository root:
#   source scripts/device_env.sh && bash benchmarks/device_host.sh
# 1. the GPU kernel tests this change touches (decode cases, the cached / direct launch, the host path);
# 2. benchmarks/bench_launch.py: host µs per decode call, plan + JITFunction.run vs the cached launches;
# 3. part gen of benchmarks/bench_e2e_table.py for plain, act, var at batch 1 and 16 (no profiler in the process).
# CPU dry run (no GPU: step 2 is skipped, steps 1 and 3 run on CPU / the interpreter):
#   OUT=/tmp/o E2E_ARGS="--device cpu --quick" bash benchmarks/device_host.sh
# $OUT gets: tests_log.txt, launch_h200.json, e2e_gen_host_h200.json, e2e_log.txt.
set -u
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
python3 -c "import triton, torch, transformers; print('triton', triton.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
T=$(date +%s)
timeout 70 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_launch.py tests/kernels/test_host_path.py \
    tests/kernels/test_attention_triton.py -k "launch or host or decode_parity or decode_act_parity or decode_edits_run_split_kv or var_parity_gpu or decode_col_mode_gpu or dispatcher" \
    2>&1 | tee "$OUT/tests_log.txt" | tail -15
echo "tests rc=${PIPESTATUS[0]} $(( $(date +%s) - T )) s"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  timeout 30 python3 -m benchmarks.bench_launch --out "$OUT/launch_h200.json" 2>&1 | tail -8
  echo "bench_launch rc=${PIPESTATUS[0]} $(( $(date +%s) - T )) s"
fi
timeout 100 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen_host_h200.json" --parts gen --variants plain,act,var \
    --budget 90 --repeats 4 ${E2E_ARGS:-} 2>&1 | tee "$OUT/e2e_log.txt" | cut -c1-400 | tail -12
echo "gen rc=${PIPESTATUS[0]} $(( $(date +%s) - T )) s"
