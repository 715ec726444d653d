"""Does a dream collapse? A free-running dream under scripted sticks, checked
against the statistics of a real recording for four failure modes:

- **freeze**: the picture stops changing while the sticks move;
- **blow-out**: brightness or contrast leaves the range the recording spans (a
  frame that is not a number at all, NaN, blows out too);
- **detail**: high-frequency energy falls below a fraction of the recording's and
  below the least the recording itself shows over as many steps (lost), or rises
  above a multiple of it and above the most the recording shows (a dream that
  dissolves into stripes or speckle);
- **boil**: the picture keeps changing while the sticks rest and the game stands
  still (a model that paints a fresh texture every step flickers).

Each check looks at a sliding window (so one odd frame is not a collapse) and
reports the first step at which it fails, or ``None``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MOVING = 0.2  # a stick step "moves" when some axis is pushed at least this far
REST = 0.05  # and "rests" when every axis is within this of the centre


def scripted_sticks(steps: int, control_dim: int = 4, rest: int = 64) -> np.ndarray:
    """A fixed, smooth stick programme ``(steps, control_dim)``: each axis a sum
    of two sines of unrelated periods, so turning, walking and looking go on
    all the time in ever-changing mixtures; then the sticks rest for the last
    ``rest`` steps (a quarter of them at most), where the game stands still.
    The same every call."""
    t = np.arange(steps, dtype=np.float64)[:, None]
    axis = np.arange(control_dim, dtype=np.float64)[None, :]
    slow = np.sin(2 * math.pi * t / (61.0 + 17.0 * axis) + axis)
    fast = np.sin(2 * math.pi * t / (13.0 + 5.0 * axis) + 2.0 * axis)
    sticks = np.clip(0.7 * slow + 0.4 * fast, -1.0, 1.0).astype(np.float32)
    sticks[steps - min(rest, steps // 4):] = 0.0
    return sticks


def detail_energy(frames: np.ndarray) -> np.ndarray:
    """Per-frame high-frequency energy of ``(T, 3, H, W)`` frames in [0, 1]: the
    mean absolute 4-neighbour Laplacian of the grey image."""
    grey = frames.mean(axis=1)  # (T, H, W)
    lap = (4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
           - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
    return np.abs(lap).mean(axis=(1, 2))


def frame_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame mean, contrast (standard deviation), detail, and the mean
    absolute change from the previous frame (0 for the first)."""
    f = np.asarray(frames, np.float32)
    change = np.zeros(len(f), np.float32)
    change[1:] = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    return {"mean": f.mean(axis=(1, 2, 3)), "contrast": f.std(axis=(1, 2, 3)),
            "detail": detail_energy(f), "change": change}


@dataclass(frozen=True)
class Reference:
    """What a real recording looks like, in the terms the checks use."""

    mean_range: tuple[float, float]
    contrast_range: tuple[float, float]
    detail: float  # mean detail energy
    change: float  # median frame-to-frame change while the sticks move
    # The least mean detail of any ``window`` consecutive frames: the real game
    # has stretches of little detail (looking at the sky, a dark corner).
    detail_low: float = math.inf
    window: int = 16
    # And the most: a busy stretch of the real game (a textured wall up close).
    detail_high: float = -math.inf

    @classmethod
    def from_frames(cls, frames: np.ndarray, controls: np.ndarray,
                    chunk: int = 1024, window: int = 16) -> Reference:
        """From ``(N, 3, H, W)`` frames (uint8 or float in [0, 1]) and the
        ``(N, C)`` controls applied before each; ``window`` as the checks'."""
        stats: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(frames), chunk):  # a uint8 memmap, a chunk at a time
            part = np.asarray(frames[max(0, start - 1):start + chunk])
            if part.dtype == np.uint8:
                part = part.astype(np.float32) / 255.0
            s = frame_stats(part)
            for k, v in s.items():
                stats.setdefault(k, []).append(v if start == 0 else v[1:])
        s = {k: np.concatenate(v) for k, v in stats.items()}
        moving = np.abs(np.asarray(controls)).max(axis=1) >= MOVING
        moving[0] = False
        change = s["change"][moving] if moving.any() else s["change"][1:]
        windows = _windows(s["detail"], window) if len(s["detail"]) >= window else None
        return cls((float(s["mean"].min()), float(s["mean"].max())),
                   (float(s["contrast"].min()), float(s["contrast"].max())),
                   float(s["detail"].mean()), float(np.median(change)),
                   float(windows.min()) if windows is not None else math.inf, window,
                   float(windows.max()) if windows is not None else -math.inf)


@dataclass
class CollapseReport:
    """The first step (1-based) at which each failure shows, or ``None``."""

    steps: int
    freeze_step: int | None
    blowout_step: int | None
    detail_step: int | None
    window: int
    thresholds: dict[str, float]
    figures: dict[str, float] = field(default_factory=dict)
    boil_step: int | None = None  # (reports from before the boil check have none)

    @property
    def passed(self) -> bool:
        return all(step is None for step in (self.freeze_step, self.blowout_step,
                                             self.detail_step, self.boil_step))

    @property
    def detail_bound(self) -> float:
        """The detail bound, over the recording's mean (reports from before the
        recording's own low windows counted give the plain fraction)."""
        return self.figures.get("detail_bound_ratio", self.thresholds["detail_fraction"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        def at(step: int | None) -> str:
            return "none" if step is None else f"from step {step}"

        f = self.figures
        return (f"collapse check over {self.steps} free-running steps: "
                f"{'PASSED' if self.passed else 'FAILED'}\n"
                f"  freeze       {at(self.freeze_step):<16} (change while moving: min "
                f"{f['change_min_ratio']:.2f}x the recording's median, bound "
                f"{self.thresholds['freeze_fraction']:.2f}x)\n"
                f"  blow-out     {at(self.blowout_step):<16} (mean {f['mean_min']:.3f}-"
                f"{f['mean_max']:.3f} in {f['ref_mean_min']:.3f}-{f['ref_mean_max']:.3f}; "
                f"contrast {f['contrast_min']:.3f}-{f['contrast_max']:.3f} in "
                f"{f['ref_contrast_min']:.3f}-{f['ref_contrast_max']:.3f})\n"
                f"  detail       {at(self.detail_step):<16} (detail: min "
                f"{f['detail_min_ratio']:.2f}x{self._detail_max()}, last window "
                f"{f['detail_last_ratio']:.2f}x the recording's mean, bounds "
                f"{self.detail_bound:.2f}x{self._detail_ceiling()})"
                + self._boil_line())

    def _detail_max(self) -> str:
        top = self.figures.get("detail_max_ratio")
        return "" if top is None else f", max {top:.2f}x"

    def _detail_ceiling(self) -> str:  # (reports from before the upper bound have none)
        top = self.figures.get("detail_ceiling_ratio")
        return "" if top is None else f"-{top:.2f}x"

    def _boil_line(self) -> str:
        rest = self.figures.get("rest_change_max_ratio")
        if "boil_fraction" not in self.thresholds:
            return ""
        at = "none" if self.boil_step is None else f"from step {self.boil_step}"
        seen = ("no resting window" if rest is None or math.isnan(rest) else
                f"change while the sticks rest: max {rest:.2f}x the recording's median")
        return (f"\n  boil         {at:<16} ({seen}, bound "
                f"{self.thresholds['boil_fraction']:.2f}x)")


def _windows(x: np.ndarray, window: int) -> np.ndarray:
    """Means of every ``window`` consecutive values; entry i ends at step i + window."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    return (c[window:] - c[:-window]) / window


def _first(flags: np.ndarray, window: int) -> int | None:
    hits = np.flatnonzero(flags)
    return int(hits[0]) + window if len(hits) else None


def collapse_check(frames: np.ndarray, controls: np.ndarray, ref: Reference, window: int = 16,
                   freeze_fraction: float = 0.1, detail_fraction: float = 0.5,
                   boil_fraction: float = 0.25, settle: int = 8,
                   detail_ceiling: float = 2.0) -> CollapseReport:
    """Check a sequence of ``(T, 3, H, W)`` frames in [0, 1] (a dream, or a
    recording itself) made under ``(T, C)`` controls, the controls applied
    before each frame.

    Args:
        ref: The real recording's statistics.
        window: Steps averaged before a check can fire.
        freeze_fraction: Freeze when the mean change over the moving steps of a
            window is below this fraction of the recording's median change.
        detail_fraction: Detail loss when a window's mean detail energy is below
            this fraction of the recording's mean, and below the least the
            recording shows in any window of the same length (so the
            recording itself always passes).
        detail_ceiling: Detail fails too when a window's mean detail energy is
            above this multiple of the recording's mean and above the most
            the recording shows in any window of the same length.
        boil_fraction: Boil when, in a window whose sticks have all rested for
            ``settle`` steps before it and throughout, the picture still changes
            by more than this fraction of the recording's median change (the
            game stands still; a dream that keeps repainting itself flickers).
    """
    s = frame_stats(frames)
    moving = (np.abs(np.asarray(controls)).max(axis=1) >= MOVING).astype(np.float64)
    moving[0] = 0.0  # the first frame has no predecessor
    moved = _windows(moving, window)
    change = _windows(s["change"] * moving, window) / np.maximum(moved, 1e-9)
    frozen = (moved >= 0.5) & (change < freeze_fraction * ref.change)
    mean, contrast = _windows(s["mean"], window), _windows(s["contrast"], window)
    blown = ((mean < ref.mean_range[0]) | (mean > ref.mean_range[1])
             | (contrast < ref.contrast_range[0]) | (contrast > ref.contrast_range[1])
             | ~np.isfinite(mean) | ~np.isfinite(contrast))  # a NaN frame compares False
    detail = _windows(s["detail"], window)
    floor, ceiling = detail_fraction * ref.detail, detail_ceiling * ref.detail
    if ref.window == window:
        floor, ceiling = min(floor, ref.detail_low), max(ceiling, ref.detail_high)
    lost = (detail < floor) | (detail > ceiling)
    judged = moved >= 0.5
    resting = (np.abs(np.asarray(controls)).max(axis=1) < REST).astype(np.float64)
    settled = np.zeros_like(resting)  # resting, and for ``settle`` steps before
    settled[settle:] = _windows(resting, settle + 1) >= 1.0
    rested = _windows(settled, window) >= 1.0
    all_change = _windows(s["change"], window)
    boiled = rested & (all_change > boil_fraction * ref.change)
    figures = {
        "change_min_ratio": float(change[judged].min() / ref.change) if judged.any() else math.nan,
        "mean_min": float(mean.min()), "mean_max": float(mean.max()),
        "contrast_min": float(contrast.min()), "contrast_max": float(contrast.max()),
        "ref_mean_min": ref.mean_range[0], "ref_mean_max": ref.mean_range[1],
        "ref_contrast_min": ref.contrast_range[0], "ref_contrast_max": ref.contrast_range[1],
        "detail_min_ratio": float(detail.min() / ref.detail),
        "detail_max_ratio": float(detail.max() / ref.detail),
        "detail_ceiling_ratio": ceiling / ref.detail,
        "detail_last_ratio": float(detail[-1] / ref.detail),
        "detail_bound_ratio": floor / ref.detail,
        "ref_detail": ref.detail, "ref_change": ref.change,
        "rest_change_max_ratio": (float(all_change[rested].max() / ref.change) if rested.any()
                                  else math.nan),
    }
    return CollapseReport(len(frames), _first(frozen, window), _first(blown, window),
                          _first(lost, window), window,
                          {"freeze_fraction": freeze_fraction,
                           "detail_fraction": detail_fraction,
                           "detail_ceiling": detail_ceiling,
                           "boil_fraction": boil_fraction}, figures, _first(boiled, window))

