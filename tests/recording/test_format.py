from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from recording.format import (
    LOG_NAME,
    RecordingError,
    parse_controls,
    read_recording,
)
from recording.writer import RecordingWriter


def frame(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def write_log(directory: Path, lines: list[Any], images: int = 0) -> None:
    """A hand-made recording: ``images`` PNGs named f0.png.. and raw log lines."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.fromarray(frame(i)).save(directory / f"f{i}.png")
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                   for line in lines)
    (directory / LOG_NAME).write_text(text)


def test_writer_and_reader_round_trip(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path, 8, 8, meta={"world": "test", "fps": 10}) as w:
        for episode in range(2):
            w.new_episode()
            for step in range(5):
                w.write(frame(10 * episode + step), [step / 10, -step / 10, 0.5, -1.0])
    rec = read_recording(tmp_path, check_images="decode")
    assert rec.skipped == []
    assert rec.episodes == [0, 1]
    assert len(rec.entries) == 10
    assert rec.meta["world"] == "test"
    assert rec.meta["runs"][0]["frames"] == 10
    np.testing.assert_allclose(rec.entries[3].controls, [0.3, -0.3, 0.5, -1.0], atol=1e-6)
    # (frame i, controls i+1, frame i+1), never across an episode
    pairs = rec.transitions(1)
    assert pairs.shape == (8, 2)
    assert all(rec.entries[a].episode == rec.entries[b].episode for a, b in pairs)
    context = rec.transitions(3)
    assert context.shape == (4, 4)  # 2 per episode of 5 frames
    assert context[0].tolist() == [0, 1, 2, 3]


def test_seed_format_variations_load(tmp_path: Path) -> None:
    # dict and list controls, server_timestamp_ns, and lines out of order
    lines = [
        {"frame_filename": "f2.png", "controls": [0.2, 0, 0, 0], "server_timestamp_ns": 3_000},
        {"frame_filename": "f0.png", "controls": {"leftStick": [0, 0], "rightStick": [0, 0]},
         "server_timestamp_ns": 1_000},
        {"frame_filename": "f1.png", "controls": {"leftStick": [0.1, -0.1], "rightStick": [1, -1]},
         "server_timestamp_ns": 2_000},
    ]
    write_log(tmp_path, lines, images=3)
    rec = read_recording(tmp_path)
    assert [e.frame.name for e in rec.entries] == ["f0.png", "f1.png", "f2.png"]
    np.testing.assert_allclose(rec.entries[1].controls, [0.1, -0.1, 1, -1])
    assert rec.transitions(1).tolist() == [[0, 1], [1, 2]]


def test_stick_objects_and_text_timestamps_load(tmp_path: Path) -> None:
    lines = [
        {"frame_filename": "f2.png", "controls": {"leftStick": {"x": 0.5, "y": -0.5},
                                                  "rightStick": {"x": 0, "y": 1}},
         "timestamp": "2026-01-02T03:04:07Z"},
        {"frame_filename": "f0.png", "controls": [0, 0, 0, 0],
         "timestamp": "2026-01-02T03:04:05.500"},  # no zone: UTC
        {"frame_filename": "f1.png", "controls": {"leftStick": [0.1, 0], "rightStick": [0, 0]},
         "timestamp": "1767323046.25"},  # seconds, as text
    ]
    write_log(tmp_path, lines, images=3)
    rec = read_recording(tmp_path)
    assert [e.frame.name for e in rec.entries] == ["f0.png", "f1.png", "f2.png"]
    assert [e.time for e in rec.entries] == [1767323045.5, 1767323046.25, 1767323047.0]
    np.testing.assert_allclose(rec.entries[2].controls, [0.5, -0.5, 0, 1])
    write_log(tmp_path / "ns", [{"frame_filename": "f0.png", "controls": [0, 0, 0, 0],
                                 "server_timestamp_ns": "2000000000"}], images=1)
    assert read_recording(tmp_path / "ns").entries[0].time == 2.0
    write_log(tmp_path / "bad", [
        {"frame_filename": "f0.png", "controls": [0, 0, 0, 0], "timestamp": 1.0},
        {"frame_filename": "f0.png", "controls": {"leftStick": {"x": 0}, "rightStick": [0, 0]},
         "timestamp": 2.0},
        {"frame_filename": "f0.png", "controls": [0, 0, 0, 0], "timestamp": "tomorrow"}],
        images=1)
    bad = read_recording(tmp_path / "bad")
    assert [(s.line, s.reason.split(":")[0]) for s in bad.skipped] == [
        (2, "malformed controls"), (3, "bad timestamp")]
    assert "neither seconds nor an ISO 8601 time" in bad.skipped[1].reason


def test_float_timestamps_sort_and_no_timestamps_keep_file_order(tmp_path: Path) -> None:
    lines = [{"frame_filename": f"f{i}.png", "controls": [0, 0, 0, 0], "timestamp": t}
             for i, t in [(1, 2.5), (0, 1.25), (2, 3.0)]]
    write_log(tmp_path / "a", lines, images=3)
    assert [e.frame.name for e in read_recording(tmp_path / "a").entries] == [
        "f0.png", "f1.png", "f2.png"]
    write_log(tmp_path / "b", [{"frame_filename": f"f{i}.png", "controls": [0, 0, 0, 0]}
                               for i in (2, 0, 1)], images=3)
    assert [e.frame.name for e in read_recording(tmp_path / "b").entries] == [
        "f2.png", "f0.png", "f1.png"]


def test_other_control_lengths(tmp_path: Path) -> None:
    write_log(tmp_path, [{"frame_filename": "f0.png", "controls": [0.5, 0, 0, 0, 0, 1],
                          "timestamp": 1}], images=1)
    assert read_recording(tmp_path, control_dim=6).entries[0].controls.shape == (6,)


def test_bad_lines_are_skipped_counted_and_numbered(tmp_path: Path) -> None:
    ok = {"controls": [0, 0, 0, 0]}
    lines: list[Any] = [
        {"frame_filename": "f0.png", **ok, "timestamp": 1},                    # 1 good
        "{not json",                                                           # 2
        {"frame_filename": "missing.png", **ok, "timestamp": 2},               # 3
        {"frame_filename": "broken.png", **ok, "timestamp": 3},                # 4
        {"frame_filename": "f1.png", "controls": [0, 0, 0], "timestamp": 4},   # 5
        '{"frame_filename": "f1.png", "controls": [NaN, 0, 0, 0], "timestamp": 5}',  # 6
        {"frame_filename": "f1.png", "controls": [3, 0, 0, 0], "timestamp": 6},  # 7
        {"controls": [0, 0, 0, 0], "timestamp": 7},                            # 8
        {"frame_filename": "f1.png", **ok, "timestamp": "soon"},               # 9
        {"frame_filename": "f1.png", **ok, "timestamp": 10},                   # 10 good
        {"frame_filename": "f2.png", **ok, "timestamp": 11},                   # 11 good
        {"frame_filename": "f1.png", "controls": {"leftStick": [0]}, "timestamp": 12},  # 12
    ]
    write_log(tmp_path, lines, images=3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rec = read_recording(tmp_path, check_images="decode")
    reasons = {s.line: s.reason.split(":")[0] for s in rec.skipped}
    assert reasons == {
        2: "malformed JSON", 3: "missing image", 4: "unreadable image",
        5: "wrong control length", 6: "non-finite control value", 7: "control out of range",
        8: "missing field", 9: "bad timestamp", 12: "malformed controls"}
    assert [e.line for e in rec.entries] == [1, 10, 11]
    # Skipped lines between 1 and 10 leave a gap no transition may jump.
    assert rec.transitions(1).tolist() == [[1, 2]]
    report = rec.report_skipped()
    assert "1 line(s) skipped, missing image: line 3" in report


def test_empty_or_missing_recording_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no recording log here"):
        read_recording(tmp_path)
    write_log(tmp_path, ["{broken", "[1, 2]"])
    with pytest.raises(RecordingError, match=r"no usable line.*malformed JSON: line 1, 2"):
        read_recording(tmp_path)


def test_slightly_out_of_range_controls_are_clipped() -> None:
    np.testing.assert_array_equal(parse_controls([1.0000001, -1.0005, 0, 0], 4), [1, -1, 0, 0])


def test_appending_adds_new_episodes_and_mends_a_torn_last_line(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path, 8, 8) as w:
        for i in range(3):
            w.write(frame(i), [0, 0, 0, 0])
    with (tmp_path / LOG_NAME).open("a") as f:
        f.write('{"frame_filename": "frames/00000_0000')  # a crash mid-line
    with RecordingWriter(tmp_path, 8, 8) as w:
        assert w.first_episode == 1
        for i in range(3):
            w.write(frame(100 + i), [0.5, 0, 0, 0])
    rec = read_recording(tmp_path, check_images="decode")
    assert rec.episodes == [0, 1]
    assert len(rec.entries) == 6
    assert [s.reason.split(":")[0] for s in rec.skipped] == ["malformed JSON"]
    assert len(rec.meta["runs"]) == 2
    assert len(list((tmp_path / "frames").glob("*.png"))) == 6  # nothing overwritten


def test_appending_a_different_frame_size_is_refused(tmp_path: Path) -> None:
    RecordingWriter(tmp_path, 8, 8).close()
    with pytest.raises(RecordingError, match="height = 8"):
        RecordingWriter(tmp_path, 16, 16)


def test_writer_checks_its_input(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path, 8, 8) as w:
        with pytest.raises(ValueError, match=r"frame must be \(8, 8, 3\) uint8"):
            w.write(np.zeros((8, 8, 3), np.float32), [0, 0, 0, 0])
        with pytest.raises(ValueError, match="expected 4 controls"):
            w.write(frame(0), [0, 0])


def test_triggers_and_buttons_are_written_beside_the_sticks_and_read_back(
        tmp_path: Path) -> None:
    names = ("left_x", "left_y", "right_x", "right_y", "right_trigger", "a")
    with RecordingWriter(tmp_path, 8, 8, control_names=names) as w:
        w.new_episode()
        w.write(frame(0), np.zeros(6))
        w.write(frame(1), [0.5, -1, 0, 0.25, 0.75, 1])
    line = json.loads((tmp_path / LOG_NAME).read_text().splitlines()[1])
    assert line["controls"] == {"leftStick": [0.5, -1], "rightStick": [0, 0.25]}
    assert line["triggers"] == [0.0, 0.75]
    assert line["buttons"] == {"a": 1}
    rec = read_recording(tmp_path)
    assert rec.control_names == names
    np.testing.assert_allclose(rec.controls(), [[0, 0, 0, 0, 0, 0], [0.5, -1, 0, 0.25, 0.75, 1]])
    # A line without triggers or buttons has them at rest; a bad one is named.
    write_log(tmp_path / "hand", [
        {"frame_filename": "f0.png", "controls": {"leftStick": [0, 0], "rightStick": [0, 0]}},
        {"frame_filename": "f1.png", "controls": [0, 0, 0, 0], "buttons": {"a": 2}}], images=2)
    (tmp_path / "hand" / "meta.json").write_text(json.dumps({"control_names": list(names)}))
    hand = read_recording(tmp_path / "hand")
    np.testing.assert_array_equal(hand.controls(), [[0] * 6])
    assert hand.skipped[0].reason.startswith("malformed triggers or buttons")
