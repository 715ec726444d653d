#!/usr/bin/env bash
# Create a virtual environment and install TinyDreams into it, editable.
#
#   tools/install.sh [EXTRAS]        e.g. tools/install.sh dev,export
#
# torch comes first and is chosen with care: a torch already in the venv (say a
# CUDA build the user installed) is kept; on a machine with an NVIDIA GPU the
# registry's default (CUDA) build is installed; on any other machine the CPU
# build torch==$CPU_TORCH, never a multi-GB CUDA build. Safe to run again.
set -euo pipefail

venv=${VENV:-.venv}
extras=${1:-dev}
cpu_torch=${CPU_TORCH:-2.13.0}
cpu_index=${CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
py="$venv/bin/python"

[ -x "$py" ] || python3 -m venv "$venv"

if "$py" -c 'import torch' 2>/dev/null; then
    echo "install: keeping torch $("$py" -c 'import torch; print(torch.__version__)') in $venv"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install: NVIDIA GPU found, installing the registry's CUDA build of torch"
    "$py" -m pip install torch
else
    echo "install: no NVIDIA GPU, installing the CPU build torch==$cpu_torch"
    # A wheel on local disk (pip's configured find-links) first, without
    # touching an index; otherwise PyTorch's own CPU index.
    if ! "$py" -m pip install --no-index --no-deps "torch==$cpu_torch" 2>/dev/null; then
        "$py" -m pip install "torch==$cpu_torch" --index-url "$cpu_index"
    fi
fi

# torch is already satisfied here, so this adds only its small dependencies and ours.
"$py" -m pip install -e ".[$extras]"
