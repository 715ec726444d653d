"""A model's dreams in training and evaluation.

Evaluation dreams as a player does: each sample is an ``export.dream.Dream``
(the K-frame window, the held latent and its motion, the noise level), stepped
in one batch through ``ModelStepper``, the model as a dream's stepper. The
roll-in dreams in torch on the training device (``dream``): each prediction fed
back into the window, a latent model's latent held (moved with the view by the
model's ``refresh_latent``) or drawn fresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from export.dream import Dream, step_dreams
from export.manifest import Manifest
from export.model_manifest import manifest_for
from models import WorldModel


class ModelStepper:
    """A ``WorldModel`` as a dream's stepper: numpy inputs in, next frames
    ``(B, 3, H, W)`` out as float32 numpy clamped to [0, 1], run in float32 on
    the device the model is on."""

    def __init__(self, model: WorldModel) -> None:
        self.model = model.eval()
        self.manifest: Manifest = manifest_for(model)
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> np.ndarray:
        def tensor(x: Any) -> torch.Tensor | None:
            return None if x is None else torch.as_tensor(x, device=self.device)
        out = self.model(tensor(frames), tensor(controls), tensor(noise_level), tensor(latent))
        return out.float().clamp(0.0, 1.0).cpu().numpy()


def dream_rollouts(model: WorldModel, context: torch.Tensor | np.ndarray, controls: Any,
                   noise_level: float = 0.0, latent: str = "hold",
                   seeds: Sequence[int] | None = None) -> np.ndarray:
    """One ``Dream`` per sample from context ``(B, K, 3, H, W)`` in [0, 1], stepped
    together under controls ``(B, T, C)``, told ``noise_level``; dream ``i``'s
    latent is drawn from ``seeds[i]`` (default: ``i``) and held or ``fresh``.
    Returns the frames ``(B, T, 3, H, W)``, float32 in [0, 1]."""
    stepper = ModelStepper(model)
    frames, sticks = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                                 np.float32) for x in (context, controls))
    seeds = list(range(len(frames))) if seeds is None else list(seeds)
    dreams = [Dream.of(stepper, latent, seed, noise_level) for seed in seeds]
    for d, start, seed in zip(dreams, frames, seeds, strict=True):
        d.reset(start, seed)
    return np.stack([step_dreams(stepper, dreams, sticks[:, t])
                     for t in range(sticks.shape[1])], axis=1)


@torch.no_grad()
def dream(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
          level: torch.Tensor | None, latent: torch.Tensor | None = None) -> torch.Tensor:
    """Dream ``T`` steps from context ``(B, K, 3, H, W)`` under controls
    ``(B, T, C)``, each prediction clamped to [0, 1] and fed back into the
    rolling window, the model told noise ``level`` ``(B,)`` (or none); returns
    ``(B, T, 3, H, W)``. A model with a latent is given ``latent``
    ``(B, latent_size)`` every step (its ``refresh_latent`` share redrawn after
    the first), or draws a fresh one each step when it is None. ``net`` may be
    a wrapped model (DDP, compiled)."""
    model = getattr(net, "_orig_mod", net)  # torch.compile's wrapper
    refresh = getattr(getattr(model, "module", model), "refresh_latent", None)  # and DDP's
    window, out = context, []
    for t in range(controls.shape[1]):
        if latent is not None and t and refresh is not None:
            latent = refresh(latent, controls[:, t])
        nxt = net(window, controls[:, t], level, latent).float().clamp(0.0, 1.0)
        out.append(nxt)
        window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
    return torch.stack(out, dim=1)


def free_run(model: WorldModel, context: torch.Tensor, controls: np.ndarray,
             noise_level: float = 0.0, latent: str = "hold", seed: int = 0) -> np.ndarray:
    """Dream ``len(controls)`` steps from one context ``(1, K, 3, H, W)``, a latent
    model's latent drawn from ``seed`` and held or ``fresh``; returns
    ``(T, 3, H, W)`` float32 frames in [0, 1]."""
    return dream_rollouts(model, context, np.asarray(controls)[None], noise_level, latent,
                          [seed])[0]


def roll_in(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
            level: torch.Tensor | None, latent: torch.Tensor | None = None) -> torch.Tensor:
    """The window ``(B, K, 3, H, W)`` the model reaches by dreaming ``controls.shape[1]``
    steps from ``context`` on its own, no gradient, told noise ``level``, a latent
    model holding ``latent`` ``(B, latent_dim)`` throughout (None: a fresh one a step)."""
    frames = dream(net, context, controls, level, latent)
    return torch.cat([context, frames], dim=1)[:, -context.shape[1]:]


def roll_in_share(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
                  targets: torch.Tensor, steps: int, share: float,
                  level: torch.Tensor | None, latent: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roll the first ``share`` of the batch in by ``steps`` steps (see ``roll_in``);
    the rest keep the true context. Returns the windows, controls ``(B, T - steps, C)``
    and targets ``(B, T - steps, 3, H, W)`` the supervised steps start from."""
    n = max(1, round(share * len(context)))
    rest = controls.shape[1] - steps
    rolled = roll_in(net, context[:n], controls[:n, :steps],
                     None if level is None else level[:n],
                     None if latent is None else latent[:n])
    return (torch.cat([rolled, context[n:]]),
            torch.cat([controls[:n, steps:], controls[n:, :rest]]),
            torch.cat([targets[:n, steps:], targets[n:, :rest]]))
