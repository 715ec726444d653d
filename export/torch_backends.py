"""The backends that need torch: eager PyTorch (a checkpoint, or a bundle's
weights) and a bundle's TorchScript. ``export.runtime.load_backend`` loads this
module only when one of them is asked for."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.bundle import (
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    check_io_shapes,
    load_start_frames,
    verify_file,
)
from export.dream import latent_input
from export.manifest import BundleError, Manifest
from export.model_manifest import manifest_for
from models import WorldModel, WorldModelConfig
from models.device import resolve_device


class _TorchStep:
    """Shared input handling of the torch-based backends."""

    name = "torch"
    manifest: Manifest
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
        if self.manifest.noise_conditioned:
            if noise_level is None:
                noise_level = self.manifest.noise_level
            level = torch.as_tensor(np.asarray(noise_level) if not isinstance(
                noise_level, torch.Tensor) else noise_level, dtype=torch.float32).to(
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

    def __init__(self, model: WorldModel, manifest: Manifest | None = None,
                 device: str = "auto", autocast: bool | None = None, compile: bool = False,
                 start_frames: np.ndarray | None = None) -> None:
        self._device = resolve_device(device)
        self.model = model.to(self._device).eval()
        self.manifest = manifest if manifest is not None else manifest_for(model)
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
        self.manifest = Manifest.read(bundle)
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
    frames = np.zeros((1, *m.frame_shape), np.float32)
    try:
        out = backend.step(frames, np.zeros((1, m.control_dim), np.float32))
    except (RuntimeError, ValueError) as err:
        raise BundleError(f"{path}: the model does not accept the inputs its manifest "
                          f"describes (context_frames {m.context_frames}, control_dim "
                          f"{m.control_dim}, {m.height}x{m.width}): {err}") from None
    check_io_shapes(path, m, [1, *frames.shape[1:]], [1, m.control_dim])
    if out.shape != (1, 3, m.height, m.width):
        raise BundleError(f"{path}: the model returns {out.shape}, the manifest says "
                          f"(1, 3, {m.height}, {m.width})")


def bundle_torch(bundle: Path, device: str, compile: bool = False,
                 autocast: bool | None = None) -> TorchBackend:
    """A bundle's ``weights.pt`` in eager PyTorch."""
    manifest = Manifest.read(bundle)
    path = verify_file(bundle, WEIGHTS_FILE, manifest)
    model = WorldModel(WorldModelConfig.from_dict(manifest.model))
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise BundleError(f"{path}: the weights do not fit the model the manifest describes "
                          f"({str(err).splitlines()[0]})") from None
    backend = TorchBackend(model, manifest, device, autocast, compile,
                           load_start_frames(bundle, manifest))
    _probe(backend, path)
    return backend


def checkpoint_torch(path: Path, device: str, compile: bool = False,
                     autocast: bool | None = None) -> TorchBackend:
    """A training checkpoint in eager PyTorch, with start frames from its
    recordings when they are still where they were."""
    from train.checkpoint import model_from_checkpoint, play_noise_level

    model, state = model_from_checkpoint(path)
    manifest = manifest_for(model, fps=state["config"].get("fps"),
                            noise_level=play_noise_level(state) or 0.0,
                            checkpoint={"path": str(path), "step": state["step"]})
    data = state["config"]["data"]
    start = None
    for recording in [*data["recordings"], *data["val_recordings"]]:
        if Path(recording, "recording_log.jsonl").is_file():
            c = model.config
            start = start_frames_from_recording(recording, c.context_frames,
                                                (c.height, c.width))
            break
    return TorchBackend(model, manifest, device, autocast, compile, start)


def start_frames_from_recording(directory: str | Path, context_frames: int,
                                size: tuple[int, int], count: int = 8) -> np.ndarray:
    """``count`` contexts of K frames spread over a recording, resized to ``size``
    = (height, width)."""
    from train.data import load_frames, transition_rows

    frames = load_frames(directory, size)
    rows = transition_rows(frames, context_frames)
    if len(rows) == 0:
        raise BundleError(f"{directory}: no {context_frames} consecutive frames to start from")
    pick = np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(np.int64)
    return np.stack([frames.frames[rows[i, :context_frames]] for i in pick])


def cuda_available() -> bool:
    return torch.cuda.is_available()
