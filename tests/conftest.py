"""Shared test settings. ``TINYDREAMS_TEST_DEVICE=cuda make test`` runs the same
tests on a GPU."""

from __future__ import annotations

import os

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
