"""The demo pipeline end to end on tiny data: real ViZDoom, training, export, a
real server and client, the report; a second run reuses the first one's work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")
pytest.importorskip("onnxruntime", reason="needs the export extra")
pytest.importorskip("websockets", reason="needs the serve extra")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def demo(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo", "--quick", "--out", str(out), "--record-steps", "300",
         "--val-steps", "200", "--train-steps", "6", "--frames", "20", "--no-play", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=500, check=False)


def test_quick_demo_writes_a_self_contained_report_and_reuses_its_work(tmp_path: Path) -> None:
    first = demo(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (tmp_path / "report.html").read_text()
    assert "1-step PSNR" in first.stdout
    for heading in ("How well it predicts", "Reality beside the dream", "Dreaming freely",
                    "Collapse check over 200 free-running steps", "Served", "lockstep clients",
                    "Does it listen to the sticks?", "dream's view moves",
                    "boil (picture keeps changing", "How real it looks", "told from the game"):
        assert heading in report
    # The game's own view: a Doom turn at full stick shifts the picture a few pixels.
    turn = re.search(r"<td>right_x</td>(?:<td>[^<]*</td>){3}<td>([-+.\d]+), ", report)
    assert turn is not None
    assert 1.0 < float(turn[1]) < 6.0
    # Every picture is inlined: the page needs nothing but itself.
    assert len(re.findall(r'src="data:image/gif;base64,', report)) == 2
    assert len(re.findall(r'src="data:image/png;base64,', report)) == 2
    assert len(re.findall(r'<video [^>]*src="data:video/mp4;base64,', report)) == 1
    assert not re.search(r'(src|href)="(https?:|/|\.\.?/)', report)
    work = tmp_path / "work"
    assert json.loads((work / "recordings" / "doom-skip2" / "meta.json").read_text())[
        "fps"] == 17.5
    for made in ("recordings/doom-skip2/meta.json", "run/latest.pt", "bundle/manifest.json",
                 "eval/eval.json", "served.gif"):
        assert (work / made).is_file(), made
    checkpoint = (work / "run" / "latest.pt").stat().st_mtime_ns

    second = demo(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (work / "run" / "latest.pt").stat().st_mtime_ns == checkpoint  # not retrained
    timings = (tmp_path / "report.html").read_text().split("Where the time went")[1]
    for stage in ("record", "train", "export"):
        assert re.search(rf"<td>{stage}</td><td>reused</td>", timings), stage


def test_the_report_tells_a_stick_whose_dream_moves_too_little_or_too_far() -> None:
    from demo.report import sticks_html

    sticks = {name: {"flip_l1_ratio": ratio, "response": 0.5}
              for name, ratio in (("left_x", 1.0), ("right_x", 1.1), ("right_y", 2.0))}
    motion = {"right_x": {"game": [4.7, -0.5], "dream": [0.3, 0.0]},
              "right_y": {"game": [0.3, 0.9], "dream": [0.1, 0.4]}}
    page = sticks_html(sticks, motion)
    verdicts = re.findall(r'<span class="(?:good|bad)">([^<]+)</span>', page)
    assert verdicts == ["ignored", "barely moves the dream", "followed"]
    assert "<td>+0.3, +0.0</td><td>+4.7, -0.5</td>" in page
    motion["right_x"]["dream"] = [4.0, 0.0]  # a dream that turns as the game does
    assert re.findall(r'<span class="(?:good|bad)">([^<]+)</span>',
                      sticks_html(sticks, motion))[1] == "followed"
    motion["right_x"]["dream"] = [-9.5, 0.0]  # twice as far as the game, or more
    assert re.findall(r'<span class="(?:good|bad)">([^<]+)</span>',
                      sticks_html(sticks, motion))[1] == "moves the dream too far"
