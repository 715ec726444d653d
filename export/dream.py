"""Stepping a dream, in one place: the window of the K most recent frames, the
latent a latent model is given (held for the dream and moved with its view, or
fresh every step), and the noise level a noise-conditioned model is told.

The server's sessions, the player, the exporter's parity rollout and
training's evaluation all step their dreams through ``Dream`` and
``step_dreams``, over any backend with ``step(frames, controls, noise_level,
latent)`` (``export.runtime.Backend``). numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from export.manifest import Manifest

LATENT_MODES = ("hold", "fresh")  # one latent for a whole dream, or a fresh one every step


class Stepper(Protocol):
    """What a dream needs of a model (``export.runtime.Backend`` has it)."""

    manifest: Manifest

    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any: ...


def check_latent_mode(mode: str) -> str:
    if mode not in LATENT_MODES:
        raise ValueError(f"latent mode must be one of {', '.join(LATENT_MODES)}, got {mode!r}")
    return mode


def latent_input(manifest: Manifest, batch: int, latent: Any,
                 rng: np.random.Generator) -> np.ndarray | None:
    """The ``latent`` input for ``batch`` samples: ``latent`` checked, or fresh N(0, 1)
    draws from ``rng`` when it is None; None for a model without a latent."""
    dim = manifest.latent_dim
    if not dim:
        return None
    if latent is None:
        return rng.standard_normal((batch, dim), dtype=np.float32)
    z = np.ascontiguousarray(latent, dtype=np.float32)
    if z.shape != (batch, dim):
        raise ValueError(f"latent must have shape ({batch}, {dim}) = (batch, latent_dim), "
                         f"got {z.shape}")
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
    """What one dream gives the model for one step."""

    window: np.ndarray  # (K, 3, H, W) float32 in [0, 1]
    controls: np.ndarray  # (control_dim,) float32
    noise_level: float
    latent: np.ndarray | None  # (latent_dim,) float32, for a model with a latent


class Dream:
    """One dream of a model.

    Args:
        manifest: The model's manifest (its frame size, K, controls, latent).
        latent: ``hold`` one latent for the dream, or draw a ``fresh`` one every step.
        seed: Seed of the latent's draws (None: unpredictable).
        noise_level: The context noise level a noise-conditioned model is told
            (default: the manifest's).
    """

    def __init__(self, manifest: Manifest, latent: str = "hold", seed: int | None = None,
                 noise_level: float | None = None) -> None:
        self.manifest = manifest
        self.latent = DreamLatent.for_manifest(manifest, latent, seed)
        self.noise_level = manifest.noise_level if noise_level is None else float(noise_level)
        self.window = np.zeros(manifest.frame_shape, np.float32)  # (K, 3, H, W)
        self.steps = 0

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
        return StepInput(self.window, sticks, self.noise_level, self.latent.next(sticks))

    def advance(self, frame: np.ndarray) -> None:
        """Roll the model's next frame ``(3, H, W)`` into the window."""
        self.window = np.concatenate([self.window[1:], np.asarray(frame, np.float32)[None]])
        self.steps += 1

    def step(self, model: Stepper, controls: Any) -> np.ndarray:
        """One step of this dream alone: the next frame ``(3, H, W)``."""
        return step_dreams(model, [self], [controls])[0]


def run_inputs(model: Stepper, inputs: Sequence[StepInput]) -> np.ndarray:
    """One batched model call for several dreams' inputs: ``(B, 3, H, W)``."""
    frames = np.stack([i.window for i in inputs])
    controls = np.stack([i.controls for i in inputs])
    level = (np.array([i.noise_level for i in inputs], np.float32)
             if model.manifest.noise_conditioned else None)
    held = [i.latent for i in inputs if i.latent is not None]
    latent = np.stack(held) if held else None
    return np.asarray(model.step(frames, controls, level, latent), np.float32)


def step_dreams(model: Stepper, dreams: Sequence[Dream], controls: Any) -> np.ndarray:
    """Step every dream once, in one batched call, each under its row of
    ``controls`` ``(B, control_dim)``; returns their next frames ``(B, 3, H, W)``."""
    out = run_inputs(model, [d.inputs(c) for d, c in zip(dreams, controls, strict=True)])
    for dream, frame in zip(dreams, out, strict=True):
        dream.advance(frame)
    return out
