"""Validate a recording and describe it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recording.format import STICK_NAMES, Recording, read_recording


def inspect_recording(directory: str | Path, control_dim: int | None = None,
                      context_frames: int = 1) -> tuple[Recording, str]:
    """Read every line and decode every image; return the recording and a report."""
    rec = read_recording(directory, control_dim, check_images="decode")
    transitions = rec.transitions(context_frames)
    names = tuple(rec.meta.get("control_names", STICK_NAMES))
    if len(names) != rec.control_dim:
        names = tuple(f"c{i}" for i in range(rec.control_dim))
    lines = [
        f"recording      {rec.directory}",
        f"world          {rec.meta.get('world', 'unknown')}  "
        f"{rec.meta.get('width', '?')}x{rec.meta.get('height', '?')} at "
        f"{rec.meta.get('fps', '?')} fps",
        f"lines          {len(rec.entries) + len(rec.skipped)} "
        f"({len(rec.entries)} usable, {len(rec.skipped)} skipped)",
        f"episodes       {len(rec.episodes)}",
        f"transitions    {len(transitions)} good (K = {context_frames})",
    ]
    if rec.skipped:
        lines.append("skipped:")
        lines.extend("  " + row for row in rec.report_skipped().splitlines())
    controls = rec.controls()
    lines.append("controls       mean    std    min    max   |x|>0.5")
    for i, name in enumerate(names):
        c = controls[:, i]
        lines.append(f"  {name:<10} {c.mean():+.3f}  {c.std():.3f} {c.min():+.2f}  {c.max():+.2f}"
                     f"   {np.mean(np.abs(c) > 0.5):.0%}")
    lines.append("usable: yes" if not rec.skipped else
                 f"usable: yes, with {len(rec.skipped)} line(s) skipped")
    return rec, "\n".join(lines)
