# The second H200 call (same settings as device.sh): NIAH for every policy with 16 prompts of one length per
# forward (right-padded; tests/test_headkv.py checks this equals one prompt at a time), so the random-head draws fit
# in the time; then decode speed with a warm-up that compiles every Triton specialisation before timing.
# Parity and perplexity ran in the first call (device.sh -> results/).   bash studies/headkv/device_b.sh $OUT
set -u
OUTDIR=$1
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pc/texts && cp -rn texts_cache/* /tmp/pc/texts/ 2>/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m studies.headkv.run --device ${HEADKV_DEVICE:-cuda} --out "$OUTDIR" --parts niah,decode --niah-batch 16 \
  --max-seconds ${HEADKV_SECONDS:-170} --niah-share 0.7 --decode-share 0.95 \
  --budgets 0.125,0.25,0.5 --windows 256,1024 --draws 5 --lengths 1024,2048,4096,8000 \
  --depths 10,30,70,90 --needles 0,1,2,3 --decode-prompt 8000 --decode-steps 64 \
  --decode-budgets 0.125,0.25,0.5 ${HEADKV_EXTRA:-} 2>&1 | grep --line-buffered -v "Loading weights" | tee "$OUTDIR/log.txt"
