"""Checkpoint -> bundle: ONNX and TorchScript, each checked against eager PyTorch."""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.bundle import (
    ONNX_FILE,
    START_FRAMES_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    file_entry,
    sha256_file,
)
from export.dream import Dream, Stepper
from export.manifest import BATCH_AXIS, MANIFEST, OUTPUTS, BundleError, Manifest
from export.model_manifest import manifest_for
from export.onnx_runtime import OnnxBackend
from export.torch_backends import (
    TorchBackend,
    TorchScriptBackend,
    start_frames_from_recording,
)
from models import WorldModel
from recording.format import read_meta

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4  # float32 backends vs eager, one step
DRIFT_ATOL = 1e-3  # after 16 autoregressive steps
# A codebook model's patches are an argmax over codes: where two codes' scores
# tie within float rounding (about 1e-6), backends may take either, so up to this
# share of its patches may differ (a tie is about 1 patch in 70,000; a broken
# export differs almost everywhere).
TIE_SHARE = 0.01


class ParityError(BundleError):
    """An exported model disagrees with eager PyTorch beyond the tolerance."""


def export_onnx(model: WorldModel, path: Path, example: tuple[torch.Tensor, ...]) -> str:
    """ONNX with a dynamic batch axis, checked by ``onnx.checker``; returns the
    exporter used. The dynamo exporter (opset 18+) first; the TorchScript-based
    one at opset 17 if it fails. ``example`` holds one tensor per input: frames,
    controls, and for a noise-conditioned model the noise levels."""
    import onnx

    inputs = manifest_for(model).inputs
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=4096)
    for chatty in ("onnx_ir", "onnxscript"):  # optimizer passes log every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # "torchvision is not installed. Skipping torchvision::nms": we do not use it.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    how = "dynamo"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            # One self-contained file: the bundle hashes and ships files, not folders.
            torch.onnx.export(exportable(model), example, str(path), dynamo=True,
                              input_names=list(inputs), output_names=list(OUTPUTS),
                              optimize=True, external_data=False,
                              dynamic_shapes=_dynamic_batch(inputs, batch))
        except Exception as err:  # the dynamo exporter fails in many ways; fall back
            log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter", err)
            how = "torchscript-opset17"
            axes = {name: {0: BATCH_AXIS} for name in (*inputs, *OUTPUTS)}
            torch.onnx.export(exportable(model), example, str(path), dynamo=False,
                              opset_version=17,
                              input_names=list(inputs), output_names=list(OUTPUTS),
                              dynamic_axes=axes)
    onnx.checker.check_model(str(path), full_check=True)
    return how


def _dynamic_batch(inputs: Sequence[str], batch: Any) -> dict[str, dict[int, Any]]:
    """Dynamic shapes by forward()'s argument names, which are the input names."""
    return {name: {0: batch} for name in inputs}


class _LatentOnly(nn.Module):
    """A latent model without noise conditioning, as ``(frames, controls, latent)``:
    the exporters take positional inputs, and the model's third is ``noise_level``."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, controls: torch.Tensor,
                latent: torch.Tensor) -> torch.Tensor:
        return self.model(frames, controls, None, latent)


def exportable(model: WorldModel) -> nn.Module:
    """The module whose positional inputs are the bundle's inputs, in order."""
    if model.config.latent_size and not model.config.noise_conditioning:
        return _LatentOnly(model).train(model.training)
    return model


def export_torchscript(model: WorldModel, path: Path, example: tuple[torch.Tensor, ...]) -> None:
    """Traced (the batch axis stays dynamic), frozen, saved."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # trace's deprecation and tracer warnings
        traced = torch.jit.trace(exportable(model), example)  # type: ignore[no-untyped-call]
        frozen = torch.jit.freeze(traced)
    frozen.save(str(path))


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def patch_diffs(a: np.ndarray, b: np.ndarray, patch: int) -> np.ndarray:
    """The max abs difference of each ``patch`` square of ``(B, 3, H, W)`` frames."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(axis=1)
    B, H, W = d.shape
    return d.reshape(B, H // patch, patch, W // patch, patch).max(axis=(2, 4))


def parity(eager: Stepper, other: Stepper, start: np.ndarray, seed: int = 0,
           batches: Sequence[int] = (1, 8), rollout_steps: int = 16,
           noise: bool = False) -> dict[str, float]:
    """Max abs difference to eager at each batch size, and after a rollout in
    which each backend dreams on from its own predictions. With ``noise``, the
    batches also carry random noise levels (the rollout uses the default). A
    model with a latent gets the same random latents in both backends.

    A ``codebook`` model's figures are the share of patches that differ (its
    argmax ties, ``TIE_SHARE``) and the max abs difference over the others;
    its rollout feeds both backends eager's frames, since after one tie two
    dreams may rightly go different ways."""
    rng = np.random.default_rng(seed)
    m = eager.manifest
    patch = m.codebook_patch
    diffs: dict[str, list[np.ndarray]] = {}

    def compare(key: str, a: np.ndarray, b: np.ndarray) -> None:
        diffs.setdefault(key, []).append(
            patch_diffs(a, b, patch) if patch else np.array(max_diff(a, b)))

    for b in batches:
        idx = rng.integers(0, len(start), b)
        frames = start[idx].astype(np.float32) / 255.0
        controls = rng.uniform(-1, 1, (b, m.control_dim)).astype(np.float32)
        level = rng.uniform(0, 0.3, b).astype(np.float32) if noise else None
        z = rng.standard_normal((b, m.latent_dim), dtype=np.float32) if m.latent_dim else None
        compare(f"batch{b}", eager.step(frames, controls, level, z),
                other.step(frames, controls, level, z))
    # The same seed draws both dreams the same fresh latent every step.
    ours, theirs = Dream.of(eager, "fresh", seed), Dream.of(other, "fresh", seed)
    ours.reset(start[0])
    theirs.reset(start[0])
    for _ in range(rollout_steps):
        controls = rng.uniform(-1, 1, m.control_dim).astype(np.float32)
        compare(f"rollout{rollout_steps}", ours.step(eager, controls)[None],
                theirs.step(other, controls)[None])
        if patch:
            theirs.window = ours.window
    out: dict[str, float] = {}
    for key, parts in diffs.items():
        d = np.concatenate([p.ravel() for p in parts])
        if patch:  # the patches that differ are ties; the others must agree
            tied = d > PARITY_ATOL
            out[f"{key}_tied_share"] = float(tied.mean())
            d = d[~tied] if (~tied).any() else np.zeros(1)
        out[f"{key}_max_abs"] = float(d.max())
    return out


def check_parity(name: str, figures: dict[str, float]) -> None:
    for key, value in figures.items():
        bound = (TIE_SHARE if key.endswith("_tied_share")
                 else DRIFT_ATOL if key.startswith("rollout") else PARITY_ATOL)
        if not value <= bound:
            raise ParityError(f"{name} disagrees with eager PyTorch: {key} = {value:.3g} > "
                              f"{bound:g}; the bundle is not usable (manifest not written)")


def export_bundle(checkpoint: str | Path, out: str | Path, recording: str | Path | None = None,
                  start_count: int = 8, use_ema: bool = True) -> Manifest:
    """Export a checkpoint to a bundle directory and return its manifest.

    The manifest is written last, after every parity check passed: a directory
    without one is not a bundle, so a failed or interrupted export is never
    mistaken for a good one.
    """
    from train.checkpoint import model_from_checkpoint, play_noise_level

    checkpoint, out = Path(checkpoint), Path(out)
    model, state = model_from_checkpoint(checkpoint, ema=use_ema)
    model.set_grad_checkpointing(False)
    c = model.config
    train_config = state["config"]
    recordings = [recording] if recording else [*train_config["data"]["recordings"],
                                                 *train_config["data"]["val_recordings"]]
    if not recordings:
        raise BundleError("no recording to take start frames from: pass --recording DIR")
    start = start_frames_from_recording(recordings[0], c.context_frames, (c.height, c.width),
                                        start_count)
    meta = read_meta(Path(recordings[0]))
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    np.save(out / START_FRAMES_FILE, start)
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    example: tuple[torch.Tensor, ...] = (
        torch.from_numpy(start[:2].astype(np.float32) / 255.0), torch.zeros(2, c.control_dim))
    if c.noise_conditioning:
        example = (*example, torch.full((2,), 0.05))
    if c.latent_size:
        example = (*example, torch.randn(2, c.latent_size))
    exporter = export_onnx(model, out / ONNX_FILE, example)
    export_torchscript(model, out / TORCHSCRIPT_FILE, example)

    files = {name: file_entry(out / name) for name in (ONNX_FILE, TORCHSCRIPT_FILE,
                                                        WEIGHTS_FILE, START_FRAMES_FILE)}
    manifest = manifest_for(
        model, control_names=meta.get("control_names"), fps=meta.get("fps"),
        world=meta.get("world"), noise_level=play_noise_level(state) or 0.0, files=files,
        weights="ema" if use_ema and state.get("ema") is not None else "raw",
        checkpoint={"path": str(checkpoint), "step": state["step"],
                    "sha256": sha256_file(checkpoint)},
        versions=_versions(exporter))
    manifest = manifest.replace(io={"inputs": list(manifest.inputs), "outputs": list(OUTPUTS),
                                    "batch_axis": BATCH_AXIS})
    manifest.write(out)  # for the loaders; written again with the parity figures
    try:
        eager = TorchBackend(model, manifest, "cpu", autocast=False)
        noise = c.noise_conditioning
        figures = {"onnxruntime": parity(eager, OnnxBackend(out, "cpu"), start, noise=noise),
                   "torchscript": parity(eager, TorchScriptBackend(out, "cpu"), start,
                                         noise=noise)}
        for name, f in figures.items():
            check_parity(name, f)
    except BaseException:
        (out / MANIFEST).unlink(missing_ok=True)
        raise
    results: dict[str, Any] = {"reference": "eager float32, cpu", "one_step_atol": PARITY_ATOL,
                               "rollout_atol": DRIFT_ATOL, **figures}
    if c.output_mode == "codebook":
        results["tie_share"] = TIE_SHARE
    manifest = manifest.replace(parity=results)
    manifest.write(out)
    return manifest


def _versions(exporter: str) -> dict[str, str]:
    import onnx

    versions = {"torch": str(torch.__version__), "onnx": onnx.__version__,
                "python": platform.python_version(), "onnx_exporter": exporter}
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    return versions
