"""What ``WorldModel`` does in the ``codebook`` output mode: draw each patch's
code and paint the frame from the drawn codes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.codebook import CodeRefiner, gumbel_noise, nearest_code, patchify, unpatchify
from models.config import WorldModelConfig


class CodebookHead:
    """The codebook output's drawing and painting (a mixin: it needs the model's
    ``config``, ``codebook`` buffers, ``refiner`` and ``code_logits``)."""

    config: WorldModelConfig
    training: bool
    codebook: torch.Tensor  # (codebook_size, 3 * patch^2) patches
    codebook_spread: torch.Tensor  # with ``codebook_grain``, their grain's spread, alike
    refiner: CodeRefiner | None

    code_logits: Callable[..., torch.Tensor]

    def paint(self, codes: torch.Tensor, grain: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, h, w)`` code indices -> ``(B, 3, H, W)`` frame of codebook patches;
        with ``codebook_grain``, each plus its spread times ``grain``, ``(B, 3 * H * W)``
        N(0, 1) draws (fresh ones when None), clamped to [0, 1]."""
        patches = self.codebook[codes]
        if self.config.codebook_grain:
            noise = torch.randn_like(patches) if grain is None else grain.reshape(patches.shape)
            patches = (patches + self.codebook_spread[codes] * noise.to(patches.dtype)).clamp(
                0.0, 1.0)
        return unpatchify(patches, self.config.codebook_patch)

    def codes_of(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` frames -> ``(B, h, w)`` index of each patch's nearest code."""
        return nearest_code(patchify(frames, self.config.codebook_patch), self.codebook)

    @torch.no_grad()
    def set_codebook(self, patches: torch.Tensor, spread: torch.Tensor | None = None) -> None:
        """Install ``(codebook_size, 3 * patch^2)`` codebook patches in [0, 1], and
        with ``codebook_grain`` their grain's ``spread`` of the same shape."""
        if (spread is not None) != self.config.codebook_grain:
            raise ValueError("a model with codebook_grain needs its codes' spread"
                             if spread is None else
                             "this model has no codebook_grain: it takes no spread")
        for name, value in (("codebook", patches), ("codebook_spread", spread)):
            if value is None:
                continue
            if tuple(value.shape) != tuple(self.codebook.shape):
                raise ValueError(f"a {name} must have shape {tuple(self.codebook.shape)}, "
                                 f"got {tuple(value.shape)}")
            getattr(self, name).copy_(value)

    def pick_codes(self, logits: torch.Tensor, latent: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """``(B, codebook_size, h, w)`` logits -> ``(B, h, w)`` codes: the most likely
        at temperature 0 and in training mode (the roll-in's dreams), else
        Gumbel-max draws at ``codebook_temperature`` whose Gumbel noise comes from
        ``latent`` ``(B, code_latent_size)`` N(0, 1) draws (fresh ones when None),
        so a held latent draws the same codes from the same logits. With a
        refiner the draws take ``codebook_rounds`` rounds (``CodeRefiner.draw``;
        one in training mode)."""
        gumbel = None
        if self.config.codebook_temperature > 0 and not self.training:
            if latent is None:
                latent = torch.randn(logits.shape, device=logits.device)
            gumbel = gumbel_noise(latent, logits.shape)
        return self._draw(logits, gumbel, 1 if self.training else self.config.codebook_rounds)

    def _draw(self, logits: torch.Tensor, gumbel: torch.Tensor | None,
              rounds: int) -> torch.Tensor:
        """Codes from ``logits``: Gumbel-max with ``gumbel`` at the temperature (the
        most likely when it is None), in ``rounds`` rounds with a refiner."""
        temperature = self.config.codebook_temperature
        if self.refiner is not None:
            return self.refiner.draw(logits, rounds, temperature, gumbel)
        if gumbel is None:
            return logits.argmax(1)
        return (logits.float() / temperature + gumbel).argmax(1)

    @torch.no_grad()
    def most_likely(self, frames: torch.Tensor, controls: torch.Tensor,
                    noise_level: torch.Tensor | None = None) -> torch.Tensor:
        """The most likely next frame of a codebook model: the most likely codes
        (each round's, with a refiner) painted without grain."""
        c = self.config
        codes = self._draw(self.code_logits(frames, controls, noise_level), None,
                           c.codebook_rounds)
        still = torch.zeros(len(codes), 3 * c.height * c.width,
                            device=codes.device) if c.codebook_grain else None
        return self.paint(codes, still)
