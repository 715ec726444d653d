"""The realism figure of a model: dream frames at each band of steps into a
dream, and the frames its output head paints of real ones, each against the
held-out game in a classifier two-sample test (``train.realism``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models import WorldModel
from train.data import Frames, evenly_spaced, start_context
from train.realism import two_sample_test
from train.rollout import dream_rollouts

# Steps into a dream (both ends included) whose frames are judged together.
BANDS = ((1, 4), (8, 24), (48, 96), (128, 256))


def band_name(first: int, last: int) -> str:
    return f"steps {first}-{last}"


def real_frames(recordings: Sequence[Frames], count: int) -> np.ndarray:
    """``count`` held-out frames spread over the recordings, ``(N, 3, H, W)`` uint8."""
    out = []
    for part in recordings:
        good = np.flatnonzero(~part.bad)
        take = good[evenly_spaced(len(good), math.ceil(count / len(recordings)))]
        out.append(np.asarray(part.frames[take]))
    return np.concatenate(out)[:count]


@torch.no_grad()
def band_frames(model: WorldModel, recordings: Sequence[Frames],
                first: int, last: int, count: int, noise_level: float = 0.0,
                latent: str = "hold") -> np.ndarray:
    """About ``count`` dream frames from steps ``first`` to ``last`` of dreams
    started from contexts spread over the first held-out recording and driven
    by the sticks recorded after them (the game's own way of moving)."""
    K = model.config.context_frames
    starts_wanted = math.ceil(count / (last - first + 1))
    part = recordings[0]
    controls = torch.from_numpy(np.asarray(part.controls, np.float32))
    n = len(part.frames)
    starts = evenly_spaced(max(1, n - K), starts_wanted)
    context = torch.stack([start_context(part, K, int(s)) for s in starts])
    rows = (torch.as_tensor(starts)[:, None] + K + torch.arange(last)[None]) % n
    sticks = controls[rows]  # (B, last, C): the recorded sticks, wrapping
    frames = dream_rollouts(model, context, sticks, noise_level, latent)[:, first - 1:last]
    flat = np.round(frames.reshape(-1, *frames.shape[2:]) * 255).astype(np.uint8)
    return flat[:count]


@torch.no_grad()
def head_frames(model: WorldModel, real: np.ndarray, device: torch.device) -> np.ndarray | None:
    """A codebook model's own paintings of real frames (each patch its nearest code
    and grain): the most real a dream from that head can look. None for a head
    that does not paint from a codebook."""
    if model.config.output_mode != "codebook":
        return None
    frames = torch.from_numpy(real).float().div(255.0).to(device)
    painted = model.paint(model.codes_of(frames))
    return painted.mul(255).round().byte().cpu().numpy()


def realism_report(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
                   count: int = 800, noise_level: float = 0.0, latent: str = "hold",
                   freerun_tail: np.ndarray | None = None) -> dict[str, Any]:
    """Each band's held-out accuracy (``Realism.to_dict``): the dream bands, the
    last frames of the free-running dream (``freerun_tail``, ``(T, 3, H, W)``
    in [0, 1]) and, for a codebook head, its paintings of real frames."""
    model = model.to(device).eval()
    real = real_frames(recordings, 2 * count)
    count = len(real) // 2  # a short recording judges fewer frames
    judged, reference = real[:count], real[count:]
    out: dict[str, Any] = {}
    for first, last in BANDS:
        fake = band_frames(model, recordings, first, last, count, noise_level, latent)
        out[band_name(first, last)] = two_sample_test(judged, fake).to_dict()
    if freerun_tail is not None and len(freerun_tail) >= 8:
        out[f"last {len(freerun_tail)} of the free run"] = two_sample_test(
            judged, freerun_tail).to_dict()
    painted = head_frames(model, reference, device)
    if painted is not None:
        out["the head's paintings of real frames"] = two_sample_test(judged, painted).to_dict()
    return out
