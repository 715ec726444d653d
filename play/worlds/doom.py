"""ViZDoom: Freedoom and the scenarios ship inside the ``vizdoom`` wheel."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from play.worlds import clip_controls, require
from recording.format import STICK_NAMES

RESOLUTIONS = ("160x120", "200x150", "256x192", "320x240", "640x480")


class DoomWorld:
    """A ViZDoom scenario driven by two sticks through the continuous delta buttons.

    Left stick: x strafes, y moves (up = forward). Right stick: x turns, y sets
    a *target* pitch (up = look up, at most ``max_pitch`` degrees): the raw look
    delta integrates, and random sticks would pin the view to floor or sky.
    A scenario that can shoot takes the right trigger as its attack, and one that
    can use things (doors, switches) the A button as its use: they join its
    ``control_names`` only there, so a scenario without them keeps four controls.

    Args:
        scenario: A scenario name (``basic``, ``health_gathering``,
            ``deathmatch``, ...) or a path to a ``.cfg`` file.
        frame_skip: Game tics per step (Doom runs 35 tics/s).
        resolution: Screen size, one of ``RESOLUTIONS``.
        move_speed: Movement delta at full stick (deltas saturate near 50).
        turn_speed: Degrees turned per tic at full stick.
        max_pitch: Degrees of look up/down at full stick.
        seed: First episode's seed; episode n uses ``seed + n``.
    """

    def __init__(self, scenario: str = "health_gathering", frame_skip: int = 4,
                 resolution: str = "160x120", move_speed: float = 50.0,
                 turn_speed: float = 3.0, max_pitch: float = 30.0, seed: int = 0) -> None:
        self.control_help = {"left_x": "strafe", "left_y": "move (up = forward)",
                             "right_x": "turn", "right_y": "look up/down"}
        vzd = require("vizdoom", "envs", "vizdoom")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        config = scenario if scenario.endswith(".cfg") else os.path.join(
            vzd.scenarios_path, f"{scenario}.cfg")
        if not os.path.isfile(config):
            names = sorted(f[:-4] for f in os.listdir(vzd.scenarios_path) if f.endswith(".cfg"))
            raise ValueError(f"unknown Doom scenario {scenario!r}; choose one of "
                             f"{', '.join(names)} or a .cfg path")
        self.id = f"doom:{scenario}"
        self.frame_skip = frame_skip
        self.fps = 35.0 / frame_skip
        self.move_speed, self.turn_speed, self.max_pitch = move_speed, turn_speed, max_pitch
        B, GV = vzd.Button, vzd.GameVariable
        game = vzd.DoomGame()
        game.load_config(config)
        scenario_buttons = set(game.get_available_buttons())
        extras = [(name, button) for name, button in (("right_trigger", B.ATTACK), ("a", B.USE))
                  if button in scenario_buttons]
        self.control_names: tuple[str, ...] = (*STICK_NAMES, *(name for name, _ in extras))
        self.control_help.update({name: what for name, what in (("right_trigger", "attack"),
                                                                 ("a", "use"))
                                  if name in self.control_names})
        game.set_available_buttons([B.MOVE_LEFT_RIGHT_DELTA, B.MOVE_FORWARD_BACKWARD_DELTA,
                                    B.TURN_LEFT_RIGHT_DELTA, B.LOOK_UP_DOWN_DELTA,
                                    *(button for _, button in extras)])
        game.set_available_game_variables([GV.PITCH])
        game.set_screen_resolution(getattr(vzd.ScreenResolution, f"RES_{resolution.upper()}"))
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.init()
        self._game: Any = game
        self._pitch_var = GV.PITCH
        self._seed = seed
        self._frame = np.zeros((*self._shape(resolution), 3), np.uint8)

    @staticmethod
    def _shape(resolution: str) -> tuple[int, int]:
        w, h = (int(v) for v in resolution.split("x"))
        return h, w

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._seed = seed
        # Seeding right before every new episode is what makes episodes repeatable.
        self._game.set_seed(self._seed % 2**31)
        self._seed += 1
        self._game.new_episode()
        self._frame = self._screen()
        return self._frame

    def _screen(self) -> np.ndarray:
        state = self._game.get_state()
        return np.ascontiguousarray(state.screen_buffer) if state is not None else self._frame

    def step(self, controls: np.ndarray) -> tuple[np.ndarray, bool]:
        c = clip_controls(controls, len(self.control_names))
        lx, ly, rx, ry = c[:4]
        pitch = float(self._game.get_game_variable(self._pitch_var))
        target = ry * self.max_pitch  # ZDoom: negative pitch looks up, like stick up
        # A positive look delta raises the view (lowers pitch) by that much per tic.
        look = (pitch - target) / self.frame_skip
        action = [lx * self.move_speed, -ly * self.move_speed, rx * self.turn_speed, look,
                  *(1.0 if v > 0.5 else 0.0 for v in c[4:])]  # attack, use: held past half
        self._game.make_action(action, self.frame_skip)
        done = bool(self._game.is_episode_finished())
        if not done:
            self._frame = self._screen()
        return self._frame, done

    def close(self) -> None:
        self._game.close()
