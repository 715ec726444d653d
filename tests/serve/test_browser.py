"""The browser page in real headless Chromium (Debian's package, driven by
Playwright) against a real server on port 0, with a scripted gamepad."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.runtime import load_backend
from serve.server import DreamServer, ServerConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A standard-mapping gamepad whose axes the test sets through window.__axes.
FAKE_PAD = """
window.__axes = [0, 0, 0, 0];
navigator.getGamepads = () => [{
  id: "scripted pad", index: 0, connected: true, mapping: "standard", timestamp: performance.now(),
  axes: window.__axes, buttons: Array.from({length: 17}, () => ({pressed: false, value: 0})),
}];
"""


class Running:
    """A dream server in a background event loop."""

    def __init__(self, bundle: Path, **config: Any) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = DreamServer(load_backend(bundle, "onnxruntime", "cpu"),
                                  ServerConfig(**{"port": 0, "fps": 30.0, **config}))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.url = f"http://127.0.0.1:{self.server.port}/"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def canvas_pixels(page: Any) -> np.ndarray:
    data = page.evaluate("""() => {
        const c = document.getElementById('screen');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    return np.asarray(data, np.uint8)


def test_page_plays_with_a_scripted_gamepad(bundle: Path, browser: Any) -> None:
    running = Running(bundle)
    try:
        page = browser.new_page(viewport={"width": 640, "height": 480})
        page.add_init_script(FAKE_PAD)
        page.goto(running.url + "?encoding=raw")  # frames as sent, so pixels compare exactly
        page.wait_for_function("window.tinydreams.frames > 10", timeout=20000)
        still = canvas_pixels(page)
        session = next(iter(running.server.sessions.values()))
        assert np.abs(session.controls).max() == 0
        page.evaluate("window.__axes.splice(0, 4, 0.9, -0.8, 0.5, 0)")
        page.wait_for_function("window.tinydreams.frames > 40", timeout=20000)
        # What the page should send: the sticks after its radial dead zone of 0.1.
        expected = []
        for x, y in ((0.9, -0.8), (0.5, 0.0)):
            r = np.hypot(x, y)
            scale = (r - 0.1) / 0.9 / r
            expected += [np.clip(x * scale, -1, 1), np.clip(y * scale, -1, 1)]
        np.testing.assert_allclose(session.controls, expected, atol=1e-3)
        assert session.input_seq > 0
        moved = canvas_pixels(page)
        recent = session.dream.window.copy()  # (K, 3, H, W): the frames last sent
        assert moved.reshape(-1, 4)[:, :3].std() > 1.0  # the canvas is not blank
        # The canvas holds one of the frames the server sent, pixel for pixel.
        drawn = moved.reshape(*recent.shape[2:], 4)[..., :3].astype(np.float32) / 255.0
        errors = [float(np.abs(drawn - frame.transpose(1, 2, 0)).mean()) for frame in recent]
        assert min(errors) < 1 / 255, errors
        assert still.shape == moved.shape
        hud = page.inner_text("#hud")
        assert "connected" in hud
        assert "fps" in hud
        assert "rtt" in hud
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-page.png"))
        assert (ARTIFACTS / "browser-page.png").stat().st_size > 1000
    finally:
        running.close()


def test_page_shows_unauthorized_without_the_token(bundle: Path, browser: Any) -> None:
    running = Running(bundle, token="s3cret")
    try:
        page = browser.new_page()
        page.goto(running.url)
        page.wait_for_function("window.tinydreams.error !== null", timeout=20000)
        assert "UNAUTHORIZED" in page.inner_text("#message")
        page = browser.new_page()
        page.goto(running.url + "?token=s3cret")
        page.wait_for_function("window.tinydreams.frames > 5", timeout=20000)
        assert page.evaluate("window.tinydreams.error") is None
    finally:
        running.close()


def test_the_page_sends_triggers_and_buttons_in_the_models_order(
        pad_bundle: Path, browser: Any) -> None:
    running = Running(pad_bundle)
    try:
        page = browser.new_page()
        page.add_init_script(FAKE_PAD)
        page.goto(running.url)
        page.wait_for_function("window.tinydreams.frames > 5", timeout=20000)
        # The right trigger half pulled, A pressed: the model's controls 4 and 5.
        page.evaluate("""() => {
            const buttons = Array.from({length: 17}, () => ({pressed: false, value: 0}));
            buttons[7] = {pressed: true, value: 0.5}; buttons[0] = {pressed: true, value: 1};
            const axes = window.__axes;
            navigator.getGamepads = () => [{id: "scripted pad", index: 0, connected: true,
                mapping: "standard", timestamp: performance.now(), axes, buttons}];
        }""")
        session = next(iter(running.server.sessions.values()))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not session.controls[4]:
            time.sleep(0.05)
        np.testing.assert_allclose(session.controls, [0, 0, 0, 0, 0.5, 1.0])
        assert "right_trigger 0.5" in page.inner_text("#hud")
    finally:
        running.close()


def test_pause_stops_the_dream_on_the_server_and_resume_goes_on(
        bundle: Path, browser: Any) -> None:
    running = Running(bundle)
    try:
        page = browser.new_page()
        page.goto(running.url)
        page.wait_for_function("window.tinydreams.frames > 5", timeout=20000)
        session = next(iter(running.server.sessions.values()))
        page.click("#pause")
        page.wait_for_function("window.tinydreams.paused === true", timeout=20000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not session.paused:
            time.sleep(0.02)
        assert session.paused
        stopped = session.frame_index
        time.sleep(0.5)  # 15 steps at 30 frames/s, were it stepping
        assert session.frame_index == stopped
        assert "PAUSED" in page.inner_text("#hud")
        assert page.inner_text("#pause") == "resume"
        page.click("#pause")
        page.wait_for_function("window.tinydreams.paused === false", timeout=20000)
        time.sleep(0.5)
        assert session.frame_index > stopped + 5
        assert "PAUSED" not in page.inner_text("#hud")
    finally:
        running.close()


def test_the_page_reconnects_with_backoff_when_the_server_comes_back(
        bundle: Path, browser: Any) -> None:
    first = Running(bundle)
    port = first.server.port
    page = browser.new_page()
    page.goto(first.url)
    page.wait_for_function("window.tinydreams.frames > 5", timeout=20000)
    first.close()
    page.wait_for_function("window.tinydreams.status.startsWith('disconnected')",
                           timeout=20000)
    time.sleep(1.0)  # a few refused tries: the wait between them doubles
    assert page.evaluate("window.tinydreams.backoff") >= 1000
    second = Running(bundle, port=port)
    try:
        seen = page.evaluate("window.tinydreams.frames")
        page.wait_for_function(f"window.tinydreams.frames > {seen + 5}", timeout=30000)
        assert page.evaluate("window.tinydreams.status") == "connected"
        assert page.evaluate("window.tinydreams.backoff") == 500  # reset once connected
        assert len(second.server.sessions) == 1
    finally:
        second.close()
