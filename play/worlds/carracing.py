"""CarRacing from gymnasium's box2d environments."""

from __future__ import annotations

from typing import Any

import numpy as np

from play.worlds import clip_controls, require
from recording.format import STICK_NAMES, TRIGGER_NAMES


class CarRacingWorld:
    """CarRacing-v3 with continuous actions, each applied for ``action_repeat`` frames.

    Left stick: x steers, y is gas (up) or brake (down); the right trigger is gas
    and the left trigger brake too (the stronger of stick and trigger wins). The
    right stick is unused.
    Box2D physics costs about 10 ms a frame, so with the default repeat of 4 it
    records about 25 steps/s: good for small recordings.
    """

    control_names = (*STICK_NAMES, *TRIGGER_NAMES)

    def __init__(self, action_repeat: int = 4, seed: int = 0,
                 frame_skip: int | None = None) -> None:
        self.control_help = {"left_x": "steer", "left_y": "gas (up) / brake (down)",
                             "right_x": "unused", "right_y": "unused",
                             "left_trigger": "brake", "right_trigger": "gas"}
        gym = require("gymnasium", "envs", "gymnasium[box2d]")
        require("Box2D", "envs", "gymnasium[box2d]")
        self.id = "carracing"
        self.action_repeat = frame_skip or action_repeat
        self.fps = 50.0 / self.action_repeat
        self._env: Any = gym.make("CarRacing-v3", continuous=True)
        self._seed = seed
        self._frame = np.zeros((96, 96, 3), np.uint8)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._seed = seed
        obs, _ = self._env.reset(seed=self._seed)
        self._seed += 1
        self._frame = np.ascontiguousarray(obs)
        return self._frame

    def step(self, controls: np.ndarray) -> tuple[np.ndarray, bool]:
        lx, ly, _, _, brake, gas = clip_controls(controls, len(self.control_names))
        action = np.array([lx, max(0.0, -ly, gas), 0.8 * max(0.0, ly, brake)],
                          dtype=np.float32)
        done = False
        for _ in range(self.action_repeat):
            obs, _, terminated, truncated, _ = self._env.step(action)
            self._frame = np.ascontiguousarray(obs)
            done = bool(terminated or truncated)
            if done:
                break
        return self._frame, done

    def close(self) -> None:
        self._env.close()
