"""One client's dream, sans I/O: its rolling context, its controls, its outbox."""

from __future__ import annotations

import io
import itertools
import secrets
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from export.bundle import DreamLatent, to_image
from serve.protocol import Hello, ProtocolError, encode_frame


def encode_payload(frame: np.ndarray, encoding: str, quality: int) -> bytes:
    """``(3, H, W)`` float in [0, 1] -> raw RGB8, JPEG or PNG bytes."""
    rgb = to_image(frame)
    if encoding == "raw":
        return np.ascontiguousarray(rgb).tobytes()
    buf = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_start_frame(data: bytes, height: int, width: int, max_pixels: int) -> np.ndarray:
    """A client's PNG (or any image Pillow reads) -> ``(3, H, W)`` float32."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ProtocolError("BAD_INPUT", f"start frame of {img.width}x{img.height} "
                                                 f"pixels is too large")
            rgb = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except ProtocolError:
        raise
    except Exception as err:  # Pillow raises many kinds for a bad image
        raise ProtocolError("BAD_INPUT", f"unreadable start frame ({err})") from None
    return np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0


@dataclass
class Session:
    """State of one client's dream.

    Args:
        start_frames: ``(S, K, 3, H, W)`` uint8 contexts a dream can start from.
        hello: The client's settings.
        fps: Server default steps per second (the hello may ask for another).
        control_dim: Controls per INPUT.
        latent: The latent the model is given each step, held for each dream (a
            reset draws another) or fresh every step (``export.bundle.DreamLatent``;
            the default: a model without one).
    """

    start_frames: np.ndarray
    hello: Hello
    fps: float
    control_dim: int = 4
    latent: DreamLatent = field(default_factory=lambda: DreamLatent(0))
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    context: np.ndarray = field(init=False)  # (K, 3, H, W) float32
    controls: np.ndarray = field(init=False)  # (control_dim,) float32
    input_seq: int = 0
    frame_index: int = 0
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
        return int(self.start_frames.shape[3]), int(self.start_frames.shape[4])

    def reset(self, seed: int | None = None, frame: np.ndarray | None = None) -> None:
        """Start again: from the client's own ``frame`` (repeated K times), else
        from the start context chosen by ``seed``, else the next one in turn; a
        latent model's dream draws a new latent (seeded by ``seed``, if given)."""
        if frame is not None:
            K = self.start_frames.shape[1]
            self.context = np.repeat(frame[None], K, axis=0).astype(np.float32)
        else:
            n = len(self.start_frames)
            i = (seed if seed is not None else next(self._turn)) % n
            self.context = self.start_frames[i].astype(np.float32) / 255.0
        self.controls = np.zeros(self.control_dim, np.float32)
        self.latent.reset(seed)
        self.pending_reset = True

    def apply(self, next_frame: np.ndarray) -> None:
        """Roll the context window forward with the model's output."""
        self.context = np.concatenate([self.context[1:], next_frame[None]], axis=0)
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
