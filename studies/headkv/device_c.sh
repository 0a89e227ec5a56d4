# The third H200 call: decode speed and memory only, timed as studies/headkv/decode.py describes (a warm-up run at the
# full prompt length and step count per policy, then 3 timed runs between CUDA events, sync count, one profiled step).
# Run from the repository root after `source scripts/device_env.sh`, with Emma in .dev_headkv/texts/austen/ (carried):
#   bash studies/headkv/device_c.sh $OUT      -> decode.csv, profile.txt, run.json, log.txt  (studies/headkv/results_c/)
set -u
OUTDIR=$1
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pc/texts && cp -rn .dev_headkv/texts/* /tmp/pc/texts/ 2>/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m studies.headkv.run --device ${HEADKV_DEVICE:-cuda} --out "$OUTDIR" --parts decode \
  --max-seconds ${HEADKV_SECONDS:-150} --decode-share 1.0 --budgets 0.125,0.25,0.5 --windows 256 \
  --decode-prompt ${HEADKV_PROMPT:-8000} --decode-steps ${HEADKV_STEPS:-64} --decode-repeats 3 \
  --decode-budgets 0.125,0.25,0.5 --decode-diag-prompts "${HEADKV_DIAG-1000}" --decode-nocudnn 1 ${HEADKV_EXTRA:-} 2>&1 \
  | grep --line-buffered -v "Loading weights" | tee "$OUTDIR/log.txt"
