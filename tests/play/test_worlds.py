"""The real environments, driven through the world adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from play.worlds import make_world

pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")
pytest.importorskip("gymnasium", reason="needs the envs extra: pip install -e '.[envs]'")

# Each world with a stick pair that has a visible, opposite effect there.
CASES = [
    ("doom:basic", [0, 0, -1, 0], [0, 0, 1, 0]),              # turn left / right
    ("doom:health_gathering", [-1, 0, 0, 0], [1, 0, 0, 0]),   # strafe left / right
    ("doom:deathmatch", [0, -1, 0, 0], [0, 1, 0, 0]),         # forward / back
    ("carracing", [-1, -1, 0, 0], [1, -1, 0, 0]),             # gas, steer left / right
    ("atari:Breakout", [-1, 0, 0, 0], [1, 0, 0, 0]),          # paddle left / right
    # Triggers and buttons: the controls past the sticks.
    ("doom:defend_the_center", [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]),  # hold fire or not
    ("carracing", [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0]),          # right trigger gas / brake
]


def rollout(world_id: str, controls: list[float], steps: int, seed: int = 7) -> list[np.ndarray]:
    world = make_world(world_id)
    try:
        frames = [world.reset(seed=seed)]
        given = np.zeros(len(world.control_names))  # controls not named: at rest
        given[:len(controls)] = controls
        for _ in range(steps):
            frame, done = world.step(given)
            assert not done
            frames.append(frame.copy())
        return frames
    finally:
        world.close()


@pytest.mark.parametrize(("world_id", "one_way", "other_way"), CASES)
def test_sticks_move_the_world_and_opposite_sticks_differ(
        world_id: str, one_way: list[float], other_way: list[float]) -> None:
    steps = 30 if world_id == "carracing" else 8  # CarRacing zooms in for ~50 frames first
    a = rollout(world_id, one_way, steps)
    b = rollout(world_id, other_way, steps)
    assert a[0].dtype == np.uint8
    assert a[0].ndim == 3
    assert a[0].shape[2] == 3
    moved = np.abs(a[-1].astype(int) - a[0].astype(int)).mean()
    apart = np.abs(a[-1].astype(int) - b[-1].astype(int)).mean()
    assert moved > 0.1, f"{world_id}: frames did not change under {one_way}"
    assert apart > 0.1, f"{world_id}: {one_way} and {other_way} gave the same frame"


@pytest.mark.parametrize("world_id", ["doom:health_gathering", "carracing", "atari:Breakout"])
def test_same_seed_gives_the_same_frames(world_id: str) -> None:
    sticks = [0.5, -0.7, 0.3, 0.2]
    a = rollout(world_id, sticks, 5, seed=11)
    b = rollout(world_id, sticks, 5, seed=11)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_doom_reset_with_a_seed_replays_the_episode_on_one_instance() -> None:
    world = make_world("doom:health_gathering")
    try:
        runs = []
        for _ in range(2):
            frames = [world.reset(seed=5)]
            frames += [world.step(np.array([0.3, -1, 0.5, 0]))[0].copy() for _ in range(5)]
            runs.append(frames)
    finally:
        world.close()
    for x, y in zip(*runs, strict=True):
        np.testing.assert_array_equal(x, y)


def test_doom_episode_ends_and_reports_done() -> None:
    world = make_world("doom:basic", frame_skip=8)  # basic times out after 300 tics
    try:
        world.reset(seed=1)
        done, steps = False, 0
        while not done and steps < 100:
            _, done = world.step(np.zeros(len(world.control_names)))
            steps += 1
        assert done
        assert steps <= 300 // 8 + 1
    finally:
        world.close()


def test_unknown_worlds_and_scenarios_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown world 'quake'"):
        make_world("quake")
    with pytest.raises(ValueError, match=r"unknown Doom scenario 'nope'.*health_gathering"):
        make_world("doom:nope")


@pytest.mark.parametrize("world_id", ["doom:basic", "carracing", "atari:Breakout"])
def test_each_world_records_a_short_episode(world_id: str, tmp_path: Path) -> None:
    from play.policies import WanderPolicy
    from play.record import record
    from recording.format import read_recording

    world = make_world(world_id)
    try:
        policy = WanderPolicy(len(world.control_names), seed=0)
        stats = record(world, policy, tmp_path, 12, size=(32, 48), seed=0)
    finally:
        world.close()
    rec = read_recording(tmp_path, check_images="decode")
    assert stats.steps == 12
    assert rec.skipped == []
    assert len(rec.entries) == stats.frames == 13
    assert rec.meta["world"] == world_id
    assert (rec.meta["width"], rec.meta["height"]) == (48, 32)
    assert len(rec.transitions(1)) == 12
