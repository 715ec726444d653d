"""Gamepad and keyboard to four stick axes, from pygame events.

Everything is driven by events (not by polling devices), so gamepads come and
go while running (``JOYDEVICEADDED``/``JOYDEVICEREMOVED``, keyed by instance
id), and tests can inject joystick and keyboard events under
``SDL_VIDEODRIVER=dummy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from play.worlds import require

# Keyboard fallback: WASD is the left stick, the arrow keys the right stick.
# Values follow the gamepad convention: up is -1.
KEY_AXES = {
    "w": (1, -1.0), "s": (1, 1.0), "a": (0, -1.0), "d": (0, 1.0),
    "up": (3, -1.0), "down": (3, 1.0), "left": (2, -1.0), "right": (2, 1.0),
}


@dataclass
class StickState:
    """Current stick values from every connected gamepad and the keyboard.

    Args:
        dead_zone: Radial dead zone per stick; values inside read 0, values
            outside are rescaled so the range stays [0, 1].
        invert_y: Flip both sticks' y axes.
    """

    dead_zone: float = 0.1
    invert_y: bool = False
    pads: dict[int, list[float]] = field(default_factory=dict)  # instance id -> 4 axes
    keys: set[str] = field(default_factory=set)
    _joysticks: dict[int, Any] = field(default_factory=dict)

    def handle(self, event: Any) -> None:
        """Feed one pygame event."""
        pygame = require("pygame", "play", "pygame-ce")
        if event.type == pygame.JOYDEVICEADDED:
            try:  # a real device; an injected event may name none
                joy = pygame.joystick.Joystick(event.device_index)
                self._joysticks[joy.get_instance_id()] = joy
                self.pads[joy.get_instance_id()] = [0.0] * 4
            except pygame.error:
                pass
        elif event.type == pygame.JOYDEVICEREMOVED:
            self._joysticks.pop(event.instance_id, None)
            self.pads.pop(event.instance_id, None)
        elif event.type == pygame.JOYAXISMOTION and event.axis < 4:
            self.pads.setdefault(event.instance_id, [0.0] * 4)[event.axis] = float(event.value)
        elif event.type in (pygame.KEYDOWN, pygame.KEYUP):
            name = pygame.key.name(event.key)
            if name in KEY_AXES:
                (self.keys.add if event.type == pygame.KEYDOWN else self.keys.discard)(name)

    def _dead_zone(self, x: float, y: float) -> tuple[float, float]:
        r = float(np.hypot(x, y))
        if r <= self.dead_zone:
            return 0.0, 0.0
        # Rescale the radius so motion starts from 0 at the edge; the axes are
        # clipped later, each on its own (square-gated pads reach (1, 1)).
        scale = (r - self.dead_zone) / (1.0 - self.dead_zone) / r
        return x * scale, y * scale

    def values(self) -> np.ndarray:
        """The four axes in [-1, 1]: the keyboard where a key is held, else the
        gamepad pushed furthest."""
        out = np.zeros(4)
        for axes in self.pads.values():
            for s in (0, 2):
                x, y = self._dead_zone(axes[s], axes[s + 1])
                if np.hypot(x, y) > np.hypot(out[s], out[s + 1]):
                    out[s], out[s + 1] = x, y
        keyed = np.zeros(4)
        for key in self.keys:
            axis, sign = KEY_AXES[key]
            keyed[axis] += sign
        out = np.where(keyed != 0, keyed, out)
        if self.invert_y:
            out[[1, 3]] *= -1
        return np.clip(out, -1.0, 1.0).astype(np.float32)
