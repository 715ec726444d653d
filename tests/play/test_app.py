"""The play loop under SDL's dummy video driver, with injected events."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame", reason="needs the play extra: pip install -e '.[play]'")
pytest.importorskip("onnxruntime", reason="needs the export extra")

from export.runtime import load_backend  # noqa: E402
from play.app import Player, PlayOptions  # noqa: E402
from play.sources import CompareSource, DreamSource, RemoteSource, ReplaySource  # noqa: E402


def axis(value: float, number: int = 1) -> Any:
    return pygame.event.Event(pygame.JOYAXISMOTION, instance_id=0, joy=0, axis=number,
                              value=value)


def key(k: int) -> Any:
    return pygame.event.Event(pygame.KEYDOWN, key=k, mod=0, unicode="", scancode=0)


def run(source: Any, frames: int, tmp_path: Path, script: dict[int, list[Any]] | None = None,
        close: bool = True) -> tuple[Player, dict[str, float]]:
    player = Player(source, PlayOptions(fps=1000, max_frames=frames, max_seconds=60,
                                        captures=tmp_path, scale=2))

    pending = dict(script or {})

    def inject(p: Player) -> None:  # each scheduled event once, at its frame
        for event in pending.pop(p.displayed, []):
            pygame.event.post(event)

    player.before_frame = inject
    try:
        return player, player.run()
    finally:
        if close:
            player.close()


def test_moving_the_stick_reaches_the_model_and_its_frame_the_screen(
        bundle: Path, tmp_path: Path) -> None:
    backend = load_backend(bundle, "onnxruntime", "cpu")
    given: list[np.ndarray] = []
    painted: list[np.ndarray] = []
    step = backend.step

    def spy(frames: np.ndarray, controls: np.ndarray, *rest: Any) -> np.ndarray:
        given.append(np.array(controls))
        painted.append(step(frames, controls, *rest))
        return painted[-1]

    backend.step = spy  # type: ignore[method-assign]
    source = DreamSource(backend)
    shown: list[np.ndarray] = []
    source_step = source.step
    source.step = lambda c: shown.append(source_step(c)) or shown[-1]  # type: ignore
    run(source, 10, tmp_path, {3: [axis(1.0, 0)]})  # the left stick pushed right at frame 3
    assert len(given) >= 8
    assert all(np.array_equal(c, [[0, 0, 0, 0]]) for c in given[:2])
    np.testing.assert_allclose(given[-1], [[1.0, 0, 0, 0]], atol=1e-6)
    expected = (np.clip(painted[-1][0], 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(shown[-1], expected)  # the model's own frame, shown


def test_dream_source_rolls_a_window_of_k_frames(bundle: Path) -> None:
    backend = load_backend(bundle, "onnxruntime", "cpu")
    seen: list[np.ndarray] = []
    step = backend.step
    backend.step = (  # type: ignore[method-assign]
        lambda f, c, *rest: seen.append(f.copy()) or step(f, c, *rest))
    source = DreamSource(backend)
    first = source.reset()
    start = backend.start_frames()[0].astype(np.float32) / 255.0  # (K, 3, H, W)
    np.testing.assert_array_equal(first, (start[-1] * 255 + 0.5).astype(np.uint8).transpose(
        1, 2, 0))
    outputs = [source.step(np.array([0.5, 0, 0, 0], np.float32)) for _ in range(4)]
    assert [w.shape for w in seen] == [(1, 3, 3, 16, 16)] * 4
    np.testing.assert_array_equal(seen[0][0], start)
    np.testing.assert_array_equal(seen[1][0, :2], start[1:])  # the window slid by one
    np.testing.assert_array_equal(seen[2][0, 0], start[2])
    for t in range(1, 4):  # the newest slot holds the last image shown
        shown = (np.clip(seen[t][0, -1], 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
        np.testing.assert_array_equal(shown, outputs[t - 1])
    np.testing.assert_array_equal(seen[3][0, 0], seen[2][0, 1])


def spy_on_latents(backend: Any) -> list[np.ndarray]:
    """The latents ``backend.step`` is given from now on, a list that grows."""
    seen: list[np.ndarray] = []
    step = backend.step

    def spy(frames: np.ndarray, controls: np.ndarray, noise_level: Any = None,
            latent: Any = None) -> Any:
        seen.append(latent.copy())
        return step(frames, controls, noise_level, latent)

    backend.step = spy
    return seen


def test_a_latent_dream_source_holds_one_latent_until_a_reset(latent_bundle: Path) -> None:
    backend = load_backend(latent_bundle, "onnxruntime", "cpu")
    seen = spy_on_latents(backend)
    source = DreamSource(backend)
    sticks = np.array([0.5, 0, 0, 0], np.float32)
    source.reset()
    for _ in range(3):
        source.step(sticks)
    source.reset()  # R: another dream, another latent
    source.step(sticks)
    assert [z.shape for z in seen] == [(1, 4)] * 4
    assert all(np.array_equal(z, seen[0]) for z in seen[:3])
    assert not np.array_equal(seen[3], seen[0])
    seen.clear()
    fresh = DreamSource(backend, latent="fresh")
    fresh.reset()
    for _ in range(3):
        fresh.step(sticks)
    assert not np.array_equal(seen[0], seen[1])
    assert not np.array_equal(seen[1], seen[2])


def test_hot_plug_and_captures(bundle: Path, tmp_path: Path) -> None:
    source = DreamSource(load_backend(bundle, "onnxruntime", "cpu"))
    script = {
        1: [pygame.event.Event(pygame.CONTROLLERDEVICEADDED, device_index=0, guid="x")],
        2: [pygame.event.Event(pygame.CONTROLLERAXISMOTION, instance_id=0, axis=0,
                               value=16384)], 3: [key(pygame.K_F12), key(pygame.K_g)],
        4: [key(pygame.K_v)],
        8: [pygame.event.Event(pygame.CONTROLLERDEVICEREMOVED, instance_id=0)],
        12: [key(pygame.K_g)], 14: [key(pygame.K_v)],
    }
    player, result = run(source, 20, tmp_path, script)
    shots = sorted(tmp_path.glob("*.png"))
    gifs = sorted(tmp_path.glob("*.gif"))
    assert len(shots) == 1
    assert len(gifs) == 1
    from recording.video import read_mp4

    (video,) = sorted(tmp_path.glob("*.mp4"))
    assert len(read_mp4(video)) == 10  # the frames shown from V to V
    assert player.saved == [shots[0], gifs[0], video]  # in the order they were finished
    with Image.open(shots[0]) as img:
        assert img.size == (32, 32)
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames >= 5
    assert player.pads.pads == {}  # the removed pad is gone
    assert result["frames"] == 20


def test_without_the_video_extra_v_says_what_to_install(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    source = DreamSource(load_backend(bundle, "onnxruntime", "cpu"))
    player, result = run(source, 5, tmp_path, {1: [key(pygame.K_v)]})
    assert result["frames"] == 5
    assert "pip install -e '.[video]'" in player.notice
    assert not list(tmp_path.glob("*.mp4"))


def test_replay_and_compare_run_to_the_end(bundle: Path, tmp_path: Path) -> None:
    from tests.train.helpers import moving_square_recording

    rec = moving_square_recording(tmp_path / "rec", episodes=1, steps=15)
    _, result = run(ReplaySource(rec), 1000, tmp_path)
    assert result["frames"] == 14
    compare = CompareSource(load_backend(bundle, "onnxruntime", "cpu"), recording=rec)
    _, result = run(compare, 1000, tmp_path)
    assert result["frames"] == 14
    assert len(compare.errors) == 14
    assert all(0 <= e <= 1 for e in compare.errors)


def test_remote_plays_and_survives_a_server_restart(bundle: Path, tmp_path: Path) -> None:
    from serve.server import DreamServer, ServerConfig

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def start(port: int) -> DreamServer:
        server = DreamServer(load_backend(bundle, "onnxruntime", "cpu"),
                             ServerConfig(port=port, fps=120.0))
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        return server

    server = start(0)
    port = server.port
    source = RemoteSource(f"ws://127.0.0.1:{port}/dream", encoding="raw")
    try:
        _, result = run(source, 100, tmp_path, close=False)
        assert result["frames"] == 100
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        time.sleep(1.0)
        assert "lost" in source.status or "connect" in source.status
        server = start(port)
        _, result = run(source, 50, tmp_path, close=False)
        assert result["frames"] == 50
        assert source.reconnects >= 1
        assert source.status == "connected"
        source.set_paused(True)  # the player's P: the server stops stepping the dream
        (session,) = server.sessions.values()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not session.paused:
            time.sleep(0.02)
        stopped = session.frame_index
        time.sleep(0.3)
        assert session.paused
        assert session.frame_index == stopped
        source.set_paused(False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and session.frame_index <= stopped + 5:
            time.sleep(0.02)
        assert session.frame_index > stopped + 5
        Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tmp_path / "white.png")
        source.set_paused(True)
        source.start_from(tmp_path / "white.png")  # sent as the protocol's START_FRAME
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and session.context.min() < 1.0:
            time.sleep(0.02)
        assert (session.context == 1.0).all()  # K white frames: the dream starts there
    finally:
        source.close()
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)


def test_a_codebook_dream_source_redraws_its_noise_only_while_the_sticks_move(
        codebook_bundle: Path) -> None:
    backend = load_backend(codebook_bundle, "onnxruntime", "cpu")
    seen = spy_on_latents(backend)
    # codes x the 8x8 patch grid, then the grain: 3 x 16 x 16 pixels
    assert backend.manifest.latent_dim == 8 * 8 * 8 + 3 * 16 * 16
    assert backend.manifest.latent_refresh == 0.5
    source = DreamSource(backend)
    source.reset()
    rest, push = np.zeros(4, np.float32), np.array([0, 0, 1.0, 0], np.float32)
    for sticks in (push, rest, rest, push):
        source.step(sticks)
    assert np.array_equal(seen[0], seen[1])  # the first step, then at rest: held
    assert np.array_equal(seen[1], seen[2])
    assert abs((seen[3] != seen[2]).mean() - 0.5) < 0.05


def test_a_dream_starts_from_a_picture_given_or_dropped_on_the_window(
        bundle: Path, tmp_path: Path) -> None:
    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:, 30:] = (255, 128, 0)  # any size: resized to the model's 16x16
    Image.fromarray(picture).save(tmp_path / "start.png")
    backend = load_backend(bundle, "onnxruntime", "cpu")
    source = DreamSource(backend, start_image=tmp_path / "start.png")
    first = source.reset()
    np.testing.assert_array_equal(first[:, :6], 0)  # (Pillow blends the columns between)
    np.testing.assert_array_equal(first[:, 10:], np.broadcast_to([255, 128, 0], (16, 6, 3)))
    assert (source.context == source.context[-1]).all()  # K copies of the picture
    # Dropped on the window: the dream starts again from the dropped picture.
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "grey.png")
    other = DreamSource(backend)
    drop = pygame.event.Event(pygame.DROPFILE, file=str(tmp_path / "grey.png"))
    player, _ = run(other, 3, tmp_path, {1: [drop]})
    assert player.notice == "dreaming from grey.png"
    assert other.start_image is not None
    np.testing.assert_allclose(other.start_image, 200 / 255)
    bad = pygame.event.Event(pygame.DROPFILE, file=str(tmp_path / "missing.png"))
    player, result = run(DreamSource(backend), 3, tmp_path, {1: [bad]})
    assert "missing.png" in player.notice  # said, not a crash
    assert result["frames"] == 3
