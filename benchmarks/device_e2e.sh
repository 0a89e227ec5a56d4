#!/bin/bash
# Issue #15 end-to-end device call (one H200): generate tokens/s through the seam, a one-decode-step profile
# per variant, and (optionally) the sink-capture table. Run from the repository root:
#   source scripts/device_env.sh && bash benchmarks/device_e2e.sh [PARTS] [BUDGET_S]
# PARTS (default profile,gen) and BUDGET_S (default 125) go to benchmarks/bench_e2e_table.py. The capture table
# (part table) wants .dev_e2e carried: wheels/ (nnsight, transformer-lens and what of theirs the device image
# lacks) and data/{smollm2_austen_8192,gemma3_austen_32768}.pt (made with `--make-ids`), and Gemma-3-270M's GGUF
# assembled by scripts/device_env.sh from its carried pieces; without them those rows record why they did not run.
# CPU dry run: OUT=/tmp/o E2E_ARGS="--device cpu --quick" bash benchmarks/device_e2e.sh
# $OUT gets: e2e_h200.json, profile_decode.json (part profile), e2e_log.txt, traces.tar.gz (chrome traces).
set -u
export PYTHONUNBUFFERED=1
PARTS=${1:-profile,gen}
BUDGET=${2:-125}
mkdir -p "$OUT"
EXTRA=()
SITE=${DEVICE_TMP:-/tmp}/e2e_site
if ls .dev_e2e/wheels/*.whl >/dev/null 2>&1 && [ ! -d "$SITE/transformer_lens" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .dev_e2e/wheels/*.whl 2>&1 | tail -2
fi
[ -d "$SITE" ] && export PYTHONPATH="$PYTHONPATH:$SITE"       # after device_env.sh's entries (all before site-packages)
[ -f .dev_e2e/data/smollm2_austen_8192.pt ] && EXTRA+=(--smollm-ids .dev_e2e/data/smollm2_austen_8192.pt)
[ -f .dev_e2e/data/gemma3_austen_32768.pt ] && EXTRA+=(--gemma-ids .dev_e2e/data/gemma3_austen_32768.pt)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
rm -rf /tmp/e2e_traces
timeout $((BUDGET + 25)) python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_h200.json" --parts "$PARTS" \
    --budget "$BUDGET" --repeats 4 --traces /tmp/e2e_traces "${EXTRA[@]}" ${E2E_ARGS:-} 2>&1 | tee "$OUT/e2e_log.txt" | cut -c1-600 | tail -40
echo "rc=${PIPESTATUS[0]}"
[ -d /tmp/e2e_traces ] && tar czf "$OUT/traces.tar.gz" -C /tmp e2e_traces && ls -la "$OUT"
