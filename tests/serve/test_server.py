"""A real server on port 0 with real websocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from export.dream import DreamLatent
from export.runtime import load_backend
from serve.client import DreamClient, ServerError, decode_image
from serve.protocol import encode_input
from serve.server import DreamServer, ServerConfig

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


async def started(bundle: Path, backend: str = "onnxruntime", **config: object) -> DreamServer:
    server = DreamServer(load_backend(bundle, backend, "cpu"),
                         ServerConfig(port=0, **config))  # type: ignore[arg-type]
    await server.start()
    return server


def url(server: DreamServer) -> str:
    return f"ws://127.0.0.1:{server.port}/dream"


@pytest.fixture
async def server(bundle: Path) -> AsyncIterator[DreamServer]:
    srv = await started(bundle, fps=50.0)
    yield srv
    await srv.close()


@pytest.mark.parametrize("encoding", ["raw", "jpeg", "png"])
async def test_hello_welcome_first_frame_and_lockstep(server: DreamServer,
                                                      encoding: str) -> None:
    client = await DreamClient.connect(url(server), mode="lockstep", encoding=encoding)
    assert client.welcome["model"]["height"] == 16
    assert client.welcome["model"]["control_names"] == ["left_x", "left_y", "right_x", "right_y"]
    first = await client.frame()
    assert first.reset
    assert decode_image(first).shape == (16, 16, 3)
    frames = [await client.step([0.0, 0.0, 0.0, 0.0]), await client.step([1.0, 0.0, 0.0, 0.0])]
    assert [f.frame_index for f in frames] == [1, 2]
    assert [f.input_seq for f in frames] == [1, 2]
    assert all(decode_image(f).shape == (16, 16, 3) for f in frames)
    assert await client.ping() < 1.0
    reset = await client.reset(seed=1)
    assert reset.reset
    await client.close()


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
async def test_each_session_rolls_its_own_window_of_k_frames(bundle: Path, backend: str) -> None:
    # A mirror of the dream, stepped here through ONNX Runtime: the server's
    # frames match only if it slides the K = 3 window exactly like this, on the
    # host (ONNX Runtime on the CPU) or in the torch backend's tensors.
    server = await started(bundle, backend, fps=50.0)
    mirror = load_backend(bundle, "onnxruntime", "cpu")
    assert mirror.manifest.context_frames == 3
    a = await DreamClient.connect(url(server), mode="lockstep", seed=1)
    b = await DreamClient.connect(url(server), mode="lockstep", seed=2)
    windows = {c: mirror.start_frames()[seed][None].astype(np.float32) / 255.0
               for c, seed in ((a, 1), (b, 2))}
    for c in (a, b):
        await c.frame()
    rng = np.random.default_rng(0)
    for _ in range(6):
        for c in (a, b):
            sticks = rng.uniform(-1, 1, 4).astype(np.float32)
            got = decode_image(await c.step(sticks.tolist())).astype(int)
            nxt = mirror.step(windows[c], sticks[None])
            windows[c] = np.concatenate([windows[c][:, 1:], nxt[:, None]], axis=1)
            expected = (np.clip(nxt[0], 0, 1) * 255 + 0.5).astype(int).transpose(1, 2, 0)
            assert np.abs(got - expected).max() <= 1
    session = next(s for s in server.sessions.values() if s.hello.seed == 1)
    np.testing.assert_allclose(session.context, windows[a][0], atol=1e-5)
    kept_in = type(session.dream.inputs(np.zeros(4)).window).__module__.split(".")[0]
    assert kept_in == ("torch" if backend == "torch" else "numpy")
    await a.close()
    await b.close()
    await server.close()


@pytest.mark.parametrize("mode", ["hold", "fresh"])
async def test_a_latent_dream_holds_its_seeded_latent_until_a_reset(latent_bundle: Path,
                                                                   mode: str) -> None:
    # The mirror draws the latents a seeded session should: one held until the
    # reset draws another (hold), or a new one every step (fresh).
    server = await started(latent_bundle, latent=mode)
    mirror = load_backend(latent_bundle, "onnxruntime", "cpu")
    client = await DreamClient.connect(url(server), mode="lockstep", encoding="raw", seed=1)
    assert client.welcome["model"]["latent"] == mode
    await client.frame()
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        window = mirror.start_frames()[seed][None].astype(np.float32) / 255.0
        latent = DreamLatent(4, mode, seed)
        seen = []
        for _ in range(4):
            sticks = rng.uniform(-1, 1, 4).astype(np.float32)
            got = decode_image(await client.step(sticks.tolist())).astype(int)
            z = latent.next()
            assert z is not None
            seen.append(z)
            nxt = mirror.step(window, sticks[None], latent=z[None])
            window = np.concatenate([window[:, 1:], nxt[:, None]], axis=1)
            expected = (np.clip(nxt[0], 0, 1) * 255 + 0.5).astype(int).transpose(1, 2, 0)
            assert np.abs(got - expected).max() <= 1
        assert all(np.array_equal(z, seen[0]) for z in seen) == (mode == "hold")
        await client.reset(seed=2)
    await client.close()
    await server.close()


async def test_a_codebook_dream_draws_its_codes_as_a_mirror_of_its_session_does(
        codebook_bundle: Path) -> None:
    # The latent is the noise the codes are drawn with, held, moved with the view
    # and redrawn as far as the sticks push: a mirror with the same seed paints
    # the same frames.
    server = await started(codebook_bundle)
    mirror = load_backend(codebook_bundle, "onnxruntime", "cpu")
    client = await DreamClient.connect(url(server), mode="lockstep", encoding="raw", seed=1)
    await client.frame()
    window = mirror.start_frames()[1][None].astype(np.float32) / 255.0
    assert mirror.manifest.latent_motion is not None
    latent = DreamLatent.for_manifest(mirror.manifest, "hold", 1)
    assert latent.refresh == 0.5
    for sticks in ([0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                   [0.0, -0.5, 0.0, 0.0]):
        got = decode_image(await client.step(sticks)).astype(int)
        z = latent.next(np.array(sticks, np.float32))
        assert z is not None
        nxt = mirror.step(window, np.array([sticks], np.float32), latent=z[None])
        window = np.concatenate([window[:, 1:], nxt[:, None]], axis=1)
        expected = (np.clip(nxt[0], 0, 1) * 255 + 0.5).astype(int).transpose(1, 2, 0)
        assert np.abs(got - expected).max() <= 1
    await client.close()
    await server.close()


async def test_a_model_with_triggers_and_buttons_takes_them_in_every_input(
        pad_bundle: Path) -> None:
    server = await started(pad_bundle)
    client = await DreamClient.connect(url(server), mode="lockstep", encoding="raw")
    assert client.control_dim == 6
    assert client.welcome["model"]["control_names"][4:] == ["right_trigger", "a"]
    await client.frame()
    frame = await client.step([0.5, 0, 0, 0, 1.0, 1.0])
    (session,) = server.sessions.values()
    np.testing.assert_allclose(session.controls, [0.5, 0, 0, 0, 1.0, 1.0])
    assert frame.frame_index == 1
    await client.send_controls([0.0, 0.0, 0.0, 0.0])  # the sticks alone: a wrong length
    reply = await asyncio.wait_for(client.texts.get(), 10)
    assert reply["code"] == "BAD_INPUT"
    await client.close()
    await server.close()


async def test_a_paused_dream_is_not_stepped_until_it_resumes(server: DreamServer) -> None:
    from serve.protocol import pause_message

    client = await DreamClient.connect(url(server), mode="lockstep", encoding="raw")
    await client.frame()
    await client.step([0.0] * 4)
    await client.ws.send(pause_message(True))
    assert await asyncio.wait_for(client.texts.get(), 10) == {"type": "paused",
                                                               "frame_index": 1}
    await client.send_controls([1.0, 0, 0, 0])  # kept, not stepped
    with pytest.raises(TimeoutError):
        await client.frame(timeout=0.3)
    (session,) = server.sessions.values()
    assert session.frame_index == 1
    np.testing.assert_allclose(session.controls, [1.0, 0, 0, 0])
    await client.ws.send(pause_message(False))
    assert await asyncio.wait_for(client.texts.get(), 10) == {"type": "resumed",
                                                               "frame_index": 1}
    frame = await client.step([1.0, 0, 0, 0])
    assert frame.frame_index == 2
    await client.close()


async def test_realtime_steps_at_the_fps_with_the_latest_controls(server: DreamServer) -> None:
    client = await DreamClient.connect(url(server), mode="realtime", fps=40)
    await client.frame()
    await client.send_controls([0.5, 0.0, 0.0, 0.0])
    start, frames = time.monotonic(), []
    while time.monotonic() - start < 1.0:
        frames.append(await client.frame())
    assert 20 <= len(frames) <= 48
    assert frames[-1].input_seq == 1
    await client.close()


async def test_fuzz_leaves_a_good_client_served(bundle: Path) -> None:
    # No abuse cut-off here, so the server really handles every fuzz message.
    server = await started(bundle, abuse_limit=10**9, max_input_hz=10**6)
    try:
        await fuzz(server)
    finally:
        await server.close()


async def test_repeated_abuse_closes_with_1008(server: DreamServer) -> None:
    async with connect(url(server), compression=None) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "mode": "lockstep"}))
        for _ in range(300):
            await ws.send(b"\x01\x01\x00")

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:  # read the error replies until the server hangs up
                    pass

        await asyncio.wait_for(drain(), 10)
        assert ws.close_code == 1008


async def fuzz(server: DreamServer) -> None:
    rng = random.Random(0)
    good = await DreamClient.connect(url(server), mode="lockstep")
    await good.frame()

    def junk() -> str | bytes:
        kind = rng.randrange(10)
        if kind == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        if kind == 1:
            return encode_input(rng.randrange(2**32), [rng.choice(
                [np.nan, np.inf, -np.inf, 1e30, 2.0, -7.0]), 0, 0, 0])
        if kind == 2:
            return encode_input(1, [0.0] * rng.choice([0, 1, 3, 5, 100]))
        if kind == 3:
            return bytes([1, 2]) + bytes(rng.randrange(256) for _ in range(30))  # bad PNG
        if kind == 4:
            return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(40)))
        if kind == 5:
            return json.dumps({"type": rng.choice(["reset", "config", "ping", "x", None, 3]),
                               "seed": rng.choice([1, "a", None, 2**70]),
                               "fps": rng.choice([0, 1e9, "fast", 30]),
                               "encoding": rng.choice(["raw", "gif", 1])})
        if kind == 6:
            return json.dumps([1, 2, 3])
        if kind == 7:
            return "\u0000\xff{"
        if kind == 8:
            return encode_input(1, [rng.uniform(-1, 1) for _ in range(4)])  # valid
        return bytes([1, 1, 0, 0]) + bytes(rng.randrange(256) for _ in range(20))

    async def fuzzer(n: int) -> int:
        """Sends ``n`` messages after a hello, then a ping, and waits for its pong:
        the server has then handled every one of them."""
        async with connect(url(server), compression=None, max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "protocol": 1, "mode": "lockstep"}))
            for i in range(n):
                await ws.send(junk())
                if i % 50 == 0:
                    await asyncio.sleep(0)
            await ws.send(json.dumps({"type": "ping", "t": "done"}))
            async for reply in ws:
                if isinstance(reply, str) and json.loads(reply).get("t") == "done":
                    break
        return n

    async def before_hello() -> int | None:
        async with connect(url(server), compression=None) as ws:
            await ws.send(b"\x01\x01 binary before any hello")
            await asyncio.wait_for(ws.wait_closed(), 5)
            return ws.close_code

    stepping = asyncio.create_task(good_steps(good))
    counts = await asyncio.gather(*[fuzzer(1250) for _ in range(8)])
    closes = await asyncio.gather(*[before_hello() for _ in range(20)])
    steps = await stepping
    assert sum(counts) >= 10_000
    assert closes == [1008] * 20
    assert steps >= 20  # the good client kept being served throughout
    # every fuzz message, its closing ping and each good step reached the handler
    assert server.metrics.messages_total == 10_000 + 8 + steps
    assert server.metrics.inputs_rejected_total > 5_000
    frame = await good.step([0.1, 0.2, 0.3, 0.4])
    assert decode_image(frame).shape == (16, 16, 3)
    await good.close()
    await asyncio.sleep(0.2)
    assert len(server.sessions) == 0


async def good_steps(client: DreamClient, seconds: float = 3.0) -> int:
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        await client.step([0.0, -0.5, 0.25, 0.0])
        n += 1
    return n


async def test_oversize_message_closes_with_1009(bundle: Path) -> None:
    server = await started(bundle, max_message_bytes=1000)
    try:
        client = await DreamClient.connect(url(server))
        await client.ws.send(b"\x01\x02" + bytes(5000))
        await asyncio.wait_for(client.ws.wait_closed(), 5)
        assert client.ws.close_code == 1009
    finally:
        await server.close()


async def test_bad_token_is_unauthorized_and_closed_1008(bundle: Path) -> None:
    server = await started(bundle, token="s3cret")
    try:
        with pytest.raises(ServerError) as err:
            await DreamClient.connect(url(server), token="wrong")
        assert err.value.code == "UNAUTHORIZED"
        ok = await DreamClient.connect(url(server), token="s3cret")
        await ok.frame()
        await ok.close()
        async with connect(url(server)) as ws:
            await ws.send(json.dumps({"type": "hello", "protocol": 1, "token": "nope"}))
            assert json.loads(await ws.recv())["code"] == "UNAUTHORIZED"
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1008
    finally:
        await server.close()


async def test_bad_origin_gets_http_403(bundle: Path) -> None:
    server = await started(bundle, origins=["http://good.example"])
    try:
        with pytest.raises(InvalidStatus) as err:
            await DreamClient.connect(url(server), origin="http://evil.example")
        assert err.value.response.status_code == 403
        ok = await DreamClient.connect(url(server), origin="http://good.example")
        await ok.close()
    finally:
        await server.close()


async def test_max_sessions_and_disconnects_free_sessions(bundle: Path) -> None:
    server = await started(bundle, max_sessions=2)
    try:
        a = await DreamClient.connect(url(server))
        b = await DreamClient.connect(url(server))
        with pytest.raises(ServerError) as err:
            await DreamClient.connect(url(server))
        assert err.value.code == "SERVER_FULL"
        await a.close()
        await b.close()
        await asyncio.sleep(0.2)
        metrics = await asyncio.to_thread(http_get, server, "/metrics")
        assert "tinydreams_sessions 0" in metrics
        c = await DreamClient.connect(url(server))  # room again
        await c.close()
    finally:
        await server.close()


def http_get(server: DreamServer, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
        return str(r.read().decode())


async def test_healthz_and_metrics_answer(server: DreamServer) -> None:
    assert await asyncio.to_thread(http_get, server, "/healthz") == "ok\n"
    client = await DreamClient.connect(url(server))
    await client.frame()
    await client.step([0, 0, 0, 0])
    metrics = await asyncio.to_thread(http_get, server, "/metrics")
    for name in ("tinydreams_sessions 1", "tinydreams_steps_total", "tinydreams_batch_size_bucket",
                 "tinydreams_step_seconds_count", "tinydreams_frames_dropped_total",
                 "tinydreams_inputs_rejected_total", "tinydreams_messages_total 1\n"):
        assert name in metrics
    await client.close()


async def test_a_client_that_never_reads_does_not_slow_another(bundle: Path) -> None:
    server = await started(bundle, fps=100.0)
    try:
        async def rate(client: DreamClient, seconds: float = 2.0) -> float:
            await client.frame()
            n, start = 0, time.monotonic()
            while time.monotonic() - start < seconds:
                await client.frame()
                n += 1
            return n / seconds

        alone = await DreamClient.connect(url(server), mode="realtime", encoding="png")
        baseline = await rate(alone)
        # A reader that never reads: raw frames pile into its socket buffers.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        stuck = await connect(url(server), compression=None, max_size=None, max_queue=1,
                              sock=sock)
        await stuck.send(json.dumps({"type": "hello", "protocol": 1, "mode": "realtime",
                                     "encoding": "raw", "fps": 100}))
        stuck.transport.pause_reading()
        with_stuck = await rate(alone)
        assert with_stuck >= 0.8 * baseline, (with_stuck, baseline)
        await asyncio.sleep(1.0)
        stuck_session = next(s for s in server.sessions.values() if s.id != alone.welcome[
            "session"])
        assert stuck_session.dropped > 0
        await alone.close()
        stuck.transport.abort()
    finally:
        await server.close()


def http_status(port: int, path: str) -> tuple[int, str]:
    """The status and body of a GET, 503s included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_readiness_flips_at_max_sessions_and_back(bundle: Path) -> None:
    server = await started(bundle, max_sessions=2)
    try:
        ready = lambda: asyncio.to_thread(http_status, server.port, "/readyz")  # noqa: E731
        assert await ready() == (200, "ready\n")
        a = await DreamClient.connect(url(server))
        assert await ready() == (200, "ready\n")
        b = await DreamClient.connect(url(server))
        assert await ready() == (503, "full\n")
        assert await asyncio.to_thread(http_status, server.port, "/healthz") == (200, "ok\n")
        await a.close()
        await asyncio.sleep(0.2)
        assert await ready() == (200, "ready\n")
        await b.close()
    finally:
        await server.close()


async def test_drain_ends_as_soon_as_the_last_dream_leaves(bundle: Path) -> None:
    server = await started(bundle, fps=50.0)
    client = await DreamClient.connect(url(server), mode="realtime")
    await client.frame()
    drain = asyncio.create_task(server.drain(grace_s=30.0))
    await asyncio.sleep(0.2)
    assert await asyncio.to_thread(http_status, server.port, "/readyz") == (503, "draining\n")
    assert (await client.frame()).frame_index > 0  # the running dream goes on
    with pytest.raises(ServerError) as err:
        await DreamClient.connect(url(server))
    assert err.value.code == "DRAINING"
    started_at = time.monotonic()
    await client.close()
    await asyncio.wait_for(drain, 5)
    assert time.monotonic() - started_at < 2  # not the 30 s grace


def test_sigterm_drains_then_closes_sessions_and_exits(bundle: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(bundle), "--port",
                             "0", "--backend", "onnxruntime", "--drain-grace", "1.5"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("serving on ws://"), line + (proc.stderr.read() if proc.stderr
                                                            else "")
        address = line.split()[-1]
        port = int(address.rsplit(":", 1)[1].split("/")[0])

        async def session() -> tuple[int | None, float, int, str]:
            client = await DreamClient.connect(address, mode="realtime", fps=30.0)
            await client.frame()
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.3)
            status = await asyncio.to_thread(http_status, port, "/readyz")
            try:
                await DreamClient.connect(address)
                refused = "taken"
            except ServerError as err:
                refused = err.code
            frames = 0
            with contextlib.suppress(TimeoutError):
                while True:  # the dream runs on through the grace period
                    await client.frame(timeout=0.5)
                    frames += 1
            await asyncio.wait_for(client.ws.wait_closed(), 10)
            assert status == (503, "draining\n")
            return client.ws.close_code, time.monotonic() - signalled, frames, refused

        code, after, frames, refused = asyncio.run(session())
        assert code == 1001
        assert 1.2 < after < 6
        assert frames > 5
        assert refused == "DRAINING"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("batch", [0, 65])
def test_a_batch_past_what_the_engines_are_built_for_is_refused(batch: int) -> None:
    with pytest.raises(ValueError, match=f"largest batch must be 1-64.*got {batch}"):
        ServerConfig(max_batch=batch)
    assert ServerConfig(max_batch=64).max_batch == 64


async def test_the_model_is_warmed_up_at_every_batch_size_before_anyone_plays(
        bundle: Path) -> None:
    # TensorRT builds its engine and the torch backends capture their CUDA
    # graphs on a batch size's first step: the server takes those first steps.
    class Counting:
        def __init__(self, backend: Any) -> None:
            self.backend, self.manifest, self.batches = backend, backend.manifest, []

        def start_frames(self) -> Any:
            return self.backend.start_frames()

        def step(self, frames: Any, *rest: Any) -> Any:
            self.batches.append(len(frames))
            return self.backend.step(frames, *rest)

    model = Counting(load_backend(bundle, "onnxruntime", "cpu"))
    server = DreamServer(model, ServerConfig(port=0, max_batch=12))
    await server.start()
    assert model.batches == [1, 2, 4, 8, 12]
    assert server.metrics.steps_total == 0  # not counted as anyone's steps
    client = await DreamClient.connect(url(server), mode="lockstep")
    await client.frame()
    await client.step([0.0, 0.0, 0.0, 0.0])
    assert model.batches[-1] == 1
    await client.close()
    await server.close()
