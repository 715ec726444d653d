#!/usr/bin/env bash
# The GPU checks, in one short run for a lent GPU machine (or any CUDA box):
# the test suite on CUDA, the model summaries on CUDA in float32 and bf16, and,
# given a recording, the training benchmark (data pipeline vs loop) on CUDA.
#   bash tools/gpu_check.sh [OUTDIR [RECORDING]]
set -uo pipefail
out=${1:-${OUT:-gpu-check}}
recording=${2:-}
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

if [ -n "$recording" ]; then
    "$py" -m train bench --data "$recording" --precision auto --batch-size 64 --steps 40 \
        --workers 4 --json "$out/train-bench-cuda.json" 2>&1 | tee "$out/train-bench-cuda.log"
fi
