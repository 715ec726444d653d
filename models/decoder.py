"""Tokens back to pixels: the CNN ResNet decoder head."""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import resnet_stages
from models.config import ConvNorm


class CNNDecoder(nn.Module):
    """Token grid -> ResNet stages with nearest-neighbour x2 upsampling -> RGB.

    ``(B, N, D) -> (B, out_channels, H, W)`` raw (unbounded) values; the world
    model maps them into a frame according to its output mode.

    Args:
        embed_dim: Token width D.
        filters: Channels of each stage; one x2 upsampling per stage.
        blocks: ResNet blocks per stage; the first of each upsamples.
        grid: Token grid (rows, columns).
        activation: ``gelu`` or ``relu``.
        norm: The convolutions' norm: ``instance``, ``layer`` or ``none``.
        out_channels: 3 (RGB), or 5 for RGB and a 2-channel motion field.
    """

    def __init__(self, embed_dim: int, filters: tuple[int, ...], blocks: int,
                 grid: tuple[int, int], activation: str = "gelu",
                 norm: ConvNorm = "instance", out_channels: int = 3) -> None:
        super().__init__()
        self.grid = grid
        self.stages, channels = resnet_stages(embed_dim, filters, blocks, activation, "up", norm)
        self.head = nn.Conv2d(channels, out_channels, 3, padding=1)
        # Start near zero: an absolute model starts at mid-grey, a residual or warp
        # one at copy-last-frame (the baseline every world model must beat), yet every
        # parameter still receives a gradient from the first step.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]  # a Conv2d's bias is set

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, _, D = tokens.shape
        rows, cols = self.grid
        x = tokens.transpose(1, 2).reshape(B, D, rows, cols)  # (B, N, D) -> (B, D, h, w)
        return self.head(self.stages(x))  # (B, out_channels, H, W)
