from __future__ import annotations

import numpy as np

from play.policies import WanderPolicy


def run(seed: int, steps: int = 4000) -> np.ndarray:
    policy = WanderPolicy(seed=seed)
    return np.stack([policy.act() for _ in range(steps)])


def test_wander_is_seeded() -> None:
    np.testing.assert_array_equal(run(1, 200), run(1, 200))
    assert not np.array_equal(run(1, 200), run(2, 200))


def test_wander_covers_the_stick_range_smoothly() -> None:
    sticks = run(0)
    assert sticks.min() >= -1.0
    assert sticks.max() <= 1.0
    for axis in range(4):
        counts, _ = np.histogram(sticks[:, axis], bins=10, range=(-1, 1))
        assert (counts / len(sticks) >= 0.02).all(), f"axis {axis} misses part of the range"
        assert (np.abs(sticks[:, axis]) > 0.95).mean() > 0.05  # full deflection, held
        assert (np.abs(sticks[:, axis]) < 0.05).mean() > 0.05  # released
    # smooth: most steps move a stick a little, not a jump across the range
    assert np.median(np.abs(np.diff(sticks, axis=0))) < 0.15
