"""One runtime interface for ``serve`` and ``play``: ``load_backend(...)`` gives an
object with ``step(frames, controls) -> next_frames``, batched, over eager
PyTorch, TorchScript or ONNX Runtime, on the CPU or a GPU."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from export.bundle import (
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    BundleError,
    check_io_shapes,
    default_noise_level,
    latent_input,
    load_start_frames,
    noise_conditioned,
    read_manifest,
    verify_file,
)
from models import WorldModel, WorldModelConfig
from models.device import resolve_device

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "torchscript", "onnxruntime")


class Backend(Protocol):
    name: str
    manifest: dict[str, Any]

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
        ``latent`` ``(B, latent_dim)`` reaches a model with a latent (a latent
        model's, or a sampling codebook model's noise); by default
        fresh N(0, 1) draws, so each step paints one plausible next frame."""
        ...

    def start_frames(self) -> np.ndarray:
        """``(S, K, 3, H, W)`` uint8 contexts to start a dream from."""
        ...


def manifest_for(model: WorldModel, **extra: Any) -> dict[str, Any]:
    """The manifest fields that describe a model (the rest is added by export)."""
    config = model.config
    names = extra.pop("control_names", None) or (
        ["left_x", "left_y", "right_x", "right_y"] if config.control_dim == 4
        else [f"c{i}" for i in range(config.control_dim)])
    return {"model": config.to_dict(), "height": config.height, "width": config.width,
            "context_frames": config.context_frames, "control_dim": config.control_dim,
            "control_names": list(names), "output_mode": config.output_mode,
            "latent_dim": config.latent_size, "latent_refresh": config.latent_refresh,
            "latent_motion": model.latent_motion(), **extra}


class _TorchStep:
    """Shared input handling of the torch-based backends."""

    name = "torch"
    manifest: dict[str, Any]
    _device: torch.device
    _autocast: torch.dtype | None = None
    _rng: np.random.Generator | None = None

    @property
    def device(self) -> str:
        return self._device.type

    def _run(self, frames: torch.Tensor, controls: torch.Tensor,
             noise_level: torch.Tensor | None, latent: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any:
        as_numpy = not isinstance(frames, torch.Tensor)
        f = torch.as_tensor(np.asarray(frames) if as_numpy else frames, dtype=torch.float32)
        c = torch.as_tensor(np.asarray(controls) if as_numpy else controls, dtype=torch.float32)
        level = None
        if noise_conditioned(self.manifest):
            if noise_level is None:
                noise_level = default_noise_level(self.manifest)
            level = torch.as_tensor(noise_level, dtype=torch.float32).to(
                self._device).expand(f.shape[0]).contiguous()
        if isinstance(latent, torch.Tensor):
            latent = latent.detach().cpu().numpy()
        if self._rng is None:
            self._rng = np.random.default_rng()
        z = latent_input(self.manifest, f.shape[0], latent, self._rng)
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=self._autocast,
                                                    enabled=self._autocast is not None):
            out = self._run(f.to(self._device, non_blocking=True),
                            c.to(self._device, non_blocking=True), level,
                            None if z is None else torch.from_numpy(z).to(self._device)).float()
        return out.cpu().numpy() if as_numpy else out

    def start_frames(self) -> np.ndarray:
        raise BundleError(f"{self.name}: this model came without start frames")


class TorchBackend(_TorchStep):
    """Eager PyTorch. ``autocast``: bf16 (or fp16) on CUDA by default, off on CPU;
    ``compile``: wrap the model in ``torch.compile``."""

    name = "torch"

    def __init__(self, model: WorldModel, manifest: dict[str, Any], device: str = "auto",
                 autocast: bool | None = None, compile: bool = False,
                 start_frames: np.ndarray | None = None) -> None:
        self._device = resolve_device(device)
        self.model = model.to(self._device).eval()
        self.manifest = manifest
        use_amp = self._device.type == "cuda" if autocast is None else autocast
        if use_amp:
            self._autocast = torch.bfloat16 if (self._device.type == "cpu" or
                                                torch.cuda.is_bf16_supported()) else torch.float16
        self._net: Any = torch.compile(self.model) if compile else self.model
        self._start = start_frames

    def _run(self, frames: torch.Tensor, controls: torch.Tensor,
             noise_level: torch.Tensor | None, latent: torch.Tensor | None) -> torch.Tensor:
        return self._net(frames, controls, noise_level, latent)

    def start_frames(self) -> np.ndarray:
        if self._start is None:
            return super().start_frames()
        return self._start


class TorchScriptBackend(_TorchStep):
    """A bundle's traced and frozen ``model.ts``."""

    name = "torchscript"

    def __init__(self, bundle: str | Path, device: str = "auto") -> None:
        self.manifest = read_manifest(bundle)
        self.bundle = Path(bundle)
        self._device = resolve_device(device)
        path = verify_file(bundle, TORCHSCRIPT_FILE, self.manifest)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what we ship
                self.module = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(path), map_location=self._device)
        except Exception as err:  # torch.jit raises RuntimeError and others for a bad file
            raise BundleError(f"{path}: TorchScript cannot load it ({err})") from None
        _probe(self, path)

    def _run(self, frames: torch.Tensor, controls: torch.Tensor,
             noise_level: torch.Tensor | None, latent: torch.Tensor | None) -> torch.Tensor:
        # The traced module takes the manifest's inputs, in order, and no others.
        return self.module(*(x for x in (frames, controls, noise_level, latent)
                             if x is not None))

    def start_frames(self) -> np.ndarray:
        return load_start_frames(self.bundle, self.manifest)


def _probe(backend: _TorchStep, path: Path) -> None:
    """Run one step on inputs shaped as the manifest says; a model that
    disagrees with its manifest fails here, named, rather than mid-game."""
    m = backend.manifest
    frames = np.zeros((1, m["context_frames"], 3, m["height"], m["width"]), np.float32)
    try:
        out = backend.step(frames, np.zeros((1, m["control_dim"]), np.float32))
    except (RuntimeError, ValueError) as err:
        raise BundleError(f"{path}: the model does not accept the inputs its manifest "
                          f"describes (context_frames {m['context_frames']}, control_dim "
                          f"{m['control_dim']}, {m['height']}x{m['width']}): {err}") from None
    check_io_shapes(path, m, [1, *frames.shape[1:]], [1, m["control_dim"]])
    if out.shape != (1, 3, m["height"], m["width"]):
        raise BundleError(f"{path}: the model returns {out.shape}, the manifest says "
                          f"(1, 3, {m['height']}, {m['width']})")


def _bundle_torch(bundle: Path, device: str, compile: bool,
                  autocast: bool | None = None) -> TorchBackend:
    manifest = read_manifest(bundle)
    path = verify_file(bundle, WEIGHTS_FILE, manifest)
    model = WorldModel(WorldModelConfig.from_dict(manifest["model"]))
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise BundleError(f"{path}: the weights do not fit the model the manifest describes "
                          f"({str(err).splitlines()[0]})") from None
    backend = TorchBackend(model, manifest, device, autocast, compile,
                           load_start_frames(bundle, manifest))
    _probe(backend, path)
    return backend


def load_backend(source: str | Path, backend: str = "auto", device: str = "auto",
                 compile: bool = False, autocast: bool | None = None,
                 noise_level: float | None = None) -> Backend:
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
    """
    loaded = _load(source, backend, device, compile, autocast)
    if noise_level is not None:
        if not noise_conditioned(loaded.manifest):
            raise ValueError(f"{source}: this model was trained without noise conditioning; "
                             f"a noise level does not apply to it")
        if noise_level < 0:
            raise ValueError(f"the noise level must be >= 0, got {noise_level}")
        loaded.manifest["noise_level"] = float(noise_level)
    return loaded


def _load(source: str | Path, backend: str, device: str, compile: bool,
          autocast: bool | None) -> Backend:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(source)
    if path.is_file():
        if backend not in ("auto", "torch"):
            raise ValueError(f"{path} is a checkpoint: only the torch backend runs it; export "
                             f"a bundle (python -m export) for {backend}")
        from train.checkpoint import model_from_checkpoint, play_noise_level

        model, state = model_from_checkpoint(path)
        manifest = manifest_for(model, fps=state["config"].get("fps"),
                                noise_level=play_noise_level(state),
                                checkpoint={"path": str(path), "step": state["step"]})
        data = state["config"]["data"]
        start = None
        for recording in [*data["recordings"], *data["val_recordings"]]:
            if Path(recording, "recording_log.jsonl").is_file():  # still where it was
                from export.exporter import start_frames_from_recording

                c = model.config
                start = start_frames_from_recording(recording, c.context_frames,
                                                    (c.width, c.height))
                break
        return TorchBackend(model, manifest, device, autocast, compile, start)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory or checkpoint")
    if backend == "auto":
        backend = _auto_backend(device)
        log.info("backend auto: using %s", backend)
    if backend == "onnxruntime":
        from export.onnx_runtime import OnnxBackend

        ort_backend: Backend = OnnxBackend(path, device)
        return ort_backend
    if backend == "torchscript":
        return TorchScriptBackend(path, device)
    return _bundle_torch(path, device, compile, autocast)


def _auto_backend(device: str) -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "torchscript"
    wants_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if wants_gpu and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "torch"  # eager with autocast on the GPU beats ONNX Runtime on the CPU
    return "onnxruntime"
