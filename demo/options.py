"""What the demo is asked to do, and what each of its stages made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORLD = "doom:health_gathering"
# Doom tics a step: 2 is 17.5 game frames a second.
FRAME_SKIP = 2


@dataclass
class DemoOptions:
    """Args:
        out: Where everything goes: ``report.html`` and ``work/``.
        quick: A 5-minute version: less data, a short training, short checks.
        minutes: Training budget (0: 15, or 2 with ``quick``); the preset's steps
            are scaled from its own ``max_minutes`` to it, so the learning-rate
            schedule runs its whole course.
        record_steps: Training recording length (0: 12,000, or 1,500 quick).
        val_steps: Held-out recording length (0: 2,500, or 600 quick).
        train_steps: Override the preset's optimizer steps, the cosine schedule's
            length (0: the preset's).
        frames: Frames the scripted client plays through the server (0: 300, or 100
            quick).
        config: Training preset.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Show progress bars.
    """

    out: Path = Path("runs/demo")
    quick: bool = False
    minutes: float = 0.0
    record_steps: int = 0
    val_steps: int = 0
    train_steps: int = 0
    frames: int = 0
    config: str = "tiny-rounds"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        q = self.quick
        self.minutes = self.minutes or (2.0 if q else 15.0)
        self.record_steps = self.record_steps or (1500 if q else 12_000)
        self.val_steps = self.val_steps or (600 if q else 2500)
        self.frames = self.frames or (100 if q else 300)

    @property
    def work(self) -> Path:
        return self.out / "work"


@dataclass
class DemoResult:
    """What each stage made and measured, for the report."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stage(self, name: str) -> dict[str, Any]:
        return self.stages.setdefault(name, {})
