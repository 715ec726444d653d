"""The optimizer's helpers: the learning-rate schedule, weight-decay groups,
the EMA of the weights, and the autocast dtype of a precision."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on a GPU that supports it, else fp16; full precision on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's weights (warmed up so early
    averages are not dominated by the random initialisation)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_p: list[torch.Tensor] = [p for p in self.model.parameters()]
        new_p: list[torch.Tensor] = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, new_p, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases, positions and registers (AdamW practice),
    nor on ``stick_view``'s map: it is how far the view moves, fitted to the
    recording, and decay would shrink it (or move one held at its fit)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or any(k in name for k in ("pos_embed", "registers", "view_motion"))
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
