"""Reusable building blocks, written once: activations, the ResNet block, the MLP."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ConvNorm

Resample = Literal["none", "down", "up"]


def make_activation(name: str) -> nn.Module:
    """``gelu``, ``relu`` or ``leaky_relu`` (slope 0.2, for discriminators)."""
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    raise ValueError(f"unknown activation {name!r}; choose gelu, relu or leaky_relu")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of ``(B, C, H, W)`` (as in
    ConvNeXt): unlike instance norm it keeps every image's own brightness and
    contrast, which a model must see to keep them in range over a long dream."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm(name: str, channels: int) -> nn.Module:
    """``instance`` (affine InstanceNorm2d), ``layer`` (:class:`LayerNorm2d`) or
    ``none`` (identity)."""
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if name == "layer":
        return LayerNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown conv norm {name!r}; choose instance, layer or none")


class ResNetBlock(nn.Module):
    """Two 3x3 convolutions with a norm and a shortcut, optionally resampling.

    ``down`` halves the resolution with a stride-2 first convolution; ``up`` doubles
    it with nearest-neighbour upsampling before the first convolution (no
    checkerboard artefacts, unlike a transposed convolution). The shortcut is the
    identity when shape is unchanged, else a 1x1 projection (strided for ``down``,
    after the same upsampling for ``up``).

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output.
        activation: ``gelu``, ``relu`` or ``leaky_relu``.
        resample: ``none``, ``down`` (stride 2) or ``up`` (nearest x2).
        norm: ``instance``, ``layer`` or ``none``. Without a norm the residual
            branch is scaled by a learned gain that starts at zero (SkipInit), so
            the block starts as its shortcut and activations cannot blow up.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: str = "gelu",
                 resample: Resample = "none", norm: ConvNorm = "instance") -> None:
        super().__init__()
        if resample not in ("none", "down", "up"):
            raise ValueError(f"resample must be none, down or up, got {resample!r}")
        self.upsample = resample == "up"
        stride = 2 if resample == "down" else 1
        # No conv bias before an instance norm: the norm subtracts it right away.
        bias = norm != "instance"
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias)
        self.norm1 = make_norm(norm, out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_channels)
        self.act2 = make_activation(activation)
        self.gain: nn.Parameter | None = (
            nn.Parameter(torch.zeros(())) if norm == "none" else None)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        h = self.act1(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        if self.gain is not None:
            h = h * self.gain
        return self.act2(h + self.shortcut(x))


def resnet_stages(in_channels: int, filters: tuple[int, ...], blocks: int, activation: str,
                  resample: Resample, norm: ConvNorm = "instance") -> tuple[nn.Sequential, int]:
    """One stage per entry of ``filters``: a resampling block, then ``blocks - 1``
    plain ones. Returns the stages and their output channels."""
    layers: list[nn.Module] = []
    channels = in_channels
    for out_channels in filters:
        layers.append(ResNetBlock(channels, out_channels, activation, resample, norm))
        layers.extend(ResNetBlock(out_channels, out_channels, activation, norm=norm)
                      for _ in range(blocks - 1))
        channels = out_channels
    return nn.Sequential(*layers), channels


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int,
                 activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
