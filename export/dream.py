"""Stepping a dream, in one place: the window of the K most recent frames, the
latent a latent model is given (held for the dream and moved with its view, or
fresh every step), and the noise level a noise-conditioned model is told.

The server's sessions, the player, the exporter's parity rollout and
training's evaluation all step their dreams through ``Dream`` and
``step_dreams``, over any backend with ``step(frames, controls, noise_level,
latent)`` (``export.runtime.Backend``).

A dream's window, latent and noise level live where its model runs: a model
whose ``arrays`` are tensors on a GPU (``export.torch_device.TorchArrays``)
keeps them there, batches them there and rolls each new frame into the window
there, so only the controls go up and the new frames come down each step.
Other models keep them in host numpy (``HOST``). numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from export.manifest import Manifest

LARGEST_BATCH = 64  # the most dreams one model call steps: TensorRT engines, CUDA graphs
LATENT_MODES = ("hold", "fresh")  # one latent for a whole dream, or a fresh one every step


class Stepper(Protocol):
    """What a dream needs of a model (``export.runtime.Backend`` has it). A
    model with ``arrays`` (``Arrays``) steps inputs of that kind and returns its
    frames in kind; others step numpy (``HOST``)."""

    manifest: Manifest

    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any: ...


class Arrays(Protocol):
    """Where a model keeps its dreams' state, and the few operations a dream
    does on it there: host numpy (``HOST``), or tensors on the model's device."""

    def put(self, x: Any) -> Any:
        """``x`` (numpy, a number, or an array of this kind) as a float32 array of
        this kind; as it is when it is one already."""
        ...

    def get(self, x: Any) -> np.ndarray:
        """An array of this kind as host float32 numpy."""
        ...

    def stack(self, xs: Sequence[Any]) -> Any: ...

    def roll(self, window: Any, frame: Any) -> Any:
        """``window`` ``(K, ...)`` without its oldest entry, ``frame`` after the rest."""
        ...

    def empty(self, shape: tuple[int, ...]) -> Any:
        """An uninitialised float32 array of this kind."""
        ...

    def address(self, x: Any) -> tuple[str, int, int]:
        """``(device type, device index, pointer)`` of a contiguous float32 array,
        for ONNX Runtime's I/O binding."""
        ...

    def settle(self) -> None:
        """Wait until the work queued on these arrays is done (before another
        library, on its own stream, reads them)."""
        ...


class HostArrays:
    """Host numpy: the arrays of a model that runs on the CPU, or that has no
    arrays of its own."""

    def put(self, x: Any) -> np.ndarray:
        a = np.asarray(x, np.float32)
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)

    def get(self, x: Any) -> np.ndarray:
        return np.asarray(x, np.float32)

    def stack(self, xs: Sequence[Any]) -> np.ndarray:
        return np.stack(xs)

    def roll(self, window: Any, frame: Any) -> np.ndarray:
        return np.concatenate([window[1:], np.asarray(frame, np.float32)[None]])

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, np.float32)

    def address(self, x: Any) -> tuple[str, int, int]:
        return "cpu", 0, int(x.ctypes.data)

    def settle(self) -> None:
        pass


HOST = HostArrays()


def arrays_of(model: Any) -> Arrays:
    """Where ``model`` keeps its dreams' state: its ``arrays``, else ``HOST``."""
    arrays: Arrays = getattr(model, "arrays", HOST)
    return arrays


def check_latent_mode(mode: str) -> str:
    if mode not in LATENT_MODES:
        raise ValueError(f"latent mode must be one of {', '.join(LATENT_MODES)}, got {mode!r}")
    return mode


def latent_input(manifest: Manifest, batch: int, latent: Any, rng: np.random.Generator,
                 arrays: Arrays = HOST) -> Any:
    """The ``latent`` input for ``batch`` samples as an array of ``arrays``:
    ``latent`` checked, or fresh N(0, 1) draws from ``rng`` when it is None;
    None for a model without a latent."""
    dim = manifest.latent_dim
    if not dim:
        return None
    if latent is None:
        return arrays.put(rng.standard_normal((batch, dim), dtype=np.float32))
    z = arrays.put(latent)
    if tuple(z.shape) != (batch, dim):
        raise ValueError(f"latent must have shape ({batch}, {dim}) = (batch, latent_dim), "
                         f"got {tuple(z.shape)}")
    return z


class DreamLatent:
    """The latent one dream gives a latent model each step.

    ``hold`` (the default) draws one latent when the dream starts and keeps it,
    so every step paints the same world and nothing is redrawn while the
    sticks rest; with a ``refresh`` share, each later step redraws that share
    of it times the largest stick deflection, so a moving view keeps finding
    new things. ``fresh`` draws a new one every step: each frame is another
    plausible next frame, and the picture repaints itself even at rest.
    ``next()`` is None for a model without a latent (``dim`` 0). With a
    ``motion``, a held latent first moves with the view each step: the
    picture's draws stay with what they drew, so the dream turns with the
    stick instead of sticking to the screen.

    Args:
        dim: The model's latent length (``Manifest.latent_dim``).
        mode: ``hold`` or ``fresh``.
        seed: Seed of the draws (None: unpredictable); ``reset(seed)`` reseeds.
        refresh: ``Manifest.latent_refresh``.
        motion: ``Manifest.latent_motion``.
    """

    def __init__(self, dim: int, mode: str = "hold", seed: int | None = None,
                 refresh: float = 0.0, motion: dict[str, Any] | None = None) -> None:
        self.dim, self.mode, self.refresh = dim, check_latent_mode(mode), refresh
        self.motion = None
        if motion is not None and dim:
            rows, cols = (int(v) for v in motion["grid"])
            patches = np.asarray(motion["patches"], np.float64)
            codes = int(motion["codes"])
            if patches.shape[0] != 2 or (dim - codes * rows * cols) % (rows * cols):
                raise ValueError(f"a latent motion of grid {rows}x{cols}, {codes} codes and a "
                                 f"{patches.shape} map does not fit a latent of {dim}")
            self.motion = (rows, cols, codes, patches)
        self.held: np.ndarray | None = None
        self.reset(seed)

    @classmethod
    def for_manifest(cls, manifest: Manifest, mode: str = "hold",
                     seed: int | None = None) -> DreamLatent:
        """The latent a dream of the manifest's model is given."""
        return cls(manifest.latent_dim, mode, seed, manifest.latent_refresh,
                   manifest.latent_motion)

    def reset(self, seed: int | None = None) -> None:
        """A new dream: reseed (when ``seed`` is given) and draw the latent to hold."""
        if seed is not None or self.held is None:
            self._rng = np.random.default_rng(seed)
        self.held = self._draw()
        self._started = False  # the first step takes the latent as drawn

    def _draw(self) -> np.ndarray | None:
        return self._rng.standard_normal(self.dim, dtype=np.float32) if self.dim else None

    def next(self, controls: Any = None) -> np.ndarray | None:
        """The ``(dim,)`` latent for the next step, under ``controls`` (the
        step's stick values, which set how much of a held latent is redrawn)."""
        if self.mode == "fresh":
            return self._draw()
        if self.held is not None and self.motion and self._started and controls is not None:
            self.held = self._moved(self.held, np.asarray(controls, np.float64).reshape(-1))
        if self.held is not None and self.refresh and self._started and controls is not None:
            push = min(1.0, float(np.abs(np.asarray(controls, np.float32)).max(initial=0.0)))
            redraw = self._rng.random(self.dim) < self.refresh * push
            fresh = self._draw()
            assert fresh is not None
            self.held = np.where(redraw, fresh, self.held).astype(np.float32)
        self._started = True
        return self.held

    def _moved(self, held: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """``held`` moved with the view under ``controls``: each patch takes the
        draws of the patch ``motion`` says the view brings to it (offsets rounded
        at random to whole patches), patches new to the view fresh draws."""
        assert self.motion is not None
        rows, cols, codes, patches = self.motion
        offset = patches @ controls  # x, y in patches
        whole = np.floor(offset)
        dx, dy = (int(v) for v in whole + (self._rng.random(2) < offset - whole))
        if not dx and not dy:
            return held
        n = codes * rows * cols
        grain = (len(held) - n) // (rows * cols)
        parts = (held[:n].reshape(codes, rows, cols),
                 np.moveaxis(held[n:].reshape(rows, cols, grain), -1, 0))  # (D, rows, cols)
        (dst_r, src_r), (dst_c, src_c) = _overlap(rows, dy), _overlap(cols, dx)
        out = []
        for part in parts:
            new = self._rng.standard_normal(part.shape, dtype=np.float32)
            new[:, dst_r, dst_c] = part[:, src_r, src_c]
            out.append(new)
        return np.concatenate([out[0].reshape(-1), np.moveaxis(out[1], 0, -1).reshape(-1)])


def _overlap(size: int, step: int) -> tuple[slice, slice]:
    """The slices ``new[dst] = old[src]`` of ``new[i] = old[i + step]`` along an
    axis of ``size`` (both empty when ``step`` leaves nothing in view)."""
    if abs(step) >= size:
        return slice(0, 0), slice(0, 0)
    return slice(max(0, -step), size - max(0, step)), slice(max(0, step), size + min(0, step))


@dataclass(frozen=True)
class StepInput:
    """What one dream gives the model for one step: arrays of the dream's
    ``Arrays``, but for the controls."""

    window: Any  # (K, 3, H, W) float32 in [0, 1]
    controls: np.ndarray  # (control_dim,) float32, on the host
    noise_level: Any  # () float32
    latent: Any  # (latent_dim,) float32, for a model with a latent; else None


class StepOutput(NamedTuple):
    """A step's new frames ``(B, 3, H, W)`` (or one's ``(3, H, W)``), where the
    model made them (``device``: an array of its ``Arrays``) and on the host."""

    device: Any
    host: np.ndarray


class Dream:
    """One dream of a model.

    Args:
        manifest: The model's manifest (its frame size, K, controls, latent).
        latent: ``hold`` one latent for the dream, or draw a ``fresh`` one every step.
        seed: Seed of the latent's draws (None: unpredictable).
        noise_level: The context noise level a noise-conditioned model is told
            (default: the manifest's).
        arrays: Where the window, latent and noise level live (``Dream.of``
            takes the model's).
    """

    def __init__(self, manifest: Manifest, latent: str = "hold", seed: int | None = None,
                 noise_level: float | None = None, arrays: Arrays = HOST) -> None:
        self.manifest, self.arrays = manifest, arrays
        self.latent = DreamLatent.for_manifest(manifest, latent, seed)
        self.noise_level = manifest.noise_level if noise_level is None else float(noise_level)
        self._level = arrays.put(np.float32(self.noise_level))
        self._window = arrays.put(np.zeros(manifest.frame_shape, np.float32))  # (K, 3, H, W)
        self._latent: tuple[np.ndarray | None, Any] = (None, None)  # (host, uploaded)
        self.steps = 0

    @classmethod
    def of(cls, model: Stepper, latent: str = "hold", seed: int | None = None,
           noise_level: float | None = None) -> Dream:
        """A dream of ``model``, its state kept where the model runs."""
        return cls(model.manifest, latent, seed, noise_level, arrays_of(model))

    @property
    def window(self) -> np.ndarray:
        """The K frames ``(K, 3, H, W)`` the next step sees, on the host."""
        return self.arrays.get(self._window)

    @window.setter
    def window(self, frames: Any) -> None:
        self._window = self.arrays.put(frames)

    def reset(self, context: np.ndarray, seed: int | None = None) -> None:
        """Start again from ``context``: K frames ``(K, 3, H, W)`` or one frame
        ``(3, H, W)`` (repeated K times), uint8 or float in [0, 1]; a latent
        model's dream draws a new latent (seeded by ``seed``, if given)."""
        frames = np.asarray(context)
        frames = (frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8
                  else frames.astype(np.float32))
        if frames.ndim == 3:
            frames = np.repeat(frames[None], self.manifest.context_frames, axis=0)
        if frames.shape != self.manifest.frame_shape:
            raise ValueError(f"a dream starts from frames {self.manifest.frame_shape} "
                             f"(K, 3, H, W), got {frames.shape}")
        self.window = frames
        self.latent.reset(seed)
        self.steps = 0

    def inputs(self, controls: Any) -> StepInput:
        """The model's inputs for the next step under ``controls`` (this moves
        and refreshes a held latent: call it once a step, then ``advance``)."""
        sticks = np.asarray(controls, np.float32).reshape(-1)
        if sticks.shape != (self.manifest.control_dim,):
            raise ValueError(f"controls must have {self.manifest.control_dim} values, "
                             f"got {sticks.shape[0]}")
        return StepInput(self._window, sticks, self._level, self._latent_for(sticks))

    def _latent_for(self, sticks: np.ndarray) -> Any:
        """The step's latent where the model runs, uploaded only when it changed."""
        z = self.latent.next(sticks)
        if z is not self._latent[0]:  # DreamLatent makes a new array for each change
            self._latent = (z, None if z is None else self.arrays.put(z))
        return self._latent[1]

    def advance(self, frame: Any) -> None:
        """Roll the model's next frame ``(3, H, W)`` (numpy, or an array of this
        dream's ``Arrays``) into the window."""
        self._window = self.arrays.roll(self._window, self.arrays.put(frame))
        self.steps += 1

    def step(self, model: Stepper, controls: Any) -> np.ndarray:
        """One step of this dream alone: the next frame ``(3, H, W)``."""
        return step_dreams(model, [self], [controls])[0]


def run_inputs(model: Stepper, inputs: Sequence[StepInput]) -> StepOutput:
    """One batched model call for several dreams' inputs, built and run where the
    model keeps its arrays: the next frames ``(B, 3, H, W)`` there and on the host."""
    arrays = arrays_of(model)
    frames = arrays.stack([arrays.put(i.window) for i in inputs])
    controls = arrays.put(np.stack([i.controls for i in inputs]))
    level = (arrays.stack([arrays.put(i.noise_level) for i in inputs])
             if model.manifest.noise_conditioned else None)
    held = [arrays.put(i.latent) for i in inputs if i.latent is not None]
    latent = arrays.stack(held) if held else None
    out = model.step(frames, controls, level, latent)
    return StepOutput(out, arrays.get(out))


def step_dreams(model: Stepper, dreams: Sequence[Dream], controls: Any) -> np.ndarray:
    """Step every dream once, in one batched call, each under its row of
    ``controls`` ``(B, control_dim)``; returns their next frames ``(B, 3, H, W)``."""
    out = run_inputs(model, [d.inputs(c) for d, c in zip(dreams, controls, strict=True)])
    same = arrays_of(model)
    for i, dream in enumerate(dreams):
        dream.advance(out.device[i] if dream.arrays is same else out.host[i])
    return out.host
