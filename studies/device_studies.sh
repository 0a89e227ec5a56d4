#!/usr/bin/env bash
# The three re-run studies on the lent GPU, one command (studies/scale/README.md has the recipe
# for bringing SmolLM2 over). Run from the repository root after `source scripts/device_env.sh`; a folder
# `texts/` beside the code (austen/*.txt and gensim/{questions-words.txt,pang_lee_polarity.cor,mini_newsgroup})
# is copied into the probe cache because the GPU machine has neither Debian's janeaustenr nor gensim.
# Writes $OUT/{act,arithmetic,retrieval}/ and $OUT/<study>.log; a failing study does not stop the others.
set -u
OUT=${OUT:-out}
mkdir -p "$PROBE_CACHE/texts" "$OUT"
[ -d texts ] && cp -rn texts/* "$PROBE_CACHE/texts/"
for study in ${STUDIES:-act arithmetic retrieval}; do
  start=$(date +%s)
  python3 "studies/$study/run.py" --device cuda --out "$OUT/$study" ${QUICK:+--quick} > "$OUT/$study.log" 2>&1
  echo "$study: rc=$? $(( $(date +%s) - start )) s"
  tail -3 "$OUT/$study.log"
done
