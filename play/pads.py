"""Gamepads and the keyboard as controls, from pygame events.

Pads are read through SDL's GameController API (``pygame._sdl2.controller``):
its mapping database names the left stick, right stick, triggers and face
buttons the same on Xbox, PlayStation, Switch Pro and generic pads, on every
system, where raw joystick axes differ by pad and by system (on Linux an Xbox
pad's axis 2 is its left trigger). A joystick SDL has no mapping for is read
raw, its sticks from the axes ``axis_map`` names (default 0, 1, 2, 3).

Everything is driven by events, so pads come and go while running (keyed by
instance id), and tests inject controller, joystick and keyboard events under
``SDL_VIDEODRIVER=dummy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from play.worlds import require
from recording.format import STICK_NAMES

TRIGGERS = ("left_trigger", "right_trigger")  # 0 released .. 1 pulled all the way
# SDL's names of a pad's buttons, which are ours too.
BUTTONS = ("a", "b", "x", "y", "back", "guide", "start", "left_stick", "right_stick",
           "left_shoulder", "right_shoulder", "dpad_up", "dpad_down", "dpad_left", "dpad_right")
PAD_CONTROLS = (*STICK_NAMES, *TRIGGERS, *BUTTONS)  # every control a pad gives
# SDL's controller axis order: left x, left y, right x, right y, left trigger, right trigger.
_AXES = (*STICK_NAMES, *TRIGGERS)
# Keyboard fallback: WASD is the left stick, the arrows the right stick (up is -1,
# as on a pad); space pulls the right trigger, left shift the left; E is A, F is B.
KEY_AXES = {
    "w": (1, -1.0), "s": (1, 1.0), "a": (0, -1.0), "d": (0, 1.0),
    "up": (3, -1.0), "down": (3, 1.0), "left": (2, -1.0), "right": (2, 1.0),
}
KEY_CONTROLS = {"space": "right_trigger", "left shift": "left_trigger", "e": "a", "f": "b"}
AXIS_RANGE = 32767.0  # SDL's axis values are int16


def parse_axis_map(text: str) -> tuple[int, int, int, int]:
    """``0,1,3,4`` -> the raw axes of left x, left y, right x, right y."""
    try:
        axes = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"--axis-map wants four axis numbers, e.g. 0,1,3,4; got {text!r}"
                         ) from None
    if len(axes) != 4 or min(axes) < 0:
        raise ValueError(f"--axis-map wants four axis numbers >= 0, e.g. 0,1,3,4; got {text!r}")
    return axes


@dataclass
class Pad:
    """One connected pad: SDL's name for it, whether SDL maps it, and its values."""

    name: str
    mapped: bool  # a GameController (SDL knows its layout) or a raw joystick
    mapping: dict[str, str] = field(default_factory=dict)  # control -> raw axis/button
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PAD_CONTROLS, 0.0))


@dataclass
class PadInput:
    """The controls of every connected pad and the keyboard.

    Args:
        dead_zone: Radial dead zone of each stick; values inside read 0, those
            outside are rescaled so the range stays [0, 1].
        invert_y: Flip both sticks' y axes.
        axis_map: The raw axes of a joystick SDL has no mapping for: left x,
            left y, right x, right y.
    """

    dead_zone: float = 0.1
    invert_y: bool = False
    axis_map: tuple[int, int, int, int] = (0, 1, 2, 3)
    pads: dict[int, Pad] = field(default_factory=dict)  # instance id -> pad
    keys: set[str] = field(default_factory=set)
    _devices: dict[int, Any] = field(default_factory=dict)  # kept open while connected

    def handle(self, event: Any) -> str | None:
        """Feed one pygame event; returns the name of a pad button just pressed
        (so the player can bind Back and Start), else None."""
        pygame = require("pygame", "play", "pygame-ce")
        kind = event.type
        if kind == pygame.CONTROLLERDEVICEADDED:
            self._add_controller(event.device_index)
        elif kind == pygame.JOYDEVICEADDED:
            self._add_joystick(event.device_index)
        elif kind == pygame.CONTROLLERDEVICEREMAPPED and event.instance_id in self._devices:
            self._pad(event.instance_id, True).mapping = dict(
                self._devices[event.instance_id].get_mapping())
        elif kind in (pygame.CONTROLLERDEVICEREMOVED, pygame.JOYDEVICEREMOVED):
            self.pads.pop(event.instance_id, None)
            self._devices.pop(event.instance_id, None)
        elif kind == pygame.CONTROLLERAXISMOTION and event.axis < len(_AXES):
            value = event.value / AXIS_RANGE if isinstance(event.value, int) else event.value
            self._pad(event.instance_id, True).values[_AXES[event.axis]] = float(value)
        elif kind in (pygame.CONTROLLERBUTTONDOWN, pygame.CONTROLLERBUTTONUP):
            return self._button(event.instance_id, event.button,
                                kind == pygame.CONTROLLERBUTTONDOWN)
        elif kind == pygame.JOYAXISMOTION and not self._mapped(event.instance_id):
            if event.axis in self.axis_map:
                name = STICK_NAMES[self.axis_map.index(event.axis)]
                self._pad(event.instance_id, False).values[name] = float(event.value)
        elif kind in (pygame.KEYDOWN, pygame.KEYUP):
            name = pygame.key.name(event.key)
            if name in KEY_AXES or name in KEY_CONTROLS:
                (self.keys.add if kind == pygame.KEYDOWN else self.keys.discard)(name)
        return None

    def _mapped(self, instance_id: int) -> bool:
        pad = self.pads.get(instance_id)
        return pad is not None and pad.mapped

    def _pad(self, instance_id: int, mapped: bool) -> Pad:
        if instance_id not in self.pads:  # an injected event: a pad never announced
            self.pads[instance_id] = Pad("pad", mapped)
        return self.pads[instance_id]

    def _button(self, instance_id: int, button: int, down: bool) -> str | None:
        if not 0 <= button < len(BUTTONS):
            return None
        self._pad(instance_id, True).values[BUTTONS[button]] = 1.0 if down else 0.0
        return BUTTONS[button] if down else None

    def _add_controller(self, index: int) -> None:
        from pygame._sdl2 import controller

        try:  # a real device; an injected event may name none
            pad = controller.Controller(index)
        except Exception:  # pygame.error, or an index that went away
            return
        instance_id = pad.as_joystick().get_instance_id()
        self._devices[instance_id] = pad
        self.pads[instance_id] = Pad(pad.name, True, dict(pad.get_mapping()))

    def _add_joystick(self, index: int) -> None:
        pygame = require("pygame", "play", "pygame-ce")
        from pygame._sdl2 import controller

        try:
            if controller.is_controller(index):
                return  # CONTROLLERDEVICEADDED brings it, mapped
            joy = pygame.joystick.Joystick(index)
        except pygame.error:
            return
        mapping = {name: f"a{axis}" for name, axis in zip(STICK_NAMES, self.axis_map,
                                                          strict=True)}
        self._devices[joy.get_instance_id()] = joy
        self.pads[joy.get_instance_id()] = Pad(joy.get_name(), False, mapping)

    def _dead_zone(self, x: float, y: float) -> tuple[float, float]:
        r = float(np.hypot(x, y))
        if r <= self.dead_zone:
            return 0.0, 0.0
        # Rescale the radius so motion starts from 0 at the edge; the axes are
        # clipped later, each on its own (square-gated pads reach (1, 1)).
        scale = (r - self.dead_zone) / (1.0 - self.dead_zone) / r
        return x * scale, y * scale

    def values(self) -> dict[str, float]:
        """Every control a pad gives, by name: each stick from the pad pushing it
        furthest, unless a key moves it; triggers and buttons at their most."""
        out = dict.fromkeys(PAD_CONTROLS, 0.0)
        for pad in self.pads.values():
            v = pad.values
            for xn, yn in (STICK_NAMES[:2], STICK_NAMES[2:]):
                x, y = self._dead_zone(v[xn], v[yn])
                if np.hypot(x, y) > np.hypot(out[xn], out[yn]):
                    out[xn], out[yn] = x, y
            for name in (*TRIGGERS, *BUTTONS):
                out[name] = max(out[name], float(np.clip(v[name], 0.0, 1.0)))
        keyed = np.zeros(4)
        for key in self.keys & set(KEY_AXES):
            axis, sign = KEY_AXES[key]
            keyed[axis] += sign
        for i, name in enumerate(STICK_NAMES):
            if keyed[i]:
                out[name] = float(keyed[i])
            if self.invert_y and name.endswith("_y"):
                out[name] = -out[name]
            out[name] = float(np.clip(out[name], -1.0, 1.0))
        for key in self.keys & set(KEY_CONTROLS):
            out[KEY_CONTROLS[key]] = 1.0
        return out

    def controls(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """The controls ``names`` asks for (a world's or a model's), in order;
        a name no pad gives reads 0."""
        values = self.values()
        return np.array([values.get(n, 0.0) for n in names], np.float32)

    def describe(self) -> list[str]:
        """One line a pad: its name, how it is read, its live values."""
        lines = []
        for instance_id, pad in sorted(self.pads.items()):
            how = ("SDL GameController mapping" if pad.mapped else
                   f"raw joystick, axes {','.join(map(str, self.axis_map))} (--axis-map)")
            live = " ".join(f"{k} {v:+.2f}" for k, v in pad.values.items() if v)
            lines.append(f"pad {instance_id}: {pad.name} [{how}]  {live or 'at rest'}")
        return lines or ["no pad connected (the keyboard works: WASD, arrows, space, E)"]


def describe_controls(names: Any, values: np.ndarray) -> str:
    """The HUD's controls: the sticks as pairs, any other control pushed by name."""
    v = dict(zip(names, (float(x) for x in values), strict=True))
    parts = [f"{side} ({v[f'{key}_x']:+.2f},{v[f'{key}_y']:+.2f})"
             for side, key in (("L", "left"), ("R", "right")) if f"{key}_x" in v]
    parts += [f"{n} {x:.1f}" for n, x in v.items() if x and n not in STICK_NAMES]
    return " ".join(parts)
