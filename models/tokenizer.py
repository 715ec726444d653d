"""Frames to tokens: the convolutional ResNet tokenizer, positional embeddings,
and the action MLP that turns controls into one token."""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import Mlp, make_activation, make_norm, resnet_stages
from models.config import ConvNorm


def sincos_pos_embed_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding (as in MAE): half the channels encode the row,
    half the column. Returns ``(rows * cols, dim)`` in row-major token order."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.to(torch.float64)[:, None] * omega[None, :]  # (N, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, dim/2)

    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat([encode(r.flatten()), encode(c.flatten())], dim=1)  # (N, dim)
    return emb.to(torch.float32)


class ConvTokenizer(nn.Module):
    """Stem convolution, then stride-2 ResNet stages, then a 1x1 projection to D.

    ``(B, C, H, W) -> (B, N, D)`` with ``N = (H / 2^S) * (W / 2^S)`` for S stages,
    positional embedding included.

    Args:
        in_channels: Input channels (3 per context frame).
        filters: Channels of each stage.
        blocks: ResNet blocks per stage; the first of each downsamples.
        embed_dim: Token width D.
        grid: Token grid (rows, columns) the input size yields.
        activation: ``gelu`` or ``relu``.
        pos_embed: ``learned`` or ``sincos``.
        dropout: Dropout after adding the positional embedding.
        norm: The convolutions' norm: ``instance``, ``layer`` or ``none``.
    """

    pos_table: torch.Tensor  # the sincos buffer, when pos_embed == "sincos"

    def __init__(self, in_channels: int, filters: tuple[int, ...], blocks: int, embed_dim: int,
                 grid: tuple[int, int], activation: str = "gelu", pos_embed: str = "learned",
                 dropout: float = 0.0, norm: ConvNorm = "instance") -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, filters[0], 3, padding=1, bias=norm != "instance"),
            make_norm(norm, filters[0]),
            make_activation(activation),
        )
        self.stages, channels = resnet_stages(filters[0], filters, blocks, activation, "down",
                                              norm)
        self.proj = nn.Conv2d(channels, embed_dim, 1)
        num_tokens = grid[0] * grid[1]
        self.pos_embed: nn.Parameter | None = None
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            table = sincos_pos_embed_2d(embed_dim, *grid)[None]  # (1, N, D)
            self.register_buffer("pos_table", table, persistent=False)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stages(self.stem(x)))  # (B, D, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)
        pos = self.pos_embed if self.pos_embed is not None else self.pos_table
        return self.drop(x + pos)


class ActionEmbed(nn.Module):
    """Controls ``(B, control_dim)`` -> one action token ``(B, 1, D)`` through an MLP."""

    def __init__(self, control_dim: int, hidden: int, embed_dim: int,
                 activation: str = "gelu") -> None:
        super().__init__()
        self.mlp = Mlp(control_dim, hidden, embed_dim, activation)

    def forward(self, controls: torch.Tensor) -> torch.Tensor:
        return self.mlp(controls).unsqueeze(1)  # (B, D) -> (B, 1, D)
