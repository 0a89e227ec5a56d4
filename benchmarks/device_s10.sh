#!/bin/bash
# Issue #15, session 10, on the H200:
#   source scripts/device_env.sh && bash benchmarks/device_s10.sh tests   # <= ~260 s
#   source scripts/device_env.sh && bash benchmarks/device_s10.sh attr    # <= ~120 s
# tests: every GPU kernel test (tests/kernels, 6 processes) and the seam's GPU tests, then part attr;
# attr:  benchmarks/step_attribution.py at batch 1 (ATTR_ROUNDS rounds, default 12): where an eager decode step's host
#        time goes per variant (attention calls with / without a hook, the rest of the forward, outside it).
# $OUT gets: pytest_kernels.txt, pytest_seam.txt, step_attribution_<ATTR_TAG>_h200.json (+ logs); ATTR_BATCHES (1),
# ATTR_ROUNDS, ATTR_VARIANTS, ATTR_TIMEOUT (s), ATTR_COMMIT (recorded in the json) set part attr.
set -u
export PYTHONUNBUFFERED=1
PART=${1:-tests}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
T=$(date +%s)
if [ "$PART" = tests ]; then
  PYTEST_N=${PYTEST_N-6}
  python3 -c "import xdist" 2>/dev/null || PYTEST_N=""
  timeout 140 python3 -m pytest -q -p no:cacheprovider tests/kernels ${PYTEST_N:+-n $PYTEST_N} > "$OUT/pytest_kernels.txt" 2>&1
  echo "tests rc=$? $(( $(date +%s) - T )) s"; tail -2 "$OUT/pytest_kernels.txt"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_seam_fast_path.py > "$OUT/pytest_seam.txt" 2>&1
  echo "seam tests rc=$? $(( $(date +%s) - T )) s"; tail -1 "$OUT/pytest_seam.txt"
fi
timeout ${ATTR_TIMEOUT:-110} python3 -m benchmarks.step_attribution --out "$OUT/step_attribution_${ATTR_TAG:-s10}_h200.json" \
    --rounds "${ATTR_ROUNDS:-12}" --batches "${ATTR_BATCHES:-1}" ${ATTR_VARIANTS:+--variants $ATTR_VARIANTS} \
    ${ATTR_COMMIT:+--commit $ATTR_COMMIT} > "$OUT/attr_log.txt" 2>&1
echo "attr rc=$? $(( $(date +%s) - T )) s"; grep -v Warn "$OUT/attr_log.txt" | cut -c1-400 | tail -14
