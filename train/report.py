"""What evaluation shows a person: the pictures (ground truth beside the dream,
the free-running dream) and the text of its tables."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from recording.frames import to_image
from recording.video import VideoUnavailable, write_mp4
from train.drift import CollapseReport
from train.realism import Realism

log = logging.getLogger(__name__)


def save_strip(truth: torch.Tensor, dream: torch.Tensor, path: Path, scale: int = 2) -> None:
    """Two rows, ground truth over dream, frames ``(T, 3, H, W)`` side by side."""
    rows = [torch.cat(list(x.clamp(0, 1)), dim=2) for x in (truth, dream)]  # (3, H, T*W)
    image = torch.cat(rows, dim=1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(image)
    img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(path)


def save_gif(truth: torch.Tensor, dream: torch.Tensor, path: Path, fps: float = 8.75,
             scale: int = 3) -> None:
    """An animation of ground truth (left) beside the dream (right)."""
    frames = []
    for t, d in zip(truth, dream, strict=True):
        pair = torch.cat([t, d], dim=2).clamp(0, 1).mul(255).round().byte()
        img = Image.fromarray(pair.permute(1, 2, 0).cpu().numpy())
        frames.append(img.resize((img.width * scale, img.height * scale),
                                 Image.Resampling.NEAREST))
    frames[0].save(path, save_all=True, append_images=frames[1:],
                   duration=round(1000 / fps), loop=0)


def save_freerun(dream: np.ndarray, out_dir: Path, fps: float) -> None:
    """``freerun.png`` (every 100th frame of a ``(T, 3, H, W)`` dream in [0, 1]),
    ``freerun.gif`` (every second frame) and, with the video extra,
    ``freerun.mp4`` (every frame, at the game's ``fps``) in ``out_dir``."""
    try:
        write_mp4((to_image(f) for f in dream), out_dir / "freerun.mp4", fps)
    except VideoUnavailable as err:
        log.info("no freerun.mp4: %s", err)
    every = torch.from_numpy(dream[::100])
    strip = torch.cat(list(every), dim=2).mul(255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(strip)
    img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST).save(
        out_dir / "freerun.png")
    gif = [Image.fromarray((f.transpose(1, 2, 0) * 255).round().astype(np.uint8)).resize(
        (f.shape[2] * 3, f.shape[1] * 3), Image.Resampling.NEAREST) for f in dream[::2]]
    gif[0].save(out_dir / "freerun.gif", save_all=True, append_images=gif[1:],
                duration=round(2000 / fps), loop=0)


def format_sweep(runs: Sequence[dict[str, Any]]) -> str:
    """One line a dream of ``collapse_sweep``: the first failing step of each
    check (or -) and each figure at its worst."""
    def at(step: int | None) -> str:
        return "-" if step is None else str(step)

    latent = f", latent {runs[0]['latent']}" if runs and runs[0]["latent"] else ""
    lines = [f"collapse check of {len(runs)} dreams{latent}: "
             f"{sum(r['passed'] for r in runs)} passed (first failing step of each check)"]
    for r in runs:
        f = r["figures"]
        lines.append(
            f"  start {r['start']:>5} seed {r['seed']:>3}: {'passed' if r['passed'] else 'FAILED'}"
            f"  freeze {at(r['freeze_step']):>4} blow-out {at(r['blowout_step']):>4} "
            f"detail {at(r['detail_step']):>4} boil {at(r['boil_step']):>4}  "
            f"(change >= {f['change_min_ratio']:.2f}x, contrast {f['contrast_min']:.3f}-"
            f"{f['contrast_max']:.3f}, mean {f['mean_min']:.3f}-{f['mean_max']:.3f}, "
            f"detail {f['detail_min_ratio']:.2f}-{f['detail_max_ratio']:.2f}x, at rest <= "
            f"{f['rest_change_max_ratio']:.2f}x)")
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    o = report["one_step"]

    def still(r: dict[str, Any]) -> str:
        return f"{r['mean_psnr']:>10.2f}" if "mean_psnr" in r else f"{'–':>10}"

    lines = [f"{'':<14}{'model':>10}{'copy-last':>12}{'gain':>9}{'mean frame':>14}",
             f"{'1-step PSNR':<14}{o['psnr']:>9.2f} {o['copy_psnr']:>10.2f}  "
             f"{o['psnr_gain_db']:>+7.2f} dB {still(o)}   (SSIM {o['ssim']:.3f} vs "
             f"{o['copy_ssim']:.3f}, L1 {o['l1']:.4f} vs {o['copy_l1']:.4f}; "
             f"{report['samples']} samples)"]
    if "likely_psnr" in o:
        lines.append(f"{'most likely':<14}{o['likely_psnr']:>9.2f} {o['copy_psnr']:>10.2f}  "
                     f"{o['likely_psnr'] - o['copy_psnr']:>+7.2f} dB   (1 step, the most "
                     f"likely codes painted without grain: no drawing)")
    for h, r in report.get("rollout", {}).items():
        spread = (f", gain ±{1.96 * r['psnr_gain_se']:.2f} dB at 95%"
                  if math.isfinite(r.get("psnr_gain_se", math.nan)) else "")
        lines.append(f"{'rollout ' + h:<14}{r['psnr']:>9.2f} {r['copy_psnr']:>10.2f}  "
                     f"{r['psnr_gain_db']:>+7.2f} dB {still(r)}   (SSIM {r['ssim']:.3f} vs "
                     f"{r['copy_ssim']:.3f}{spread}; {r['samples']} rollouts)")
    if "mean_psnr" in o:
        lines.append("mean frame: the held-out recordings' mean picture, the best still "
                     "picture in hindsight; a dream faded to a blur scores about as much")
    if report.get("sticks"):
        lines.append("stick response (L1 with the axis flipped / with the true sticks; 1.00x: "
                     "the model ignores it)\n  " + "  ".join(
                         f"{name} {r['flip_l1_ratio']:.2f}x (moves {r['response']:.2f})"
                         for name, r in report["sticks"].items()))
    if report.get("view_motion"):
        lines.append("view motion a step at full stick, x,y pixels (dream / game)\n  " +
                     "  ".join(f"{name} {r['dream'][0]:+.1f},{r['dream'][1]:+.1f} / "
                               f"{r['game'][0]:+.1f},{r['game'][1]:+.1f}"
                               for name, r in report["view_motion"].items()))
    if report.get("latent"):
        how = ("hold one latent a dream" if report["latent"] == "hold"
               else "draw one every step")
        lines.append(f"latent: {report['latent']} (rollouts and the collapse check {how})")
    if report.get("realism"):
        lines.append("realism: a critic tells these frames from the held-out game (50% = it "
                     "cannot, 100% = always)\n  " + "\n  ".join(
                         f"{band:<40} {Realism(**r).summary()}"
                         for band, r in report["realism"].items()))
    if "collapse" in report:
        c = report["collapse"]
        lines.append(CollapseReport(**{k: v for k, v in c.items() if k != "passed"}).summary())
    return "\n".join(lines)
