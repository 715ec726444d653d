"""Gamepads through SDL's GameController API, raw joysticks through an axis map,
and the keyboard, fed injected events under SDL's dummy video driver."""

from __future__ import annotations

import ctypes
import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame", reason="needs the play extra: pip install -e '.[play]'")

from play.pads import AXIS_RANGE, PadInput, parse_axis_map  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STICKS = ("left_x", "left_y", "right_x", "right_y")


def controller_axis(instance_id: int, axis: int, value: float) -> Any:
    return pygame.event.Event(pygame.CONTROLLERAXISMOTION, instance_id=instance_id, axis=axis,
                              value=int(value * AXIS_RANGE))


def button(instance_id: int, number: int, down: bool = True) -> Any:
    kind = pygame.CONTROLLERBUTTONDOWN if down else pygame.CONTROLLERBUTTONUP
    return pygame.event.Event(kind, instance_id=instance_id, button=number)


def raw_axis(instance_id: int, axis: int, value: float) -> Any:
    return pygame.event.Event(pygame.JOYAXISMOTION, instance_id=instance_id, joy=instance_id,
                              axis=axis, value=value)


def key(kind: int, k: int) -> Any:
    return pygame.event.Event(kind, key=k, mod=0, unicode="", scancode=0)


def test_controller_events_drive_sticks_triggers_and_buttons() -> None:
    pygame.init()
    pads = PadInput(dead_zone=0.0)
    pads.handle(controller_axis(7, pygame.CONTROLLER_AXIS_RIGHTX, 0.5))
    pads.handle(controller_axis(7, pygame.CONTROLLER_AXIS_TRIGGERRIGHT, 1.0))
    assert pads.handle(button(7, pygame.CONTROLLER_BUTTON_A)) == "a"
    assert pads.handle(button(7, pygame.CONTROLLER_BUTTON_START)) == "start"
    names = ("left_x", "left_y", "right_x", "right_y", "right_trigger", "a", "x")
    assert pads.controls(names).tolist() == pytest.approx([0, 0, 0.5, 0, 1.0, 1.0, 0],
                                                          abs=1e-4)
    assert pads.handle(button(7, pygame.CONTROLLER_BUTTON_A, down=False)) is None
    pads.handle(controller_axis(7, pygame.CONTROLLER_AXIS_TRIGGERRIGHT, 0.0))
    assert pads.controls(names).tolist() == pytest.approx([0, 0, 0.5, 0, 0, 0, 0], abs=1e-4)
    # Raw joystick events of a mapped pad are SDL's raw axes: never read as sticks.
    pads.handle(raw_axis(7, 2, 1.0))
    assert pads.values()["right_x"] == pytest.approx(0.5, abs=1e-4)
    pads.handle(pygame.event.Event(pygame.CONTROLLERDEVICEREMOVED, instance_id=7))
    assert not any(pads.controls(names))


def test_a_joystick_sdl_does_not_know_reads_its_sticks_through_the_axis_map() -> None:
    pygame.init()
    pads = PadInput(dead_zone=0.0, axis_map=parse_axis_map("0,1,3,4"))
    for axis, value in ((0, 0.25), (1, -0.5), (2, 1.0), (3, -0.75), (4, 0.5)):
        pads.handle(raw_axis(3, axis, value))
    # Axis 2 (an Xbox pad's left trigger on Linux) moves nothing; 3 and 4 are the right stick.
    assert pads.controls(STICKS).tolist() == [0.25, -0.5, -0.75, 0.5]
    with pytest.raises(ValueError, match="four axis numbers"):
        parse_axis_map("0,1,3")


def test_dead_zone_two_pads_hot_unplug_and_the_keyboard() -> None:
    pygame.init()
    pads = PadInput(dead_zone=0.2)
    pads.handle(controller_axis(1, pygame.CONTROLLER_AXIS_LEFTX, 0.1))  # inside the dead zone
    pads.handle(controller_axis(2, pygame.CONTROLLER_AXIS_RIGHTX, 0.6))
    values = pads.values()
    assert values["left_x"] == 0.0
    assert values["right_x"] == pytest.approx((0.6 - 0.2) / 0.8, abs=1e-4)
    pads.handle(controller_axis(1, pygame.CONTROLLER_AXIS_LEFTX, 1.0))
    assert pads.values()["left_x"] == pytest.approx(1.0, abs=1e-4)
    pads.handle(pygame.event.Event(pygame.CONTROLLERDEVICEREMOVED, instance_id=1))
    assert pads.values()["left_x"] == 0.0
    assert pads.values()["right_x"] > 0  # the other pad still counts
    pads.invert_y = True
    pads.handle(key(pygame.KEYDOWN, pygame.K_UP))
    pads.handle(key(pygame.KEYDOWN, pygame.K_SPACE))
    pads.handle(key(pygame.KEYDOWN, pygame.K_e))
    values = pads.values()
    assert (values["right_y"], values["right_trigger"], values["a"]) == (1.0, 1.0, 1.0)
    pads.handle(key(pygame.KEYUP, pygame.K_SPACE))
    assert pads.values()["right_trigger"] == 0.0


def _sdl() -> Any:
    """pygame's own SDL library, for its virtual joysticks."""
    libs = glob.glob(os.path.join(os.path.dirname(pygame.__file__), os.pardir,
                                  "pygame_ce.libs", "libSDL2-*.so*"))
    if not libs:
        pytest.skip("pygame-ce's bundled SDL library is not where this test looks (Linux)")
    lib = ctypes.CDLL(libs[0])
    lib.SDL_JoystickAttachVirtual.argtypes = [ctypes.c_int] * 4
    lib.SDL_JoystickFromInstanceID.restype = ctypes.c_void_p
    lib.SDL_JoystickFromInstanceID.argtypes = [ctypes.c_int]
    lib.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
    lib.SDL_JoystickDetachVirtual.argtypes = [ctypes.c_int]
    return lib


def test_an_xbox_layout_joystick_gives_its_right_stick_from_axes_3_and_4() -> None:
    # A real SDL joystick (SDL's virtual driver) with the raw layout an Xbox pad has
    # on Linux: axes 0, 1 left stick; 2 left trigger; 3, 4 right stick; 5 right
    # trigger. Under its GameController mapping, SDL reads it as named controls.
    from pygame._sdl2 import controller

    pygame.init()
    pygame.joystick.init()
    controller.init()
    sdl = _sdl()
    index = sdl.SDL_JoystickAttachVirtual(1, 6, 15, 0)  # a game controller: 6 axes, 15 buttons
    assert index >= 0
    try:
        pads = PadInput(dead_zone=0.0)
        for event in pygame.event.get():
            pads.handle(event)
        (instance_id, pad), = pads.pads.items()
        assert pad.mapped
        device = pads._devices[instance_id]
        mapping = device.get_mapping()
        mapping.update({"lefttrigger": "a2", "rightx": "a3", "righty": "a4",
                        "righttrigger": "a5"})
        device.set_mapping(mapping)
        joystick = sdl.SDL_JoystickFromInstanceID(instance_id)
        for raw, value in ((2, 32767), (3, -32768), (4, 16384)):
            sdl.SDL_JoystickSetVirtualAxis(joystick, raw, value)
        pygame.joystick.get_count()  # pumps SDL's events
        for event in pygame.event.get():
            pads.handle(event)
        values = pads.values()
        assert values["right_x"] == pytest.approx(-1.0, abs=1e-3)
        assert values["right_y"] == pytest.approx(0.5, abs=1e-3)
        assert values["left_trigger"] == pytest.approx(1.0, abs=1e-3)
        assert values["left_x"] == values["left_y"] == values["right_trigger"] == 0.0
        assert pads.describe()[0].startswith(f"pad {instance_id}: Virtual Controller [SDL")
    finally:
        sdl.SDL_JoystickDetachVirtual(index)


def test_play_pads_lists_the_pads() -> None:
    result = subprocess.run([sys.executable, "-m", "play", "pads", "--seconds", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
    assert result.returncode == 0, result.stderr
    assert "no pad connected" in result.stdout
