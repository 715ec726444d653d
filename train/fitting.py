"""Fitting the parts of a new model that come from the recording rather than
from gradients: a ``codebook`` model's codebook (and its grain), and a
``stick_view`` model's map from the sticks to how the view moves."""

from __future__ import annotations

import logging

import numpy as np
import torch

from models import WorldModel
from models.codebook import code_spread, kmeans, nearest_code, patchify, unpatchify
from models.config import FLOW_PIXELS, WorldModelConfig
from train.data import TransitionSet, evenly_spaced
from train.drift import detail_energy
from train.sticks import best_shift

log = logging.getLogger(__name__)


def fit_model_parts(models: list[WorldModel], data: TransitionSet, config: WorldModelConfig,
                    seed: int) -> None:
    """Fit what a new model takes from ``data`` into each of ``models`` (the
    model, and its EMA copy when it has one): the codebook, the view map."""
    device = next(models[0].parameters()).device
    if config.output_mode == "codebook":
        book, spread = fit_codebook(data, config, seed)
        for target in models:
            target.set_codebook(book.to(device), None if spread is None else spread.to(device))
    if config.stick_view:
        weight, bias = fit_view_motion(data)
        for target in models:
            assert target.view_motion is not None
            with torch.no_grad():
                target.view_motion.weight[:2] = torch.from_numpy(weight).float()
                target.view_motion.bias[:2] = torch.from_numpy(bias).float()


def fit_view_motion(data: TransitionSet, pairs: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``stick_view``'s start: the least-squares map from the sticks to the
    whole-frame shift (``best_shift``, pixels x and y) between about ``pairs``
    consecutive training frames, as ``(2, control_dim)`` weights and ``(2,)``
    biases in the model's raw units (``FLOW_PIXELS`` pixels)."""
    each = max(1, pairs // len(data.parts))
    firsts, seconds, sticks = [], [], []
    for part, rows in data.parts:
        chosen = rows[evenly_spaced(len(rows), each)]
        firsts.append(np.asarray(part.frames[chosen[:, -2]]))
        seconds.append(np.asarray(part.frames[chosen[:, -1]]))
        sticks.append(part.controls[chosen[:, -1]])
    shifts = best_shift(np.concatenate(firsts) / 255.0, np.concatenate(seconds) / 255.0)
    x = np.concatenate(sticks)
    design = np.concatenate([x, np.ones((len(x), 1))], 1)
    fit = np.linalg.lstsq(design, shifts, rcond=None)[0] / FLOW_PIXELS  # (C + 1, 2)
    log.info("the picture shifts %s pixels left and %s up a step per unit of each stick",
             "/".join(f"{v:+.1f}" for v in fit[:-1, 0] * FLOW_PIXELS),
             "/".join(f"{v:+.1f}" for v in fit[:-1, 1] * FLOW_PIXELS))
    return fit[:-1].T, fit[-1]


def fit_codebook(data: TransitionSet, config: WorldModelConfig, seed: int,
                 frames: int = 600) -> tuple[torch.Tensor, torch.Tensor | None]:
    """k-means centres of the patches of about ``frames`` frames spread evenly
    over the training recordings: the ``codebook`` output mode's patches; and
    with ``codebook_grain``, each centre's grain (``grain_spread``), else None."""
    each = max(1, frames // len(data.parts))
    picked = []
    for part, _ in data.parts:
        good = np.flatnonzero(~part.bad)  # not the images that failed to decode
        picked.append(np.asarray(part.frames[good[evenly_spaced(len(good), each)]]))
    images = torch.from_numpy(np.concatenate(picked)).float() / 255.0
    patches = patchify(images, config.codebook_patch).reshape(-1, 3 * config.codebook_patch ** 2)
    log.info("fitting a codebook of %d patches to %d frames", config.codebook_size, len(images))
    generator = torch.Generator().manual_seed(seed)
    centres = kmeans(patches, config.codebook_size, generator=generator)
    if not config.codebook_grain:
        return centres, None
    return centres, grain_spread(images, patches, centres, config.codebook_patch, generator)


def grain_spread(images: torch.Tensor, patches: torch.Tensor, centres: torch.Tensor,
                 patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each centre's per-pixel spread (``code_spread``) times the one factor that
    gives ``images`` (N, 3, H, W), painted with their nearest codes and that grain,
    the fine detail (``detail_energy``) they have: Gaussian grain is finer than a
    game's texture, so the spread itself would overshoot it."""
    spread = code_spread(patches, centres)
    sample = images[evenly_spaced(len(images), min(len(images), 200))]
    codes = nearest_code(patchify(sample, patch), centres)
    flat, noise = centres[codes], spread[codes] * torch.randn(
        codes.shape + centres.shape[1:], generator=generator)
    want = float(detail_energy(sample.numpy()).mean())

    def detail(scale: float) -> float:
        painted = unpatchify((flat + scale * noise).clamp(0.0, 1.0), patch)
        return float(detail_energy(painted.numpy()).mean())

    low, high = 0.0, 2.0
    if detail(low) >= want:  # the codes alone keep all the detail: no grain
        return torch.zeros_like(spread)
    for _ in range(20):  # detail grows with the scale: bisect
        mid = (low + high) / 2
        low, high = (mid, high) if detail(mid) < want else (low, mid)
    scale = (low + high) / 2
    log.info("codebook grain: %.2f of each code's spread keeps the frames' fine detail", scale)
    return spread * scale
