"""What one training step minimises: the loss of a prediction unrolled over a
few steps, each fed back, with noise on the context."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import WorldModel
from models.codebook import mask_for_training
from train.config import NoiseConfig, TrainConfig
from train.losses import reconstruction_losses


def noise_levels(noise: NoiseConfig, batch: int, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """Per-sample context noise levels ``(B,)``: uniform in [0, max_level] for a
    share ``prob`` of the samples, 0 for the rest."""
    u = torch.rand(batch, generator=generator, device=device)
    on = torch.rand(batch, generator=generator, device=device) < noise.prob
    return torch.where(on, u * noise.max_level, torch.zeros_like(u))


def unrolled_loss(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
                  targets: torch.Tensor, config: TrainConfig, steps: int,
                  generator: torch.Generator, coder: WorldModel | None = None,
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Predict ``steps`` frames, feeding each prediction back into the rolling
    window of K context frames; returns the loss terms averaged over the steps
    and the first prediction. A ``codebook`` model is passed as ``coder`` too:
    its loss is the cross-entropy of each patch's code (``code_loss``), and
    the frame it feeds back is painted from its most likely codes.

    With noise augmentation on, every step's window (true frames and fed-back
    predictions alike) gets fresh noise at a per-sample level, and a
    noise-conditioned model is told the level.
    """
    noise, conditioned = config.noise, config.model.noise_conditioning
    window, first = context, None
    terms: dict[str, torch.Tensor] = {}
    for t in range(steps):
        level = None
        seen = window
        if noise.max_level > 0:
            level = noise_levels(noise, window.shape[0], generator, window.device)
            jitter = torch.randn(window.shape, generator=generator, device=window.device)
            seen = window + jitter * level.view(-1, 1, 1, 1, 1)
        told = level if conditioned else None
        if coder is not None:  # codebook mode: classify each patch, feed back the painted frame
            step_terms, pred = code_loss(net, coder, seen, controls[:, t], told,
                                         coder.codes_of(targets[:, t]), generator)
        else:
            pred = net(seen, controls[:, t], told)
            other = net(seen, controls[:, t], told) if config.loss.crps else None  # another latent
            step_terms = reconstruction_losses(pred, targets[:, t], config.loss, other)
        for k, v in step_terms.items():
            terms[k] = terms[k] + v / steps if k in terms else v / steps
        first = pred if first is None else first
        if t + 1 < steps:
            fed = pred.detach() if config.unroll.detach else pred
            window = torch.cat([window[:, 1:], fed.float()[:, None]], dim=1)
    assert first is not None
    return terms, first


def code_loss(net: nn.Module, coder: WorldModel, seen: torch.Tensor, controls: torch.Tensor,
              told: torch.Tensor | None, codes: torch.Tensor, generator: torch.Generator,
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A codebook model's cross-entropy of the true ``(B, h, w)`` ``codes``, and the
    frame painted from its most likely codes. A model with a refiner is shown a
    random share of the codes settled (``mask_for_training``) and scored on the
    hidden ones, as its rounds of drawing meet them; its painted frame keeps
    the settled codes."""
    if coder.refiner is None:
        logits = net(seen, controls, told, logits=True)
        ce = F.cross_entropy(logits.float(), codes)
        return {"ce": ce, "total": ce}, coder.paint(logits.detach().argmax(1))
    settled, hidden = mask_for_training(codes, coder.refiner.mask_code, generator)
    logits = net(seen, controls, told, logits=True, settled=settled)
    each = F.cross_entropy(logits.float(), codes, reduction="none")
    ce = (each * hidden).sum() / hidden.sum()
    drawn = torch.where(hidden, logits.detach().argmax(1), codes)
    return {"ce": ce, "total": ce}, coder.paint(drawn)
