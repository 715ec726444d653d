"""The thin asyncio shell: websockets in, sessions and the batcher in the middle,
frames out. Everything protocol-shaped lives in ``serve.protocol`` and
``serve.session``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from export.dream import LARGEST_BATCH, Dream, check_latent_mode
from export.manifest import Manifest
from serve.batcher import Batcher
from serve.metrics import Metrics
from serve.protocol import (
    PROTOCOL,
    Input,
    ProtocolError,
    decode_binary,
    parse_hello,
    parse_text,
)
from serve.session import Session, decode_start_frame

log = logging.getLogger("serve")
# Kernel send buffer per client: a few raw 64x64 frames. Beyond it a slow client's
# frames are dropped (latest wins) rather than delivered late.
SEND_BUFFER_BYTES = 64 * 1024
PAGE = Path(__file__).with_name("web") / "index.html"  # the browser client, at GET /


@dataclass
class ServerConfig:
    """Args:
        host: Interface to bind; loopback by default (use 0.0.0.0 to share).
        port: TCP port; 0 picks a free one.
        token: Required in the hello when set; compared in constant time.
        origins: Browser Origins allowed (None: any, including none).
        max_sessions: Concurrent dreams; more are refused with SERVER_FULL.
        max_batch: Largest batch per model call.
        max_delay_ms: Longest wait for stragglers when forming a batch.
        fps: Default steps per second in realtime mode (default: the bundle's).
        idle_timeout_s: Close a connection silent this long.
        hello_timeout_s: Close a connection that sends no hello this long.
        max_message_bytes: Larger messages close the connection with 1009.
        max_input_hz: Messages per second a client may send before RATE_LIMITED.
        abuse_limit: Rejected messages within 10 s that close the connection.
        latent: A model with a latent: ``hold`` one latent for each client's
            dream, or draw a ``fresh`` one every step (``export.dream.DreamLatent``).
        drain_grace_s: On ``drain`` (SIGTERM), how long running dreams may go on
            before they are closed with 1001.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    origins: list[str] | None = None
    max_sessions: int = 16
    max_batch: int = 16
    max_delay_ms: float = 4.0
    fps: float | None = None
    idle_timeout_s: float = 300.0
    hello_timeout_s: float = 5.0
    max_message_bytes: int = 1 << 20
    max_input_hz: float = 500.0
    abuse_limit: int = 100
    latent: str = "hold"
    drain_grace_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= LARGEST_BATCH:
            raise ValueError(f"the largest batch must be 1-{LARGEST_BATCH} (the batches the "
                             f"model's engines and graphs are built for), got {self.max_batch}")


class DreamServer:
    """Serves one model to many clients, each in its own dream.

    Args:
        backend: From ``export.runtime.load_backend``: ``step``, ``manifest``,
            ``start_frames``.
        config: Network and limits.
    """

    def __init__(self, backend: Any, config: ServerConfig) -> None:
        check_latent_mode(config.latent)
        self.backend, self.config = backend, config
        self.manifest: Manifest = backend.manifest
        self.start_frames = backend.start_frames()
        self.fps = float(config.fps or self.manifest.fps or 15.0)
        self.metrics = Metrics()
        self.sessions: dict[str, Session] = {}
        self.batcher = Batcher(backend, config.max_batch, config.max_delay_ms,
                               lambda: len(self.sessions), self.metrics)
        self._server: Server | None = None
        self.draining = False

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Warm the model up at every batch size, then listen."""
        start = time.perf_counter()
        dream = Dream.of(self.backend, self.config.latent, 0)
        dream.reset(self.start_frames[0])
        sizes = await self.batcher.warm_up(dream.inputs(np.zeros(self.manifest.control_dim)))
        log.info("warmed up batches of %s in %.1f s", ", ".join(map(str, sizes)),
                 time.perf_counter() - start)
        self.batcher.start()
        origins: Any = self.config.origins  # websockets answers 403 to any other Origin
        self._server = await serve(
            self._handler, self.config.host, self.config.port, compression=None,
            max_size=self.config.max_message_bytes, origins=origins,
            process_request=self._process_request, server_header="TinyDreams")
        log.info("serving %s on ws://%s:%d/dream (%s backend on %s)",
                 self.manifest.world or "a dream", self.config.host, self.port,
                 getattr(self.backend, "name", "?"), getattr(self.backend, "device", "?"))

    def unready(self) -> str:
        """Why a new session would be refused now ("" when it would be taken)."""
        if self.draining:
            return "draining"
        if len(self.sessions) >= self.config.max_sessions:
            return "full"
        return ""

    async def drain(self, grace_s: float | None = None) -> None:
        """Take no new sessions; wait up to ``grace_s`` (default the config's) for
        the running dreams to end, then close those left with 1001 and stop."""
        grace = self.config.drain_grace_s if grace_s is None else grace_s
        self.draining = True
        log.info("draining: no new sessions; %d running get %g s", len(self.sessions), grace)
        deadline = asyncio.get_running_loop().time() + grace
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        """Close every session with 1001 (going away) and stop."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        await self.batcher.stop()

    # -- HTTP on the same port ------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?")[0]
        if path in ("/", "/index.html"):
            response = connection.respond(HTTPStatus.OK, PAGE.read_text(encoding="utf-8"))
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            why = self.unready()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE if why else HTTPStatus.OK,
                                      f"{why or 'ready'}\n")
        if path == "/metrics":
            self.metrics.sessions = len(self.sessions)
            response = connection.respond(HTTPStatus.OK, self.metrics.render())
            response.headers["Content-Type"] = "text/plain; version=0.0.4"
            return response
        if path != "/dream":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: try / or /dream\n")
        return None

    # -- one connection -------------------------------------------------------

    async def _send_error(self, ws: ServerConnection, err: ProtocolError) -> None:
        self.metrics.errors_total += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(err.to_json())

    async def _refuse(self, ws: ServerConnection, err: ProtocolError, code: int) -> None:
        await self._send_error(ws, err)
        try:
            await asyncio.wait_for(ws.close(code, err.message[:120]), 5)
        except TimeoutError:  # the peer does not answer the closing handshake
            ws.transport.abort()

    async def _handler(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        self.metrics.connections_total += 1
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:  # frames queued in kernel buffers are stale: keep them few
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        try:
            first = await asyncio.wait_for(ws.recv(), self.config.hello_timeout_s)
        except TimeoutError:
            await self._refuse(ws, ProtocolError("BAD_HELLO", "no hello in time", True), 1008)
            return
        except ConnectionClosed:
            return
        try:
            if not isinstance(first, str):
                raise ProtocolError("BAD_HELLO", "the first message must be a text hello",
                                    fatal=True)
            hello = parse_hello(first)
        except ProtocolError as err:
            await self._refuse(ws, err, 1008)
            return
        if self.config.token is not None and not hmac.compare_digest(
                (hello.token or "").encode(), self.config.token.encode()):
            log.info("refused %s: bad token", peer)
            await self._refuse(ws, ProtocolError("UNAUTHORIZED", "a valid token is required",
                                                 True), 1008)
            return
        if why := self.unready():  # what /readyz says, told to the client
            refusal = (
                ProtocolError("DRAINING", "this server is shutting down; connect again", True)
                if why == "draining" else
                ProtocolError("SERVER_FULL", f"all {self.config.max_sessions} sessions are "
                              "taken; try later", True))
            await self._refuse(ws, refusal, 1013)
            return
        session = Session(self.start_frames, hello, self.fps,
                          Dream.of(self.backend, self.config.latent, hello.seed))
        self.sessions[session.id] = session
        log.info("connect %s session %s mode %s encoding %s", peer, session.id, session.mode,
                 session.encoding)
        try:
            await self._serve_session(ws, session)
        except ConnectionClosed:
            pass
        except Exception:  # never let one session take the server down
            log.exception("session %s failed", session.id)
            await self._refuse(ws, ProtocolError("INTERNAL", "internal error", True), 1011)
        finally:
            self.sessions.pop(session.id, None)
            self.metrics.frames_dropped_total += session.dropped
            log.info("disconnect %s session %s after %d frames (%d dropped, %d rejected)",
                     peer, session.id, session.frame_index, session.dropped, session.rejected)

    def _welcome(self, session: Session) -> str:
        m = self.manifest
        return json.dumps({
            "type": "welcome", "protocol": PROTOCOL, "session": session.id,
            "model": {"name": m.world or "dream", "height": m.height, "width": m.width,
                      "context_frames": m.context_frames, "control_dim": m.control_dim,
                      "control_names": m.control_names, "fps": session.fps,
                      "latent": self.config.latent if m.latent_dim else None},
            "mode": session.mode, "encoding": session.encoding,
            "limits": {"max_message_bytes": self.config.max_message_bytes,
                       "max_input_hz": self.config.max_input_hz,
                       "idle_timeout_s": self.config.idle_timeout_s}})

    async def _serve_session(self, ws: ServerConnection, session: Session) -> None:
        await ws.send(self._welcome(session))
        wake = asyncio.Event()
        self._post(session, session.context[-1], 0.0, wake)  # the first frame, right away
        tasks = [asyncio.create_task(self._sender(ws, session, wake))]
        if session.mode == "realtime":
            tasks.append(asyncio.create_task(self._ticker(session, wake)))
        try:
            await self._receiver(ws, session, wake)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _post(self, session: Session, frame: np.ndarray, server_ms: float,
              wake: asyncio.Event) -> None:
        start = time.perf_counter()
        session.post(session.render(frame, server_ms))
        self.metrics.encode_seconds.observe(time.perf_counter() - start)
        wake.set()

    async def _sender(self, ws: ServerConnection, session: Session, wake: asyncio.Event) -> None:
        """Sends the outbox; while a send is blocked by a slow reader, newer
        frames replace the unsent one (counted as dropped) instead of queueing."""
        while True:
            await wake.wait()
            wake.clear()
            message = session.take()
            if message is not None:
                await ws.send(message)
                self.metrics.frames_sent_total += 1

    async def _step(self, session: Session, wake: asyncio.Event) -> None:
        if session.paused:
            return
        start = time.perf_counter()
        frame = await self.batcher.step(session.dream.inputs(session.controls.copy()))
        session.apply(frame.device)
        self._post(session, frame.host, (time.perf_counter() - start) * 1000.0, wake)

    async def _ticker(self, session: Session, wake: asyncio.Event) -> None:
        """Realtime pacing: one step per 1/fps with the latest controls."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += 1.0 / session.fps
            await self._step(session, wake)
            delay = next_tick - loop.time()
            if delay < -1.0:  # fell far behind (slow machine): do not burst to catch up
                next_tick = loop.time()
            await asyncio.sleep(max(0.0, delay))

    async def _receiver(self, ws: ServerConnection, session: Session,
                        wake: asyncio.Event) -> None:
        window_start, in_window, strikes = time.monotonic(), 0, 0
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), self.config.idle_timeout_s)
            except TimeoutError:
                await ws.close(1000, "idle timeout")
                return
            self.metrics.messages_total += 1
            now = time.monotonic()
            if now - window_start >= 1.0:
                window_start, in_window = now, 0
                strikes = max(0, strikes - 10)  # forgive slowly: 10 a second
            in_window += 1
            try:
                if in_window > self.config.max_input_hz:
                    raise ProtocolError("RATE_LIMITED", f"more than {self.config.max_input_hz:g}"
                                                        f" messages a second; dropped")
                await self._handle(ws, session, message, wake)
            except ProtocolError as err:
                session.rejected += 1
                self.metrics.inputs_rejected_total += 1
                strikes += 1
                if strikes > self.config.abuse_limit:
                    await self._refuse(ws, ProtocolError(err.code, "too many bad messages",
                                                         True), 1008)
                    return
                if in_window <= self.config.max_input_hz + 10:  # do not echo a flood
                    await self._send_error(ws, err)

    async def _handle(self, ws: ServerConnection, session: Session, message: str | bytes,
                      wake: asyncio.Event) -> None:
        if isinstance(message, bytes):
            decoded = decode_binary(message, self.manifest.control_dim)
            if isinstance(decoded, Input):
                session.controls, session.input_seq = decoded.controls, decoded.seq
                self.metrics.inputs_total += 1
                if session.mode == "lockstep":
                    await self._step(session, wake)
            else:
                h, w = session.size
                frame = decode_start_frame(decoded, h, w, self.config.max_message_bytes)
                session.reset(frame=frame)
                self._post(session, session.context[-1], 0.0, wake)
            return
        request = parse_text(message)
        if request["type"] == "ping":
            await ws.send(json.dumps({"type": "pong", "t": request["t"]}))
        elif request["type"] == "reset":
            session.reset(request["seed"])
            self._post(session, session.context[-1], 0.0, wake)
        elif request["type"] in ("pause", "resume"):
            session.paused = request["type"] == "pause"
            await ws.send(json.dumps({"type": "paused" if session.paused else "resumed",
                                      "frame_index": session.frame_index}))
        else:
            session.encoding = request.get("encoding", session.encoding)
            session.quality = request.get("quality", session.quality)
            session.fps = request.get("fps", session.fps)

