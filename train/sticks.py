"""Does the dream follow the sticks? One step out (``stick_response``: the
prediction with an axis flipped) and a dozen steps into a dream
(``view_motion``: how far the picture moves a step, beside the game)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models import WorldModel
from recording.format import STICK_NAMES
from train.data import (
    Frames,
    TransitionSet,
    evenly_spaced,
    start_context,
    to_model_inputs,
    transition_rows,
)
from train.rollout import dream_rollouts


@torch.no_grad()
def stick_response(model: WorldModel, data: TransitionSet, device: torch.device,
                   noise_level: float = 0.0, samples: int = 128,
                   pushed: float = 0.5) -> dict[str, dict[str, float]]:
    """Does the model listen to each control? On one-step samples where a stick
    axis is pushed (a trigger pulled, a button pressed) at least ``pushed``, the
    prediction with the true controls against the one with that axis flipped
    (a trigger or button let go):

    - ``flip_l1_ratio``: L1 to the real frame with the axis flipped over L1 with
      the true sticks; 1.00 means the model ignores the axis;
    - ``response``: mean change of the picture when the axis flips, over the
      real frame-to-frame change; near 0 means the stick barely moves the dream.
    """
    if not len(data):
        return {}
    was_training = model.training
    model.eval()
    K = model.config.context_frames
    names = data.parts[0][0].recording.control_names
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
        flipped = true.clone()  # a stick pushed the other way; a trigger or button let go
        flipped[:, axis] = -true[:, axis] if name in STICK_NAMES else 1.0 - true[:, axis]
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
def view_motion(model: WorldModel, recordings: Sequence[Frames],
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
    names = recordings[0].recording.control_names
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
    context = torch.stack([start_context(f, K, i) for f, i in chosen])
    out: dict[str, dict[str, list[float]]] = {}
    for axis, name in enumerate(names):
        idx = np.flatnonzero(np.abs(applied[:, axis]) >= pushed)
        if name not in STICK_NAMES or not len(idx):  # a button does not move the view
            continue
        idx = idx[evenly_spaced(len(idx), 256)]
        game = best_shift(frames_of(idx, 0), frames_of(idx, 1))
        moved = []
        for sign in (1.0, -1.0):
            sticks = np.zeros((len(context), steps, C), np.float32)
            sticks[..., axis] = sign
            dreamt = dream_rollouts(model, context, sticks, noise_level)
            seq_np = np.concatenate([context[:, -1:].numpy(), dreamt], axis=1)
            moved.append(best_shift(seq_np[:, :-1].reshape(-1, *seq_np.shape[2:]),
                                    seq_np[:, 1:].reshape(-1, *seq_np.shape[2:])).mean(0))
        out[name] = {"game": [float(x) for x in (game * np.sign(applied[idx, axis])[:, None]
                                                  ).mean(0)],
                     "dream": [float(x) for x in (moved[0] - moved[1]) / 2]}
    model.train(was_training)
    return out
