"""The realism figure judges what a player sees: calibrated on real held-out
Doom frames, it cannot tell invisible changes from the game and tells visible
ones almost every time."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from train.realism import as_images, two_sample_test, wilson

FRAMES = 800  # a side: 400 held out each, so an accuracy's 95% interval is about +-3.5 points


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """Two random halves of a real Doom recording, ``(N, 3, 64, 64)`` uint8."""
    pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")
    from play.policies import WanderPolicy
    from play.record import record
    from play.worlds import make_world
    from train.data import load_frames

    out = tmp_path_factory.mktemp("realism") / "rec"
    world = make_world("doom:health_gathering")
    try:
        record(world, WanderPolicy(len(world.control_names), seed=5), out, 2 * FRAMES + 100,
               size=(64, 64), seed=500)
    finally:
        world.close()
    frames = np.asarray(load_frames(out, (64, 64)).frames)
    order = np.random.default_rng(0).permutation(len(frames))
    return frames[order[:FRAMES]], frames[order[FRAMES:2 * FRAMES]]


def jpeg(frames: np.ndarray, quality: int) -> np.ndarray:
    out = []
    for image in as_images(frames):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as decoded:
            out.append(np.asarray(decoded.convert("RGB")).transpose(2, 0, 1))
    return np.stack(out)


def noise(frames: np.ndarray, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.clip(frames + rng.normal(0.0, sigma, frames.shape), 0, 255).round().astype(np.uint8)


def blur(frames: np.ndarray) -> np.ndarray:
    """A 5-tap binomial blur along each axis."""
    k = np.array([1, 4, 6, 4, 1], np.float32) / 16
    out = frames.astype(np.float32)
    for axis in (2, 3):
        padded = np.pad(out, [(0, 0)] * axis + [(2, 2)] + [(0, 0)] * (3 - axis), mode="edge")
        out = sum(k[i] * np.take(padded, range(i, i + out.shape[axis]), axis=axis)
                  for i in range(5))
    return np.asarray(out).round().astype(np.uint8)


def down_up(frames: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR)
                                .resize((64, 64), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
                     for im in as_images(frames)])


def speckle(frames: np.ndarray) -> np.ndarray:
    """Each 4x4 patch shifted by its own random colour, as a patch-drawn dream's are."""
    rng = np.random.default_rng(2)
    n, _, h, w = frames.shape
    shift = rng.normal(0.0, 12.0, (n, 3, h // 4, w // 4)).repeat(4, axis=2).repeat(4, axis=3)
    return np.clip(frames + shift, 0, 255).round().astype(np.uint8)


CHANGES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float, float]] = {
    # name: (change, lowest accuracy allowed, highest)
    "another half of the game": (lambda f: f, 0.45, 0.55),
    "JPEG at quality 75": (lambda f: jpeg(f, 75), 0.0, 0.65),
    "Gaussian noise of 3/255": (lambda f: noise(f, 3.0), 0.0, 0.65),
    "a 5-tap binomial blur": (blur, 0.90, 1.0),
    "scaled down 2x and back up": (down_up, 0.90, 1.0),
    "4x4 patch-wise speckle": (speckle, 0.90, 1.0),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_the_realism_figure_sees_what_a_player_sees(
        halves: tuple[np.ndarray, np.ndarray], change: str) -> None:
    real, other = halves
    make, low, high = CHANGES[change]
    result = two_sample_test(real, make(other), seed=0)
    assert result.test_images == FRAMES
    assert low <= result.accuracy <= high, f"{change}: {result.summary()}"


def test_the_interval_is_wilsons() -> None:
    low, high = wilson(80, 100)
    assert (round(low, 3), round(high, 3)) == (0.711, 0.867)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 8 frames"):
        two_sample_test(np.zeros((4, 3, 8, 8)), np.zeros((4, 3, 8, 8)))
