"""The bundle: a directory holding the exported model and what a player needs.

::

    manifest.json      the model's config, frame size, context, controls, fps, latent,
                       parity figures, checkpoint step and SHA-256, tool versions,
                       each file's size and SHA-256 (``export.manifest.Manifest``)
    model.onnx         float32, dynamic batch axis
    model.ts           TorchScript (traced, frozen)
    weights.pt         the state dict (EMA weights when the checkpoint has them)
    start_frames.npy   (S, K, 3, H, W) uint8 contexts to start a dream from

Only numpy and the standard library here, so an ONNX-only player can read it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import BundleError, Manifest

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.ts"
WEIGHTS_FILE = "weights.pt"
START_FRAMES_FILE = "start_frames.npy"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def verify_file(bundle: str | Path, name: str, manifest: Manifest) -> Path:
    """The path of a bundle file whose size and SHA-256 match the manifest."""
    path = Path(bundle) / name
    expected = manifest.files.get(name)
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


def load_start_frames(bundle: str | Path, manifest: Manifest) -> np.ndarray:
    """``(S, K, 3, H, W)`` uint8 start contexts, checked against the manifest."""
    path = verify_file(bundle, START_FRAMES_FILE, manifest)
    frames = np.load(path)
    want = manifest.frame_shape
    if frames.ndim != 5 or frames.shape[1:] != want or frames.dtype != np.uint8:
        raise BundleError(f"{path}: start frames are {frames.shape} {frames.dtype}, the manifest "
                          f"says (S, {', '.join(map(str, want))}) uint8")
    return frames


def check_io_shapes(path: Path, manifest: Manifest, frames_shape: list[Any],
                    controls_shape: list[Any]) -> None:
    """Refuse a model whose input shapes disagree with the manifest (batch axis free)."""
    want_frames = list(manifest.frame_shape)
    if list(frames_shape[1:]) != want_frames:
        raise BundleError(f"{path}: the model takes frames {frames_shape}, the manifest says "
                          f"(B, {', '.join(map(str, want_frames))}); the manifest does not "
                          f"belong to this model")
    if list(controls_shape[1:]) != [manifest.control_dim]:
        raise BundleError(f"{path}: the model takes controls {controls_shape}, the manifest says "
                          f"control_dim {manifest.control_dim}; the manifest does not belong "
                          f"to this model")
