"""One client's dream, sans I/O: its rolling context, its controls, its outbox."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export.dream import Dream
from recording.frames import decode_image, encode_image, to_image, to_model_frame
from serve.protocol import Hello, ProtocolError, encode_frame


def encode_payload(frame: np.ndarray, encoding: str, quality: int) -> bytes:
    """``(3, H, W)`` float in [0, 1] -> raw RGB8, JPEG or PNG bytes."""
    return encode_image(to_image(frame), encoding, quality)


def decode_start_frame(data: bytes, height: int, width: int, max_pixels: int) -> np.ndarray:
    """A client's PNG (or any image Pillow reads) -> ``(3, H, W)`` float32."""
    try:
        return to_model_frame(decode_image(data, (height, width), max_pixels))
    except ValueError as err:
        raise ProtocolError("BAD_INPUT", f"start frame: {err}") from None


@dataclass
class Session:
    """State of one client's dream.

    Args:
        start_frames: ``(S, K, 3, H, W)`` uint8 contexts a dream can start from.
        hello: The client's settings.
        fps: Server default steps per second (the hello may ask for another).
        dream: The dream this client plays (its window, latent and noise level).
    """

    start_frames: np.ndarray
    hello: Hello
    fps: float
    dream: Dream
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    controls: np.ndarray = field(init=False)  # (control_dim,) float32
    input_seq: int = 0
    frame_index: int = 0
    paused: bool = False  # a paused dream is not stepped; its frame index stands still
    dropped: int = 0
    rejected: int = 0
    pending_reset: bool = True
    outbox: bytes | None = None
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.mode = self.hello.mode
        self.encoding = self.hello.encoding
        self.quality = self.hello.quality
        if self.hello.fps is not None:
            self.fps = self.hello.fps
        self.reset(self.hello.seed)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.dream.manifest.height, self.dream.manifest.width

    @property
    def context(self) -> np.ndarray:
        """The window ``(K, 3, H, W)`` the next step sees."""
        return self.dream.window

    def reset(self, seed: int | None = None, frame: np.ndarray | None = None) -> None:
        """Start again: from the client's own ``frame`` (repeated K times), else
        from the start context chosen by ``seed``, else the next one in turn; a
        latent model's dream draws a new latent (seeded by ``seed``, if given)."""
        if frame is None:
            i = (seed if seed is not None else next(self._turn)) % len(self.start_frames)
            frame = self.start_frames[i]
        self.dream.reset(frame, seed)
        self.controls = np.zeros(self.dream.manifest.control_dim, np.float32)
        self.pending_reset = True

    def apply(self, next_frame: Any) -> None:
        """Roll the dream forward with the model's output (where the model made it)."""
        self.dream.advance(next_frame)
        self.frame_index += 1

    def render(self, frame: np.ndarray, server_ms: float) -> bytes:
        """The FRAME message for ``frame`` ``(3, H, W)``."""
        h, w = self.size
        msg = encode_frame(self.frame_index, self.input_seq, w, h, self.encoding, server_ms,
                           encode_payload(frame, self.encoding, self.quality),
                           reset=self.pending_reset)
        self.pending_reset = False
        return msg

    def post(self, message: bytes) -> None:
        """Put a frame in the one-frame outbox; an unsent one is replaced and counted."""
        if self.outbox is not None:
            self.dropped += 1
        self.outbox = message

    def take(self) -> bytes | None:
        message, self.outbox = self.outbox, None
        return message
