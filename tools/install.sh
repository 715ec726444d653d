#!/usr/bin/env bash
# Create a virtual environment and install TinyDreams into it, editable.
#
#   tools/install.sh [EXTRAS]        e.g. tools/install.sh dev,export,runtime
#   tools/install.sh --print-extras EXTRAS   the extras this machine would install
#
# torch comes first and is chosen with care: a torch already in the venv (say a
# CUDA build the user installed) is kept; on a machine with an NVIDIA GPU the
# registry's default (CUDA) build is installed; on any other machine the CPU
# build torch==$CPU_TORCH, never a multi-GB CUDA build. Safe to run again.
#
# ONNX Runtime likewise: the `runtime` extra (onnxruntime) on a CPU machine, the
# `gpu` extra (onnxruntime-gpu: CUDA and TensorRT providers) in its place on a
# machine with an NVIDIA GPU. The two share one Python module, so whichever is
# not wanted is uninstalled first: never both. TINYDREAMS_GPU=1 or 0 overrides
# the GPU detection.
set -euo pipefail

venv=${VENV:-.venv}
cpu_torch=${CPU_TORCH:-2.13.0}
cpu_index=${CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
py="$venv/bin/python"

has_gpu() {
    case "${TINYDREAMS_GPU:-}" in
        1) return 0 ;;
        0) return 1 ;;
    esac
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# The extras for this machine: ONNX Runtime's CPU or GPU build, never both.
machine_extras() {
    local want=cpu out=() extra
    has_gpu && want=gpu
    IFS=',' read -ra asked <<< "$1"
    for extra in "${asked[@]}"; do
        case "$extra" in
            runtime|gpu) extra=$([ "$want" = gpu ] && echo gpu || echo runtime) ;;
        esac
        [[ " ${out[*]} " == *" $extra "* ]] || out+=("$extra")
    done
    (IFS=','; echo "${out[*]}")
}

if [ "${1:-}" = "--print-extras" ]; then
    machine_extras "${2:-dev}"
    exit 0
fi
extras=$(machine_extras "${1:-dev}")

[ -x "$py" ] || python3 -m venv "$venv"

if "$py" -c 'import torch' 2>/dev/null; then
    echo "install: keeping torch $("$py" -c 'import torch; print(torch.__version__)') in $venv"
elif has_gpu; then
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

case ",$extras," in
    *,gpu,*) unwanted=onnxruntime ;;
    *,runtime,*) unwanted=onnxruntime-gpu ;;
    *) unwanted="" ;;
esac
if [ -n "$unwanted" ] && "$py" -m pip show "$unwanted" >/dev/null 2>&1; then
    echo "install: removing $unwanted (it shares its module with the ONNX Runtime wanted here)"
    "$py" -m pip uninstall -y "$unwanted"
fi

# torch is already satisfied here, so this adds only its small dependencies and ours.
echo "install: extras $extras"
"$py" -m pip install -e ".[$extras]"
