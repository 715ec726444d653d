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


def test_wander_rests_every_stick_at_once_for_a_share_of_the_steps() -> None:
    sticks = run(0, 20000)
    resting = np.abs(sticks).max(axis=1) < 0.05
    assert 0.07 < resting.mean() < 0.13  # rest=0.1: the last steps of each release, then still
    still = np.abs(sticks).max(axis=1) == 0.0
    assert still.mean() > 0.05  # not near the centre but at it: the game stands still
    # In runs: rests last up to 40 steps, never the whole recording.
    edges = np.flatnonzero(np.diff(resting.astype(int)))
    runs = np.diff(edges)[resting[edges[:-1] + 1]]
    assert runs.max() <= 40
    assert np.median(runs) >= 10
    never = WanderPolicy(seed=0, rest=0.0)
    assert (np.abs(np.stack([never.act() for _ in range(4000)])).max(axis=1) < 0.05).mean() < 0.02
