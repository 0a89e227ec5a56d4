#!/bin/bash
# Issue #15, session 9: the decode combine inside the split kernel (one launch per eager decode step) and the seam's
# decode entry that checks a repeating request once (kernels.attention.decode_attention), in two H200 calls:
#   source scripts/device_env.sh && bash benchmarks/device_s9.sh host   # <= ~330 s
#   source scripts/device_env.sh && bash benchmarks/device_s9.sh gen    # <= ~230 s
# host: the GPU kernel tests (tests/kernels: decode, graph, launch and host-path ones), benchmarks/bench_launch.py
#       (host µs of one decode call) and benchmarks/profile_seam_host.py --stages (inclusive host µs per stage of a
#       hooked layer's decode call, HeadScale / ACT / VAR);
# gen:  part gen of benchmarks/bench_e2e_table.py (eager generate) at batch 1 and 16: plain, the seam with no edit,
#       HeadScale, HeadMask, ACT, VAR -- tokens/s, decode step wall and host CPU time, prefill ms.
# $OUT gets: pytest_kernels.txt, decode_launch_s9_h200.json, seam_stages_s9_h200.json (+ logs) / e2e_gen_s9_h200.json.
set -u
export PYTHONUNBUFFERED=1
PART=${1:-host}
TAG=${TAG:-s9}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader 2>/dev/null
T=$(date +%s)
show() {     # the gen rows of a result file, one line each
python3 - "$1" <<'PY'
import json, os, sys
if os.path.exists(sys.argv[1]):
    for r in json.load(open(sys.argv[1]))["rows"]:
        if r.get("part") == "gen":
            print(r.get("batch"), r["variant"], r.get("x_slower"), "paired", r.get("x_slower_paired_median"), "step",
                  r.get("step_ms_median"), r.get("step_ms_p10_p90"), "prefill", r.get("prefill_ms_median"), r.get("error", ""))
PY
}
if [ "$PART" = host ]; then
  PYTEST_N=${PYTEST_N-6}
  python3 -c "import xdist" 2>/dev/null || PYTEST_N=""
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels -k "decode or graph or launch or host_path" \
      ${PYTEST_N:+-n $PYTEST_N} > "$OUT/pytest_kernels.txt" 2>&1
  echo "tests rc=$? $(( $(date +%s) - T )) s"; tail -2 "$OUT/pytest_kernels.txt"
  timeout 90 python3 -m benchmarks.bench_launch --out "$OUT/decode_launch_${TAG}_h200.json" > "$OUT/launch_log.txt" 2>&1
  echo "launch rc=$? $(( $(date +%s) - T )) s"; cut -c1-150 "$OUT/launch_log.txt" | tail -6
  timeout 90 python3 -m benchmarks.profile_seam_host --stages --variants headscale,act,var \
      --out "$OUT/seam_stages_${TAG}_h200.json" > "$OUT/stages_log.txt" 2>&1
  echo "stages rc=$? $(( $(date +%s) - T )) s"; grep -v USDT "$OUT/stages_log.txt" | cut -c1-900 | tail -3
elif [ "$PART" = gen ]; then
  timeout 215 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen_${TAG}_h200.json" --parts gen --budget 195 \
      --repeats 4 --batches 1,16 --variants plain,seam_noop,headscale,headmask,act,var > "$OUT/e2e_gen_log.txt" 2>&1
  echo "gen rc=$? $(( $(date +%s) - T )) s"
  show "$OUT/e2e_gen_${TAG}_h200.json"
fi
# part "gen1": profile_prefill (plain / ACT / VAR) and part gen at batch 1 only with 8 repeats (paired ratios). (Its
# first run, the call behind e2e_gen1_s9_h200.json, also ran part gen first: the branch above was a plain "else" then.)
if [ "$PART" = gen1 ]; then
  timeout 100 python3 -m benchmarks.profile_prefill --variants plain,act,var --out "$OUT/prefill_profile_${TAG}_h200.json" \
      > "$OUT/prefill_log.txt" 2>&1
  echo "prefill rc=$? $(( $(date +%s) - T )) s"; grep '"variant"' "$OUT/prefill_log.txt"
  timeout 200 python3 -m benchmarks.bench_e2e_table --out "$OUT/e2e_gen1_${TAG}_h200.json" --parts gen --budget 180 \
      --repeats 8 --batches 1 --variants plain,seam_noop,headscale,headmask,act,var > "$OUT/e2e_gen_log.txt" 2>&1
  echo "gen rc=$? $(( $(date +%s) - T )) s"
  show "$OUT/e2e_gen1_${TAG}_h200.json"
fi
