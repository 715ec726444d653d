"""How real does a dream look? A classifier two-sample test.

A small CNN, trained with a fixed recipe and seed, learns to tell real frames
from dream frames on one half of each, and is scored on the other half: its
held-out accuracy is the figure (50%: it cannot tell them apart; 100%: every
dream frame is plainly fake), with a 95% Wilson interval.

A classifier on raw pixels sees what no player does (a little sensor noise, a
JPEG's blocks), so both sides go through the same random degradation first:
Gaussian noise of a random level up to 6/255 and JPEG at a random quality from
40 to 95, drawn afresh for every image and every epoch. Differences a player
cannot see drown in it; blur, lost detail and speckle do not. Its tests
calibrate it on real held-out frames.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

NOISE_MAX = 6.0 / 255.0
JPEG_QUALITY = (40, 95)


@dataclass(frozen=True)
class Realism:
    """A two-sample test's result: the held-out accuracy and its 95% interval."""

    accuracy: float
    low: float
    high: float
    test_images: int  # held-out images scored, both sides together
    train_images: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{100 * self.accuracy:.0f}% ({100 * self.low:.0f}-{100 * self.high:.0f}%, "
                f"{self.test_images} held out)")


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n``."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def as_images(frames: np.ndarray) -> np.ndarray:
    """``(N, 3, H, W)`` float in [0, 1] or uint8 -> ``(N, H, W, 3)`` uint8."""
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        f = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(f.transpose(0, 2, 3, 1))


def degrade(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each ``(H, W, 3)`` uint8 image with Gaussian noise of a random level (up to
    ``NOISE_MAX``) and JPEG at a random quality in ``JPEG_QUALITY``; returns
    ``(N, 3, H, W)`` float32 in [0, 1]."""
    out = np.empty((len(images), 3, *images.shape[1:3]), np.float32)
    sigmas = rng.uniform(0.0, NOISE_MAX * 255.0, len(images))
    qualities = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, len(images))
    for i, image in enumerate(images):
        noisy = image.astype(np.float32) + rng.normal(0.0, sigmas[i], image.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8)).save(
            buf, format="JPEG", quality=int(qualities[i]))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0
    return out


def critic() -> nn.Module:
    """The classifier: four stride-2 convolutions, global average pooling, a logit."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (16, 32, 64, 64):
        layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.GroupNorm(8, width), nn.GELU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))


def two_sample_test(real: np.ndarray, fake: np.ndarray, seed: int = 0, epochs: int = 8,
                    batch: int = 64, lr: float = 2e-3, limit: int = 2000) -> Realism:
    """Train the critic on half of each side's frames, score it on the other half.

    Args:
        real, fake: ``(N, 3, H, W)`` frames, float in [0, 1] or uint8; the larger
            side is subsampled to the smaller (and both to ``limit``), so 50%
            means what it says.
        seed: Seeds the split, the degradations and the critic's weights.
    """
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake), limit)
    if n < 8:
        raise ValueError(f"a two-sample test needs at least 8 frames a side, got {n}")
    sides = [as_images(np.asarray(x)[np.sort(rng.choice(len(x), n, replace=False))])
             for x in (real, fake)]
    order = [rng.permutation(n) for _ in sides]
    half = n // 2
    train = [s[o[:half]] for s, o in zip(sides, order, strict=True)]
    test = [s[o[half:]] for s, o in zip(sides, order, strict=True)]
    torch.manual_seed(seed)
    model = critic()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    images = np.concatenate(train)
    labels = torch.cat([torch.zeros(half), torch.ones(half)])
    model.train()
    for _ in range(epochs):
        x = torch.from_numpy(degrade(images, rng))
        shuffled = torch.from_numpy(rng.permutation(len(images)))
        for start in range(0, len(shuffled), batch):
            idx = shuffled[start:start + batch]
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(x[idx]).squeeze(1), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for label, side in enumerate(test):
            logits = model(torch.from_numpy(degrade(side, rng))).squeeze(1)
            correct += int(((logits > 0) == bool(label)).sum())
    total = sum(len(s) for s in test)
    low, high = wilson(correct, total)
    return Realism(correct / total, low, high, total, 2 * half)
