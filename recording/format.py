"""The recording format, and reading it (``recording.writer`` writes it).

A recording is a directory holding ``recording_log.jsonl`` (one JSON object a
line) and the image files it names, plus an optional ``meta.json``. Each line:

- ``frame_filename``: image path relative to the directory (any format Pillow reads).
- ``controls``: a list of ``control_dim`` floats, or for 4 controls
  ``{"leftStick": [x, y], "rightStick": [x, y]}``; values in [-1, 1], gamepad
  convention (stick up is y = -1). They are the inputs applied *before* this
  frame was captured, so a transition is (frame i, controls i+1, frame i+1).
- ``timestamp`` (float seconds) or ``server_timestamp_ns`` (int): lines are
  sorted by it before pairing.
- ``episode`` (int, optional): transitions never cross an episode boundary.

Bad lines are skipped and counted with their line numbers, never fatal. A bad
line that can still be placed in time (say its image is missing) also breaks
its episode in two there, so no transition jumps over the gap.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

LOG_NAME = "recording_log.jsonl"
META_NAME = "meta.json"
FRAMES_DIR = "frames"
FORMAT_VERSION = 1
STICK_NAMES = ("left_x", "left_y", "right_x", "right_y")
TRIGGER_NAMES = ("left_trigger", "right_trigger")
# Gamepads report 1.0000001 now and then; beyond this slack a value is an error.
_RANGE_SLACK = 1e-3


class RecordingError(ValueError):
    """A recording that cannot be used at all (missing, empty, or mismatched)."""


@dataclass(frozen=True)
class Entry:
    """One usable line: a frame, the controls applied before it, its place in time."""

    line: int  # 1-based line number in the log
    frame: Path  # absolute path of the image
    controls: np.ndarray  # (control_dim,) float32 in [-1, 1]
    time: float  # seconds, or the line number when the log has no timestamps
    episode: int
    segment: int  # consecutive entries of one segment form transitions


@dataclass(frozen=True)
class Skipped:
    line: int
    reason: str


@dataclass
class Recording:
    """A parsed recording: usable entries in time order, and what was skipped."""

    directory: Path
    entries: list[Entry]
    skipped: list[Skipped]
    control_dim: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def control_names(self) -> tuple[str, ...]:
        """The controls' names, in the order of each entry's ``controls``."""
        return _meta_names(self.control_dim, self.meta)

    @property
    def episodes(self) -> list[int]:
        return sorted({e.episode for e in self.entries})

    def transitions(self, context_frames: int = 1) -> np.ndarray:
        """Indices into ``entries``, shape ``(T, K + 1)``: K context frames, oldest
        first, then the target frame, whose controls are the action. No row
        crosses an episode start or a gap left by a skipped line."""
        rows: list[list[int]] = []
        start = 0
        for i in range(1, len(self.entries) + 1):
            if i == len(self.entries) or self.entries[i].segment != self.entries[start].segment:
                rows.extend(list(range(j - context_frames, j + 1))
                            for j in range(start + context_frames, i))
                start = i
        return np.asarray(rows, dtype=np.int64).reshape(-1, context_frames + 1)

    def controls(self) -> np.ndarray:
        """All entries' controls, ``(N, control_dim)``."""
        if not self.entries:
            return np.zeros((0, self.control_dim), np.float32)
        return np.stack([e.controls for e in self.entries])

    def skip_summary(self) -> Counter[str]:
        return Counter(s.reason.split(":")[0] for s in self.skipped)

    def report_skipped(self, limit: int = 10) -> str:
        """One line per reason, with up to ``limit`` line numbers each."""
        lines = []
        for reason, count in sorted(self.skip_summary().items()):
            numbers = [s.line for s in self.skipped if s.reason.split(":")[0] == reason]
            shown = ", ".join(map(str, numbers[:limit])) + (", ..." if count > limit else "")
            lines.append(f"{count} line(s) skipped, {reason}: line {shown}")
        return "\n".join(lines)


def control_names(control_dim: int, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The names of ``control_dim`` controls: ``names`` when given, the sticks for
    four, else ``c0``, ``c1``, ..."""
    if names:
        if len(names) != control_dim:
            raise ValueError(f"{len(names)} control names for {control_dim} controls")
        return tuple(names)
    return STICK_NAMES if control_dim == len(STICK_NAMES) else tuple(
        f"c{i}" for i in range(control_dim))


def _meta_names(control_dim: int, meta: dict[str, Any]) -> tuple[str, ...]:
    """The names ``meta.json`` gives ``control_dim`` controls, when it gives as many."""
    names = meta.get("control_names")
    return control_names(control_dim, names if names and len(names) == control_dim else None)


def has_pad_layout(names: Sequence[str]) -> bool:
    """Whether controls named ``names`` are the sticks and then triggers and
    buttons, written as a line's ``controls``, ``triggers`` and ``buttons``."""
    return tuple(names[:4]) == STICK_NAMES and len(names) > 4 and not any(
        n.startswith("c") and n[1:].isdigit() for n in names[4:])


def parse_line_controls(obj: dict[str, Any], names: Sequence[str]) -> np.ndarray:
    """A line's controls in the order of ``names``: its ``controls`` (a list of
    them all, or the sticks), then for a pad layout its ``triggers`` ``[left,
    right]`` and ``buttons`` ``{name: 0 or 1}`` (absent ones at rest);
    ``ValueError`` whose message starts with the skip reason."""
    if "controls" not in obj:
        raise ValueError("missing field: controls")
    value = obj["controls"]
    if not has_pad_layout(names) or (isinstance(value, list) and len(value) == len(names)):
        return parse_controls(value, len(names))
    sticks = parse_controls(value, len(STICK_NAMES))
    triggers = obj.get("triggers", [0.0, 0.0])
    buttons = obj.get("buttons", {})
    if not (isinstance(triggers, list) and len(triggers) == 2):
        raise ValueError(f"malformed triggers: expected [left, right], got {triggers!r}")
    if not isinstance(buttons, dict):
        raise ValueError(f"malformed buttons: expected {{name: 0 or 1}}, got {buttons!r}")
    extra = [triggers[TRIGGER_NAMES.index(n)] if n in TRIGGER_NAMES else buttons.get(n, 0)
             for n in names[len(STICK_NAMES):]]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0
               for v in extra):
        raise ValueError(f"malformed triggers or buttons: values must be numbers in [0, 1], "
                         f"got {extra}")
    return np.concatenate([sticks, np.asarray(extra, np.float32)])


def parse_controls(value: Any, control_dim: int) -> np.ndarray:
    """A line's ``controls`` value -> ``(control_dim,)`` float32, or ``ValueError``
    whose message starts with the skip reason."""
    if isinstance(value, dict):
        if control_dim != 4:
            raise ValueError(f"wrong control length: stick dict gives 4, expected {control_dim}")
        try:
            flat = [*_stick(value["leftStick"]), *_stick(value["rightStick"])]
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed controls: stick dict needs leftStick and rightStick "
                             f"as [x, y] or {{x, y}} ({err})") from None
        if len(flat) != 4:
            raise ValueError("malformed controls: each stick needs [x, y]")
    elif isinstance(value, list):
        flat = value
    else:
        raise ValueError(f"malformed controls: expected a list or a stick dict, got "
                         f"{type(value).__name__}")
    if len(flat) != control_dim:
        raise ValueError(f"wrong control length: got {len(flat)}, expected {control_dim}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise ValueError("malformed controls: values must be numbers")
    arr = np.asarray(flat, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("non-finite control value")
    if np.abs(arr).max(initial=0.0) > 1.0 + _RANGE_SLACK:
        raise ValueError(f"control out of range: {arr.tolist()} outside [-1, 1]")
    return np.clip(arr, -1.0, 1.0).astype(np.float32)


def _stick(value: Any) -> list[Any]:
    """A stick as ``[x, y]`` or ``{"x": x, "y": y}`` -> ``[x, y]``."""
    if isinstance(value, dict):
        return [value["x"], value["y"]]
    return list(value)


def controls_to_line(controls: Sequence[float] | np.ndarray,
                     names: Sequence[str]) -> dict[str, Any]:
    """The line fields of a control vector named ``names``: the stick dict for
    the sticks (with a pad layout's ``triggers`` and ``buttons`` beside it),
    else a list."""
    values = [round(float(v), 6) for v in controls]
    if tuple(names) == STICK_NAMES or has_pad_layout(names):
        line: dict[str, Any] = {"controls": {"leftStick": values[:2],
                                             "rightStick": values[2:4]}}
        rest = dict(zip(names[4:], values[4:], strict=True))
        if any(n in TRIGGER_NAMES for n in rest):
            line["triggers"] = [rest.get(n, 0.0) for n in TRIGGER_NAMES]
        pressed = {n: round(v) for n, v in rest.items() if n not in TRIGGER_NAMES}
        if pressed:
            line["buttons"] = pressed
        return line
    return {"controls": values}


def _line_time(obj: dict[str, Any]) -> float | None:
    """A line's time in seconds: ``timestamp`` (seconds as a number or a numeric
    string, or an ISO 8601 string; without a zone, UTC) or ``server_timestamp_ns``
    (an integer, or a string of digits)."""
    if "timestamp" in obj:
        t = obj["timestamp"]
        if isinstance(t, str):
            return _text_time(t)
        if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t):
            return float(t)
        raise ValueError(f"bad timestamp: {t!r}")
    if "server_timestamp_ns" in obj:
        t = obj["server_timestamp_ns"]
        if isinstance(t, str) and t.strip().isdigit():
            t = int(t)
        if isinstance(t, int) and not isinstance(t, bool):
            return t / 1e9
        raise ValueError(f"bad timestamp: server_timestamp_ns {t!r} is not an integer")
    return None


def _text_time(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"bad timestamp: {text!r} is neither seconds nor an ISO 8601 "
                             f"time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"bad timestamp: {text!r}")
    return seconds


def read_recording(directory: str | Path, control_dim: int | None = None,
                   check_images: str = "exists") -> Recording:
    """Parse a recording directory.

    Args:
        directory: The directory holding ``recording_log.jsonl``.
        control_dim: Expected control length; default from ``meta.json``, else 4.
        check_images: ``exists`` (stat each file), ``decode`` (open and decode
            each image: what ``inspect`` does), or ``none``.

    Raises:
        RecordingError: The log is missing or holds no usable line.
    """
    directory = Path(directory)
    path = directory / LOG_NAME
    if not path.is_file():
        raise RecordingError(f"{directory}: no recording log here (expected {LOG_NAME})")
    meta = read_meta(directory)
    if control_dim is None:
        control_dim = len(meta.get("control_names", STICK_NAMES))
    skipped: list[Skipped] = []
    placed = _place_lines(path, directory, _meta_names(control_dim, meta), check_images,
                          skipped)
    entries = _entries(placed, skipped)
    skipped.sort(key=lambda s: s.line)
    recording = Recording(directory, entries, skipped, control_dim, meta)
    if not entries:
        detail = f"; {recording.report_skipped(5)}" if skipped else ""
        raise RecordingError(f"{path}: no usable line{detail}")
    return recording


# One line of the log, placed in its episode and time: (episode, time or None,
# line number, its frame and controls, or None for a placed line that is bad).
_Placed = tuple[int, float | None, int, tuple[Path, np.ndarray] | None]


def _place_lines(path: Path, directory: Path, names: tuple[str, ...], check_images: str,
                 skipped: list[Skipped]) -> list[_Placed]:
    """Every line of the log placed in its episode and time; the lines that
    cannot be read are added to ``skipped`` with their line numbers."""
    placed: list[_Placed] = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError as err:
                skipped.append(Skipped(line_no, f"malformed JSON: {err}"))
                continue
            try:
                t = _line_time(obj)
                episode = obj.get("episode", 0)
                if not isinstance(episode, int) or isinstance(episode, bool):
                    raise ValueError(f"bad episode: {episode!r} is not an integer")
            except ValueError as err:
                skipped.append(Skipped(line_no, str(err)))
                continue
            try:
                placed.append((episode, t, line_no,
                               _line_fields(obj, directory, names, check_images)))
            except ValueError as err:
                skipped.append(Skipped(line_no, str(err)))
                placed.append((episode, t, line_no, None))
    return placed


def _line_fields(obj: dict[str, Any], directory: Path, names: tuple[str, ...],
                 check_images: str) -> tuple[Path, np.ndarray]:
    name = obj.get("frame_filename")
    if not isinstance(name, str) or not name:
        raise ValueError("missing field: frame_filename")
    controls = parse_line_controls(obj, names)
    return _check_image(directory / name, check_images), controls


def _entries(placed: list[_Placed], skipped: list[Skipped]) -> list[Entry]:
    """The readable lines in order of episode and time, split into segments
    where an episode changes or a bad line breaks it."""
    timed = [p for p in placed if p[1] is not None]
    if timed and len(timed) != len(placed):
        for p in placed:
            if p[1] is None and p[3] is not None:
                skipped.append(Skipped(p[2], "missing timestamp: other lines have one"))
        placed = timed
    placed.sort(key=lambda p: (p[0], p[1] if p[1] is not None else p[2], p[2]))
    entries: list[Entry] = []
    segment, previous_episode, gap = 0, None, False
    for episode, t, line_no, fields in placed:
        if fields is None:
            gap = True
            continue
        if entries and (gap or episode != previous_episode):
            segment += 1
        gap, previous_episode = False, episode
        entries.append(Entry(line_no, fields[0], fields[1],
                             t if t is not None else float(line_no), episode, segment))
    return entries


def _check_image(path: Path, mode: str) -> Path:
    if mode == "none":
        return path
    if not path.is_file():
        raise ValueError(f"missing image: {path.name}")
    if mode == "decode":
        try:
            with Image.open(path) as img:
                img.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"unreadable image: {path.name} ({err})") from None
    return path


def read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_NAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        log.warning("%s: ignoring unreadable meta.json (%s)", path, err)
        return {}
    return meta if isinstance(meta, dict) else {}
