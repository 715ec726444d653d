"""Device selection shared by every stage."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto", index: int = 0) -> torch.device:
    """``auto`` -> ``cuda:index`` when torch sees a GPU, else ``cpu``; any other
    name as given, refused with a clear message if it asks for a missing GPU."""
    if name == "auto":
        return torch.device(f"cuda:{index}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device
