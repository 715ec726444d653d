"""Where frames come from: a real world, the model in-process, a remote dream
server, or a recording. The play loop knows only this interface."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from export.dream import Dream
from play.worlds import World
from recording.format import STICK_NAMES, read_recording
from recording.frames import load_image, resize, to_image, to_model_frame
from recording.writer import RecordingWriter

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    name: str
    fps: float
    control_names: tuple[str, ...]  # the controls ``step`` takes, in order

    def reset(self) -> np.ndarray:
        """Start again; the first frame, ``(H, W, 3)`` uint8."""
        ...

    def step(self, controls: np.ndarray) -> np.ndarray | None:
        """Apply the sticks; the next frame, or None when there is nothing new."""
        ...

    def stats(self) -> dict[str, str]:
        """Figures for the HUD."""
        ...

    def close(self) -> None: ...


class RealSource:
    """A real environment (``play.worlds``); the episode restarts when it ends."""

    def __init__(self, world: World, seed: int = 0, record: str | Path | None = None) -> None:
        self.world, self.seed, self.record = world, seed, record
        self.name, self.fps = f"real {world.id}", world.fps
        self.control_names = tuple(world.control_names)
        self.writer: RecordingWriter | None = None

    def reset(self) -> np.ndarray:
        frame = self.world.reset(seed=self.seed)
        self.seed += 1
        if self.record is not None:
            if self.writer is None:
                self.writer = RecordingWriter(self.record, frame.shape[0], frame.shape[1],
                                              self.world.control_names,
                                              {"world": self.world.id, "fps": self.fps,
                                               "policy": "human (play real)"})
            self.writer.new_episode()
            self.writer.write(frame, np.zeros(len(self.world.control_names), np.float32))
        return frame

    def step(self, controls: np.ndarray) -> np.ndarray | None:
        frame, done = self.world.step(controls)
        if done:
            return self.reset()
        if self.writer is not None:
            self.writer.write(frame, controls)
        return frame

    def stats(self) -> dict[str, str]:
        return {"recorded": str(self.writer.frames_written)} if self.writer else {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.world.close()


class DreamSource:
    """The model in-process (any ``export.runtime`` backend), fed its own frames."""

    def __init__(self, backend: Any, seed: int = 0, latent: str = "hold",
                 start_image: str | Path | None = None) -> None:
        self.backend = backend
        self.name = f"dream ({getattr(backend, 'name', '?')} on {getattr(backend, 'device', '?')})"
        self.fps = float(backend.manifest.fps or 15.0)
        self.control_names = tuple(backend.manifest.control_names)
        self.start = backend.start_frames()
        self.dream = Dream.of(backend, latent, seed)
        self.turn = seed
        self.step_ms = 0.0
        self.start_image: np.ndarray | None = None
        if start_image is not None:
            self.start_image = self._picture(start_image)

    @property
    def context(self) -> np.ndarray:
        """The window ``(K, 3, H, W)`` the next step sees."""
        return self.dream.window

    def _picture(self, path: str | Path) -> np.ndarray:
        m = self.backend.manifest
        try:
            return to_model_frame(load_image(path, (m.height, m.width)))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a picture to dream from ({err})") from None

    def start_from(self, path: str | Path) -> np.ndarray:
        """Dream from this picture from now on (each reset too); its first frame."""
        self.start_image = self._picture(path)
        return self.reset()

    def reset(self) -> np.ndarray:
        if self.start_image is not None:  # the picture, as K identical frames
            self.dream.reset(self.start_image)
        else:
            self.dream.reset(self.start[self.turn % len(self.start)])
            self.turn += 1
        return to_image(self.context[-1])

    def step(self, controls: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        nxt = self.dream.step(self.backend, controls)
        self.step_ms = 0.9 * self.step_ms + 0.1 * (time.perf_counter() - start) * 1000.0
        return to_image(nxt)

    def stats(self) -> dict[str, str]:
        return {"model": f"{self.step_ms:.1f} ms"}

    def close(self) -> None:
        pass


class ReplaySource:
    """A recording played back frame by frame (the sticks are ignored)."""

    def __init__(self, directory: str | Path) -> None:
        self.recording = read_recording(directory)
        self.name = f"replay {directory}"
        self.fps = float(self.recording.meta.get("fps") or 15.0)
        self.control_names = tuple(self.recording.control_names)
        self.i = 0

    @property
    def done(self) -> bool:
        return self.i >= len(self.recording.entries)

    def reset(self) -> np.ndarray:
        self.i = 0
        return self._frame()

    def _frame(self) -> np.ndarray:
        entry = self.recording.entries[min(self.i, len(self.recording.entries) - 1)]
        return load_image(entry.frame)

    def step(self, controls: np.ndarray) -> np.ndarray | None:
        self.i += 1
        return None if self.done else self._frame()

    def stats(self) -> dict[str, str]:
        return {"frame": f"{self.i}/{len(self.recording.entries)}"}

    def close(self) -> None:
        pass


class RemoteSource:
    """A dream server in realtime mode, spoken to from a background thread.

    The newest frame wins; sticks are sent as they change (and at least every
    0.2 s). A lost connection is retried with exponential backoff (0.5 s to
    8 s) while the window keeps running and says so.
    """

    def __init__(self, url: str, token: str | None = None, encoding: str = "jpeg") -> None:
        self.url, self.token, self.encoding = url, token, encoding
        self.name, self.fps = f"remote {url}", 30.0
        self.control_names: tuple[str, ...] = STICK_NAMES  # the server's, once it welcomes us
        self.status = "connecting"
        self.rtt_ms = 0.0
        self.dropped = 0
        self.frames = 0
        self.reconnects = 0
        self._latest: np.ndarray | None = None
        self._controls = np.zeros(0, np.float32)  # the player's, sent as the server's length
        self.frame_size = (64, 64)  # (height, width): the server's, once it welcomes us
        self._reset_asked = False
        self._paused = False  # what the server should hold: sent on change and on connect
        self._start_image: bytes | None = None  # a picture to send as START_FRAME
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                        name="remote")
        self._thread.start()

    async def _main(self) -> None:
        from serve.client import DreamClient, decode_image
        from serve.protocol import (
            encode_start_frame,
            pause_message,
            ping_message,
            reset_message,
        )

        backoff = 0.5
        while not self._stop.is_set():
            try:
                client = await DreamClient.connect(self.url, mode="realtime",
                                                   encoding=self.encoding, token=self.token)
            except Exception as err:  # refused, reset, DNS...: retry, never crash the window
                self.status = f"cannot connect ({type(err).__name__}); retrying in {backoff:g} s"
                await asyncio.sleep(backoff)
                backoff = min(8.0, backoff * 2)
                continue
            backoff = 0.5
            self.status = "connected"
            model = client.welcome["model"]
            self.fps = float(model["fps"])
            self.frame_size = (int(model["height"]), int(model["width"]))
            control_dim = int(model["control_dim"])
            self.control_names = tuple(model.get("control_names") or STICK_NAMES)[:control_dim]
            sent = np.full(control_dim, np.nan, np.float32)
            last_send, last_ping, paused = 0.0, 0.0, False
            try:
                while not self._stop.is_set():
                    now = time.monotonic()
                    controls = np.zeros(control_dim, np.float32)  # missing axes rest
                    given = self._controls[:control_dim]
                    controls[:len(given)] = given
                    if not np.array_equal(controls, sent) or now - last_send > 0.2:
                        await client.send_controls(controls)
                        sent, last_send = controls, now
                    if self._reset_asked:
                        self._reset_asked = False
                        await client.ws.send(reset_message())
                    if self._start_image is not None:
                        picture, self._start_image = self._start_image, None
                        await client.ws.send(encode_start_frame(client.seq, picture))
                    if self._paused != paused:
                        paused = self._paused
                        await client.ws.send(pause_message(paused))
                    if now - last_ping > 1.0:
                        last_ping = now
                        await client.ws.send(ping_message(now))
                    while not client.texts.empty():
                        reply = client.texts.get_nowait()
                        if reply.get("type") == "pong":
                            self.rtt_ms = (time.monotonic() - float(reply["t"])) * 1000.0
                    with contextlib.suppress(TimeoutError):
                        frame = await client.frame(timeout=0.02)
                        image = decode_image(frame)
                        with self._lock:
                            if self._latest is not None:
                                self.dropped += 1
                            self._latest = image
                            self.frames += 1
                    if client.ws.close_code is not None:
                        raise ConnectionError(f"closed with {client.ws.close_code}")
            except Exception as err:  # the server went away: reconnect
                self.status = f"lost connection ({err}); reconnecting"
                self.reconnects += 1
                with contextlib.suppress(Exception):
                    await client.close()
                await asyncio.sleep(backoff)

    def start_from(self, path: str | Path) -> np.ndarray | None:
        """Ask the server to dream from this picture (its START_FRAME)."""
        self._start_image = Path(path).read_bytes()
        return None

    def set_paused(self, paused: bool) -> None:
        """Pause (or resume) the dream on the server: it stops stepping it."""
        self._paused = paused

    def reset(self) -> np.ndarray:
        self._reset_asked = True
        deadline = time.monotonic() + 10.0
        while self._latest is None and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.01)
        frame = self.step(self._controls)
        return frame if frame is not None else np.zeros((*self.frame_size, 3), np.uint8)

    def step(self, controls: np.ndarray) -> np.ndarray | None:
        self._controls = np.asarray(controls, np.float32).copy()
        with self._lock:
            frame, self._latest = self._latest, None
        return frame

    def stats(self) -> dict[str, str]:
        return {"rtt": f"{self.rtt_ms:.0f} ms", "dropped": str(self.dropped),
                "link": self.status}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class CompareSource:
    """Ground truth beside the dream: a recording's controls replayed into the
    model from the recording's own start frames, or live sticks driving a real
    world and the dream together. The frame is the two side by side."""

    def __init__(self, backend: Any, recording: str | Path | None = None,
                 world: World | None = None, latent: str = "hold") -> None:
        if (recording is None) == (world is None):
            raise ValueError("compare needs exactly one of a recording or a world")
        self.backend = backend
        self.dream = Dream.of(backend, latent)
        self.size = (backend.manifest.height, backend.manifest.width)
        self.replay = ReplaySource(recording) if recording is not None else None
        self.real = RealSource(world) if world is not None else None
        source = self.replay or self.real
        assert source is not None
        self.name = f"compare: {source.name} | dream"
        self.fps = source.fps
        self.control_names = tuple(backend.manifest.control_names)
        self.errors: list[float] = []

    @property
    def done(self) -> bool:
        return self.replay is not None and self.replay.done

    def reset(self) -> np.ndarray:
        source = self.replay or self.real
        assert source is not None
        truth = resize(source.reset(), self.size)
        self.dream.reset(to_model_frame(truth))
        self.errors = []
        return np.concatenate([truth, truth], axis=1)

    def step(self, controls: np.ndarray) -> np.ndarray | None:
        if self.replay is not None:
            i = self.replay.i + 1
            if i < len(self.replay.recording.entries):
                controls = self.replay.recording.entries[i].controls
        source = self.replay or self.real
        assert source is not None
        truth = source.step(controls)
        if truth is None:
            return None
        truth = resize(truth, self.size)
        dream = to_image(self.dream.step(self.backend, controls))
        self.errors.append(float(np.abs(dream.astype(np.float32) - truth).mean() / 255.0))
        return np.concatenate([truth, dream], axis=1)

    def stats(self) -> dict[str, str]:
        last = self.errors[-1] if self.errors else 0.0
        return {"L1": f"{last:.3f}", "step": str(len(self.errors))}

    def close(self) -> None:
        if self.real is not None:
            self.real.close()
