from __future__ import annotations

import pytest
import torch

from models import WorldModel
from tests.models.helpers import baby_config
from train.config import LossConfig
from train.losses import psnr, reconstruction_losses, sobel, ssim


def test_metrics_on_known_images() -> None:
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    assert (psnr(x, x) > 90).all()
    assert psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).item() == pytest.approx(20)
    assert sobel(torch.full((1, 3, 8, 8), 0.5)).abs().max() == 0
    assert ssim(x, torch.rand(2, 3, 16, 16)).max() < 0.5


@pytest.mark.parametrize("term", ["l1", "sobel", "fft", "ssim"])
def test_each_loss_is_finite_and_decreases_on_a_tiny_overfit_set(term: str) -> None:
    torch.manual_seed(0)
    config = baby_config(height=16, width=16)
    model = WorldModel(config)
    frames = torch.rand(4, 1, 3, 16, 16)
    controls = torch.rand(4, 4) * 2 - 1
    target = 1.0 - frames[:, 0]  # a mapping a small model can learn in a few steps
    weights = LossConfig(**{"l1": 0.0, term: 1.0})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(40):
        terms = reconstruction_losses(model(frames, controls), target, weights)
        assert set(terms) == {term, "total"}
        assert torch.isfinite(terms["total"])
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        values.append(terms[term].item())
    assert values[-1] < 0.9 * values[0], values


def test_all_zero_weights_are_refused() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="every loss weight is 0"):
        reconstruction_losses(x, x, LossConfig(l1=0.0))
