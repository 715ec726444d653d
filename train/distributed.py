"""Rank facts under ``torchrun``: which process this is, its device, and the
collective calls the training loop needs (a single process otherwise)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from models.device import resolve_device


def rank_device(name: str, local_rank: int) -> torch.device:
    """The device of one torchrun process: ``auto`` and ``cuda`` take GPU ``local_rank``."""
    device = resolve_device(name, local_rank)
    if device.type == "cuda" and name in ("auto", "cuda"):
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {local_rank} has no GPU of its own: this machine has "
                f"{torch.cuda.device_count()}; start at most that many (--nproc_per_node) or "
                f"train on --device cpu")
        device = torch.device(f"cuda:{local_rank}")
    return device


class Distributed:
    """Rank facts under torchrun (a single process otherwise)."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = rank_device(device_name, self.local_rank)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel under torchrun, else itself."""
        if self.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on one (e.g. the time budget ran out)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)
