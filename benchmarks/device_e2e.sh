#!/bin/bash
# Issue #15 end-to-end device call (one H200, <= 235 s): generate tokens/s through the seam and the
# sink-capture table. Run from the carried tree's root after `source scripts/device_env.sh`:
#   cd .dev_e2e && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/device_e2e.sh
# Carries: wheels/ (nnsight 0.8.1 and its missing dependencies, 3.5 MB), data/smollm2_austen_8192.pt
# (8192 SmolLM2 token ids of Pride and Prejudice, made with `--make-ids`), old/ (main's probe, interventions and
# kernels before this change: part gen at batch 1 again on that code, with the budget left).
set -u
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if ls wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/e2e_site wheels/*.whl 2>&1 | tail -2
  export PYTHONPATH="$PYTHONPATH:/tmp/e2e_site"       # the device's own packages first
fi
nvidia-smi --query-gpu=name,clocks.sm,memory.used --format=csv,noheader
timeout 226 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_h200.json" --budget 205 \
    --smollm-ids data/smollm2_austen_8192.pt $( [ -d old ] && echo --old old ) 2>&1 | tee "$OUT/e2e_log.txt" | grep -v "^{" | tail -40
echo "rc=${PIPESTATUS[0]}"
