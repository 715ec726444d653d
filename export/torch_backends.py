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
from export.dream import LARGEST_BATCH, latent_input
from export.manifest import BundleError, Manifest
from export.model_manifest import manifest_for
from export.torch_device import GraphedSteps, TorchArrays
from models import WorldModel, WorldModelConfig
from models.device import resolve_device


class _TorchStep:
    """Shared input handling of the torch-based backends: inputs go to the
    model's device as tensors (``arrays``), and on CUDA each batch size's step
    is replayed from a captured CUDA graph (``graphs``)."""

    name = "torch"
    manifest: Manifest
    arrays: TorchArrays
    _autocast: torch.dtype | None = None
    _rng: np.random.Generator | None = None
    _graphs: GraphedSteps | None = None

    @property
    def device(self) -> str:
        return self.arrays.device.type

    def use_graphs(self, graphs: bool | None, largest: int = LARGEST_BATCH) -> None:
        """Replay the steps of up to ``largest`` dreams from static buffers
        (``GraphedSteps``), or not: ``None`` replays on CUDA only, where each
        batch size's step is captured as a CUDA graph."""
        cuda = self.arrays.device.type == "cuda"
        enabled = cuda if graphs is None else graphs
        self._graphs = GraphedSteps(self._run, capture=cuda, largest=largest) if enabled else None

    def _run(self, frames: torch.Tensor, controls: torch.Tensor,
             noise_level: torch.Tensor | None, latent: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any:
        as_numpy = not isinstance(frames, torch.Tensor)
        f, c = self.arrays.put(frames), self.arrays.put(controls)
        level = None
        if self.manifest.noise_conditioned:
            level = self.arrays.put(self.manifest.noise_level if noise_level is None
                                    else noise_level).reshape(-1).expand(f.shape[0]).contiguous()
        z = self._latent(f.shape[0], latent)
        run = self._graphs or self._run
        with torch.inference_mode(), torch.autocast(self.device, dtype=self._autocast,
                                                    enabled=self._autocast is not None,
                                                    cache_enabled=False):
            out = run(f, c, level, z).float()
        return out.cpu().numpy() if as_numpy else out

    def _latent(self, batch: int, latent: Any) -> torch.Tensor | None:
        """The step's latent on the device: ``latent`` checked, else fresh draws."""
        if self._rng is None:
            self._rng = np.random.default_rng()
        latent_on_device: torch.Tensor | None = latent_input(
            self.manifest, batch, latent, self._rng, self.arrays)
        return latent_on_device

    def start_frames(self) -> np.ndarray:
        raise BundleError(f"{self.name}: this model came without start frames")


class TorchBackend(_TorchStep):
    """Eager PyTorch. ``autocast``: bf16 (or fp16) on CUDA by default, off on CPU;
    ``compile``: wrap the model in ``torch.compile``; ``graphs``: replay each batch
    size's step (a CUDA graph on CUDA; default: on CUDA, unless compiled)."""

    name = "torch"

    def __init__(self, model: WorldModel, manifest: Manifest | None = None,
                 device: str = "auto", autocast: bool | None = None, compile: bool = False,
                 start_frames: np.ndarray | None = None, graphs: bool | None = None) -> None:
        self.arrays = TorchArrays(resolve_device(device))
        self.model = model.to(self.arrays.device).eval()
        self.manifest = manifest if manifest is not None else manifest_for(model)
        use_amp = self.device == "cuda" if autocast is None else autocast
        if use_amp:
            self._autocast = torch.bfloat16 if (self.device == "cpu" or
                                                torch.cuda.is_bf16_supported()) else torch.float16
        self._net: Any = torch.compile(self.model) if compile else self.model
        self._start = start_frames
        self.use_graphs(False if compile and graphs is None else graphs)

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

    def __init__(self, bundle: str | Path, device: str = "auto",
                 graphs: bool | None = None) -> None:
        self.manifest = Manifest.read(bundle)
        self.bundle = Path(bundle)
        self.arrays = TorchArrays(resolve_device(device))
        path = verify_file(bundle, TORCHSCRIPT_FILE, self.manifest)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what we ship
                self.module = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(path), map_location=self.arrays.device)
        except Exception as err:  # torch.jit raises RuntimeError and others for a bad file
            raise BundleError(f"{path}: TorchScript cannot load it ({err})") from None
        _probe(self, path)
        self.use_graphs(graphs)

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
