"""Real worlds behind one interface, for recording and for playing side by side
with the dream.

A world is any object with ``reset(seed) -> frame``, ``step(controls) -> (frame,
done)``, ``fps``, ``control_names`` and ``close()``. Frames are ``(H, W, 3)``
uint8 RGB at the world's native size; controls are named by the world's
``control_names``: the four gamepad stick axes in [-1, 1] (gamepad convention:
stick up is y = -1), then any triggers in [0, 1] and buttons (0 or 1) it uses.

World ids: ``doom:<scenario>`` (ViZDoom; ``basic``, ``health_gathering``,
``deathmatch`` or any scenario the wheel ships), ``carracing`` (gymnasium
box2d) and ``atari:<Game>`` (ale-py, e.g. ``atari:Breakout``).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class World(Protocol):
    """What the recorder and the player need of a world."""

    id: str
    fps: float
    control_names: tuple[str, ...]
    control_help: dict[str, str]  # axis name -> what it does here

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, controls: np.ndarray) -> tuple[np.ndarray, bool]:
        """Apply the controls; return the next frame and whether the episode ended.
        On ``done`` the frame is the last one seen: recorders drop it and reset."""
        ...

    def close(self) -> None: ...


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str, package: str) -> Any:
    """Import an optional dependency or fail with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(
            f"{module} is not installed ({err}); install it with "
            f"`pip install -e '.[{extra}]'` (or `pip install {package}`)") from err


WORLDS = {
    "doom": "play.worlds.doom:DoomWorld",
    "carracing": "play.worlds.carracing:CarRacingWorld",
    "atari": "play.worlds.atari:AtariWorld",
}


def make_world(spec: str, **options: Any) -> World:
    """Build a world from its id, e.g. ``doom:health_gathering``, ``carracing``,
    ``atari:Breakout``. Options go to the adapter (``frame_skip``, ...)."""
    kind, _, variant = spec.partition(":")
    if kind not in WORLDS:
        raise ValueError(f"unknown world {spec!r}; choose one of: doom:<scenario>, "
                         f"carracing, atari:<Game>")
    module, _, name = WORLDS[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    world: World = cls(variant, **options) if variant else cls(**options)
    return world


def clip_controls(controls: np.ndarray, n: int = 4) -> np.ndarray:
    c = np.asarray(controls, dtype=np.float64).reshape(-1)
    if c.shape != (n,):
        raise ValueError(f"expected {n} controls, got shape {c.shape}")
    return np.clip(np.nan_to_num(c), -1.0, 1.0)
