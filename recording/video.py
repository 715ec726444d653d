"""Frames to an MP4 file (H.264, playable in every browser) through PyAV, whose
wheel brings its own FFmpeg. PyAV is the ``video`` extra; without it, opening a
video says which extra to install."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

INSTALL = "pip install -e '.[video]' (PyAV, which brings its own FFmpeg)"


class VideoUnavailable(ImportError):
    """PyAV is not installed: the message names the extra to install."""


def _av() -> Any:
    try:
        import av
    except ImportError as err:
        raise VideoUnavailable(f"MP4 video needs PyAV ({err}): {INSTALL}") from err
    return av


class Mp4Writer:
    """Appends ``(H, W, 3)`` uint8 frames to an H.264 MP4, each scaled up by
    ``scale`` (nearest neighbour, so a 64x64 dream stays crisp) and padded to
    even sides, as H.264 needs.

    Args:
        path: The file to write.
        fps: Frames per second.
        scale: Pixels of the video per pixel of a frame.
        quality: x264's constant rate factor (lower is better; 18 looks lossless).
    """

    def __init__(self, path: str | Path, fps: float, scale: int = 4,
                 quality: int = 18) -> None:
        av = _av()
        self.path, self.scale = Path(path), scale
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._rate = max(1, round(fps))
        self._options = {"crf": str(quality), "preset": "veryfast"}
        self._stream: Any = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        av = _av()
        image = np.repeat(np.repeat(frame, self.scale, axis=0), self.scale, axis=1)
        h, w = image.shape[:2]
        image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._rate,
                                                      options=self._options)
            self._stream.width, self._stream.height = image.shape[1], image.shape[0]
            self._stream.pix_fmt = "yuv420p"
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float,
              scale: int = 4) -> Path:
    """Every ``(H, W, 3)`` uint8 frame of ``frames`` to an MP4 at ``path``."""
    with Mp4Writer(path, fps, scale) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def read_mp4(path: str | Path) -> list[np.ndarray]:
    """The frames of a video as ``(H, W, 3)`` uint8 (for tests and tools)."""
    av = _av()
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
