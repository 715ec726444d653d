"""Writing the recording format: episodes appended crash-safe, one JSONL line
a frame, the frame's image written before its line."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from recording.format import (
    FORMAT_VERSION,
    FRAMES_DIR,
    LOG_NAME,
    META_NAME,
    STICK_NAMES,
    RecordingError,
    controls_to_line,
    read_meta,
)


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

    def write(self, frame: np.ndarray, controls: Sequence[float] | np.ndarray,
              timestamp: float | None = None) -> None:
        """Write one frame (``(H, W, 3)`` uint8) and the controls applied before it;
        ``timestamp`` (Unix seconds) is when the frame was taken, else now."""
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
        taken = time.time() if timestamp is None else timestamp
        self._last_time = max(taken, self._last_time + 1e-6)
        line = {"frame_filename": name, **controls_to_line(controls, self.control_names),
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
