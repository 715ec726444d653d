#!/usr/bin/env bash
# On a lent GPU machine: make a `base` bundle from a synthetic 128x128 recording
# (2 training steps: the weights do not matter for speed) and run the serve
# benchmark with the CUDA torch backend.  bash tools/gpu_serve_bench.sh OUTDIR
set -euo pipefail
out=${1:-${OUT:-gpu-serve}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
"$py" -c "from pathlib import Path; from tests.train.helpers import moving_square_recording as m; m(Path('$work/rec'), episodes=2, steps=20, size=128)"
"$py" -m train --config base --data "$work/rec" --run-dir "$work/run" --steps 2 --batch-size 2 \
    --quiet --set eval_every=100 --set val_batches=1 2>&1 | grep -v INFO | tail -2
# Served from the checkpoint: the export's 16-step rollout parity check refuses an
# untrained base model, whose rollouts amplify float rounding chaotically.
"$py" -m serve bench --bundle "$work/run/latest.pt" --backend torch --device cuda \
    --clients 1 2 4 8 16 --seconds 4 --json "$out/serve-bench-base-cuda.json" 2>&1 \
    | grep -v INFO | tee "$out/serve-bench-base-cuda.log"
