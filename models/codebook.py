"""Frames as grids of patches from a codebook: the ``codebook`` output mode's pieces."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.blocks import ResNetBlock
from models.config import ConvNorm


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


def gumbel_noise(latent: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Gumbel noise of ``shape`` made from N(0, 1) draws ``latent`` (their CDF is
    uniform), so a held latent draws the same codes from the same logits."""
    uniform = 0.5 * (1.0 + torch.erf(latent.float() * 0.7071067811865476))
    return gumbel_from_uniform(uniform).reshape(shape)


def gumbel_from_uniform(uniform: torch.Tensor) -> torch.Tensor:
    """Gumbel noise from uniform draws in [0, 1] (clamped so both logs stay finite)."""
    return -torch.log(-torch.log(uniform.clamp(1e-7, 1.0 - 1e-7)))


def known_after_rounds(patches: int, rounds: int) -> list[int]:
    """How many of ``patches`` codes are settled after each of ``rounds`` parallel
    rounds: MaskGIT's cosine schedule (few at first, where the picture is least
    decided, most at the end), at least one more a round, all after the last."""
    counts, settled = [], 0
    for r in range(1, rounds + 1):
        target = round(patches * (1.0 - math.cos(math.pi / 2 * r / rounds)))
        settled = min(patches - (rounds - r), max(settled + 1, target))
        counts.append(settled)
    return counts


# How much the order in which a round settles its draws is left to chance at
# first (MaskGIT's choice temperature), fading to none by the last round.
CHOICE_TEMPERATURE = 4.5


class CodeRefiner(nn.Module):
    """The codes of a frame given those already settled: ``(B, codes, *grid)`` logits
    of the trunk and ``(B, h, w)`` settled codes (``codes``, one past the last
    code, where none is yet) -> new ``(B, codes, h, w)`` logits. A few 3x3
    residual convolutions over the patch grid let each patch see what its
    neighbours settled on; the change starts at zero, so an untrained refiner
    returns the trunk's logits."""

    order_noise: torch.Tensor  # (h * w,) Gumbel noise: which draws a round settles first

    def __init__(self, codes: int, grid: tuple[int, int], channels: int, activation: str,
                 norm: ConvNorm) -> None:
        super().__init__()
        self.mask_code, self.grid = codes, grid
        uniform = torch.rand(grid[0] * grid[1], generator=torch.Generator().manual_seed(0))
        self.register_buffer("order_noise", gumbel_from_uniform(uniform), persistent=False)
        self.settled = nn.Embedding(codes + 1, channels)
        self.belief = nn.Conv2d(codes, channels, 1)
        self.mix = nn.Sequential(ResNetBlock(channels, channels, activation, norm=norm),
                                 ResNetBlock(channels, channels, activation, norm=norm))
        self.out = nn.Conv2d(channels, codes, 1)
        for p in self.out.parameters():
            nn.init.zeros_(p)

    def forward(self, logits: torch.Tensor, settled: torch.Tensor) -> torch.Tensor:
        x = self.belief(logits) + self.settled(settled).permute(0, 3, 1, 2).to(logits.dtype)
        return logits + self.out(self.mix(x))

    def draw(self, logits: torch.Tensor, rounds: int, temperature: float,
             gumbel: torch.Tensor | None) -> torch.Tensor:
        """``(B, h, w)`` codes drawn in ``rounds`` parallel rounds: each round
        draws every unsettled patch (Gumbel-max at ``temperature`` with the
        ``gumbel`` noise shaped like ``logits``; the most likely code when it is
        None) given those settled, and settles the most confident draws as
        ``known_after_rounds`` says. Confidence is the draw's log-probability plus
        fixed noise that fades over the rounds (MaskGIT's choice temperature):
        settling by confidence alone would settle the likeliest codes first
        and draw every frame toward the mode."""
        B, K = logits.shape[:2]
        h, w = self.grid  # fixed sizes: the rounds' counts are constants of an exported graph
        settled = torch.full((B, h * w), self.mask_code, dtype=torch.long, device=logits.device)
        noise = None if gumbel is None else gumbel.reshape(B, K, h * w)
        counts = known_after_rounds(h * w, rounds)
        for r, count in enumerate(counts):
            scaled = self(logits, settled.reshape(B, h, w)).float().reshape(B, K, h * w)
            if noise is not None:
                scaled = scaled / temperature
            drawn = (scaled if noise is None else scaled + noise).argmax(1)
            is_settled = settled < self.mask_code
            drawn = torch.where(is_settled, settled, drawn)
            if r == len(counts) - 1:
                return drawn.reshape(B, h, w)
            sure = scaled.log_softmax(1).gather(1, drawn[:, None])[:, 0]
            sure = sure + CHOICE_TEMPERATURE * (1.0 - (r + 1) / len(counts)) * self.order_noise
            sure = torch.where(is_settled, torch.full_like(sure, math.inf), sure)
            keep = torch.zeros_like(sure).scatter(1, sure.topk(count, dim=1).indices, 1.0)
            settled = torch.where(keep > 0, drawn, settled)
        raise ValueError(f"rounds must be >= 1, got {rounds}")


def mask_for_training(codes: torch.Tensor, mask_code: int,
                      generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A refiner's training input from a frame's true ``(B, h, w)`` codes: a
    share ``cos(pi/2 u)`` (u uniform) of each frame's patches hidden, as many as
    a round of ``CodeRefiner.draw`` meets unsettled. Returns the settled codes
    (``mask_code`` where hidden) and the hidden patches ``(B, h, w)``, bool."""
    B = codes.shape[0]
    flat = codes.reshape(B, -1)
    n = flat.shape[1]
    u = torch.rand(B, generator=generator, device=codes.device)
    hidden_count = torch.ceil(torch.cos(u * math.pi / 2) * n).clamp(1, n)
    order = torch.rand(B, n, generator=generator, device=codes.device).argsort(1).argsort(1)
    hidden = order < hidden_count[:, None]
    settled = torch.where(hidden, torch.full_like(flat, mask_code), flat)
    return settled.reshape(codes.shape), hidden.reshape(codes.shape)
