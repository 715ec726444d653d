"""The bundle: a directory holding the exported model and what a player needs.

::

    manifest.json      config, frame size, context, controls, fps, parity figures,
                       checkpoint step and SHA-256, tool versions, file hashes
    model.onnx         float32, dynamic batch axis
    model.ts           TorchScript (traced, frozen)
    weights.pt         the state dict (EMA weights when the checkpoint has them)
    start_frames.npy   (S, K, 3, H, W) uint8 contexts to start a dream from

A model trained with noise conditioning takes a third input, ``noise_level``
``(B,)``; the manifest's ``noise_level`` is the value to give it when playing.
A model with a latent (the manifest's ``latent_dim``) takes a last input,
``latent`` ``(B, latent_dim)``: N(0, 1) draws, one plausible world each (for a
``codebook`` model, the noise its codes are drawn with, then its grain's). A
dream holds one latent throughout by default (``DreamLatent``), moving it with
the view as the manifest's ``latent_motion`` says (a codebook model that sees
the view its sticks move) and redrawing its ``latent_refresh`` share of it a
step at full stick, or draws a fresh one every step.

Only numpy and the standard library here, so an ONNX-only player can read it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "tinydreams-bundle"
VERSION = 1
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.ts"
WEIGHTS_FILE = "weights.pt"
START_FRAMES_FILE = "start_frames.npy"
# The model's inputs and outputs, named and shaped in one place.
INPUTS = ("frames", "controls")  # (B, K, 3, H, W) float32 in [0, 1]; (B, control_dim)
NOISE_INPUT = "noise_level"  # (B,) float32: a noise-conditioned model's third input
LATENT_INPUT = "latent"  # (B, latent_dim) float32 N(0, 1) draws: a latent model's last input
OUTPUTS = ("next_frame",)  # (B, 3, H, W) float32 in [0, 1]
BATCH_AXIS = "batch"
LATENT_MODES = ("hold", "fresh")  # one latent for a whole dream, or a fresh one every step


class BundleError(ValueError):
    """A bundle that cannot be used: missing, damaged, or inconsistent."""


def to_image(frame: np.ndarray) -> np.ndarray:
    """A model output ``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8."""
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing; {bundle} is not a bundle (python -m export)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise BundleError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a TinyDreams bundle manifest")
    if manifest.get("version", 0) > VERSION:
        raise BundleError(f"{path}: bundle version {manifest['version']} is newer than this "
                          f"tool reads ({VERSION}); update TinyDreams")
    for key in ("model", "height", "width", "context_frames", "control_dim", "files"):
        if key not in manifest:
            raise BundleError(f"{path}: missing field {key!r}")
    return manifest


def verify_file(bundle: str | Path, name: str, manifest: dict[str, Any]) -> Path:
    """The path of a bundle file whose size and SHA-256 match the manifest."""
    path = Path(bundle) / name
    expected = manifest["files"].get(name)
    if expected is None:
        raise BundleError(f"{path}: not listed in the bundle's manifest")
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    if path.stat().st_size != expected["bytes"]:
        raise BundleError(f"{path}: truncated or damaged ({path.stat().st_size} bytes, the "
                          f"manifest says {expected['bytes']}); export the bundle again")
    if sha256_file(path) != expected["sha256"]:
        raise BundleError(f"{path}: damaged (SHA-256 differs from the manifest); export the "
                          f"bundle again")
    return path


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def load_start_frames(bundle: str | Path, manifest: dict[str, Any]) -> np.ndarray:
    """``(S, K, 3, H, W)`` uint8 start contexts, checked against the manifest."""
    path = verify_file(bundle, START_FRAMES_FILE, manifest)
    frames = np.load(path)
    want = (manifest["context_frames"], 3, manifest["height"], manifest["width"])
    if frames.ndim != 5 or frames.shape[1:] != want or frames.dtype != np.uint8:
        raise BundleError(f"{path}: start frames are {frames.shape} {frames.dtype}, the manifest "
                          f"says (S, {', '.join(map(str, want))}) uint8")
    return frames


def noise_conditioned(manifest: dict[str, Any]) -> bool:
    """Whether the bundle's model takes the ``noise_level`` input."""
    return bool(manifest.get("model", {}).get("noise_conditioning", False))


def latent_dim(manifest: dict[str, Any]) -> int:
    """The length of the bundle's model's latent input (0: it takes none)."""
    if "latent_dim" in manifest:
        return int(manifest["latent_dim"] or 0)
    return int(manifest.get("model", {}).get("latent_dim", 0) or 0)  # (bundles before codebooks)


def latent_refresh(manifest: dict[str, Any]) -> float:
    """The share of a held latent a dream redraws each step at full stick."""
    return float(manifest.get("latent_refresh") or 0.0)


def latent_motion(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """How a held latent moves with the view (``WorldModel.latent_motion``; None:
    it stays where it is, as in bundles before it)."""
    return manifest.get("latent_motion")


def model_inputs(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The model's input names, in order."""
    return (*INPUTS, *([NOISE_INPUT] if noise_conditioned(manifest) else []),
            *([LATENT_INPUT] if latent_dim(manifest) else []))


def latent_input(manifest: dict[str, Any], batch: int, latent: Any,
                 rng: np.random.Generator) -> np.ndarray | None:
    """The ``latent`` input for ``batch`` samples: ``latent`` checked, or fresh N(0, 1)
    draws from ``rng`` when it is None; None for a model without a latent."""
    dim = latent_dim(manifest)
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
    of it times the largest stick deflection (``WorldModel.refresh_latent``),
    so a moving view keeps finding new things. ``fresh`` draws a new one every
    step: each frame is another plausible next frame, and the picture repaints
    itself even at rest. ``next()`` is None for a model without a latent
    (``dim`` 0). With a ``motion``, a held latent first moves with the view each
    step, as ``WorldModel.move_latent`` moves it: the picture's draws stay with
    what they drew, so the dream turns with the stick instead of sticking to
    the screen.

    Args:
        dim: The model's latent length (``latent_dim(manifest)``).
        mode: ``hold`` or ``fresh``.
        seed: Seed of the draws (None: unpredictable); ``reset(seed)`` reseeds.
        refresh: ``latent_refresh(manifest)``.
        motion: ``latent_motion(manifest)``.
    """

    def __init__(self, dim: int, mode: str = "hold", seed: int | None = None,
                 refresh: float = 0.0, motion: dict[str, Any] | None = None) -> None:
        if mode not in LATENT_MODES:
            raise ValueError(f"latent mode must be one of {', '.join(LATENT_MODES)}, "
                             f"got {mode!r}")
        self.dim, self.mode, self.refresh = dim, mode, refresh
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
    def for_bundle(cls, manifest: dict[str, Any], mode: str = "hold",
                   seed: int | None = None) -> DreamLatent:
        """The latent a dream of the manifest's model is given."""
        return cls(latent_dim(manifest), mode, seed, latent_refresh(manifest),
                   latent_motion(manifest))

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


def default_noise_level(manifest: dict[str, Any]) -> float:
    """The context noise level the model is told when the caller gives none."""
    return float(manifest.get("noise_level") or 0.0)


def check_io_shapes(path: Path, manifest: dict[str, Any], frames_shape: list[Any],
                    controls_shape: list[Any]) -> None:
    """Refuse a model whose input shapes disagree with the manifest (batch axis free)."""
    want_frames = [manifest["context_frames"], 3, manifest["height"], manifest["width"]]
    if list(frames_shape[1:]) != want_frames:
        raise BundleError(f"{path}: the model takes frames {frames_shape}, the manifest says "
                          f"(B, {', '.join(map(str, want_frames))}); the manifest does not "
                          f"belong to this model")
    if list(controls_shape[1:]) != [manifest["control_dim"]]:
        raise BundleError(f"{path}: the model takes controls {controls_shape}, the manifest says "
                          f"control_dim {manifest['control_dim']}; the manifest does not belong "
                          f"to this model")
