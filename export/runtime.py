"""One runtime interface for ``serve`` and ``play``: ``load_backend(...)`` gives an
object with ``step(frames, controls) -> next_frames``, batched, over ONNX
Runtime, TorchScript or eager PyTorch, on the CPU or a GPU.

A bundle runs through ONNX Runtime with numpy, Pillow and onnxruntime alone:
this module imports torch (and the model code) only when a torch backend or a
checkpoint is asked for (``export.torch_backends``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from export.cli import BACKENDS
from export.manifest import BundleError, Manifest

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    manifest: Manifest

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda``: where the model runs."""
        ...

    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any:
        """``(B, K, 3, H, W)`` frames in [0, 1] and ``(B, control_dim)`` controls ->
        next frames ``(B, 3, H, W)``; numpy in, numpy out; torch in, torch out.
        ``noise_level`` (a number or ``(B,)``) reaches a noise-conditioned model;
        by default the manifest's ``noise_level``; other models ignore it.
        ``latent`` ``(B, latent_dim)`` reaches a model with a latent; by default
        fresh N(0, 1) draws, so each step paints one plausible next frame."""
        ...

    def start_frames(self) -> np.ndarray:
        """``(S, K, 3, H, W)`` uint8 contexts to start a dream from."""
        ...


def load_backend(source: str | Path, backend: str = "auto", device: str = "auto",
                 compile: bool = False, autocast: bool | None = None,
                 noise_level: float | None = None, fp16: bool = False) -> Backend:
    """A model ready to step, from a bundle directory or a training checkpoint.

    Args:
        source: A bundle directory (``python -m export``) or a checkpoint ``.pt``.
        backend: ``auto`` (ONNX Runtime for a bundle when it is installed and
            offers the device, else TorchScript; eager PyTorch for a
            checkpoint), ``torch``, ``torchscript`` or ``onnxruntime``.
        device: ``auto``, ``cpu`` or ``cuda``.
        compile: ``torch.compile`` the eager model (torch backend only).
        autocast: Run the torch backend under bf16 autocast (default: on CUDA
            only). On CPUs with AMX it is about twice as fast at batch 8 and
            approximate (about 1e-2 from float32).
        noise_level: The context noise level a noise-conditioned model is told
            (default: the manifest's, which is the training run's
            ``noise.play_level``).
        fp16: ONNX Runtime's TensorRT provider builds fp16 engines.
    """
    loaded = _load(source, backend, device, compile, autocast, fp16)
    if noise_level is not None:
        if not loaded.manifest.noise_conditioned:
            raise ValueError(f"{source}: this model was trained without noise conditioning; "
                             f"a noise level does not apply to it")
        if noise_level < 0:
            raise ValueError(f"the noise level must be >= 0, got {noise_level}")
        loaded.manifest = loaded.manifest.replace(noise_level=float(noise_level))
    return loaded


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend the flags of ``export.cli.add_model_args`` ask for."""
    return load_backend(args.bundle, args.backend, args.device,
                        autocast=True if getattr(args, "bf16", False) else None,
                        noise_level=args.noise_level, fp16=getattr(args, "fp16", False))


def _load(source: str | Path, backend: str, device: str, compile: bool,
          autocast: bool | None, fp16: bool = False) -> Backend:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(source)
    if path.is_file():
        if backend not in ("auto", "torch"):
            raise ValueError(f"{path} is a checkpoint: only the torch backend runs it; export "
                             f"a bundle (python -m export) for {backend}")
        return _torch_backends().checkpoint_torch(path, device, compile, autocast)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory or checkpoint")
    if backend == "auto":
        backend = _auto_backend(device)
        log.info("backend auto: using %s", backend)
    if backend == "onnxruntime":
        from export.onnx_runtime import OnnxBackend

        return OnnxBackend(path, device, fp16=fp16)
    if backend == "torchscript":
        return _torch_backends().TorchScriptBackend(path, device)
    return _torch_backends().bundle_torch(path, device, compile, autocast)


def _torch_backends() -> Any:
    """``export.torch_backends``, imported on demand: it needs torch and the model code."""
    try:
        from export import torch_backends
    except ImportError as err:
        raise ImportError(f"this backend needs torch and the model code ({err}): install "
                          f"TinyDreams with tools/install.sh, or run a bundle with --backend "
                          f"onnxruntime") from err
    return torch_backends


def _auto_backend(device: str) -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "torchscript"
    from export.onnx_runtime import GPU_PROVIDERS

    if set(GPU_PROVIDERS) & set(ort.get_available_providers()):
        return "onnxruntime"
    wants_gpu = device == "cuda" or (device == "auto" and _torch_has_cuda())
    # eager with autocast on the GPU beats ONNX Runtime on the CPU
    return "torch" if wants_gpu else "onnxruntime"


def _torch_has_cuda() -> bool:
    try:
        return bool(_torch_backends().cuda_available())
    except ImportError:
        return False
