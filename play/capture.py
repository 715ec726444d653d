"""Record any game on the screen, with the gamepad, into the recording format.

A capture reads frames from a ``CaptureSource`` (a window, a region or a monitor
of the screen through ``mss``; a fake in the tests) and the controls from the
pads through ``play.pads.PadInput``, the player's own controller code. Every
tick of ``fps`` it reads the controls held, then grabs the frame, so a line's
controls are those held before its frame was taken, and its timestamp is the
moment of the grab. Ticks the capture could not keep up with are counted as
dropped frames, never filled in.

Recording starts and stops with a pad button (``back`` by default) or a
global key (F9, through ``pynput`` where it can listen); each start begins a
new episode. Esc (global, or in the preview window) or Ctrl-C ends it; every
line written until then is usable (``recording.writer.RecordingWriter``).
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from play.pads import PAD_CONTROLS, PadInput
from play.worlds import require
from recording.frames import resize
from recording.writer import RecordingWriter

log = logging.getLogger(__name__)

Region = tuple[int, int, int, int]  # left, top, width, height in screen pixels
TOGGLE, END = "toggle", "end"  # what an input can ask of the capture


class CaptureError(RuntimeError):
    """The capture cannot go on (no display, no such window, the window closed);
    the message says which."""


class CaptureSource(Protocol):
    """Where frames come from: ``grab`` returns the current one, ``(H, W, 3)``
    uint8 RGB, or raises ``CaptureError`` when the source is gone."""

    description: str

    def grab(self) -> np.ndarray: ...

    def close(self) -> None: ...


def parse_region(text: str) -> Region:
    """``X,Y,W,H`` -> (left, top, width, height)."""
    try:
        left, top, width, height = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"--region wants X,Y,W,H in pixels, e.g. 0,0,640,480; got {text!r}"
                         ) from None
    if width <= 0 or height <= 0:
        raise ValueError(f"--region needs a positive width and height, got {text!r}")
    return left, top, width, height


class ScreenSource:
    """Part of the screen through ``mss``: a fixed region, or wherever
    ``locate`` says each grab (a window that moves is followed)."""

    def __init__(self, locate: Callable[[], Region], description: str) -> None:
        mss = require("mss", "capture", "mss")
        try:
            self._screen: Any = mss.MSS()
        except Exception as err:  # mss.ScreenShotError: no X display, no permission
            raise CaptureError(f"no screen to capture ({err}); run this on the desktop "
                               "the game is shown on (on Linux, with DISPLAY set)") from None
        self._locate = locate
        self.description = description

    def grab(self) -> np.ndarray:
        left, top, width, height = self._clip(self._locate())
        shot = self._screen.grab({"left": left, "top": top, "width": width, "height": height})
        return np.ascontiguousarray(np.asarray(shot)[:, :, 2::-1])  # BGRA -> RGB

    def _clip(self, region: Region) -> Region:
        """The part of ``region`` on the screen (all monitors together)."""
        screen = self._screen.monitors[0]
        left, top = max(region[0], screen["left"]), max(region[1], screen["top"])
        right = min(region[0] + region[2], screen["left"] + screen["width"])
        bottom = min(region[1] + region[3], screen["top"] + screen["height"])
        if right <= left or bottom <= top:
            raise CaptureError(f"{self.description} is off the screen")
        return left, top, right - left, bottom - top

    def monitor(self, index: int) -> Region:
        monitors = self._screen.monitors
        if not 0 <= index < len(monitors):
            raise CaptureError(f"no monitor {index}: this screen has monitors 1 to "
                               f"{len(monitors) - 1} (0 is all of them together)")
        m = monitors[index]
        return m["left"], m["top"], m["width"], m["height"]

    def close(self) -> None:
        self._screen.close()


def find_window(title: str) -> Any:
    """The first window whose title contains ``title`` (any case), through
    ``pywinctl``; ``CaptureError`` naming the open windows when none does."""
    try:
        pywinctl = require("pywinctl", "capture", "pywinctl")
        found = pywinctl.getWindowsWithTitle(title, condition=pywinctl.Re.CONTAINS,
                                             flags=pywinctl.Re.IGNORECASE)
        titles = [] if found else [t for t in pywinctl.getAllTitles() if t]
    except Exception as err:  # no display (Xlib connects on import), no window manager
        raise CaptureError(f"cannot list the windows on this screen ({err})") from None
    if not found:
        listed = ", ".join(repr(t) for t in titles[:20]) or "none with a title"
        raise CaptureError(f"no window titled {title!r}; open windows: {listed}")
    if len(found) > 1:
        log.warning("%d windows match %r; capturing %r", len(found), title, found[0].title)
    return found[0]


def open_screen(window: str | None = None, region: Region | None = None,
                monitor: int | None = None) -> ScreenSource:
    """A ``ScreenSource`` for a window (by title), a region or a monitor (1 is
    the first; the default when nothing is named)."""
    if window is not None:
        win = find_window(window)

        def locate() -> Region:
            if not win.isAlive:
                raise CaptureError(f"the window {win.title!r} closed")
            box = win.box
            return box.left, box.top, box.width, box.height

        return ScreenSource(locate, f"the window {win.title!r}")
    if region is not None:
        return ScreenSource(lambda: region, f"the region {region}")
    index = 1 if monitor is None else monitor
    source = ScreenSource(lambda: source.monitor(index), f"monitor {index}")
    source.monitor(index)  # fail now, not at the first grab
    return source


class Hotkeys:
    """Global keys through ``pynput`` (heard whichever window has the focus):
    ``toggle_key`` starts and stops recording, ``end_key`` ends it. Key names
    are pynput's: ``f9``, ``esc``, ``pause``, or one character."""

    def __init__(self, toggle_key: str = "f9", end_key: str = "esc") -> None:
        keyboard = require("pynput.keyboard", "capture", "pynput")
        self._commands: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._keys = {self._key(keyboard, toggle_key): TOGGLE, self._key(keyboard, end_key): END}
        self._down: set[Any] = set()
        self._listener = keyboard.Listener(on_press=self._pressed, on_release=self._released)
        self._listener.start()
        self._listener.wait()

    @staticmethod
    def _key(keyboard: Any, name: str) -> Any:
        special = getattr(keyboard.Key, name.lower(), None)
        if special is not None:
            return special
        if len(name) == 1:
            return keyboard.KeyCode.from_char(name.lower())
        raise ValueError(f"unknown key {name!r}: use f1-f12, esc, pause, ... or one character")

    def _pressed(self, key: Any, injected: bool = False) -> None:
        """A key counts once however long it is held (auto-repeat sends presses).
        A synthesised key (XTest) is heard twice, as its request and as the key
        event it makes: only the event counts."""
        command = self._keys.get(key)
        if command is not None and not injected and key not in self._down:
            self._down.add(key)
            self._commands.put(command)

    def _released(self, key: Any, injected: bool = False) -> None:
        if not injected:
            self._down.discard(key)

    def commands(self) -> list[str]:
        out = []
        while not self._commands.empty():
            out.append(self._commands.get())
        return out

    def close(self) -> None:
        self._listener.stop()


def start_hotkeys(toggle_key: str, end_key: str) -> Hotkeys | None:
    """``Hotkeys``, or None (and a warning saying why) where no global key can
    be heard: no pynput, no X display, Wayland."""
    try:
        return Hotkeys(toggle_key, end_key)
    except ValueError:
        raise
    except Exception as err:
        log.warning("global keys are off (%s); start and stop with the pad's button, end with "
                    "Ctrl-C", err)
        return None


class CaptureInputs:
    """The pads (and, in the preview window, the keyboard) through pygame's
    events, plus the global keys: the controls held, and the commands given."""

    def __init__(self, pads: PadInput, toggle_button: str = "back",
                 hotkeys: Hotkeys | None = None, toggle_key: str = "f9") -> None:
        self.pygame: Any = require("pygame", "play", "pygame-ce")
        self.pads, self.toggle_button, self.hotkeys = pads, toggle_button, hotkeys
        self.toggle_key = toggle_key.lower()

    def commands(self) -> list[str]:
        """Feed the pending events to the pads; the commands they and the global
        keys give, in order."""
        pygame, out = self.pygame, []
        for event in pygame.event.get():
            key = pygame.key.name(event.key) if event.type == pygame.KEYDOWN else None
            if event.type == pygame.QUIT or key == "escape":
                out.append(END)
            elif key == self.toggle_key:
                out.append(TOGGLE)
            if self.pads.handle(event) == self.toggle_button:
                out.append(TOGGLE)
        return out + (self.hotkeys.commands() if self.hotkeys else [])

    def controls(self, names: tuple[str, ...]) -> np.ndarray:
        return self.pads.controls(names)

    def close(self) -> None:
        if self.hotkeys is not None:
            self.hotkeys.close()


def init_pygame(preview: bool) -> None:
    """pygame's events and pads, read whichever window has the focus; without a
    preview no window is opened (SDL's dummy video driver)."""
    os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
    if not preview:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    pygame = require("pygame", "play", "pygame-ce")
    pygame.display.init()
    pygame.joystick.init()
    from pygame._sdl2 import controller

    controller.init()


class Preview:
    """A window showing frames scaled up ``scale`` times, titled ``title``:
    the capture's (no HUD; the title says whether it is recording) and the
    human policy's (which draws its HUD over the frame before the flip)."""

    def __init__(self, scale: int = 4) -> None:
        self.pygame: Any = require("pygame", "play", "pygame-ce")
        self.scale = scale
        self.screen: Any = None

    def draw(self, frame: np.ndarray, title: str) -> Any:
        """Draw ``frame`` (``(H, W, 3)`` uint8), not yet shown; the window's surface."""
        pygame = self.pygame
        size = (frame.shape[1] * self.scale, frame.shape[0] * self.scale)
        if self.screen is None or self.screen.get_size() != size:
            self.screen = pygame.display.set_mode(size)
        pygame.display.set_caption(title)
        surface = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        self.screen.blit(pygame.transform.scale(surface, size), (0, 0))
        return self.screen

    def show(self, frame: np.ndarray, title: str) -> None:
        self.draw(frame, title)
        self.pygame.display.flip()


@dataclass
class CaptureStats:
    frames: int = 0
    episodes: int = 0
    dropped: int = 0  # ticks of --fps that passed while a frame was still being taken
    seconds: float = 0.0
    ended: str = ""  # why it ended

    def summary(self) -> str:
        rate = self.frames / max(self.seconds, 1e-9)
        dropped = self.dropped / max(self.frames + self.dropped, 1)
        return (f"{self.frames} frames in {self.episodes} episode(s) over {self.seconds:.1f} s "
                f"({rate:.1f} frames/s); {self.dropped} dropped ({100 * dropped:.1f}%): "
                f"{self.ended}")


@dataclass
class CaptureOptions:
    fps: float = 15.0
    size: tuple[int, int] = (64, 64)  # (height, width) written
    control_names: tuple[str, ...] = PAD_CONTROLS
    paused: bool = False  # wait for the toggle before recording
    frames: int = 0  # end after this many frames written (0: no limit)
    seconds: float = 0.0  # end after this long (0: no limit)

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"--fps must be above 0, got {self.fps}")


def capture(source: CaptureSource, inputs: CaptureInputs, out: str | Path,
            options: CaptureOptions, preview: Preview | None = None,
            progress: Callable[[int], None] | None = None,
            clock: Callable[[], float] = time.perf_counter,
            sleep: Callable[[float], None] = time.sleep) -> CaptureStats:
    """Capture ``source`` with the controls of ``inputs`` into the recording ``out``
    until an end command, the frame or time limit, or the source is gone."""
    meta = {"world": f"capture: {source.description}", "fps": options.fps, "policy": "human"}
    writer = RecordingWriter(out, *options.size, options.control_names, meta)
    stats, period = CaptureStats(), 1.0 / options.fps
    recording, start = not options.paused, clock()
    if recording:
        writer.new_episode()
        stats.episodes += 1
    deadline = start
    try:
        while not stats.ended:
            for command in inputs.commands():
                if command == END:
                    stats.ended = "ended by the key or window"
                elif command == TOGGLE:
                    recording = not recording
                    if recording:
                        writer.new_episode()
                        stats.episodes += 1
                    log.info("recording %s", "started" if recording else "stopped")
            if stats.ended:
                break
            controls = inputs.controls(options.control_names)
            taken = time.time()
            frame = resize(source.grab(), options.size)
            if recording:
                writer.write(frame, controls, timestamp=taken)
                stats.frames += 1
                if progress is not None:
                    progress(1)
            if preview is not None:
                preview.show(frame, f"TinyDreams capture: {'recording' if recording else 'paused'}"
                                    f", {stats.frames} frames, {stats.dropped} dropped")
            stats.ended = _limit_reached(stats, options, clock() - start)
            deadline += period
            late = clock() - deadline
            if late > 0:  # the next tick has passed already: count the ticks missed
                missed = int(late // period)
                deadline += missed * period
                stats.dropped += missed if recording else 0
            else:
                sleep(-late)
    except CaptureError as err:
        stats.ended = str(err)
    except KeyboardInterrupt:
        stats.ended = "interrupted (Ctrl-C)"
    finally:
        stats.seconds = clock() - start
        writer.close({"frames": stats.frames, "dropped": stats.dropped,
                      "seconds": round(stats.seconds, 3), "ended": stats.ended})
    return stats


def _limit_reached(stats: CaptureStats, options: CaptureOptions, elapsed: float) -> str:
    if options.frames and stats.frames >= options.frames:
        return f"{options.frames} frames written"
    if options.seconds and elapsed >= options.seconds:
        return f"{options.seconds:g} seconds passed"
    return ""
