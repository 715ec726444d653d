"""A dream's held latent, moved with the view its sticks move and redrawn as
far as they push: the torch side of ``export.dream.DreamLatent``, for the
dreams training and evaluation run on a batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.config import FLOW_PIXELS, WorldModelConfig


class HeldLatent:
    """What ``WorldModel`` does with a held latent (a mixin: it needs the
    model's ``config`` and its ``stick_view`` map, ``view_motion``)."""

    config: WorldModelConfig
    view_motion: nn.Linear | None

    def refresh_latent(self, latent: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """A held ``(B, latent_size)`` latent for the next step of a dream under
        ``(B, control_dim)`` controls: moved with the view (``move_latent``), then
        ``latent_refresh`` times the largest stick deflection of its entries
        redrawn (none at rest)."""
        latent = self.move_latent(latent, controls)
        if not self.config.latent_refresh:
            return latent
        share = self.config.latent_refresh * controls.abs().amax(1, keepdim=True).clamp(max=1.0)
        redraw = torch.rand(latent.shape, device=latent.device) < share
        fresh = torch.randn(latent.shape, device=latent.device)
        return torch.where(redraw, fresh, latent)

    @property
    def moves_latent(self) -> bool:
        """Whether a dream's held latent moves with the view (``latent_motion``)."""
        c = self.config
        return self.view_motion is not None and c.output_mode == "codebook" and bool(
            c.latent_size)

    def latent_motion(self) -> dict[str, Any] | None:
        """How a held latent moves with the view, for a ``stick_view`` ``codebook``
        model with a latent; None for any other.

        A held latent draws each patch's code (and grain) from the same noise
        step after step, so without moving, that noise stays where it is on the
        screen and pins the picture there: the dream barely turns. Moved the
        way the sticks move the view, it stays with what it drew. ``grid``: the
        patch rows and columns; ``codes``: the code draws per patch, laid out
        ``(codes, rows, cols)`` first, the rest of the latent (the grain) laid
        out ``(rows, cols, -1)``; ``patches``: the ``(2, control_dim)`` map of the
        sticks to the patches (x, y) each new patch takes its draws from, the
        sticks' part of ``view_motion`` (no bias: at rest nothing moves)."""
        if not self.moves_latent:
            return None
        rows, cols = self.config.code_grid
        return {"grid": [rows, cols], "codes": self.config.code_latent_size // (rows * cols),
                "patches": self._view_patches().detach().cpu().tolist()}

    def _view_patches(self) -> torch.Tensor:
        """``(2, control_dim)``: the patches (x, y) a unit of each stick moves the
        view a step, the sticks' part of ``view_motion``."""
        assert self.view_motion is not None
        return self.view_motion.weight[:2].float() * (FLOW_PIXELS / self.config.codebook_patch)

    def move_latent(self, latent: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """A held ``(B, latent_size)`` latent moved with the view under ``(B,
        control_dim)`` controls (see ``latent_motion``): each patch takes the draws
        of the patch the view brings to it, rounded at random to whole patches
        (so a slow turn moves them on some steps, as far as it turns on
        average); patches new to the view draw afresh. Unchanged for a model
        without a ``latent_motion``."""
        if not self.moves_latent:
            return latent
        rows, cols = self.config.code_grid
        B, n = latent.shape[0], self.config.code_latent_size
        offset = controls.float() @ self._view_patches().T  # (B, 2) patches, x then y
        whole = offset.floor()
        steps = (whole + (torch.rand_like(offset) < offset - whole).float()).long()
        r = torch.arange(rows, device=latent.device)[None, :, None] + steps[:, 1, None, None]
        q = torch.arange(cols, device=latent.device)[None, None, :] + steps[:, 0, None, None]
        inside = ((r >= 0) & (r < rows) & (q >= 0) & (q < cols))[..., None]
        b = torch.arange(B, device=latent.device)[:, None, None]

        def moved(grid: torch.Tensor) -> torch.Tensor:  # (B, rows, cols, D), moved alike
            taken = grid[b, r.clamp(0, rows - 1), q.clamp(0, cols - 1)]
            return torch.where(inside, taken, torch.randn_like(taken))

        parts = []
        if n:  # the codes' draws, (B, codes, rows, cols)
            codes = moved(latent[:, :n].reshape(B, -1, rows, cols).permute(0, 2, 3, 1))
            parts.append(codes.permute(0, 3, 1, 2).reshape(B, n))
        if latent.shape[1] > n:  # the grain's, (B, rows, cols, 3 * patch^2)
            parts.append(moved(latent[:, n:].reshape(B, rows, cols, -1)).reshape(B, -1))
        return torch.cat(parts, 1).to(latent.dtype)
