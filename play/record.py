"""Record a world into the recording format, driven by a policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from play.policies import Policy, ReplayPolicy, StopRecording, WanderPolicy
from play.worlds import World
from recording.frames import resize
from recording.writer import RecordingWriter

log = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """``64`` -> (64, 64); ``80x60`` (width x height, as screens are named) ->
    (60, 80), as (height, width)."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(h) if sep else int(w), int(w))
    except ValueError:
        raise ValueError(f"size must be N or WxH, e.g. 64 or 80x60; got {text!r}") from None
    if min(size) < 8:
        raise ValueError(f"size must be at least 8 pixels a side, got {text!r}")
    return size


@dataclass
class RecordStats:
    steps: int
    episodes: int
    frames: int
    seconds: float
    controls: np.ndarray  # (N, 4) every control applied
    stopped: str = ""  # why it ended early, if it did

    @property
    def steps_per_s(self) -> float:
        return self.steps / max(self.seconds, 1e-9)

    def coverage(self, bins: int = 10) -> np.ndarray:
        """Per axis, the fraction of samples in each of ``bins`` equal bins of [-1, 1]."""
        if len(self.controls) == 0:
            return np.zeros((4, bins))
        return np.stack([np.histogram(self.controls[:, i], bins=bins, range=(-1, 1))[0]
                         for i in range(self.controls.shape[1])]) / len(self.controls)


def record(world: World, policy: Policy, out: str | Path, steps: int,
           size: tuple[int, int] | None = None, seed: int = 0,
           meta: dict[str, Any] | None = None,
           progress: Callable[[int], None] | None = None) -> RecordStats:
    """Run ``policy`` in ``world`` for ``steps`` steps, appending to the recording ``out``.

    Each episode's first frame carries zero controls; a frame that ends an
    episode is dropped (the world has moved on) and a new episode starts.
    """
    first = world.reset(seed=seed)
    policy.reset(seed)
    frame_size = size or first.shape[:2]
    info = {"world": world.id, "fps": world.fps, "seed": seed, **(meta or {})}
    writer = RecordingWriter(out, frame_size[0], frame_size[1], world.control_names, info)
    applied: list[np.ndarray] = []
    zero = np.zeros(len(world.control_names), np.float32)
    start = time.perf_counter()
    done_steps, episodes, stopped = 0, 1, ""
    frame = first
    try:
        writer.new_episode()
        writer.write(resize(frame, frame_size), zero)
        while done_steps < steps:
            try:
                controls = np.asarray(policy.act(frame), dtype=np.float32)
            except StopRecording as err:
                stopped = str(err)
                break
            if controls.shape != zero.shape:
                raise ValueError(f"the policy gives {controls.shape[0]} controls, the world "
                                 f"{world.id} takes {len(zero)} ({', '.join(world.control_names)})")
            frame, done = world.step(controls)
            applied.append(controls)
            done_steps += 1
            if done:
                frame = world.reset()
                writer.new_episode()
                episodes += 1
                writer.write(resize(frame, frame_size), zero)
            else:
                writer.write(resize(frame, frame_size), controls)
            if progress is not None:
                progress(1)
    finally:
        seconds = time.perf_counter() - start
        writer.close({"steps": done_steps, "policy": info.get("policy")})
    return RecordStats(done_steps, episodes, writer.frames_written, seconds,
                       np.asarray(applied, np.float32).reshape(-1, len(zero)), stopped)


def format_coverage(stats: RecordStats, names: tuple[str, ...], bins: int = 10) -> str:
    """A text histogram per axis: one cell per bin of [-1, 1], darker = more samples."""
    shades = " .:-=+*#%@"
    lines = [f"stick coverage ({bins} bins over [-1, 1], darker = more):"]
    for name, row in zip(names, stats.coverage(bins), strict=True):
        peak = max(row.max(), 1e-9)
        cells = "".join(shades[min(len(shades) - 1, round(9 * v / peak))] for v in row)
        filled = (row >= 0.01).sum()
        lines.append(f"  {name:<8} -1 |{cells}| +1   {filled}/{bins} bins with >= 1%")
    return "\n".join(lines)


def make_policy(name: str, control_names: tuple[str, ...], seed: int = 0,
                source: str | None = None, fps: float = 30.0, title: str = "TinyDreams",
                rest: float = 0.1) -> Policy:
    """``wander`` (resting a ``rest`` share of the steps), ``replay`` (needs
    ``source``) or ``human`` (opens a window), giving ``control_names``."""
    if name == "wander":
        return WanderPolicy(len(control_names), seed=seed, rest=rest)
    if name == "replay":
        if source is None:
            raise ValueError("the replay policy needs a source recording (--source DIR)")
        return ReplayPolicy(source, len(control_names))
    if name == "human":
        from play.human import HumanPolicy

        return HumanPolicy(control_names, fps=fps, title=title)
    raise ValueError(f"unknown policy {name!r}; choose human, wander or replay")
