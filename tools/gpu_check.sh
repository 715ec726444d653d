#!/usr/bin/env bash
# The GPU checks, in one short run for a lent GPU machine (or any CUDA box):
# the test suite on CUDA, then the model summaries on CUDA in float32 and bf16.
#   bash tools/gpu_check.sh [OUTDIR]
set -uo pipefail
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi -L
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
TINYDREAMS_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/pytest-cuda.log"
for p in tiny small base; do
    "$py" -m models --preset "$p" --device cuda --batch 1 8 32 --repeats 50 \
        --json "$out/summary-$p-fp32.json"
    "$py" -m models --preset "$p" --device cuda --batch 1 8 32 --repeats 50 --bf16 \
        --json "$out/summary-$p-bf16.json"
done 2>&1 | tee "$out/summary-cuda.log"
