"""How good is a world model: one-step metrics and autoregressive rollouts, each
beside the copy-last-frame baseline on the same samples."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models import WorldModel
from train.data import TransitionSet, to_model_inputs
from train.losses import psnr, ssim

log = logging.getLogger(__name__)


def evenly_spaced(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread over ``range(n_total)`` (all of them if fewer)."""
    if n_total <= n:
        return np.arange(n_total)
    return np.linspace(0, n_total - 1, n).round().astype(np.int64)


@torch.no_grad()
def one_step_metrics(model: WorldModel, data: TransitionSet, indices: np.ndarray,
                     device: torch.device, batch_size: int = 64,
                     autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
                     ) -> dict[str, float]:
    """Mean PSNR, SSIM and L1 of one-step predictions, and of copy-last-frame."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    K = model.config.context_frames
    for start in range(0, len(indices), batch_size):
        context, controls, targets = to_model_inputs(
            data.batch(indices[start:start + batch_size]), device, K)
        with autocast():
            pred = model(context, controls[:, 0]).float()
        target, last = targets[:, 0], context[:, -1]
        for name, value in (("psnr", psnr(pred, target)), ("ssim", ssim(pred, target)),
                            ("l1", (pred - target).abs().flatten(1).mean(1)),
                            ("copy_psnr", psnr(last, target)), ("copy_ssim", ssim(last, target)),
                            ("copy_l1", (last - target).abs().flatten(1).mean(1))):
            sums[name] = sums.get(name, 0.0) + float(value.sum())
    model.train(was_training)
    return {k: v / max(len(indices), 1) for k, v in sums.items()}


@torch.no_grad()
def rollout(model: WorldModel, context: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """Dream ``T`` steps from true context ``(B, K, 3, H, W)`` under controls
    ``(B, T, C)``, feeding each prediction back; returns ``(B, T, 3, H, W)``."""
    frames = context
    out = []
    for t in range(controls.shape[1]):
        nxt = model(frames, controls[:, t]).float().clamp(0, 1)
        out.append(nxt)
        frames = torch.cat([frames[:, 1:], nxt[:, None]], dim=1)  # roll the window
    return torch.stack(out, dim=1)


@torch.no_grad()
def rollout_metrics(model: WorldModel, data: TransitionSet, indices: np.ndarray,
                    device: torch.device, batch_size: int = 32) -> dict[str, Any]:
    """PSNR and SSIM at every step of rollouts as long as ``data.horizon``, model
    and copy-last, averaged over the samples; ``data`` rows hold K + T frames."""
    model.eval()
    K = model.config.context_frames
    T = data.horizon
    sums = {k: np.zeros(T) for k in ("psnr", "ssim", "copy_psnr", "copy_ssim")}
    for start in range(0, len(indices), batch_size):
        context, controls, targets = to_model_inputs(
            data.batch(indices[start:start + batch_size]), device, K)
        dream = rollout(model, context, controls)
        last = context[:, -1]
        for t in range(T):
            sums["psnr"][t] += float(psnr(dream[:, t], targets[:, t]).sum())
            sums["ssim"][t] += float(ssim(dream[:, t], targets[:, t]).sum())
            sums["copy_psnr"][t] += float(psnr(last, targets[:, t]).sum())
            sums["copy_ssim"][t] += float(ssim(last, targets[:, t]).sum())
    return {k: (v / max(len(indices), 1)).tolist() for k, v in sums.items()}


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


def evaluate(model: WorldModel, one_step: TransitionSet, rollouts: TransitionSet,
             device: torch.device, out_dir: Path, horizons: Sequence[int] = (1, 4, 16, 64),
             samples: int = 512, rollout_samples: int = 64, fps: float = 8.75) -> dict[str, Any]:
    """The full evaluation report; writes ``eval.json``, ``rollout.png`` and
    ``rollout.gif`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    report: dict[str, Any] = {"samples": int(min(samples, len(one_step)))}
    report["one_step"] = one_step_metrics(model, one_step, evenly_spaced(len(one_step), samples),
                                          device)
    report["one_step"]["psnr_gain_db"] = report["one_step"]["psnr"] - report["one_step"][
        "copy_psnr"]
    if len(rollouts):
        idx = evenly_spaced(len(rollouts), rollout_samples)
        curves = rollout_metrics(model, rollouts, idx, device)
        report["rollout_samples"] = len(idx)
        report["rollout"] = {
            str(h): {"psnr": curves["psnr"][h - 1], "copy_psnr": curves["copy_psnr"][h - 1],
                     "psnr_gain_db": curves["psnr"][h - 1] - curves["copy_psnr"][h - 1],
                     "ssim": curves["ssim"][h - 1], "copy_ssim": curves["copy_ssim"][h - 1]}
            for h in horizons if h <= rollouts.horizon}
        K = model.config.context_frames
        context, controls, targets = to_model_inputs(rollouts.batch(idx[:1]), device, K)
        dream = rollout(model, context, controls)[0]
        show = min(16, rollouts.horizon)
        save_strip(targets[0, :show], dream[:show], out_dir / "rollout.png")
        save_gif(targets[0], dream, out_dir / "rollout.gif", fps=fps)
    else:
        log.warning("no validation segment is %d frames long: no rollout metrics",
                    rollouts.horizon + model.config.context_frames)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    o = report["one_step"]
    lines = [f"{'':<14}{'model':>10}{'copy-last':>12}{'gain':>9}",
             f"{'1-step PSNR':<14}{o['psnr']:>9.2f} {o['copy_psnr']:>10.2f}  "
             f"{o['psnr_gain_db']:>+7.2f} dB   (SSIM {o['ssim']:.3f} vs {o['copy_ssim']:.3f}, "
             f"L1 {o['l1']:.4f} vs {o['copy_l1']:.4f}; {report['samples']} samples)"]
    for h, r in report.get("rollout", {}).items():
        lines.append(f"{'rollout ' + h:<14}{r['psnr']:>9.2f} {r['copy_psnr']:>10.2f}  "
                     f"{r['psnr_gain_db']:>+7.2f} dB   (SSIM {r['ssim']:.3f} vs "
                     f"{r['copy_ssim']:.3f}; {report['rollout_samples']} rollouts)")
    return "\n".join(lines)
