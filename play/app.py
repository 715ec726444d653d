"""The play loop: one pygame window that shows frames from any source and feeds
it the sticks. It does not know where the frames come from."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from play.pads import PadInput, describe_controls
from play.sources import FrameSource
from play.worlds import require
from recording.video import INSTALL, Mp4Writer, VideoUnavailable

log = logging.getLogger(__name__)
HELP = ("R reset  P pause  H HUD  F11 fullscreen  M smooth  F12 screenshot  G GIF  V MP4  "
        "Esc quit; pad: Start pause, Back reset")


@dataclass
class PlayOptions:
    """Args:
        scale: Initial window pixels per frame pixel.
        smooth: Smooth (bilinear) scaling instead of nearest-neighbour.
        fullscreen: Start fullscreen.
        hud: Show the heads-up display.
        dead_zone: Gamepad stick dead zone.
        invert_y: Invert both sticks' y axes.
        axis_map: The raw axes (left x, left y, right x, right y) of a joystick
            SDL has no GameController mapping for.
        mouse: Mouse motion drives the right stick.
        fps: Target frames per second (default: the source's).
        max_frames: Stop after this many displayed frames (headless runs, tests).
        max_seconds: Stop after this much wall time.
        captures: Where screenshots and GIFs go.
    """

    scale: int = 8
    smooth: bool = False
    fullscreen: bool = False
    hud: bool = True
    dead_zone: float = 0.1
    invert_y: bool = False
    axis_map: tuple[int, int, int, int] = (0, 1, 2, 3)
    mouse: bool = False
    fps: float | None = None
    max_frames: int | None = None
    max_seconds: float | None = None
    captures: Path = field(default_factory=lambda: Path("captures"))


class Player:
    """Runs a source in a window until the user quits (or ``max_frames``)."""

    def __init__(self, source: FrameSource, options: PlayOptions | None = None) -> None:
        self.pygame: Any = require("pygame", "play", "pygame-ce")
        pg = self.pygame
        pg.init()
        pg.joystick.init()
        from pygame._sdl2 import controller

        controller.init()  # pads SDL knows arrive as GameControllers
        self.source, self.options = source, options or PlayOptions()
        self.pads = PadInput(self.options.dead_zone, self.options.invert_y,
                             self.options.axis_map)
        self.paused = False
        self.displayed = 0
        self.gif: list[Image.Image] | None = None
        self.video: Mp4Writer | None = None
        self.notice = ""  # a message the HUD shows (say, an extra to install)
        self.saved: list[Path] = []
        self._font = pg.font.Font(None, 20)
        self._screen: Any = None
        self._rate = 0.0
        self._mouse = np.zeros(2)
        self._frame = np.zeros((1, 1, 3), np.uint8)  # the frame on screen
        self._last = time.perf_counter()
        self.before_frame: Callable[[Player], None] | None = None  # a hook for tests

    def _window(self, frame: np.ndarray) -> Any:
        pg = self.pygame
        if self._screen is None:
            h, w = frame.shape[:2]
            flags = pg.RESIZABLE | (pg.FULLSCREEN if self.options.fullscreen else 0)
            self._screen = pg.display.set_mode((w * self.options.scale,
                                                h * self.options.scale), flags)
            pg.display.set_caption(f"TinyDreams: {self.source.name}")
        return self._screen

    def run(self) -> dict[str, float]:
        pg = self.pygame
        self._frame = self.source.reset()
        clock = pg.time.Clock()
        target = self.options.fps or self.source.fps
        start = time.perf_counter()
        self._last = start
        running = True
        while running:
            if self.before_frame is not None:
                self.before_frame(self)
            for event in pg.event.get():
                pressed = self.pads.handle(event)
                running = self._handle(event, pressed) and running
                if (event.type == pg.KEYDOWN and event.key == pg.K_r) or pressed == "back":
                    self._frame = self.source.reset()
            if not running:
                break
            if not self.paused and not self._step():
                break
            self._draw(self._frame)
            if self.options.max_frames and self.displayed >= self.options.max_frames:
                break
            if self.options.max_seconds and time.perf_counter() - start > self.options.max_seconds:
                break
            clock.tick(target)
        if self.gif is not None:
            self._save_gif()
        if self.video is not None:
            self._toggle_video()
        seconds = time.perf_counter() - start
        return {"frames": self.displayed, "seconds": seconds,
                "fps": self.displayed / max(seconds, 1e-9)}

    def _step(self) -> bool:
        """One step of the source under the controls; False when it has ended."""
        new = self.source.step(self._controls())
        if new is None:
            return not getattr(self.source, "done", False)
        self._frame = new
        self.displayed += 1
        now = time.perf_counter()
        self._rate = 0.9 * self._rate + 0.1 / max(now - self._last, 1e-6)
        self._last = now
        if self.gif is not None:
            self.gif.append(Image.fromarray(new))
        if self.video is not None:
            self.video.write(new)
        return True

    def _controls(self) -> np.ndarray:
        """The controls the source takes (its ``control_names``), from the pads,
        the keyboard and, with ``mouse``, the mouse as the right stick."""
        names = tuple(self.source.control_names)
        controls = self.pads.controls(names)
        if self.options.mouse and "right_x" in names and "right_y" in names:
            self._mouse *= 0.8  # the mouse stick springs back when the mouse rests
            rx, ry = names.index("right_x"), names.index("right_y")
            if not controls[rx] and not controls[ry]:
                controls[[rx, ry]] = np.clip(self._mouse, -1, 1)
        return controls

    def _handle(self, event: Any, pressed: str | None = None) -> bool:
        """Feed one event (``pressed``: the pad button it pressed); False to quit."""
        pg = self.pygame
        if event.type == pg.QUIT:
            return False
        if event.type == pg.KEYDOWN:
            key = event.key
            if key == pg.K_ESCAPE:
                return False
            if key == pg.K_p:
                self.pause(not self.paused)
            elif key == pg.K_h:
                self.options.hud = not self.options.hud
            elif key == pg.K_m:
                self.options.smooth = not self.options.smooth
            elif key == pg.K_F11:
                pg.display.toggle_fullscreen()
            elif key == pg.K_F12:
                self.screenshot()
            elif key == pg.K_g:
                if self.gif is None:
                    self.gif = []
                else:
                    self._save_gif()
            elif key == pg.K_v:
                self._toggle_video()
        elif pressed == "start":
            self.pause(not self.paused)
        elif event.type == pg.DROPFILE:
            self._start_from(Path(event.file))
        elif event.type == pg.MOUSEMOTION and self.options.mouse:
            self._mouse += np.array(event.rel, float) / 50.0
        return True

    def _start_from(self, path: Path) -> None:
        """A picture dropped on the window: the dream starts from it."""
        start_from = getattr(self.source, "start_from", None)
        if start_from is None:
            self.notice = f"{self.source.name} cannot start from a picture"
            return
        try:
            frame = start_from(path)
        except (OSError, ValueError) as err:
            self.notice = str(err)
            return
        self.notice = f"dreaming from {path.name}"
        if frame is not None:
            self._frame = frame

    def pause(self, paused: bool) -> None:
        """Stop (or resume) stepping; a remote source pauses its dream on the server."""
        self.paused = paused
        set_paused = getattr(self.source, "set_paused", None)
        if set_paused is not None:
            set_paused(paused)

    def _draw(self, frame: np.ndarray) -> None:
        pg = self.pygame
        screen = self._window(frame)
        surface = pg.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        scale = pg.transform.smoothscale if self.options.smooth else pg.transform.scale
        screen.blit(scale(surface, screen.get_size()), (0, 0))
        if self.options.hud:
            parts = [f"{self._rate:4.1f} fps", *(f"{k} {v}" for k, v in
                                                 self.source.stats().items()),
                     describe_controls(self.source.control_names, self._controls()),
                     "PAUSED" if self.paused else "", "GIF" if self.gif is not None else "",
                     "MP4" if self.video is not None else "", self.notice]
            text = "  ".join(p for p in parts if p)
            screen.blit(self._font.render(text, True, (255, 255, 0), (0, 0, 0)), (4, 4))
            screen.blit(self._font.render(self.source.name, True, (200, 200, 200), (0, 0, 0)),
                        (4, 22))
        pg.display.flip()

    def screenshot(self) -> Path:
        """The window as a PNG in the captures folder."""
        self.options.captures.mkdir(parents=True, exist_ok=True)
        path = self.options.captures / time.strftime("screenshot-%Y%m%d-%H%M%S.png")
        path = _unique(path)
        self.pygame.image.save(self.pygame.display.get_surface(), str(path))
        self.saved.append(path)
        return path

    def _toggle_video(self) -> None:
        """Start an MP4 of the frames shown, or finish the one being written."""
        if self.video is not None:
            self.video.close()
            self.saved.append(self.video.path)
            self.video = None
            return
        path = _unique(self.options.captures / time.strftime("dream-%Y%m%d-%H%M%S.mp4"))
        try:
            self.video = Mp4Writer(path, self.options.fps or self.source.fps)
        except VideoUnavailable as err:
            self.notice = f"no MP4: {INSTALL}"
            log.warning("%s", err)

    def _save_gif(self) -> None:
        frames, self.gif = self.gif or [], None
        if not frames:
            return
        self.options.captures.mkdir(parents=True, exist_ok=True)
        path = _unique(self.options.captures / time.strftime("dream-%Y%m%d-%H%M%S.gif"))
        frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                       duration=round(1000 / (self.options.fps or self.source.fps)))
        self.saved.append(path)

    def close(self) -> None:
        self.source.close()
        self.pygame.display.quit()


def _unique(path: Path) -> Path:
    n = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
