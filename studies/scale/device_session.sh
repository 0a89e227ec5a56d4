#!/bin/bash
# Everything session 2 measured on the lent nvidia-h200-x2 (2 H200s), in one background job:
#   source scripts/device_env.sh && setsid nohup bash studies/scale/device_session.sh /tmp/res &
# Writes JSON + logs under $1 and touches $1/DONE at the end. Each step is bounded by `timeout`.
R=${1:-/tmp/res}; mkdir -p "$R"
BOOKS=emma,persuasion,prideprejudice,mansfieldpark
TIMEFORMAT='wall_s %R'
say() { echo "[$(date +%T)] $*" >> "$R/session.log"; }

say "1-2. sharded scan (one GPU vs torchrun over two, resumed rerun) and device_map parity"
bash studies/scale/device_scan.sh "$R" > "$R/scan.log" 2>&1

say "3. StreamingLLM past the context: 4 cache configs on GPU 1 (background), dense on GPU 0"
for cfg in 4+1020 0+1024 4+252 0+256; do
  CUDA_VISIBLE_DEVICES=1 timeout 1500 python3 -m studies.streaming.perplexity --device cuda --tokens 16384 \
    --books $BOOKS --configs $cfg --save-every 1024 --out "$R/stream_$cfg.json" > "$R/stream_$cfg.log" 2>&1 &
done
CUDA_VISIBLE_DEVICES=0 timeout 300 python3 -m studies.streaming.perplexity --device cuda --tokens 16384 \
  --books $BOOKS --configs "" --dense --out "$R/stream_dense.json" > "$R/stream_dense.log" 2>&1

say "4. decode time per token with interventions (Llama-7B shape), GPU 0"
CUDA_VISIBLE_DEVICES=0 timeout 420 python3 -m studies.capture.bench_decode_gpu --out "$R/decode.json" > "$R/decode.log" 2>&1

say "5. ACT head search on GPU 0"
for task in topic currencies capitals sentiment; do
  CUDA_VISIBLE_DEVICES=0 timeout 400 python3 -m probe.cli calibrate --task $task --device cuda $(cat "studies/scale/calibrate_$task.args" 2>/dev/null) \
    --out "$R/calibration_$task.json" > "$R/calibrate_$task.log" 2>&1
done

say "waiting for the streaming runs"
wait
say "done"
touch "$R/DONE"
