"""Atari 2600 games through ale-py (its wheel ships the ROMs)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from play.worlds import clip_controls, require
from recording.format import STICK_NAMES


class AtariWorld:
    """An Atari game in ale-py's continuous action mode.

    Left stick: the joystick, given to ALE as polar (radius, angle). ALE snaps
    it to 9 directions (8 and centre) at a 0.5 threshold per axis, so the stick
    is effectively digital. Right stick pushed past half way in any direction:
    fire.

    Args:
        game: ALE game name, e.g. ``Breakout``, ``Pong``, ``MsPacman``.
        frame_skip: Emulator frames per step (the console runs 60 frames/s).
        seed: First episode's seed; episode n uses ``seed + n``.
    """

    control_names = (*STICK_NAMES, "a")

    def __init__(self, game: str = "Breakout", frame_skip: int = 4, seed: int = 0) -> None:
        self.control_help = {"left_x": "joystick left/right (snapped at 0.5)",
                             "left_y": "joystick up/down (snapped at 0.5)",
                             "right_x": "fire when the right stick is pushed past 0.5",
                             "right_y": "fire when the right stick is pushed past 0.5",
                             "a": "fire"}
        gym = require("gymnasium", "envs", "gymnasium")
        ale_py = require("ale_py", "envs", "ale-py")
        gym.register_envs(ale_py)
        self.id = f"atari:{game}"
        self.fps = 60.0 / frame_skip
        try:
            self._env: Any = gym.make(f"ALE/{game}-v5", continuous=True, frameskip=frame_skip,
                                      repeat_action_probability=0.0)
        except gym.error.Error as err:
            raise ValueError(f"unknown Atari game {game!r} ({err})") from None
        self._seed = seed

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._seed = seed
        obs, _ = self._env.reset(seed=self._seed)
        self._seed += 1
        return np.ascontiguousarray(obs)

    def step(self, controls: np.ndarray) -> tuple[np.ndarray, bool]:
        lx, ly, rx, ry, a = clip_controls(controls, len(self.control_names))
        radius = min(1.0, math.hypot(lx, ly))
        theta = math.atan2(-ly, lx)  # ALE's y points up; a gamepad's points down
        fire = 1.0 if math.hypot(rx, ry) > 0.5 or a > 0.5 else 0.0
        obs, _, terminated, truncated, _ = self._env.step(
            np.array([radius, theta, fire], dtype=np.float32))
        return np.ascontiguousarray(obs), bool(terminated or truncated)

    def close(self) -> None:
        self._env.close()
