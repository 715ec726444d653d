"""The human policy under SDL's dummy video driver, fed injected events."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame", reason="needs the play extra: pip install -e '.[play]'")

from play.human import HumanPolicy  # noqa: E402
from play.policies import StopRecording  # noqa: E402
from play.record import record  # noqa: E402
from recording.format import read_recording  # noqa: E402


def axis(instance_id: int, number: int, value: float) -> Any:
    return pygame.event.Event(pygame.JOYAXISMOTION, instance_id=instance_id, joy=instance_id,
                              axis=number, value=value)


def key(kind: int, k: int) -> Any:
    return pygame.event.Event(kind, key=k, mod=0, unicode="", scancode=0)


class Scripted(HumanPolicy):
    """Posts the events scheduled for each step just before the real act()."""

    def __init__(self, script: dict[int, list[Any]], names: tuple[str, ...]) -> None:
        super().__init__(names, fps=0, dead_zone=0.0)
        self.script = script

    def act(self, frame: np.ndarray) -> np.ndarray:
        for event in self.script.get(self.steps, []):
            pygame.event.post(event)
        return super().act(frame)


def test_recorded_controls_match_injected_gamepad_and_keys(tmp_path: Path) -> None:
    pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")
    from play.worlds import make_world

    script = {
        0: [axis(0, 0, 0.75), axis(0, 1, -0.5)],
        3: [axis(0, 2, -1.0), axis(0, 3, 0.25)],
        5: [key(pygame.KEYDOWN, pygame.K_d), key(pygame.KEYDOWN, pygame.K_SPACE)],
        7: [key(pygame.KEYUP, pygame.K_d), axis(0, 0, 0.0), key(pygame.KEYUP, pygame.K_SPACE)],
        9: [pygame.event.Event(pygame.QUIT)],
    }
    # doom:basic can shoot: its fifth control, the right trigger (space on the keyboard).
    expected = {
        0: [0.75, -0.5, 0, 0, 0], 3: [0.75, -0.5, -1.0, 0.25, 0],
        5: [1.0, -0.5, -1.0, 0.25, 1.0],  # keyboard wins while held
        7: [0.0, -0.5, -1.0, 0.25, 0],
    }
    world = make_world("doom:basic")
    assert world.control_names == ("left_x", "left_y", "right_x", "right_y", "right_trigger")
    policy = Scripted(script, world.control_names)
    try:
        stats = record(world, policy, tmp_path, 100, size=(32, 32))
    finally:
        world.close()
        policy.close()
    assert stats.steps == 9
    assert "closed" in stats.stopped
    rec = read_recording(tmp_path)
    recorded = rec.controls()[1:]  # line i+1 holds the sticks applied at step i
    want = []
    for step in range(9):
        want.append(expected[max(k for k in expected if k <= step)])
    np.testing.assert_allclose(recorded, np.array(want, np.float32), atol=1e-6)


def test_window_shows_the_frame() -> None:
    policy = HumanPolicy(("left_x", "left_y", "right_x", "right_y"), fps=0, scale=2)
    try:
        frame = np.zeros((16, 16, 3), np.uint8)
        frame[:, :8] = (255, 0, 0)
        policy.act(frame)
        screen = pygame.display.get_surface()
        assert screen.get_size() == (32, 32)
        assert tuple(screen.get_at((2, 30)))[:3] == (255, 0, 0)
        assert tuple(screen.get_at((30, 30)))[:3] == (0, 0, 0)
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))
        with pytest.raises(StopRecording):
            policy.act(frame)
    finally:
        policy.close()
