"""The training data pipeline: recordings -> a decoded uint8 frame cache ->
batches of (context frames, controls, next frame).

Frames are decoded and resized once into a memory-mapped ``.npy`` beside the
recording (keyed by frame size and the log's content, rebuilt when stale), so
an epoch reads no PNG. A batch is one fancy index into that array.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from recording.format import LOG_NAME, Recording, RecordingError, read_recording
from recording.frames import load_image

log = logging.getLogger(__name__)

CACHE_DIR = ".tinydreams-cache"
# Forking a process that runs threads (the model's, an SDL audio thread...) can
# deadlock the child, so workers start from a clean fork server instead.
WORKER_CONTEXT = "forkserver"
CACHE_VERSION = 1


@dataclass
class Frames:
    """One recording's frames, decoded: ``frames[i]`` is entry i as (3, H, W) uint8."""

    recording: Recording
    frames: np.ndarray  # (N, 3, H, W) uint8, memory-mapped
    bad: np.ndarray  # (N,) bool: images that failed to decode
    controls: np.ndarray  # (N, control_dim) float32

    # DataLoader workers start by spawning (see WORKER_CONTEXT), which pickles the
    # dataset: send the cache's path, not a copy of every frame.
    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if isinstance(self.frames, np.memmap) and self.frames.filename:
            state["frames"] = Path(self.frames.filename)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        if isinstance(state["frames"], Path):
            state["frames"] = np.load(state["frames"], mmap_mode="r")
        self.__dict__.update(state)


def _cache_key(directory: Path, size: tuple[int, int]) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} {size[1]}x{size[0]}\n".encode())
    with (directory / LOG_NAME).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def load_frames(directory: str | Path, size: tuple[int, int], control_dim: int | None = None,
                cache_dir: str | Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> Frames:
    """Read a recording and its frame cache at ``size`` = (height, width),
    building the cache if it is missing or stale.

    Args:
        directory: The recording directory.
        size: Frame size the model wants, (height, width).
        control_dim: Controls per line (default: the recording's).
        cache_dir: Where caches live (default: ``<recording>/.tinydreams-cache``).
        progress: Called with (done, total) while building a cache.
    """
    directory = Path(directory)
    rec = read_recording(directory, control_dim)
    key = _cache_key(directory, size)
    root = Path(cache_dir) / hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[
        :12] if cache_dir else directory / CACHE_DIR
    root.mkdir(parents=True, exist_ok=True)
    stem = f"frames-{size[1]}x{size[0]}"  # width x height
    path, info_path = root / f"{stem}-{key}.npy", root / f"{stem}-{key}.json"
    cached = _read_cache(rec, path, info_path)
    if cached is not None:
        return cached
    # One process builds a cache at a time (two trainings started together on one
    # recording); the others wait, then read what it built.
    with FileLock(str(root / f"{stem}.lock")):
        cached = _read_cache(rec, path, info_path)
        if cached is not None:
            return cached
        for stale in root.glob(f"{stem}-*"):  # an older cache of this size: the log changed
            stale.unlink(missing_ok=True)
        frames, bad = _build_cache(rec, size, path, progress)
        info_path.write_text(json.dumps({"lines": [e.line for e in rec.entries],
                                         "bad": np.flatnonzero(bad).tolist()}))
    if bad.any():
        lines = [rec.entries[i].line for i in np.flatnonzero(bad)]
        log.warning("%s: %d unreadable image(s), their transitions are skipped: line %s",
                    directory, len(lines), ", ".join(map(str, lines[:10])))
    return Frames(rec, frames, bad, rec.controls())


def _read_cache(rec: Recording, path: Path, info_path: Path) -> Frames | None:
    """The cache at ``path`` when it was built from this very log, else None."""
    if not (path.is_file() and info_path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    if info.get("lines") != [e.line for e in rec.entries]:
        return None
    bad = np.zeros(len(rec.entries), bool)
    bad[info["bad"]] = True
    return Frames(rec, np.load(path, mmap_mode="r"), bad, rec.controls())


def _build_cache(rec: Recording, size: tuple[int, int], path: Path,
                 progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(rec.entries), 3, h, w))
    bad = np.zeros(len(rec.entries), bool)
    for i, entry in enumerate(rec.entries):
        try:
            out[i] = load_image(entry.frame, size).transpose(2, 0, 1)  # HWC -> CHW
        except (OSError, SyntaxError, ValueError):
            bad[i] = True
        if progress is not None and (i % 256 == 0 or i == len(rec.entries) - 1):
            progress(i + 1, len(rec.entries))
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r"), bad


def transition_rows(frames: Frames, context_frames: int, horizon: int = 1) -> np.ndarray:
    """Rows of entry indices ``(T, K + horizon)`` within one segment, none
    touching an unreadable frame: K context frames, then ``horizon`` targets."""
    rows = frames.recording.transitions(context_frames + horizon - 1)
    if len(rows) and frames.bad.any():
        rows = rows[~frames.bad[rows].any(axis=1)]
    return rows


def split_rows(frames: Frames, rows: np.ndarray,
               val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the last ``val_fraction`` of episodes; with one episode, its tail."""
    episodes = np.array([e.episode for e in frames.recording.entries])
    unique = np.unique(episodes)
    if val_fraction <= 0 or len(rows) == 0:
        return rows, rows[:0]
    if len(unique) >= 2:
        n_val = max(1, round(len(unique) * val_fraction))
        held = np.isin(episodes[rows[:, -1]], unique[-n_val:])
        return rows[~held], rows[held]
    cut = rows[int(len(rows) * (1 - val_fraction)), 0]
    return rows[rows[:, -1] < cut], rows[rows[:, 0] >= cut]


class TransitionSet:
    """Transitions from one or more recordings, fetched a batch at a time.

    ``batch(indices)`` returns ``frames`` (B, K + horizon, 3, H, W) uint8 and
    ``controls`` (B, horizon, control_dim) float32: the controls applied before
    each target frame.
    """

    def __init__(self, parts: Sequence[tuple[Frames, np.ndarray]], context_frames: int,
                 horizon: int = 1) -> None:
        self.parts = [(f, r) for f, r in parts if len(r)]
        self.context_frames, self.horizon = context_frames, horizon
        self.offsets = np.cumsum([0] + [len(r) for _, r in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        frames, controls = [], []
        order = []
        for p in np.unique(part_of):
            src, rows = self.parts[p]
            where = np.flatnonzero(part_of == p)
            picked = rows[indices[where] - self.offsets[p]]  # (b, K + horizon)
            frames.append(src.frames[picked.reshape(-1)].reshape(
                len(where), picked.shape[1], *src.frames.shape[1:]))
            controls.append(src.controls[picked[:, self.context_frames:]])
            order.append(where)
        inverse = np.argsort(np.concatenate(order))
        return {"frames": torch.from_numpy(np.concatenate(frames)[inverse]),
                "controls": torch.from_numpy(np.concatenate(controls)[inverse])}


class StepBatches(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Item ``step`` is the batch for that optimizer step, drawn from a generator
    seeded by (seed, step, rank): the same batches with or without workers,
    and a resumed run draws exactly what the uninterrupted one would have."""

    def __init__(self, data: TransitionSet, batch_size: int, steps: int, seed: int = 0,
                 rank: int = 0) -> None:
        if len(data) == 0:
            raise RecordingError("no training transitions: the recordings are too short "
                                 "for the context frames asked for")
        self.data, self.batch_size, self.steps = data, batch_size, steps
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        return self.data.batch(rng.integers(0, len(self.data), self.batch_size))


def to_model_inputs(batch: dict[str, torch.Tensor], device: torch.device,
                    context_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 batch -> float (context (B, K, 3, H, W), controls (B, T, C), targets
    (B, T, 3, H, W)) in [0, 1] on ``device``; copies overlap compute on CUDA."""
    frames = batch["frames"].to(device, non_blocking=True).float().div_(255.0)
    controls = batch["controls"].to(device, non_blocking=True)
    return frames[:, :context_frames], controls, frames[:, context_frames:]


def build_datasets(recordings: Sequence[str | Path], val_recordings: Sequence[str | Path],
                   size: tuple[int, int], context_frames: int, control_dim: int,
                   val_fraction: float = 0.1, cache_dir: str | Path | None = None,
                   horizon: int = 1,
                   progress: Callable[[str, int, int], None] | None = None,
                   ) -> tuple[TransitionSet, TransitionSet, list[Frames]]:
    """Train and validation transitions from recording directories."""
    if not recordings:
        raise RecordingError("no recording given: pass --data DIR")

    def load(d: str | Path) -> Frames:
        cb = None if progress is None else (lambda i, n: progress(str(d), i, n))
        frames = load_frames(d, size, control_dim, cache_dir, cb)
        if frames.recording.skipped:
            log.warning("%s: %d bad line(s) skipped\n%s", d, len(frames.recording.skipped),
                        frames.recording.report_skipped())
        return frames

    train_parts, val_parts, loaded = [], [], []
    for d in recordings:
        f = load(d)
        loaded.append(f)
        rows = transition_rows(f, context_frames, horizon)
        if val_recordings:
            train_parts.append((f, rows))
        else:
            tr, va = split_rows(f, rows, val_fraction)
            train_parts.append((f, tr))
            val_parts.append((f, va))
    for d in val_recordings:
        f = load(d)
        loaded.append(f)
        val_parts.append((f, transition_rows(f, context_frames, horizon)))
    train = TransitionSet(train_parts, context_frames, horizon)
    if len(train) == 0:
        raise RecordingError(
            f"no training transitions in {', '.join(map(str, recordings))}: a sample needs "
            f"{context_frames + horizon} consecutive frames of one episode (the context and "
            "the steps the config unrolls), and no episode has that many")
    return train, TransitionSet(val_parts, context_frames, horizon), loaded


def evenly_spaced(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread over ``range(n_total)`` (all of them if fewer)."""
    if n_total <= n:
        return np.arange(n_total)
    return np.linspace(0, n_total - 1, n).round().astype(np.int64)


def start_context(frames: Frames, K: int, start: int = 0) -> torch.Tensor:
    """The ``(K, 3, H, W)`` float frames of ``frames`` that begin at entry
    ``start``, or at the first K consecutive readable frames after it."""
    rows = transition_rows(frames, K)
    if not len(rows):
        raise RecordingError(f"{frames.recording.directory}: no {K} consecutive frames to "
                             f"start a dream from")
    row = rows[min(int(np.searchsorted(rows[:, 0], start)), len(rows) - 1)]
    return torch.from_numpy(np.asarray(frames.frames[row[:K]])).float().div(255.0)
