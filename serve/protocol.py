"""Dream protocol v1, sans I/O: message encoding, decoding and validation.

Binary messages are little-endian. See ``serve/PROTOCOL.md`` for the whole
protocol; this module is its single source of truth in code.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOL = 1
VERSION = 1
# Binary message types
INPUT = 1
START_FRAME = 2
FRAME = 0x81
# FRAME flags
FLAG_RESET = 1
# Payload encodings
ENCODINGS = {"raw": 0, "jpeg": 1, "png": 2}
MODES = ("realtime", "lockstep")

_INPUT_HEADER = struct.Struct("<BBHI")  # version, type, flags, seq
_FRAME_HEADER = struct.Struct("<BBHIIHHBBH")  # ..., frame_index, input_seq, w, h, enc, _, ms
FRAME_HEADER_BYTES = _FRAME_HEADER.size  # 20

ERROR_CODES = ("BAD_HELLO", "BAD_INPUT", "RATE_LIMITED", "UNAUTHORIZED", "SERVER_FULL",
               "DRAINING", "INTERNAL")


class ProtocolError(Exception):
    """A message the server refuses. ``fatal`` ones close the connection."""

    def __init__(self, code: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.fatal = code, message, fatal

    def to_json(self) -> str:
        return json.dumps({"type": "error", "code": self.code, "message": self.message,
                           "fatal": self.fatal})


@dataclass(frozen=True)
class Hello:
    mode: str = "realtime"
    encoding: str = "jpeg"
    quality: int = 85
    fps: float | None = None
    seed: int | None = None
    token: str | None = None


@dataclass(frozen=True)
class Input:
    seq: int
    controls: np.ndarray  # (control_dim,) float32 in [-1, 1]


@dataclass(frozen=True)
class Frame:
    frame_index: int
    input_seq: int
    width: int
    height: int
    encoding: str
    server_ms: int
    reset: bool
    payload: bytes


def _json_object(text: str, code: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise ProtocolError(code, f"malformed JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(code, "a text message must be a JSON object")
    return obj


def _int_in(obj: dict[str, Any], key: str, lo: int, hi: int, code: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(code, f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _settings(obj: dict[str, Any], code: str) -> dict[str, Any]:
    """The fields ``hello`` and ``config`` share: encoding, quality, fps."""
    out: dict[str, Any] = {}
    if "encoding" in obj:
        if obj["encoding"] not in ENCODINGS:
            raise ProtocolError(code, f"encoding must be one of {', '.join(ENCODINGS)}, got "
                                      f"{obj['encoding']!r}")
        out["encoding"] = obj["encoding"]
    quality = _int_in(obj, "quality", 1, 100, code)
    if quality is not None:
        out["quality"] = quality
    if "fps" in obj:
        fps = obj["fps"]
        if (not isinstance(fps, int | float) or isinstance(fps, bool)
                or not math.isfinite(fps) or not 1 <= fps <= 120):
            raise ProtocolError(code, f"fps must be a number in [1, 120], got {fps!r}")
        out["fps"] = float(fps)
    return out


def parse_hello(text: str) -> Hello:
    obj = _json_object(text, "BAD_HELLO")
    if obj.get("type") != "hello":
        raise ProtocolError("BAD_HELLO", "the first message must be {\"type\": \"hello\", ...}",
                            fatal=True)
    if obj.get("protocol") != PROTOCOL:
        raise ProtocolError("BAD_HELLO", f"this server speaks protocol {PROTOCOL}, the client "
                                         f"asked for {obj.get('protocol')!r}", fatal=True)
    mode = obj.get("mode", "realtime")
    if mode not in MODES:
        raise ProtocolError("BAD_HELLO", f"mode must be realtime or lockstep, got {mode!r}",
                            fatal=True)
    token = obj.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("BAD_HELLO", "token must be a string", fatal=True)
    try:
        settings = _settings(obj, "BAD_HELLO")
        seed = _int_in(obj, "seed", -(2**63), 2**63 - 1, "BAD_HELLO")
    except ProtocolError as err:
        raise ProtocolError(err.code, err.message, fatal=True) from None
    return Hello(mode=mode, seed=seed, token=token, **settings)


def parse_text(text: str) -> dict[str, Any]:
    """A text message after the hello: reset, config, pause, resume or ping, validated."""
    obj = _json_object(text, "BAD_INPUT")
    kind = obj.get("type")
    if kind == "reset":
        return {"type": "reset", "seed": _int_in(obj, "seed", -(2**63), 2**63 - 1, "BAD_INPUT")}
    if kind == "config":
        return {"type": "config", **_settings(obj, "BAD_INPUT")}
    if kind in ("pause", "resume"):
        return {"type": kind}
    if kind == "ping":
        t = obj.get("t")
        if t is not None and (not isinstance(t, int | float | str) or isinstance(t, bool)
                              or (isinstance(t, str) and len(t) > 64)):
            raise ProtocolError("BAD_INPUT", "ping t must be a number or a short string")
        return {"type": "ping", "t": t}
    raise ProtocolError("BAD_INPUT", f"unknown message type {kind!r}")


def hello_message(mode: str, encoding: str, quality: int, fps: float | None = None,
                  seed: int | None = None, token: str | None = None) -> str:
    """A client's HELLO."""
    hello: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL, "mode": mode,
                             "encoding": encoding, "quality": quality}
    for key, value in (("fps", fps), ("seed", seed), ("token", token)):
        if value is not None:
            hello[key] = value
    return json.dumps(hello)


def reset_message(seed: int | None = None) -> str:
    """A client's RESET: a new dream (from the start frame ``seed`` picks)."""
    return json.dumps({"type": "reset", "seed": seed})


def pause_message(paused: bool) -> str:
    """A client's PAUSE (the server stops stepping its dream) or RESUME."""
    return json.dumps({"type": "pause" if paused else "resume"})


def ping_message(t: float | str) -> str:
    """A client's PING; the server answers PONG with the same ``t``."""
    return json.dumps({"type": "ping", "t": t})


def encode_input(seq: int, controls: Any) -> bytes:
    values = np.asarray(controls, dtype="<f4").reshape(-1)
    return _INPUT_HEADER.pack(VERSION, INPUT, 0, seq & 0xFFFFFFFF) + values.tobytes()


def encode_start_frame(seq: int, image: bytes) -> bytes:
    """A client's START_FRAME: the dream restarts from ``image`` (PNG, JPEG, ...)."""
    return _INPUT_HEADER.pack(VERSION, START_FRAME, 0, seq & 0xFFFFFFFF) + image


def decode_binary(data: bytes, control_dim: int) -> Input | bytes:
    """An INPUT (validated controls) or a START_FRAME (its PNG bytes)."""
    if len(data) < _INPUT_HEADER.size:
        raise ProtocolError("BAD_INPUT", f"binary message of {len(data)} bytes is shorter than "
                                         f"its {_INPUT_HEADER.size}-byte header")
    version, kind, _flags, seq = _INPUT_HEADER.unpack_from(data)
    if version != VERSION:
        raise ProtocolError("BAD_INPUT", f"binary message version {version}, expected {VERSION}")
    if kind == START_FRAME:
        return bytes(data[_INPUT_HEADER.size:])
    if kind != INPUT:
        raise ProtocolError("BAD_INPUT", f"unknown binary message type {kind}")
    expected = _INPUT_HEADER.size + 4 * control_dim
    if len(data) != expected:
        raise ProtocolError("BAD_INPUT", f"INPUT must be {expected} bytes ({control_dim} "
                                         f"controls), got {len(data)}")
    controls = np.frombuffer(data, dtype="<f4", offset=_INPUT_HEADER.size).astype(np.float32)
    if not np.isfinite(controls).all() or np.abs(controls).max() > 1.0:
        raise ProtocolError("BAD_INPUT", f"controls must be finite and in [-1, 1], got "
                                         f"{controls.tolist()}")
    return Input(seq, controls)


def encode_frame(frame_index: int, input_seq: int, width: int, height: int, encoding: str,
                 server_ms: float, payload: bytes, reset: bool = False) -> bytes:
    header = _FRAME_HEADER.pack(VERSION, FRAME, FLAG_RESET if reset else 0,
                                frame_index & 0xFFFFFFFF, input_seq & 0xFFFFFFFF, width, height,
                                ENCODINGS[encoding], 0, min(int(server_ms), 0xFFFF))
    return header + payload


def decode_frame(data: bytes) -> Frame:
    if len(data) < FRAME_HEADER_BYTES:
        raise ProtocolError("BAD_INPUT", f"FRAME of {len(data)} bytes is shorter than its header")
    version, kind, flags, index, seq, w, h, enc, _, ms = _FRAME_HEADER.unpack_from(data)
    if version != VERSION or kind != FRAME:
        raise ProtocolError("BAD_INPUT", f"not a FRAME message (version {version}, type {kind})")
    names = {v: k for k, v in ENCODINGS.items()}
    if enc not in names:
        raise ProtocolError("BAD_INPUT", f"unknown frame encoding {enc}")
    return Frame(index, seq, w, h, names[enc], ms, bool(flags & FLAG_RESET),
                 bytes(data[FRAME_HEADER_BYTES:]))
