"""Capturing a game: a fake source (a moving pattern) with pad events injected
under SDL's dummy video driver, on a simulated clock; then the real screen
source, window finder and global keys under Xvfb with a window manager."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame", reason="needs the play extra: pip install -e '.[play]'")

from play.capture import (  # noqa: E402
    CaptureError,
    CaptureInputs,
    CaptureOptions,
    Preview,
    capture,
    parse_region,
)
from play.pads import AXIS_RANGE, PadInput  # noqa: E402
from recording.format import read_recording  # noqa: E402
from recording.frames import load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("left_x", "left_y", "right_x", "right_y", "right_trigger", "back")
BACK = pygame.CONTROLLER_BUTTON_BACK


class FakeClock:
    """Simulated time: sleeping and grabbing advance it, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class MovingPattern:
    """A bright bar moving across a dark frame, one column a grab; ``script`` posts
    pygame events just after the grab they are keyed by, and a grab costs
    ``cost`` seconds of the fake clock. Past ``gone_after`` grabs the source is gone."""

    description = "a moving pattern"

    def __init__(self, clock: FakeClock, script: dict[int, list[Any]] | None = None,
                 cost: float = 0.0, gone_after: int = 10**9, size: tuple[int, int] = (90, 120)
                 ) -> None:
        self.clock, self.script, self.cost, self.gone_after = clock, script or {}, cost, gone_after
        self.size, self.grabs = size, 0

    def grab(self) -> np.ndarray:
        if self.grabs >= self.gone_after:
            raise CaptureError("the window 'pattern' closed")
        frame = np.full((*self.size, 3), 20, np.uint8)
        frame[:, (self.grabs * 4) % self.size[1]:][:, :8] = 230
        for event in self.script.get(self.grabs, []):
            pygame.event.post(event)
        self.grabs += 1
        self.clock.now += self.cost
        return frame

    def close(self) -> None:
        pass


def stick(axis: int, value: float) -> Any:
    return pygame.event.Event(pygame.CONTROLLERAXISMOTION, instance_id=3, axis=axis,
                              value=int(value * AXIS_RANGE))


def pad_button(number: int, down: bool) -> Any:
    kind = pygame.CONTROLLERBUTTONDOWN if down else pygame.CONTROLLERBUTTONUP
    return pygame.event.Event(kind, instance_id=3, button=number)


def escape() -> Any:
    return pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0, unicode="",
                              scancode=0)


def run_capture(out: Path, source: MovingPattern, clock: FakeClock, preview: bool = False,
                **options: Any) -> Any:
    pygame.display.init()
    pygame.event.clear()
    inputs = CaptureInputs(PadInput(dead_zone=0.0))
    opts = CaptureOptions(**{"fps": 10.0, "size": (48, 64), "control_names": NAMES, **options})
    return capture(source, inputs, out, opts, Preview(scale=2) if preview else None,
                   clock=clock, sleep=clock.sleep)


def test_controls_held_before_each_grab_episodes_on_the_toggle_and_esc_ends(
        tmp_path: Path) -> None:
    clock = FakeClock()
    script = {
        2: [stick(pygame.CONTROLLER_AXIS_RIGHTX, 0.75)],  # held from the 4th line on
        5: [pad_button(BACK, True), pad_button(BACK, False)],  # stop after 6 lines
        8: [pad_button(BACK, True)],  # start again: a second episode
        9: [pad_button(BACK, False), stick(pygame.CONTROLLER_AXIS_RIGHTX, 0.0)],
        12: [escape()],
    }
    source = MovingPattern(clock, script)
    stats = run_capture(tmp_path / "rec", source, clock)
    assert stats.ended == "ended by the key or window"
    assert (stats.frames, stats.episodes, stats.dropped) == (6 + 4, 2, 0)
    rec = read_recording(tmp_path / "rec")
    assert rec.control_names == NAMES
    assert [e.episode for e in rec.entries] == [0] * 6 + [1] * 4
    right_x = [round(float(e.controls[2]), 2) for e in rec.entries]
    # Each line's controls are those held before its grab: the stick moved after
    # grab 2 shows from line 3; the second episode's grabs 9-12 see it released
    # after grab 9, and the back button held over grab 8-9 shows on grab 9's line.
    assert right_x == [0, 0, 0, 0.75, 0.75, 0.75, 0.75, 0, 0, 0]
    assert [e.controls[5] for e in rec.entries] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    first = load_image(rec.entries[0].frame)
    assert first.shape == (48, 64, 3)  # resized as written
    assert first[:, :3].mean() > 150
    assert first[:, -10:].mean() < 60
    times = [e.time for e in rec.entries]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert abs(times[0] - time.time()) < 60  # real time, not the simulated clock


def test_a_slow_source_counts_the_frames_it_drops(tmp_path: Path) -> None:
    clock = FakeClock()
    source = MovingPattern(clock, cost=0.25)  # 4 grabs a second at --fps 10
    stats = run_capture(tmp_path / "rec", source, clock, preview=True, seconds=10.0)
    assert pygame.display.get_surface().get_size() == (128, 96)  # the preview, 2x
    assert pygame.display.get_caption()[0].startswith("TinyDreams capture: recording, 40 frames")
    assert stats.frames == pytest.approx(40, abs=1)
    assert stats.frames + stats.dropped == pytest.approx(10 * stats.seconds, abs=2)
    assert "dropped" in stats.summary()
    meta = read_recording(tmp_path / "rec").meta
    assert meta["runs"][-1]["dropped"] == stats.dropped
    assert meta["fps"] == 10.0


def test_a_source_that_goes_away_ends_the_capture_with_every_line_usable(
        tmp_path: Path) -> None:
    clock = FakeClock()
    stats = run_capture(tmp_path / "rec", MovingPattern(clock, gone_after=7), clock,
                        paused=True)
    assert stats.frames == 0
    assert stats.episodes == 0
    stats = run_capture(tmp_path / "rec", MovingPattern(clock, gone_after=7), clock)
    assert stats.ended == "the window 'pattern' closed"
    assert stats.frames == 7
    rec = read_recording(tmp_path / "rec")
    assert len(rec.entries) == 7
    assert not rec.skipped


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="--fps must be above 0"):
        CaptureOptions(fps=0)


def test_parse_region_names_the_bad_value() -> None:
    assert parse_region("10, 20,640,480") == (10, 20, 640, 480)
    for bad in ("10,20,640", "a,b,c,d", "0,0,0,480"):
        with pytest.raises(ValueError, match="--region"):
            parse_region(bad)


def _capture_cli(*args: str, env: dict[str, str], timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "play", "capture", "--quiet", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_without_a_display_the_command_says_so_and_exits_cleanly(tmp_path: Path) -> None:
    pytest.importorskip("mss", reason="needs the capture extra: pip install -e '.[capture]'")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    for where in (["--window", "Doom"], ["--monitor", "1"]):
        done = _capture_cli(*where, "--out", str(tmp_path / "rec"), env=env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "cannot list the windows" in done.stderr or "no screen" in done.stderr


@pytest.fixture(scope="module")
def desktop() -> Iterator[str]:
    """An X display (Xvfb) with a window manager (openbox, so windows are listed
    the EWMH way, as on a desktop): its DISPLAY."""
    pytest.importorskip("mss", reason="needs the capture extra: pip install -e '.[capture]'")
    missing = [tool for tool in ("Xvfb", "openbox") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install xvfb openbox; "
                    ".ci/run does)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24",
                               "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as fd:
        display = f":{fd.readline().strip()}"
    manager = subprocess.Popen(["openbox"], env={**os.environ, "DISPLAY": display},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield display
    finally:
        manager.terminate()
        server.terminate()
        manager.wait(10)
        server.wait(10)


GAME = """
import sys, time, pygame
pygame.display.init()
screen = pygame.display.set_mode((160, 120))
pygame.display.set_caption("Pattern Quest 2")
for i in range(10 ** 6):
    screen.fill((200, 30, 40))
    pygame.draw.rect(screen, (30, 220, 40), (0, 0, 160, 40))
    pygame.display.flip()
    pygame.event.pump()
    time.sleep(0.02)
"""


def test_a_real_window_is_found_by_title_and_captured(desktop: str, tmp_path: Path) -> None:
    env = {**os.environ, "DISPLAY": desktop, "SDL_VIDEODRIVER": "x11"}
    game = subprocess.Popen([sys.executable, "-c", GAME], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        env.pop("SDL_VIDEODRIVER")
        done = _capture_cli("--window", "pattern quest", "--out", str(tmp_path / "rec"),
                            "--frames", "12", "--size", "40x30", "--fps", "20", env=env)
        assert done.returncode == 0, done.stderr
        assert "12 frames in 1 episode(s)" in done.stdout
        rec = read_recording(tmp_path / "rec")
        assert len(rec.entries) == 12
        assert rec.meta["world"] == "capture: the window " \
            "'Pattern Quest 2'"
        frame = load_image(rec.entries[-1].frame)
        assert frame.shape == (30, 40, 3)
        assert frame[:8].mean(axis=(0, 1)) == pytest.approx([30, 220, 40], abs=25)  # the band
        assert frame[-8:].mean(axis=(0, 1)) == pytest.approx([200, 30, 40], abs=25)

        done = _capture_cli("--window", "no such game", "--out", str(tmp_path / "x"), env=env)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert "no window titled 'no such game'" in done.stderr
        assert "Pattern Quest 2" in done.stderr  # the windows there are, listed
    finally:
        game.kill()  # SDL turns SIGTERM into a quit event this loop never reads
        game.wait(10)


def test_the_global_keys_are_heard_whichever_window_has_the_focus(desktop: str) -> None:
    if importlib.util.find_spec("pynput") is None:  # importing it needs a display
        pytest.skip("needs the capture extra: pip install -e '.[capture]'")
    code = """
import time
from pynput.keyboard import Controller, Key
from play.capture import Hotkeys
keys = Hotkeys("f9", "esc")
typist = Controller()
typist.press(Key.f9)
time.sleep(0.1)
typist.press(Key.f9)  # held: auto-repeat presses again
time.sleep(0.1)
typist.release(Key.f9)
for key in (Key.f8, Key.f9, Key.esc):
    typist.press(key)
    typist.release(key)
    time.sleep(0.1)
time.sleep(0.5)
print(keys.commands())
keys.close()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "DISPLAY": desktop}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['toggle', 'toggle', 'end']"
