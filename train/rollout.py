"""A model's dream in torch, on a batch, for training and evaluation: each
prediction fed back into the rolling window of K frames, a latent model's latent
held (moved with the view and refreshed as the sticks push) or drawn fresh.
Training's roll-in and evaluation's rollouts both dream through ``dream``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.dream import check_latent_mode
from models import WorldModel


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


def held_latent(model: WorldModel, batch: int, mode: str,
                device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The ``latent`` argument of ``dream`` for a latent ``mode`` (``hold`` or ``fresh``):
    one draw per sample to hold (``hold``), or None (``fresh``: one every step)."""
    check_latent_mode(mode)
    return model.draw_latent(batch, device) if mode == "hold" else None


def free_run(model: WorldModel, context: torch.Tensor, controls: np.ndarray,
             noise_level: float = 0.0, latent: str = "hold") -> np.ndarray:
    """Dream ``len(controls)`` steps from one context ``(1, K, 3, H, W)``, each
    prediction fed back, a latent model's latent held or fresh (``latent``);
    returns ``(T, 3, H, W)`` float32 frames in [0, 1]."""
    model.eval()
    sticks = torch.as_tensor(controls, dtype=torch.float32, device=context.device)[None]
    level = model.noise_input(1, noise_level, context.device)
    z = held_latent(model, 1, latent, context.device)
    return dream(model, context, sticks, level, z)[0].cpu().numpy()


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
