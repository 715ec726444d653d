"""Who moves the sticks while recording: a person, a seeded random wanderer, or
another recording."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from recording.format import read_recording


class StopRecording(Exception):
    """Raised by a policy that has nothing more to give (window closed, replay done)."""


class Policy(Protocol):
    def reset(self, seed: int | None = None) -> None: ...

    def act(self, frame: np.ndarray) -> np.ndarray:
        """The stick values ``(4,)`` in [-1, 1] to apply next, having seen ``frame``."""
        ...


class WanderPolicy:
    """Smooth random sticks that cover the whole stick space, seeded.

    Each axis runs its own little program of segments, each 5-40 steps long:
    a mean-reverting random walk (Ornstein-Uhlenbeck) around a random level, a
    hold at a random level or at full deflection, a release back to centre, or a
    full-range sweep from one end to the other. Holds and sweeps reach the
    extremes a pure random walk rarely visits, so a model sees every part of
    the stick range and long straight runs as well as jitter.

    Now and then every stick lets go at once and rests at the centre for 8-40
    steps, as a player's hands do: with four independent axes a full rest
    would almost never happen, and a model that never saw the game stand still
    does not learn to stand still.

    Controls past the four sticks (triggers, buttons) are pressed now and then:
    each press starts on ``press`` of the steps and lasts 1-8 steps, fully down,
    never while resting. They draw from a random stream of their own, so the
    sticks wander the same with or without them.

    Args:
        control_dim: Number of controls: the stick axes (up to four), then presses.
        seed: Seed of the random programme.
        rest: The share of steps spent resting (0: never).
        press: The share of steps on which each press control starts a press.
    """

    MODES = ("walk", "hold", "release", "sweep")
    MODE_P = (0.45, 0.25, 0.15, 0.15)
    REST_STEPS = (8, 40)  # a rest's length, uniform (both ends included)

    PRESS_STEPS = (1, 8)

    def __init__(self, control_dim: int = 4, seed: int = 0, rest: float = 0.1,
                 press: float = 0.04) -> None:
        if not 0.0 <= rest < 1.0:
            raise ValueError(f"rest must be in [0, 1), got {rest}")
        self.control_dim = min(control_dim, 4)  # the wandering stick axes
        self.presses = control_dim - self.control_dim
        self.press = press
        mean = sum(self.REST_STEPS) / 2
        self._rest_p = rest / (mean * (1.0 - rest))  # a rest starts on this share of steps
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None or not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(seed)
            self._press_rng = np.random.default_rng(None if seed is None else [seed, 1])
        self._held = np.zeros(self.presses, dtype=np.int64)  # steps each press has left
        n = self.control_dim
        self.value = np.zeros(n)
        self._mode = ["release"] * n
        self._left = np.zeros(n, dtype=np.int64)
        self._target = np.zeros(n)
        self._sweep_step = np.zeros(n)
        self._resting = 0

    def _new_segment(self, i: int) -> None:
        rng = self._rng
        mode = str(rng.choice(self.MODES, p=self.MODE_P))
        length = int(rng.integers(5, 41))
        self._mode[i], self._left[i] = mode, length
        if mode == "walk":
            self._target[i] = rng.uniform(-1.0, 1.0)
        elif mode == "hold":
            self._target[i] = rng.choice([-1.0, 1.0]) if rng.random() < 0.5 else rng.uniform(-1, 1)
        elif mode == "sweep":
            start = rng.choice([-1.0, 1.0])
            self.value[i] = start
            self._sweep_step[i] = -2.0 * start / length

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        sticks = self._sticks()
        if not self.presses:
            return sticks
        return np.concatenate([sticks, self._pressed()])

    def _pressed(self) -> np.ndarray:
        rng = self._press_rng
        starts = rng.random(self.presses) < self.press
        lengths = rng.integers(self.PRESS_STEPS[0], self.PRESS_STEPS[1] + 1, self.presses)
        if self._resting:  # hands off everything
            self._held[:] = 0
        else:
            self._held = np.where((self._held == 0) & starts, lengths, self._held)
        down = (self._held > 0).astype(np.float32)
        self._held = np.maximum(self._held - 1, 0)
        return down

    def _sticks(self) -> np.ndarray:
        if not self._resting and self._rng.random() < self._rest_p:
            self._resting = int(self._rng.integers(self.REST_STEPS[0], self.REST_STEPS[1] + 1))
        if self._resting:  # every stick back to the centre, and still there
            self._resting -= 1
            self.value = np.where(np.abs(self.value) < 0.02, 0.0, 0.5 * self.value)
            self._left[:] = 0  # fresh segments when the rest ends
            return self.value.astype(np.float32)
        for i in range(self.control_dim):
            if self._left[i] <= 0:
                self._new_segment(i)
            self._left[i] -= 1
            mode, v = self._mode[i], self.value[i]
            if mode == "walk":
                v += 0.2 * (self._target[i] - v) + 0.15 * self._rng.standard_normal()
            elif mode == "hold":
                v += 0.5 * (self._target[i] - v)
            elif mode == "release":
                v *= 0.5
            else:
                v += self._sweep_step[i]
            self.value[i] = np.clip(v, -1.0, 1.0)
        return self.value.astype(np.float32)


class ReplayPolicy:
    """The controls of another recording, in its order; stops when they run out."""

    def __init__(self, directory: str | Path, control_dim: int = 4) -> None:
        self._controls = read_recording(directory, control_dim).controls()
        self._i = 0

    def reset(self, seed: int | None = None) -> None:
        """Episodes continue through the source's controls; a seed changes nothing."""

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        if self._i >= len(self._controls):
            raise StopRecording("replay: the source recording's controls are used up")
        out = self._controls[self._i]
        self._i += 1
        return out
