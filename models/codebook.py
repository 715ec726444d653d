"""Frames as grids of patches from a codebook: the ``codebook`` output mode's pieces."""

from __future__ import annotations

import torch


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H/patch, W/patch, C * patch * patch)``."""
    B, C, H, W = frames.shape
    x = frames.reshape(B, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, H // patch, W // patch, C * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, h, w, C * patch * patch)`` -> ``(B, C, h * patch, w * patch)``."""
    B, h, w, D = patches.shape
    C = D // (patch * patch)
    x = patches.reshape(B, h, w, C, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C, h * patch, w * patch)


def nearest_code(patches: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The index of the nearest (L2) codebook row ``(K, D)`` for each ``(..., D)`` patch."""
    flat = patches.reshape(-1, patches.shape[-1]).float()
    code = codebook.float()
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin.
    dist = code.square().sum(1)[None] - 2.0 * flat @ code.t()
    return dist.argmin(1).reshape(patches.shape[:-1])


def kmeans(points: torch.Tensor, k: int, iters: int = 25,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``k`` centres ``(k, D)`` of ``(N, D)`` points: k-means++ seeding (each new
    centre drawn with probability proportional to its squared distance from the
    nearest one so far, so rare patches get a centre too), then Lloyd's
    algorithm; a centre left with no points keeps its place."""
    if len(points) < k:
        raise ValueError(f"k-means needs at least {k} points, got {len(points)}")
    points = points.float()
    first = int(torch.randint(len(points), (1,), generator=generator))
    chosen = [first]
    nearest = (points - points[first]).square().sum(1)
    for _ in range(k - 1):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (points - points[pick]).square().sum(1))
    centres = points[chosen].clone()
    for _ in range(iters):
        assign = nearest_code(points, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


def code_spread(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The per-dimension standard deviation ``(k, D)`` of the ``(N, D)`` points
    nearest each of the ``(k, D)`` centres about it: the texture a centre, as
    their mean, leaves out (zero for a centre no point is nearest)."""
    points = points.float()
    assign = nearest_code(points, centres)
    sums = torch.zeros_like(centres, dtype=torch.float32).index_add_(
        0, assign, (points - centres[assign].float()).square())
    counts = torch.bincount(assign, minlength=len(centres)).clamp(min=1)
    return (sums / counts[:, None]).sqrt()
