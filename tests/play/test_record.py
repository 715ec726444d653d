"""Recording real worlds through the CLI: speed, crash safety, appending, inspect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from play.policies import ReplayPolicy, WanderPolicy
from play.record import record
from play.worlds import make_world
from recording.format import LOG_NAME, read_recording

pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")

ROOT = Path(__file__).resolve().parents[2]


def play_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "play", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_record_cli_writes_a_recording_the_reader_loads_whole(tmp_path: Path) -> None:
    out = tmp_path / "doom"
    result = play_cli("record", "--world", "doom:health_gathering", "--policy", "wander",
                      "--steps", "300", "--out", str(out), "--size", "64", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "recorded 300 steps" in result.stdout
    assert "steps/s" in result.stdout
    assert "left_x" in result.stdout  # the coverage histogram
    rec = read_recording(out, check_images="decode")
    assert rec.skipped == []
    assert len(rec.entries) == 300 + 1  # + the first frame of the episode
    assert len(rec.transitions(1)) >= 300 - len(rec.episodes)
    assert rec.meta["width"] == rec.meta["height"] == 64
    assert rec.meta["world"] == "doom:health_gathering"
    assert rec.meta["runs"][0]["policy"] == "wander"


def test_killed_recorder_leaves_a_fully_usable_log(tmp_path: Path) -> None:
    out = tmp_path / "doom"
    proc = subprocess.Popen(
        [sys.executable, "-m", "play", "record", "--world", "doom:basic", "--steps", "1000000",
         "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)  # a group: the kill takes ViZDoom too
    try:
        deadline = time.monotonic() + 60
        log = out / LOG_NAME
        while time.monotonic() < deadline:
            if log.exists() and log.read_bytes().count(b"\n") >= 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the recorder wrote fewer than 200 lines in 60 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the recorder and the ViZDoom process it started
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    result = play_cli("inspect", str(out))
    assert result.returncode == 0, result.stderr
    assert "0 skipped" in result.stdout
    assert "usable: yes\n" in result.stdout + "\n"
    rec = read_recording(out, check_images="decode")
    assert len(rec.entries) >= 200
    assert rec.skipped == []


def test_recording_again_appends_a_new_episode(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    for seed in (1, 2):
        world = make_world("doom:basic")
        try:
            # No shots: a shot monster would end an episode of doom:basic early.
            policy = WanderPolicy(len(world.control_names), seed=seed, press=0.0)
            record(world, policy, out, 20, size=(32, 32), seed=seed)
        finally:
            world.close()
    rec = read_recording(out, check_images="decode")
    assert rec.episodes == [0, 1]
    assert len(rec.entries) == 42
    assert len(rec.meta["runs"]) == 2


def test_replay_policy_reapplies_a_recordings_controls(tmp_path: Path) -> None:
    world = make_world("doom:basic")
    try:
        n = len(world.control_names)
        record(world, WanderPolicy(n, seed=3), tmp_path / "a", 15, size=(32, 32))
        source = read_recording(tmp_path / "a")
        stats = record(world, ReplayPolicy(tmp_path / "a", n), tmp_path / "b", 100, size=(32, 32))
    finally:
        world.close()
    assert stats.steps == 16  # the source's 16 lines: its zero first controls, then 15 steps
    assert "used up" in stats.stopped
    np.testing.assert_allclose(stats.controls, source.controls(), atol=1e-6)


def test_inspect_reports_skipped_lines_with_numbers(tmp_path: Path) -> None:
    world = make_world("doom:basic")
    try:
        record(world, WanderPolicy(len(world.control_names), seed=0), tmp_path, 10, size=(32, 32))
    finally:
        world.close()
    with (tmp_path / LOG_NAME).open("a") as f:
        f.write("garbage\n")
    (tmp_path / "frames" / "00000_000003.png").unlink()
    result = play_cli("inspect", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "1 line(s) skipped, malformed JSON: line 12" in result.stdout
    assert "1 line(s) skipped, missing image: line 4" in result.stdout


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    result = play_cli("record", "--world", "doom:nope", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown Doom scenario" in result.stderr
    result = play_cli("inspect", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "no recording log here" in result.stderr
