#!/usr/bin/env bash
# Lead, session 3: seam memory at 8K/32K (Gemma-3-270M shape) and 64K (Llama-7B shape, 8 layers) + kernel tests.
R=${OUT:-/tmp/res}; mkdir -p "$R"; export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())" > $R/gpu.txt 2>&1
cat $R/gpu.txt
T0=$(date +%s)
timeout 200 python3 -m benchmarks.bench_seam_memory --out $R/seam_memory_h200.json > $R/memory.log 2>&1; echo "rc=$? s=$(( $(date +%s) - T0 ))" >> $R/memory.log
cat $R/memory.log
T0=$(date +%s)
timeout 70 python3 -m pytest tests/kernels -q -p no:cacheprovider -n 8 > $R/pytest.txt 2>&1; echo "pytest rc=$? s=$(( $(date +%s) - T0 ))" >> $R/pytest.txt
tail -3 $R/pytest.txt
