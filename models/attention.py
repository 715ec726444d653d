"""Multi-head attention (self and cross) and the pre-norm transformer block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import Mlp


class Attention(nn.Module):
    """Multi-head attention over ``x``, or from ``x`` to a separate ``context``.

    One ``qkv`` projection serves both: self-attention applies it in one matmul,
    cross-attention applies its query rows to ``x`` and its key/value rows to the
    context. ``fused_attn`` selects ``F.scaled_dot_product_attention`` (flash or
    memory-efficient kernels where available); the plain path beside it is the
    reference the tests hold the fast path to.

    Args:
        dim: Token width D.
        num_heads: Heads; must divide ``dim``.
        dropout: Dropout on attention weights and on the output projection.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True
        self.attn_dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        D = self.dim  # a Python int, so tracing records no shape-to-int conversion
        if context is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, T, D)
        else:
            q = F.linear(x, self.qkv.weight[:D], self.qkv.bias[:D])  # (B, T, D)
            k, v = F.linear(context, self.qkv.weight[D:], self.qkv.bias[D:]).chunk(2, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, nh, T|S, hs)
        p = self.attn_dropout if self.training else 0.0
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, nh, T, S)
            attn = F.dropout(attn.softmax(dim=-1), p=p)
            out = attn @ v  # (B, nh, T, hs)
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, nh, T, hs) -> (B, T, D)
        return self.proj_drop(self.proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to a context, MLP.

    With ``cross_attention`` the block is the design's interleaved layer: the
    tokens attend to themselves, then to the context (the action token), then go
    through the MLP, each step a residual branch. With ``adaptive_norm`` the
    context instead sets a shift, scale and gate for each of the two branches
    (adaLN-Zero, as in DiT): the norms lose their own affine weights, and the
    projection that makes the modulation starts at zero, so each block starts
    as the identity.

    Args:
        dim: Token width D.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        activation: MLP activation.
        dropout: Dropout in attention and MLP.
        cross_attention: Add the cross-attention branch.
        adaptive_norm: Modulate the norms from the context (``(B, 1, D)``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 activation: str = "gelu", dropout: float = 0.0,
                 cross_attention: bool = False, adaptive_norm: bool = False) -> None:
        super().__init__()
        if cross_attention and adaptive_norm:
            raise ValueError("a block takes its context by cross-attention or adaptive norm, "
                             "not both")
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaptive_norm)
        self.attn = Attention(dim, num_heads, dropout)
        self.cross: Attention | None = None
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(dim)
            self.cross = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaptive_norm)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, activation, dropout)
        self.modulation: AdaptiveNorm | None = AdaptiveNorm(dim, 6) if adaptive_norm else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulation is not None:
            if context is None:
                raise ValueError("an adaptive-norm block needs a context")
            shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(context)
            x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
            return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        x = x + self.attn(self.norm1(x))
        if self.cross is not None:
            if context is None:
                raise ValueError("a cross-attention block needs a context")
            x = x + self.cross(self.norm_cross(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class AdaptiveNorm(nn.Module):
    """SiLU -> Linear from a condition ``(B, 1, D)`` to ``parts`` tensors ``(B, 1, D)``
    (shifts, scales, gates), zero at initialisation."""

    def __init__(self, dim: int, parts: int) -> None:
        super().__init__()
        self.parts = parts
        self.act = nn.SiLU()
        self.proj = nn.Linear(dim, parts * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.proj(self.act(cond)).chunk(self.parts, dim=-1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Normalised tokens ``(B, T, D)`` scaled and shifted per sample ``(B, 1, D)``."""
    return x * (1 + scale) + shift
