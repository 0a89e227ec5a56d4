#!/usr/bin/env bash
# The three re-run studies on the lent GPU in one command, in parallel (one small model each; the H200
# has room). studies/scale/README.md has the recipe for bringing SmolLM2 over. Run from the repository
# root after `source scripts/device_env.sh`. A folder `texts/` beside the code (austen/*.txt and
# gensim/{questions-words.txt,pang_lee_polarity.cor,mini_newsgroup}) is copied into the probe cache: the
# GPU machine has neither Debian's janeaustenr nor gensim. The outputs are packed into one archive,
# $OUT/studies.tar.gz (the transfer back drops files past a count limit); a failing study does not stop
# the others. The wheel folder's huggingface_hub 2.x needs httpx2, which the machine lacks: the machine's
# own huggingface_hub (>= 1.31, what transformers 5.24 asks for) is used instead.
# Afterwards, here: unpack studies.tar.gz, copy studies/<study>/* over the study folders, then
#   python -m studies.<study>.report && python -m studies.summary
# (report.py recomputes metrics/intervals/p-values and rewrites the README tables; update the prose).
set -u
OUT=${OUT:-out}
rm -rf /tmp/site/huggingface_hub /tmp/site/huggingface_hub-*
mkdir -p "$PROBE_CACHE/texts" "$OUT/studies"
[ -d texts ] && cp -rn texts/* "$PROBE_CACHE/texts/"
pack() { tar czf "$OUT/studies.tar.gz" -C "$OUT" studies; }
# Per-study arguments. ACT: only the tasks still missing (ACT_TASKS), appended to the committed
# items.parquet/settings.json, which are copied into its output folder first. Retrieval: one batch of
# 16 NIAH samples per decode loop (the 16 held-out-depth samples of a length; a run-time setting, not a
# study setting). Each study is stopped after STUDY_SECONDS so the last pack still happens; the scripts
# write their files after every task / condition, so a stopped study still returns what it finished.
study_args() {
  case $1 in
    act) mkdir -p "$OUT/studies/act"; cp studies/act/items.parquet studies/act/settings.json "$OUT/studies/act/"
         echo "--append --tasks ${ACT_TASKS:-topic,currencies}" ;;
    retrieval) echo "--batch-size 16" ;;
  esac
}
for study in ${STUDIES:-act arithmetic retrieval}; do
  extra=$(study_args "$study")
  timeout "${STUDY_SECONDS:-255}" python3 "studies/$study/run.py" --device "${DEVICE:-cuda}" \
      --out "$OUT/studies/$study" ${QUICK:+--quick} $extra > "$OUT/studies/$study.log" 2>&1 &
done
while [ -n "$(jobs -r)" ]; do sleep 10; pack; done
pack
tail -n 3 "$OUT"/studies/*.log
