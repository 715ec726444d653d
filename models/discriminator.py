"""Patch discriminators for the optional GAN loss: unconditional, or conditioned on
the previous frames and the controls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.blocks import resnet_stages
from models.config import WorldModelConfig


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Args:
        filters: Channels of each stride-2 ResNet stage.
        blocks: ResNet blocks per stage.
        activation: ``leaky_relu`` (usual for discriminators), ``gelu`` or ``relu``.
        conditional: Also see the context frames (stacked on channels) and the
            controls (projection-discriminator term), so it judges whether the
            frame is a plausible *next* frame, not just a plausible frame.
    """

    filters: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1
    activation: str = "leaky_relu"
    conditional: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"filters": list(self.filters), "blocks": self.blocks,
                "activation": self.activation, "conditional": self.conditional}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        data = dict(data)
        if "filters" in data:
            data["filters"] = tuple(int(f) for f in data["filters"])
        return cls(**data)


class Discriminator(nn.Module):
    """``(B, 3, H, W)`` frame -> ``(B, 1, h, w)`` patch logits (real > 0).

    The conditional variant takes the context frames ``(B, K, 3, H, W)`` and the
    controls ``(B, control_dim)`` as well.

    Args:
        config: The discriminator's own settings.
        model: The world model's config (frame size, K, control_dim).
    """

    def __init__(self, config: DiscriminatorConfig, model: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        self.context_frames = model.context_frames
        in_channels = 3 + (3 * model.context_frames if config.conditional else 0)
        stages, channels = resnet_stages(config.filters[0], config.filters, config.blocks,
                                         config.activation, "down")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, config.filters[0], 3, padding=1), *stages)
        self.head = nn.Conv2d(channels, 1, 1)
        self.control_embed: nn.Linear | None = None
        if config.conditional:
            self.control_embed = nn.Linear(model.control_dim, channels)

    def forward(self, frame: torch.Tensor, context: torch.Tensor | None = None,
                controls: torch.Tensor | None = None) -> torch.Tensor:
        if self.control_embed is None:
            return self.head(self.features(frame))
        if context is None or controls is None:
            raise ValueError("the conditional discriminator needs context frames and controls")
        B, K, C, H, W = context.shape
        x = torch.cat([context.reshape(B, K * C, H, W), frame], dim=1)  # (B, 3K + 3, H, W)
        feat = self.features(x)  # (B, C', h, w)
        # Projection discriminator: the inner product of features and embedded
        # controls scores how well the frame matches the controls.
        proj = (feat * self.control_embed(controls)[:, :, None, None]).sum(1, keepdim=True)
        return self.head(feat) + proj / feat.shape[1] ** 0.5
