"""Shared test settings. ``TINYDREAMS_TEST_DEVICE=cuda make test`` runs the same
tests on a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DEVICE = os.environ.get("TINYDREAMS_TEST_DEVICE", "cpu")


@pytest.fixture
def device() -> torch.device:
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"TINYDREAMS_TEST_DEVICE={DEVICE} but torch sees no CUDA device")
    return torch.device(DEVICE)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def baby_bundle(root: Path, buttons: bool = False, **overrides: object) -> Path:
    """A real (baby) model trained two steps on a moving-square recording and
    exported: the bundle directory."""
    pytest.importorskip("onnxruntime", reason="needs the export extra")
    from export.exporter import export_bundle
    from tests.train.helpers import baby_config, moving_square_recording
    from train.loop import fit

    rec = moving_square_recording(root / "rec", buttons=buttons)
    fit(baby_config(rec, steps=2, **overrides), root / "run")
    export_bundle(root / "run" / "latest.pt", root / "bundle")
    return root / "bundle"


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """K = 3 context frames and noise conditioning, so every serve and play test
    runs rolling windows and the extra noise_level input."""
    return baby_bundle(tmp_path_factory.mktemp("serve-bundle"), **{
        "model.context_frames": 3, "model.noise_conditioning": True, "noise.max_level": 0.1,
        "noise.play_level": 0.02})


@pytest.fixture(scope="session")
def pad_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Controls: the sticks, the right trigger and A (``tests.train.helpers.PAD_NAMES``)."""
    return baby_bundle(tmp_path_factory.mktemp("pad-bundle"), buttons=True,
                       **{"model.control_dim": 6})


@pytest.fixture(scope="session")
def latent_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a latent (trained with the CRPS): K = 2 context frames, the
    latent its last input."""
    return baby_bundle(tmp_path_factory.mktemp("latent-bundle"), **{
        "model.context_frames": 2, "model.latent_dim": 4, "loss.crps": 1.0})


@pytest.fixture(scope="session")
def codebook_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sampling codebook model with grain and a view the sticks move: its
    latent input is the noise its codes are drawn with, then its grain's, moved
    with the view and half of it redrawn a step at full stick."""
    return baby_bundle(tmp_path_factory.mktemp("codebook-bundle"), **{
        "model.output_mode": "codebook", "model.codebook_size": 8, "model.codebook_patch": 2,
        "model.codebook_refresh": 0.5, "model.codebook_temperature": 1.0,
        "model.codebook_grain": True, "model.stick_view": True})
