"""Dream chains: training samples that continue the model's own dream from one
optimizer step to the next, so training sees windows tens of steps deep in a
dream for the price of one forward pass each a step.

A roll-in of N steps costs N forward passes every step, so it stays short, and a
drift that builds over hundreds of steps (a dream brightening by a hair a step)
never shows in training. A chain instead keeps its dreamed window between
steps: each step it is a training sample (the window as context, the recording's
true next frames as targets, as in DAgger), then advances one frame by the
model's own prediction under the true controls, until it has run a random
length of up to ``depth`` steps or its episode ends, and restarts from true
frames elsewhere. The windows come from the model of a few steps ago, which
moves slowly, as a persistent chain in contrastive-divergence training does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from train.data import TransitionSet


def successors(data: TransitionSet, indices: np.ndarray) -> np.ndarray:
    """The index of the transition one frame later in the same segment, or -1."""
    nxt = np.full(len(indices), -1, dtype=np.int64)
    part_of = np.searchsorted(data.offsets, indices, side="right") - 1
    for i, (idx, p) in enumerate(zip(indices, part_of, strict=True)):
        _, rows = data.parts[p]
        local = idx - data.offsets[p]
        if local + 1 < len(rows) and rows[local + 1, 0] == rows[local, 0] + 1:
            nxt[i] = idx + 1
    return nxt


class DreamChains:
    """``count`` persistent dreams over ``data``.

    Each step: :meth:`batch` gives the chains' samples (their dreamed windows as
    context where they have one), then :meth:`advance` moves every chain one
    frame on with the model's prediction and restarts the finished ones.
    ``state_dict`` holds everything, so a resumed run continues the same chains.
    """

    def __init__(self, data: TransitionSet, count: int, depth: int, context_frames: int,
                 seed: int = 0, rank: int = 0) -> None:
        self.data, self.count, self.depth, self.K = data, count, depth, context_frames
        rng = np.random.default_rng([seed, rank, 0xC4A1])
        self.index = rng.integers(0, len(data), count)
        self.left = rng.integers(1, depth + 1, count)  # steps each chain still runs
        self.age = np.zeros(count, dtype=np.int64)  # dreamed frames in each window
        self.window: torch.Tensor | None = None  # (count, K, 3, H, W), float

    def batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chains' (context, controls, targets), as ``to_model_inputs`` gives."""
        raw = self.data.batch(self.index)
        frames = raw["frames"].to(device).float().div_(255.0)
        context = frames[:, :self.K]
        if self.window is not None:
            dreamed = torch.as_tensor(self.age > 0, device=device).view(-1, 1, 1, 1, 1)
            context = torch.where(dreamed, self.window.to(device), context)
        return context, raw["controls"].to(device), frames[:, self.K:]

    @torch.no_grad()
    def advance(self, net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
                level: torch.Tensor | None, step: int, seed: int = 0, rank: int = 0) -> None:
        """One frame on: predict from ``context`` under ``controls`` ``(count, C)``
        (the true ones), told ``level``; restart chains that are done."""
        nxt = net(context, controls, level).float().clamp(0.0, 1.0)
        self.window = torch.cat([context[:, 1:], nxt[:, None]], dim=1).detach()
        self.age += 1
        self.left -= 1
        self.index = successors(self.data, self.index)
        done = (self.left <= 0) | (self.index < 0)
        if done.any():
            rng = np.random.default_rng([seed, step, rank, 0xC4A1])
            n = int(done.sum())
            self.index[done] = rng.integers(0, len(self.data), n)
            self.left[done] = rng.integers(1, self.depth + 1, n)
            self.age[done] = 0

    def state_dict(self) -> dict[str, Any]:
        """Tensors only, so a checkpoint still loads with ``weights_only=True``."""
        return {"index": torch.from_numpy(self.index.copy()),
                "left": torch.from_numpy(self.left.copy()),
                "age": torch.from_numpy(self.age.copy()),
                "window": None if self.window is None else self.window.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index, self.left, self.age = (
            state[k].numpy().astype(np.int64) for k in ("index", "left", "age"))
        self.window = state["window"]
