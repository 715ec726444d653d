"""How good is a world model: one-step metrics and autoregressive rollouts, each
beside the copy-last-frame baseline on the same samples."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import WorldModel
from train.data import (
    Frames,
    TransitionSet,
    evenly_spaced,
    start_context,
    to_model_inputs,
    transition_rows,
)
from train.drift import CollapseReport, Reference, collapse_check, scripted_sticks
from train.losses import psnr, ssim
from train.realism_eval import realism_report
from train.report import save_freerun, save_gif, save_strip
from train.rollout import dream_rollouts, free_run
from train.sticks import stick_response, view_motion

log = logging.getLogger(__name__)


def mean_frame(recordings: Sequence[Frames], limit: int = 4096) -> torch.Tensor:
    """The recordings' mean picture ``(3, H, W)`` in [0, 1], over at most ``limit``
    evenly spaced frames of each: the best still picture in hindsight. A dream
    that has faded to a blur of the game scores about what it scores, however
    long it runs, so it is the reference a long rollout has to beat."""
    total, count = None, 0
    for f in recordings:
        picked = np.asarray(f.frames[evenly_spaced(len(f.frames), limit)], np.float64)
        total = picked.sum(0) if total is None else total + picked.sum(0)
        count += len(picked)
    if total is None or count == 0:
        raise ValueError("no frames to average")
    return torch.from_numpy(total / count / 255.0).float()


@torch.no_grad()
def one_step_metrics(model: WorldModel, data: TransitionSet, indices: np.ndarray,
                     device: torch.device, batch_size: int = 64,
                     autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
                     noise_level: float = 0.0, still: torch.Tensor | None = None,
                     ) -> dict[str, float]:
    """Mean PSNR, SSIM and L1 of one-step predictions, and of copy-last-frame;
    with a ``still`` picture ``(3, H, W)`` (``mean_frame``), its PSNR too; for a
    model that draws its frame (codebook), the PSNR of its most likely frame
    (``likely_psnr``, ``WorldModel.most_likely``) beside the drawn one's.
    ``noise_level`` is what a noise-conditioned model is told (ignored otherwise)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    still = None if still is None else still.to(device)
    K = model.config.context_frames
    for start in range(0, len(indices), batch_size):
        context, controls, targets = to_model_inputs(
            data.batch(indices[start:start + batch_size]), device, K)
        with autocast():
            level = model.noise_input(len(context), noise_level, device)
            pred = model(context, controls[:, 0], level).float()
            if model.config.output_mode == "codebook":
                likely = model.most_likely(context, controls[:, 0], level).float()
                sums["likely_psnr"] = sums.get("likely_psnr", 0.0) + float(
                    psnr(likely, targets[:, 0]).sum())
        target, last = targets[:, 0], context[:, -1]
        for name, value in (("psnr", psnr(pred, target)), ("ssim", ssim(pred, target)),
                            ("l1", (pred - target).abs().flatten(1).mean(1)),
                            ("copy_psnr", psnr(last, target)), ("copy_ssim", ssim(last, target)),
                            ("copy_l1", (last - target).abs().flatten(1).mean(1))):
            sums[name] = sums.get(name, 0.0) + float(value.sum())
        if still is not None:
            sums["mean_psnr"] = sums.get("mean_psnr", 0.0) + float(
                psnr(still.expand_as(target), target).sum())
    model.train(was_training)
    return {k: v / max(len(indices), 1) for k, v in sums.items()}


def rollout(model: WorldModel, context: torch.Tensor, controls: torch.Tensor,
            noise_level: float = 0.0, latent: str = "hold",
            seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Dream ``T`` steps from true context ``(B, K, 3, H, W)`` under controls
    ``(B, T, C)``, feeding each prediction back, a latent model's latent drawn
    from ``seeds`` (``dream_rollouts``) and held or fresh (``latent``); returns
    ``(B, T, 3, H, W)`` on the context's device."""
    frames = dream_rollouts(model, context, controls, noise_level, latent, seeds)
    return torch.from_numpy(frames).to(context.device)


@torch.no_grad()
def rollout_metrics(model: WorldModel, data: TransitionSet, indices: np.ndarray,
                    device: torch.device, batch_size: int = 32,
                    noise_level: float = 0.0, latent: str = "hold",
                    still: torch.Tensor | None = None) -> dict[str, Any]:
    """PSNR and SSIM at every step of rollouts as long as ``data.horizon``, model
    and copy-last (and the PSNR of a ``still`` picture, when given), averaged over
    the samples; ``data`` rows hold K + T frames. ``last_psnr`` and
    ``last_copy_psnr`` hold each sample's PSNR at the last step, in the order of
    ``indices``, so two models scored on the same samples can be compared pair
    by pair."""
    model.eval()
    K = model.config.context_frames
    T = data.horizon
    names = ("psnr", "ssim", "copy_psnr", "copy_ssim") + (("mean_psnr",) if still is not None
                                                          else ())
    sums = {k: np.zeros(T) for k in names}
    still = None if still is None else still.to(device)
    last_psnr: list[float] = []
    last_copy: list[float] = []
    for start in range(0, len(indices), batch_size):
        context, controls, targets = to_model_inputs(
            data.batch(indices[start:start + batch_size]), device, K)
        dream = rollout(model, context, controls, noise_level, latent,
                        range(start, start + len(context)))
        last = context[:, -1]
        for t in range(T):
            model_psnr, copy_psnr = psnr(dream[:, t], targets[:, t]), psnr(last, targets[:, t])
            sums["psnr"][t] += float(model_psnr.sum())
            sums["ssim"][t] += float(ssim(dream[:, t], targets[:, t]).sum())
            sums["copy_psnr"][t] += float(copy_psnr.sum())
            sums["copy_ssim"][t] += float(ssim(last, targets[:, t]).sum())
            if still is not None:
                sums["mean_psnr"][t] += float(
                    psnr(still.expand_as(last), targets[:, t]).sum())
        last_psnr += model_psnr.tolist()  # the loop ends at the last step
        last_copy += copy_psnr.tolist()
    out: dict[str, Any] = {k: (v / max(len(indices), 1)).tolist() for k, v in sums.items()}
    return {**out, "last_psnr": last_psnr, "last_copy_psnr": last_copy}


def paired_gain(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The mean of ``a - b`` over paired samples, and its standard error: how far
    a model leads another (or copy-last) on the very same samples, and how much
    of that the choice of samples could explain."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0:
        return float("nan"), float("nan")
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def rollout_samples(horizon: int, samples: int) -> int:
    """Rollouts at ``horizon``: ``samples`` up to 64 steps, fewer beyond, so every
    horizon past 64 costs about as much as the 64-step one."""
    return max(4, min(samples, math.ceil(samples * 64 / horizon)))


def evaluate(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
             out_dir: Path, horizons: Sequence[int] = (1, 4, 16, 64, 256),
             samples: int = 512, rollouts: int = 64, fps: float = 8.75,
             noise_level: float = 0.0, collapse_steps: int = 1000,
             align_context: int = 1, latent: str = "hold",
             realism_frames: int = 800) -> dict[str, Any]:
    """The full evaluation report; writes ``eval.json``, ``rollout.png`` and
    ``rollout.gif`` (ground truth beside the dream), and for the collapse check
    ``freerun.png`` (every 100th frame) and ``freerun.gif``, into ``out_dir``.

    Args:
        recordings: Held-out recordings, decoded (``train.data.load_frames``).
        horizons: Rollout lengths; each is measured on its own start points, as
            many as the recordings have segments that long.
        samples: One-step samples.
        rollouts: Rollout start points per horizon (fewer past 64 steps).
        noise_level: What a noise-conditioned model is told.
        collapse_steps: Length of the free-running dream of the collapse check
            (0 skips it).
        align_context: Pick targets as if the model saw this many context frames
            (at least its own K), so models with different K are scored on the
            very same target frames.
        latent: A latent model's dreams (rollouts and the collapse check) hold
            one latent throughout (``hold``, as ``play`` and ``serve`` do by
            default) or draw one every step (``fresh``). Its draws are seeded,
            so a report can be reproduced.
        realism_frames: Dream frames a band of the realism figure judges
            (``train.realism_eval``; 0 skips it).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = model.to(device).eval()
    K = model.config.context_frames

    lead = max(K, align_context) - K  # frames of each row no model input needs

    def transitions(horizon: int) -> TransitionSet:
        return TransitionSet([(f, transition_rows(f, K + lead, horizon)[:, lead:])
                              for f in recordings], K, horizon)

    one_step = transitions(1)
    report: dict[str, Any] = {"samples": int(min(samples, len(one_step))),
                              "noise_level": noise_level if model.config.noise_conditioning
                              else None,
                              "latent": latent if model.config.latent_size else None}
    still = mean_frame(recordings)
    report["one_step"] = one_step_metrics(model, one_step, evenly_spaced(len(one_step), samples),
                                          device, noise_level=noise_level, still=still)
    report["one_step"]["psnr_gain_db"] = report["one_step"]["psnr"] - report["one_step"][
        "copy_psnr"]
    report["sticks"] = stick_response(model, one_step, device, noise_level)
    report["view_motion"] = view_motion(model, recordings, noise_level)
    report["rollout"] = rollout_report(model, transitions, horizons, rollouts, device,
                                       out_dir, fps, noise_level, latent, still)
    tail = None
    if collapse_steps > 0:
        collapse, freerun = collapse_report(model, recordings, device, out_dir, collapse_steps,
                                            noise_level, fps, latent)
        report["collapse"] = collapse.to_dict()
        tail = freerun[-100:]
    if realism_frames > 0:
        report["realism"] = realism_report(model, recordings, device, realism_frames,
                                           noise_level, latent, tail)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def rollout_report(model: WorldModel, transitions: Callable[[int], TransitionSet],
                   horizons: Sequence[int], rollouts: int, device: torch.device, out_dir: Path,
                   fps: float, noise_level: float, latent: str,
                   still: torch.Tensor) -> dict[str, Any]:
    """Each horizon's rollout PSNR and SSIM beside copy-last and the mean frame,
    with the pictures of the longest readable one (``evaluate``'s arguments)."""
    K = model.config.context_frames
    out: dict[str, Any] = {}
    for h in sorted(horizons):
        data = transitions(h)
        if not len(data):
            log.warning("no held-out segment is %d frames long: no %d-step rollouts", h + K, h)
            continue
        idx = evenly_spaced(len(data), rollout_samples(h, rollouts))
        curves = rollout_metrics(model, data, idx, device, noise_level=noise_level,
                                 latent=latent, still=still)
        out[str(h)] = {
            "samples": len(idx), "psnr": curves["psnr"][-1],
            "copy_psnr": curves["copy_psnr"][-1], "mean_psnr": curves["mean_psnr"][-1],
            "psnr_gain_db": curves["psnr"][-1] - curves["copy_psnr"][-1],
            "psnr_gain_se": paired_gain(curves["last_psnr"], curves["last_copy_psnr"])[1],
            "psnr_samples": [round(x, 3) for x in curves["last_psnr"]],
            "ssim": curves["ssim"][-1], "copy_ssim": curves["copy_ssim"][-1]}
        if h == max(x for x in horizons if x <= 64):  # the pictures: a readable length
            context, controls, targets = to_model_inputs(data.batch(idx[:1]), device, K)
            dream = rollout(model, context, controls, noise_level, latent)[0]
            save_strip(targets[0, :16], dream[:16], out_dir / "rollout.png")
            save_gif(targets[0], dream, out_dir / "rollout.gif", fps=fps)
    return out


def reference(recordings: Sequence[Frames]) -> Reference:
    return Reference.from_frames(np.concatenate([np.asarray(f.frames) for f in recordings]),
                                 np.concatenate([f.controls for f in recordings]))


def collapse_report(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
                    out_dir: Path, steps: int = 1000, noise_level: float = 0.0,
                    fps: float = 8.75, latent: str = "hold"
                    ) -> tuple[CollapseReport, np.ndarray]:
    """Dream ``steps`` frames under scripted sticks from the first K frames of
    the first recording, and check it against the recordings' statistics;
    returns the check and the dream ``(T, 3, H, W)``."""
    context = start_context(recordings[0], model.config.context_frames)
    sticks = scripted_sticks(steps, model.config.control_dim)
    dream = free_run(model, context[None].to(device), sticks, noise_level, latent)
    result = collapse_check(dream, sticks, reference(recordings))
    save_freerun(dream, out_dir, fps)
    return result, dream


@torch.no_grad()
def collapse_sweep(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
                   seeds: Sequence[int], starts: Sequence[int] = (0,), steps: int = 1000,
                   noise_level: float = 0.0, latent: str = "hold") -> list[dict[str, Any]]:
    """The collapse check of one dream from each start entry in ``starts`` and,
    for a latent model, each latent seed in ``seeds`` (a model without a
    latent dreams once from each start), all dreamt as one batch. A latent,
    held or fresh, is drawn from its seed alone, so one seed is one world from
    every start. One dream passing is
    one draw: a model whose dreams pass from some draws and not others does
    not pass."""
    model = model.to(device).eval()
    K, C = model.config.context_frames, model.config.control_dim
    pairs = [(start, seed) for start in starts
             for seed in (seeds if model.config.latent_size else seeds[:1])]
    context = torch.stack([start_context(recordings[0], K, start) for start, _ in pairs])
    sticks = scripted_sticks(steps, C)
    controls = np.broadcast_to(sticks, (len(pairs), *sticks.shape))
    dreams = dream_rollouts(model, context, controls, noise_level, latent,
                            [seed for _, seed in pairs])
    ref = reference(recordings)
    mode = latent if model.config.latent_size else None
    return [{"start": int(start), "seed": int(seed), "latent": mode,
             **collapse_check(d, sticks, ref).to_dict()}
            for (start, seed), d in zip(pairs, dreams, strict=True)]

