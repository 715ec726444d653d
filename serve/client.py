"""A small client of the dream protocol, for ``play``, tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from recording import frames
from serve.protocol import (
    Frame,
    decode_frame,
    encode_input,
    encode_start_frame,
    hello_message,
    ping_message,
    reset_message,
)


def decode_image(frame: Frame) -> np.ndarray:
    """A FRAME's payload -> ``(H, W, 3)`` uint8."""
    if frame.encoding == "raw":
        return np.frombuffer(frame.payload, np.uint8).reshape(frame.height, frame.width, 3)
    return frames.decode_image(frame.payload)


class ServerError(Exception):
    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')}: {message.get('message')}")
        self.code = message.get("code")
        self.fatal = bool(message.get("fatal"))


class DreamClient:
    """One dream on a server: ``await DreamClient.connect(url, ...)``.

    Frames and text replies arrive on separate queues, read by a background
    task, so an error or a pong never gets in the way of a frame.
    """

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws, self.welcome = ws, welcome
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.texts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: list[dict[str, Any]] = []
        self.seq = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, mode: str = "lockstep", encoding: str = "raw",
                      quality: int = 85, fps: float | None = None, seed: int | None = None,
                      token: str | None = None, origin: str | None = None,
                      timeout: float = 10.0) -> DreamClient:
        ws = await connect(url, compression=None, max_size=None, open_timeout=timeout,
                           origin=origin)  # type: ignore[arg-type]
        await ws.send(hello_message(mode, encoding, quality, fps, seed, token))
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if reply.get("type") != "welcome":
            await ws.close()
            raise ServerError(reply)
        return cls(ws, reply)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.frames.put_nowait(decode_frame(message))
                else:
                    obj = json.loads(message)
                    if obj.get("type") == "error":
                        self.errors.append(obj)
                    self.texts.put_nowait(obj)

    async def frame(self, timeout: float = 10.0) -> Frame:
        return await asyncio.wait_for(self.frames.get(), timeout)

    @property
    def control_dim(self) -> int:
        """The controls each INPUT carries, as the welcome says."""
        return int(self.welcome["model"]["control_dim"])

    async def send_controls(self, controls: Any) -> int:
        self.seq += 1
        await self.ws.send(encode_input(self.seq, controls))
        return self.seq

    async def step(self, controls: Any, timeout: float = 10.0) -> Frame:
        """Lockstep: send the sticks and wait for the frame they produce."""
        seq = await self.send_controls(controls)
        while True:
            frame = await self.frame(timeout)
            if frame.input_seq == seq:
                return frame

    async def start_from(self, image: bytes) -> Frame:
        """Restart the dream from a picture (PNG, JPEG, ...); its first frame."""
        self.seq += 1
        await self.ws.send(encode_start_frame(self.seq, image))
        while True:
            frame = await self.frame()
            if frame.reset:
                return frame

    async def reset(self, seed: int | None = None) -> Frame:
        await self.ws.send(reset_message(seed))
        while True:
            frame = await self.frame()
            if frame.reset:
                return frame

    async def ping(self) -> float:
        """Round-trip time in seconds."""
        t = time.perf_counter()
        await self.ws.send(ping_message(t))
        while True:
            reply = await asyncio.wait_for(self.texts.get(), 10.0)
            if reply.get("type") == "pong" and reply.get("t") == t:
                return time.perf_counter() - t

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
