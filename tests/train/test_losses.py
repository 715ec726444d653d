from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import WorldModel
from tests.models.helpers import baby_config
from train.config import LossConfig
from train.losses import crps_loss, psnr, reconstruction_losses, sobel, ssim


def test_metrics_on_known_images() -> None:
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    # A perfect frame scores the PSNR of 8-bit rounding noise, not an arbitrary 100 dB.
    assert psnr(x, x).tolist() == pytest.approx([10 * math.log10(12 * 255**2)] * len(x))
    assert psnr(x, x)[0].item() == pytest.approx(58.92, abs=0.01)
    assert psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).item() == pytest.approx(20)
    assert sobel(torch.full((1, 3, 8, 8), 0.5)).abs().max() == 0
    assert ssim(x, torch.rand(2, 3, 16, 16)).max() < 0.5


@pytest.mark.parametrize("term", ["l1", "mse", "sobel", "fft", "ssim"])
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


def test_the_crps_rewards_sharp_draws_over_the_blurred_median() -> None:
    """Each 4x4 patch of the real frame is white with chance 0.3, else black. L1
    scores a blank black frame (the median) best; the CRPS is proper: two sharp
    draws of the same kind score better than the blank frame, and better than
    draws that are sharp but of the wrong kind (half the contrast)."""
    g = torch.Generator().manual_seed(0)

    def texture(n: int, level: float = 1.0) -> torch.Tensor:
        coin = (torch.rand(n, 1, 16, 16, generator=g) < 0.3).float()
        return F.interpolate(coin, scale_factor=4.0).expand(-1, 3, -1, -1) * level

    real = texture(64)
    blank = torch.zeros_like(real)
    assert (blank - real).abs().mean() < 0.8 * (texture(64) - real).abs().mean()  # L1's pick
    sharp = crps_loss(texture(64), texture(64), real)
    blurred = crps_loss(blank, blank, real)
    wrong = crps_loss(texture(64, 0.5), texture(64, 0.5), real)
    assert sharp < 0.8 * blurred, (sharp, blurred)
    assert sharp < wrong, (sharp, wrong)
    same = crps_loss(real, real, real)
    assert same.item() == pytest.approx(0.0, abs=1e-3)


def test_the_crps_needs_a_second_draw() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="two draws"):
        reconstruction_losses(x, x, LossConfig(l1=0.0, crps=1.0))
