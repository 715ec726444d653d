"""The recording format: one module reads and writes it.

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

import contextlib
import json
import logging
import math
import os
import time
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


def parse_controls(value: Any, control_dim: int) -> np.ndarray:
    """A line's ``controls`` value -> ``(control_dim,)`` float32, or ``ValueError``
    whose message starts with the skip reason."""
    if isinstance(value, dict):
        if control_dim != 4:
            raise ValueError(f"wrong control length: stick dict gives 4, expected {control_dim}")
        try:
            flat = [*value["leftStick"], *value["rightStick"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed controls: stick dict needs leftStick and rightStick "
                             f"[x, y] ({err})") from None
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


def controls_to_json(
        controls: Sequence[float] | np.ndarray) -> list[float] | dict[str, list[float]]:
    """The line form of a control vector: the stick dict for 4, else a list."""
    values = [round(float(v), 6) for v in controls]
    if len(values) == 4:
        return {"leftStick": values[:2], "rightStick": values[2:]}
    return values


def _line_time(obj: dict[str, Any]) -> float | None:
    if "timestamp" in obj:
        t = obj["timestamp"]
        if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t):
            return float(t)
        raise ValueError(f"bad timestamp: {t!r}")
    if "server_timestamp_ns" in obj:
        t = obj["server_timestamp_ns"]
        if isinstance(t, int) and not isinstance(t, bool):
            return t / 1e9
        raise ValueError(f"bad timestamp: server_timestamp_ns {t!r} is not an integer")
    return None


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
    # (episode, time or None, line, entry fields or None for a placed-but-bad line)
    placed: list[tuple[int, float | None, int, tuple[Path, np.ndarray] | None]] = []
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
                name = obj.get("frame_filename")
                if not isinstance(name, str) or not name:
                    raise ValueError("missing field: frame_filename")
                if "controls" not in obj:
                    raise ValueError("missing field: controls")
                controls = parse_controls(obj["controls"], control_dim)
                frame = _check_image(directory / name, check_images)
            except ValueError as err:
                skipped.append(Skipped(line_no, str(err)))
                placed.append((episode, t, line_no, None))
                continue
            placed.append((episode, t, line_no, (frame, controls)))

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
    skipped.sort(key=lambda s: s.line)
    recording = Recording(directory, entries, skipped, control_dim, meta)
    if not entries:
        detail = f"; {recording.report_skipped(5)}" if skipped else ""
        raise RecordingError(f"{path}: no usable line{detail}")
    return recording


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


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RecordingWriter:
    """Appends episodes to a recording, crash-safe.

    Each frame is written to a temporary name and renamed, and only then is its
    line appended and flushed, so a killed recorder leaves a log whose every
    line is usable. Writing into an existing recording adds new episodes after
    the ones there; nothing is overwritten.

    Args:
        directory: The recording directory (created if needed).
        height: Frame height in pixels; every frame must have it.
        width: Frame width in pixels.
        control_names: Names of the control axes, in order.
        meta: Extra facts for ``meta.json``: world, fps, policy, seed, ...
    """

    def __init__(self, directory: str | Path, height: int, width: int,
                 control_names: Sequence[str] = STICK_NAMES,
                 meta: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.height, self.width = height, width
        self.control_names = tuple(control_names)
        (self.directory / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
        log_path = self.directory / LOG_NAME
        self.first_episode = _next_episode(log_path)
        self.episode = self.first_episode - 1
        self.step = 0
        self.frames_written = 0
        self._last_time = 0.0
        self._meta = self._merge_meta(meta or {})
        self._log = log_path.open("a", encoding="utf-8")

    def _merge_meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        path = self.directory / META_NAME
        meta = read_meta(self.directory)
        fixed = {"height": self.height, "width": self.width,
                 "control_names": list(self.control_names)}
        for key, value in fixed.items():
            if key in meta and meta[key] != value:
                raise RecordingError(
                    f"{path}: this recording has {key} = {meta[key]!r}, the new frames "
                    f"{value!r}; record into another directory")
        run = {k: v for k, v in extra.items() if k not in fixed}
        run["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run["first_episode"] = self.first_episode
        meta.update({"format": "tinydreams-recording", "format_version": FORMAT_VERSION,
                     **fixed})
        for key in ("world", "fps"):  # facts of the recording as a whole, set once
            if key in extra:
                meta.setdefault(key, extra[key])
        meta.setdefault("runs", []).append(run)
        _write_json_atomic(path, meta)
        return meta

    def new_episode(self) -> int:
        self.episode += 1
        self.step = 0
        return self.episode

    def write(self, frame: np.ndarray, controls: Sequence[float] | np.ndarray) -> None:
        """Write one frame (``(H, W, 3)`` uint8) and the controls applied before it."""
        if self.episode < self.first_episode:
            self.new_episode()
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, "
                             f"got {frame.shape} {frame.dtype}")
        if len(controls) != len(self.control_names):
            raise ValueError(f"expected {len(self.control_names)} controls, got {len(controls)}")
        name = f"{FRAMES_DIR}/{self.episode:05d}_{self.step:06d}.png"
        final = self.directory / name
        tmp = final.with_name(final.name + ".tmp")
        Image.fromarray(frame).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, final)
        # time.time() can step backwards (NTP); the log's order must not.
        self._last_time = max(time.time(), self._last_time + 1e-6)
        line = {"frame_filename": name, "controls": controls_to_json(controls),
                "timestamp": round(self._last_time, 6), "episode": self.episode,
                "step": self.step}
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()
        self.step += 1
        self.frames_written += 1

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self._log.closed:
            return
        self._log.flush()
        os.fsync(self._log.fileno())
        self._log.close()
        run = self._meta["runs"][-1]
        run["episodes"] = max(0, self.episode - self.first_episode + 1)
        run["frames"] = self.frames_written
        run.update(summary or {})
        _write_json_atomic(self.directory / META_NAME, self._meta)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _next_episode(log_path: Path) -> int:
    """The episode number after the last one in an existing log (0 for a new one).

    Also ends a partial last line left by a crash with a newline, so the next
    line does not glue onto it (the reader then skips just that one line).
    """
    if not log_path.is_file() or log_path.stat().st_size == 0:
        return 0
    last = -1
    with log_path.open("rb") as f:
        for raw in f:
            with contextlib.suppress(ValueError, AttributeError):
                ep = json.loads(raw).get("episode", 0)
                if isinstance(ep, int):
                    last = max(last, ep)
        f.seek(-1, os.SEEK_END)
        ends_clean = f.read(1) == b"\n"
    if not ends_clean:
        with log_path.open("ab") as f:
            f.write(b"\n")
    return last + 1
