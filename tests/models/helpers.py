"""Baby configs (as nanoGPT's "baby GPT") so the whole matrix of options runs in seconds."""

from __future__ import annotations

from typing import Any

import torch

from models import WorldModelConfig


def baby_config(**overrides: Any) -> WorldModelConfig:
    base = WorldModelConfig(
        height=32, width=32, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
        tokenizer_filters=(8, 16), decoder_filters=(16, 8), action_hidden=16)
    return base.replace(**overrides) if overrides else base


def random_inputs(config: WorldModelConfig, batch: int = 2,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.rand(batch, config.context_frames, 3, config.height, config.width,
                        device=device)
    controls = torch.rand(batch, config.control_dim, device=device) * 2 - 1
    return frames, controls
