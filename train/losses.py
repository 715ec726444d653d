"""Reconstruction losses, image metrics and the GAN losses.

All take frames ``(B, 3, H, W)`` in [0, 1] and compute in float32, also under
autocast (FFT and SSIM are not stable in half precision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.config import GanConfig, LossConfig


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel gradients per channel, ``(B, 2C, H, W)``."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                      device=x.device, dtype=x.dtype) / 4.0
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    C = x.shape[1]
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels.repeat(C, 1, 1, 1),
                   groups=C)  # (B, 2C, H, W)
    return out


def sobel_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between edge maps: penalises blurred or misplaced edges."""
    return (sobel(pred.float()) - sobel(target.float())).abs().mean()


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between 2-D FFT magnitudes: keeps high-frequency detail that L1 alone
    averages away."""
    p = torch.fft.rfft2(pred.float(), norm="ortho").abs()
    t = torch.fft.rfft2(target.float(), norm="ortho").abs()
    return (p - t).abs().mean()


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 7,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per sample, ``(B,)``, Gaussian window, data range 1."""
    pred, target = pred.float(), target.float()
    C = pred.shape[1]
    w = _gaussian_window(window, sigma, pred.device).expand(C, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=C)  # valid padding: no border artefacts

    c1, c2 = 0.01**2, 0.03**2
    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return s.flatten(1).mean(1)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim(pred, target).mean()


# The mean squared error of rounding to 8 bits, (1/255)^2 / 12: frames are stored
# as 8-bit images, so an error below it is a perfect frame. PSNR stops there
# (58.9 dB): the same frame again (copy-last while the game stands still) would
# otherwise score 100 dB and outweigh every other sample in a mean.
MSE_FLOOR = 1.0 / (12 * 255.0**2)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample in dB, ``(B,)``, data range 1, at
    most 58.9 dB (``MSE_FLOOR``: within 8-bit rounding is perfect)."""
    mse = (pred.float() - target.float()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def crps_loss(pred: torch.Tensor, other: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fair CRPS of a two-member ensemble, per pixel, averaged:
    ``(|a - y| + |b - y|) / 2 - |a - b| / 2``. A proper score: in expectation it
    is least when the members are drawn from the real next frame's distribution."""
    a, b, y = pred.float(), other.float(), target.float()
    return ((a - y).abs() + (b - y).abs() - (a - b).abs()).mean() / 2


def reconstruction_losses(pred: torch.Tensor, target: torch.Tensor, weights: LossConfig,
                          other: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each weighted term by name (only those with a weight), plus ``total``;
    ``other`` is a second draw of ``pred``, for the CRPS."""
    terms: dict[str, torch.Tensor] = {}
    if weights.crps:
        if other is None:
            raise ValueError("loss.crps needs two draws of the prediction: a model with "
                             "model.latent_dim > 0")
        terms["crps"] = crps_loss(pred, other, target)
    if weights.l1:
        terms["l1"] = (pred.float() - target.float()).abs().mean()
    if weights.mse:
        terms["mse"] = (pred.float() - target.float()).square().mean()
    if weights.sobel:
        terms["sobel"] = sobel_loss(pred, target)
    if weights.fft:
        terms["fft"] = fft_loss(pred, target)
    if weights.ssim:
        terms["ssim"] = ssim_loss(pred, target)
    if not terms:
        raise ValueError("every loss weight is 0: set at least one of loss.l1, loss.mse, "
                         "loss.sobel, loss.fft, loss.ssim, loss.crps")
    terms["total"] = sum((getattr(weights, k) * v for k, v in terms.items()),
                         torch.zeros((), device=pred.device))
    return terms


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                       context: torch.Tensor | None, controls: torch.Tensor | None,
                       config: GanConfig) -> torch.Tensor:
    """Binary cross-entropy with one-sided soft labels (real = ``real_label``) and a
    ``label_noise`` chance of flipping each label, which keeps the
    discriminator from winning outright early on."""
    def twice(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.cat([x, x])

    # One call on both halves: under DDP a module may run once per backward.
    logits_real, logits_fake = disc(torch.cat([real, fake.detach()]), twice(context),
                                    twice(controls)).chunk(2)
    real_t = torch.full_like(logits_real, config.real_label)
    fake_t = torch.zeros_like(logits_fake)
    if config.label_noise > 0:
        flip_r = torch.rand_like(real_t) < config.label_noise
        flip_f = torch.rand_like(fake_t) < config.label_noise
        real_t, fake_t = torch.where(flip_r, 0.0, real_t), torch.where(
            flip_f, config.real_label, fake_t)
    return 0.5 * (F.binary_cross_entropy_with_logits(logits_real.float(), real_t.float())
                  + F.binary_cross_entropy_with_logits(logits_fake.float(), fake_t.float()))


def generator_loss(disc: nn.Module, fake: torch.Tensor, context: torch.Tensor | None,
                   controls: torch.Tensor | None) -> torch.Tensor:
    logits = disc(fake, context, controls)
    return F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits.float()))
