from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recording.format import LOG_NAME, RecordingError
from tests.train.helpers import moving_square_recording
from train import data as data_module
from train.data import StepBatches, build_datasets, load_frames, split_rows, transition_rows


def _load_after(barrier: Any, rec: Path, out: Any) -> None:
    barrier.wait()
    try:
        out.put(load_frames(rec, (16, 16)).frames.sum(dtype=np.int64))
    except Exception as err:  # the parent reports it
        out.put(repr(err))


def test_two_processes_building_one_cache_at_once_both_get_it(tmp_path: Path) -> None:
    # Two trainings started together on one recording (an ablation's variants side
    # by side) both found no cache and wrote the same temporary file: the second's
    # rename failed and its run died before its first step.
    rec = moving_square_recording(tmp_path / "rec", episodes=8, steps=60)
    ctx = multiprocessing.get_context("spawn")  # fork after torch's threads can hang
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_load_after, args=(barrier, rec, out)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    expected = load_frames(rec, (16, 16)).frames.sum(dtype=np.int64)
    assert got == [expected] * 3
    assert sorted(p.name for p in (rec / data_module.CACHE_DIR).glob("*.npy*")) == [
        p.name for p in (rec / data_module.CACHE_DIR).glob("frames-16x16-*.npy")]


def test_cache_is_built_once_and_rebuilt_when_the_log_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    builds = []
    real = data_module._build_cache
    monkeypatch.setattr(data_module, "_build_cache",
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    first = load_frames(rec, (16, 16))
    again = load_frames(rec, (16, 16))
    assert len(builds) == 1
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.frames.shape == (36, 3, 16, 16)
    assert isinstance(again.frames, np.memmap)
    load_frames(rec, (8, 8))  # another size, another cache
    assert len(builds) == 2
    with (rec / LOG_NAME).open("a") as f:
        f.write("garbage\n")  # the log changed: the cache is stale
    load_frames(rec, (16, 16))
    assert len(builds) == 3
    assert len(list((rec / data_module.CACHE_DIR).glob("frames-16x16-*.npy"))) == 1


def test_cached_frames_match_the_images(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    frames = load_frames(rec, (16, 16))
    from recording.frames import load_image

    first = load_image(frames.recording.entries[5].frame)
    np.testing.assert_array_equal(frames.frames[5], first.transpose(2, 0, 1))


def test_unreadable_images_drop_their_transitions(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec", episodes=1, steps=10)
    (rec / "frames" / "00000_000004.png").write_bytes(b"\x89PNG broken")
    frames = load_frames(rec, (16, 16))
    assert frames.bad.tolist() == [i == 4 for i in range(10)]
    rows = transition_rows(frames, 1)
    assert not np.isin(rows, [4]).any()
    assert len(rows) == 9 - 2  # the two transitions touching frame 4 are gone


def test_split_by_episode_and_by_tail(tmp_path: Path) -> None:
    many = load_frames(moving_square_recording(tmp_path / "a", episodes=10, steps=5), (16, 16))
    train, val = split_rows(many, transition_rows(many, 1), 0.2)
    ep = np.array([e.episode for e in many.recording.entries])
    assert set(ep[val[:, -1]]) == {8, 9}
    assert not set(ep[train[:, -1]]) & {8, 9}
    one = load_frames(moving_square_recording(tmp_path / "b", episodes=1, steps=50), (16, 16))
    train, val = split_rows(one, transition_rows(one, 2), 0.2)
    assert train.max() < val.min()  # no frame shared across the split
    assert len(val) > 5


def test_batches_have_the_model_layout_and_are_reproducible(tmp_path: Path) -> None:
    a = moving_square_recording(tmp_path / "a", seed=1)
    b = moving_square_recording(tmp_path / "b", seed=2)
    train, val, _ = build_datasets([a, b], [], (16, 16), context_frames=2, control_dim=4,
                                   val_fraction=0.0)
    assert len(val) == 0
    assert len(train) == 2 * 3 * (12 - 2)  # two recordings combined
    batches = StepBatches(train, batch_size=5, steps=10, seed=3)
    batch = batches[7]
    assert batch["frames"].shape == (5, 3, 3, 16, 16)
    assert batch["frames"].dtype == torch.uint8
    assert batch["controls"].shape == (5, 1, 4)
    torch.testing.assert_close(batches[7]["frames"], batch["frames"])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(5, 8),
                                         num_workers=2,
                                         multiprocessing_context=data_module.WORKER_CONTEXT)
    from_workers = list(loader)
    torch.testing.assert_close(from_workers[2]["frames"], batch["frames"])


def test_a_recording_too_short_for_the_context_is_a_clear_error(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "a", episodes=2, steps=3)
    with pytest.raises(RecordingError, match=r"no training transitions in .*/a: a sample needs "
                                             r"5 consecutive frames"):
        build_datasets([rec], [], (16, 16), 4, 4, 0.0)
