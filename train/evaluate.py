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
from PIL import Image

from export.dream import LATENT_MODES
from models import WorldModel
from recording.format import STICK_NAMES, RecordingError
from train.data import Frames, TransitionSet, to_model_inputs, transition_rows
from train.drift import (
    CollapseReport,
    Reference,
    collapse_check,
    dream,
    free_run,
    held_latent,
    scripted_sticks,
)
from train.losses import psnr, ssim

log = logging.getLogger(__name__)


def evenly_spaced(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread over ``range(n_total)`` (all of them if fewer)."""
    if n_total <= n:
        return np.arange(n_total)
    return np.linspace(0, n_total - 1, n).round().astype(np.int64)


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
    with a ``still`` picture ``(3, H, W)`` (``mean_frame``), its PSNR too.
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
            pred = model(context, controls[:, 0],
                         model.noise_input(len(context), noise_level, device)).float()
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


@torch.no_grad()
def stick_response(model: WorldModel, data: TransitionSet, device: torch.device,
                   noise_level: float = 0.0, samples: int = 128,
                   pushed: float = 0.5) -> dict[str, dict[str, float]]:
    """Does the model listen to each stick axis? On one-step samples where the
    axis is pushed at least ``pushed``, the prediction with the true sticks
    against the one with that axis flipped:

    - ``flip_l1_ratio``: L1 to the real frame with the axis flipped over L1 with
      the true sticks; 1.00 means the model ignores the axis;
    - ``response``: mean change of the picture when the axis flips, over the
      real frame-to-frame change; near 0 means the stick barely moves the dream.
    """
    if not len(data):
        return {}
    was_training = model.training
    model.eval()
    K, C = model.config.context_frames, model.config.control_dim
    names = STICK_NAMES if len(STICK_NAMES) == C else tuple(f"axis_{i}" for i in range(C))
    # The controls before each sample's target, in the set's own index order.
    applied = np.concatenate([f.controls[r[:, K]] for f, r in data.parts])
    out: dict[str, dict[str, float]] = {}
    for axis, name in enumerate(names):
        chosen = np.flatnonzero(np.abs(applied[:, axis]) >= pushed)
        if not len(chosen):
            continue
        idx = chosen[evenly_spaced(len(chosen), samples)]
        context, controls, targets = to_model_inputs(data.batch(idx), device, K)
        true, target = controls[:, 0], targets[:, 0]
        flipped = true.clone()
        flipped[:, axis] = -flipped[:, axis]
        level = model.noise_input(len(idx), noise_level, device)
        pred = model(context, true, level).float().clamp(0.0, 1.0)
        other = model(context, flipped, level).float().clamp(0.0, 1.0)
        l1 = float((pred - target).abs().mean())
        out[name] = {"samples": len(idx),
                     "flip_l1_ratio": float((other - target).abs().mean()) / max(l1, 1e-12),
                     "response": float((other - pred).abs().mean()) / max(
                         float((target - context[:, -1]).abs().mean()), 1e-12)}
    model.train(was_training)
    return out


def best_shift(a: np.ndarray, b: np.ndarray, reach: int = 8) -> np.ndarray:
    """For pairs of ``(N, 3, H, W)`` frames, the whole-pixel shifts ``(N, 2)``
    (x, then y, each searched alone up to ``reach``) that best carry each ``a``
    to its ``b`` (least mean absolute difference where they overlap): +x when
    the picture moves left, as it does when the view turns right."""
    out = np.zeros((len(a), 2))
    for axis, dim in ((0, 3), (1, 2)):
        errors = []
        for s in range(-reach, reach + 1):
            n = a.shape[dim] - abs(s)
            src = np.take(a, range(max(s, 0), max(s, 0) + n), axis=dim)
            dst = np.take(b, range(max(-s, 0), max(-s, 0) + n), axis=dim)
            errors.append(np.abs(dst - src).reshape(len(a), -1).mean(1))
        out[:, axis] = np.argmin(np.stack(errors, 1), 1) - reach
    return out


@torch.no_grad()
def view_motion(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
                noise_level: float = 0.0, starts: int = 24, steps: int = 12,
                pushed: float = 0.9) -> dict[str, dict[str, list[float]]]:
    """How far each stick axis moves the view a step, in the dream and in the game.

    ``game``: the mean whole-frame shift (x, y pixels, see ``best_shift``) between
    the recording's consecutive frames where the axis is pushed at least
    ``pushed``, signed as the axis is. ``dream``: from ``starts`` held-out
    contexts, dream ``steps`` steps with only that axis at +1, again at -1, and
    half the difference of the mean shifts. A dream that follows the sticks
    moves as far as the game (a Doom turn at full stick: about 5 pixels at 64x64);
    one that ignores them, 0 (the stick response's flipped L1 says so one step
    out, this says it a dozen steps into a dream)."""
    was_training = model.training
    model.eval()
    K, C = model.config.context_frames, model.config.control_dim
    names = STICK_NAMES if len(STICK_NAMES) == C else tuple(f"axis_{i}" for i in range(C))
    # Consecutive readable frames of one segment, and the sticks applied between;
    # only the pairs each axis looks at are read.
    pairs = [(f, r) for f in recordings for r in transition_rows(f, 1)]
    applied = np.array([f.controls[r[1]] for f, r in pairs]).reshape(-1, C)

    def frames_of(idx: np.ndarray, column: int) -> np.ndarray:
        return np.stack([np.asarray(pairs[i][0].frames[pairs[i][1][column]]) for i in idx]
                        ) / 255.0
    candidates = [(f, int(r[0])) for f in recordings for r in transition_rows(f, K)]
    chosen = [candidates[i] for i in evenly_spaced(len(candidates), starts)]
    if not chosen:
        return {}
    context = torch.stack([start_context(f, K, i) for f, i in chosen]).to(device)
    level = model.noise_input(len(context), noise_level, device)
    out: dict[str, dict[str, list[float]]] = {}
    for axis, name in enumerate(names):
        idx = np.flatnonzero(np.abs(applied[:, axis]) >= pushed)
        if not len(idx):
            continue
        idx = idx[evenly_spaced(len(idx), 256)]
        game = best_shift(frames_of(idx, 0), frames_of(idx, 1))
        moved = []
        for sign in (1.0, -1.0):
            torch.manual_seed(0)
            sticks = torch.zeros(len(context), steps, C, device=device)
            sticks[..., axis] = sign
            z = held_latent(model, len(context), "hold", device)
            seq = torch.cat([context[:, -1:], dream(model, context, sticks, level, z)], 1)
            seq_np = seq.cpu().numpy()
            moved.append(best_shift(seq_np[:, :-1].reshape(-1, *seq_np.shape[2:]),
                                    seq_np[:, 1:].reshape(-1, *seq_np.shape[2:])).mean(0))
        out[name] = {"game": [float(x) for x in (game * np.sign(applied[idx, axis])[:, None]
                                                  ).mean(0)],
                     "dream": [float(x) for x in (moved[0] - moved[1]) / 2]}
    model.train(was_training)
    return out


def rollout(model: WorldModel, context: torch.Tensor, controls: torch.Tensor,
            noise_level: float = 0.0, latent: str = "hold") -> torch.Tensor:
    """Dream ``T`` steps from true context ``(B, K, 3, H, W)`` under controls
    ``(B, T, C)``, feeding each prediction back, a latent model's latent held
    or fresh (``latent``); returns ``(B, T, 3, H, W)``."""
    return dream(model, context, controls,
                 model.noise_input(len(context), noise_level, context.device),
                 held_latent(model, len(context), latent, context.device))


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
        dream = rollout(model, context, controls, noise_level, latent)
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


def rollout_samples(horizon: int, samples: int) -> int:
    """Rollouts at ``horizon``: ``samples`` up to 64 steps, fewer beyond, so every
    horizon past 64 costs about as much as the 64-step one."""
    return max(4, min(samples, math.ceil(samples * 64 / horizon)))


def evaluate(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
             out_dir: Path, horizons: Sequence[int] = (1, 4, 16, 64, 256),
             samples: int = 512, rollouts: int = 64, fps: float = 8.75,
             noise_level: float = 0.0, collapse_steps: int = 1000,
             align_context: int = 1, latent: str = "hold") -> dict[str, Any]:
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
    report["view_motion"] = view_motion(model, recordings, device, noise_level)
    report["rollout"] = {}
    for h in sorted(horizons):
        data = transitions(h)
        if not len(data):
            log.warning("no held-out segment is %d frames long: no %d-step rollouts", h + K, h)
            continue
        idx = evenly_spaced(len(data), rollout_samples(h, rollouts))
        curves = rollout_metrics(model, data, idx, device, noise_level=noise_level,
                                 latent=latent, still=still)
        report["rollout"][str(h)] = {
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
    if collapse_steps > 0:
        report["collapse"] = collapse_report(model, recordings, device, out_dir, collapse_steps,
                                             noise_level, fps, latent).to_dict()
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def start_context(frames: Frames, K: int, start: int = 0) -> torch.Tensor:
    """The ``(K, 3, H, W)`` float frames of ``frames`` that begin at entry
    ``start``, or at the first K consecutive readable frames after it."""
    rows = transition_rows(frames, K)
    if not len(rows):
        raise RecordingError(f"{frames.recording.directory}: no {K} consecutive frames to "
                             f"start a dream from")
    row = rows[min(int(np.searchsorted(rows[:, 0], start)), len(rows) - 1)]
    return torch.from_numpy(np.asarray(frames.frames[row[:K]])).float().div(255.0)


def reference(recordings: Sequence[Frames]) -> Reference:
    return Reference.from_frames(np.concatenate([np.asarray(f.frames) for f in recordings]),
                                 np.concatenate([f.controls for f in recordings]))


def collapse_report(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
                    out_dir: Path, steps: int = 1000, noise_level: float = 0.0,
                    fps: float = 8.75, latent: str = "hold") -> CollapseReport:
    """Dream ``steps`` frames under scripted sticks from the first K frames of
    the first recording, and check it against the recordings' statistics."""
    context = start_context(recordings[0], model.config.context_frames)
    sticks = scripted_sticks(steps, model.config.control_dim)
    dream = free_run(model, context[None].to(device), sticks, noise_level, latent)
    result = collapse_check(dream, sticks, reference(recordings))
    every = torch.from_numpy(dream[::100])
    strip = torch.cat(list(every), dim=2).mul(255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(strip)
    img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST).save(
        out_dir / "freerun.png")
    gif = [Image.fromarray((f.transpose(1, 2, 0) * 255).round().astype(np.uint8)).resize(
        (f.shape[2] * 3, f.shape[1] * 3), Image.Resampling.NEAREST) for f in dream[::2]]
    gif[0].save(out_dir / "freerun.gif", save_all=True, append_images=gif[1:],
                duration=round(2000 / fps), loop=0)
    return result


@torch.no_grad()
def collapse_sweep(model: WorldModel, recordings: Sequence[Frames], device: torch.device,
                   seeds: Sequence[int], starts: Sequence[int] = (0,), steps: int = 1000,
                   noise_level: float = 0.0, latent: str = "hold") -> list[dict[str, Any]]:
    """The collapse check of one dream from each start entry in ``starts`` and,
    for a latent model, each latent seed in ``seeds`` (a model without a
    latent dreams once from each start), all dreamt as one batch. A held
    latent is drawn from its seed alone, so one seed is one world from every
    start; fresh latents are drawn from the first seed. One dream passing is
    one draw: a model whose dreams pass from some draws and not others does
    not pass."""
    model = model.to(device).eval()
    K, C = model.config.context_frames, model.config.control_dim
    pairs = [(start, seed) for start in starts
             for seed in (seeds if model.config.latent_size else seeds[:1])]
    context = torch.stack([start_context(recordings[0], K, start) for start, _ in pairs])
    sticks = scripted_sticks(steps, C)
    if latent not in LATENT_MODES:
        raise ValueError(f"latent mode must be one of {', '.join(LATENT_MODES)}, got {latent!r}")
    z = None
    if model.config.latent_size and latent == "hold":
        z = torch.stack([torch.randn(model.config.latent_size,
                                     generator=torch.Generator().manual_seed(seed))
                         for _, seed in pairs]).to(device)
    torch.manual_seed(seeds[0])
    controls = torch.from_numpy(sticks)[None].expand(len(pairs), -1, -1).to(device)
    dreams = dream(model, context.to(device), controls,
                   model.noise_input(len(pairs), noise_level, device), z).cpu().numpy()
    ref = reference(recordings)
    mode = latent if model.config.latent_size else None
    return [{"start": int(start), "seed": int(seed), "latent": mode,
             **collapse_check(d, sticks, ref).to_dict()}
            for (start, seed), d in zip(pairs, dreams, strict=True)]


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
    if "collapse" in report:
        c = report["collapse"]
        lines.append(CollapseReport(**{k: v for k, v in c.items() if k != "passed"}).summary())
    return "\n".join(lines)
