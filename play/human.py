"""A person at the sticks: a pygame window showing the world live, with a HUD."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from play.capture import Preview
from play.pads import PadInput, describe_controls
from play.policies import StopRecording
from play.worlds import require


class HumanPolicy:
    """Shows each frame scaled up in a window and returns the controls' values.

    Gamepads are picked up as they are plugged in; the keyboard works too
    (WASD = left stick, arrows = right stick, space = right trigger, E = A).
    Esc or closing the window stops. The loop is paced to the world's ``fps``.

    Args:
        control_names: The controls the world takes, in order.
        fps: Steps per second to pace to (0: as fast as possible).
        scale: Window pixels per frame pixel.
        dead_zone: Stick dead zone.
        title: Window title.
    """

    def __init__(self, control_names: tuple[str, ...], fps: float = 30.0, scale: int = 6,
                 dead_zone: float = 0.1, title: str = "TinyDreams") -> None:
        self.pygame: Any = require("pygame", "play", "pygame-ce")
        pygame = self.pygame
        pygame.init()
        pygame.joystick.init()
        from pygame._sdl2 import controller

        controller.init()
        self.control_names = tuple(control_names)
        self.fps, self.title = fps, title
        self.pads = PadInput(dead_zone=dead_zone)
        self.steps = 0
        self._clock = pygame.time.Clock()
        self._view = Preview(scale)
        self._font = pygame.font.Font(None, 18)
        self._last = time.perf_counter()
        self._rate = 0.0

    def reset(self, seed: int | None = None) -> None:
        """Nothing to reset: the person keeps holding the sticks."""

    def act(self, frame: np.ndarray) -> np.ndarray:
        pygame = self.pygame
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (
                    event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                raise StopRecording("the window was closed")
            self.pads.handle(event)
        controls = self.pads.controls(self.control_names)
        self._draw(frame, controls)
        if self.fps > 0:
            self._clock.tick(self.fps)
        now = time.perf_counter()
        self._rate = 0.9 * self._rate + 0.1 / max(now - self._last, 1e-6)
        self._last = now
        self.steps += 1
        return controls

    def _draw(self, frame: np.ndarray, controls: np.ndarray) -> None:
        screen = self._view.draw(frame, self.title)
        hud = (f"{self._rate:4.1f} steps/s  recorded {self.steps}  "
               f"{describe_controls(self.control_names, controls)}  pads {len(self.pads.pads)}")
        screen.blit(self._font.render(hud, True, (255, 255, 0), (0, 0, 0)), (4, 4))
        self.pygame.display.flip()

    def close(self) -> None:
        self.pygame.display.quit()
