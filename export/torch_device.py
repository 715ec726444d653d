"""Keeping a torch model's dreams on its device: ``TorchArrays`` (the dreams'
windows, latents and noise levels as tensors there, for the torch backends and
for ONNX Runtime's I/O binding on a GPU) and ``GraphedSteps`` (each batch size's
step captured once as a CUDA graph and replayed, so a small batch costs one
launch instead of one per kernel)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from export.dream import LARGEST_BATCH

log = logging.getLogger(__name__)


class TorchArrays:
    """``export.dream.Arrays`` as float32 tensors on ``device``."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def put(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(self.device, torch.float32, non_blocking=True).contiguous()
        return torch.as_tensor(np.asarray(x, np.float32)).to(self.device, non_blocking=True)

    def get(self, x: Any) -> np.ndarray:
        out: np.ndarray = x.detach().float().cpu().numpy()
        return out

    def stack(self, xs: Sequence[Any]) -> torch.Tensor:
        return torch.stack(list(xs))

    def roll(self, window: Any, frame: Any) -> torch.Tensor:
        return torch.cat([window[1:], frame[None]])

    def empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def address(self, x: Any) -> tuple[str, int, int]:
        return x.device.type, x.device.index or 0, int(x.data_ptr())

    def settle(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()


def bucket(batch: int, largest: int) -> int | None:
    """The batch size ``batch`` is padded to: the next power of two, or None
    past ``largest`` (run as it is)."""
    size = 1 << max(0, batch - 1).bit_length()
    return size if size <= largest else None


@dataclass
class _Captured:
    inputs: list[torch.Tensor | None]  # static buffers the replay reads
    run: Callable[[], torch.Tensor]  # replays the step; returns the static output


class GraphedSteps:
    """``fn(frames, controls, noise_level, latent)`` for batches of up to
    ``largest``, each padded to a power of two and run from static input
    buffers: on CUDA (``capture``) as a graph captured the first time its size
    comes (a size whose capture fails runs eagerly, logged); elsewhere eagerly
    from the same buffers, so the padding is the same on every device.

    Inputs must be tensors on one device (the noise level and latent may be
    None, the same for every call of a size). The output is a new tensor: the
    static one is overwritten by the next replay.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], capture: bool,
                 largest: int = LARGEST_BATCH) -> None:
        self.fn, self.capture, self.largest = fn, capture, largest
        self._sizes: dict[int, _Captured | None] = {}

    @property
    def captured(self) -> list[int]:
        """The batch sizes that replay a CUDA graph."""
        return sorted(s for s, c in self._sizes.items() if c is not None and self.capture)

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        first = inputs[0]
        assert first is not None
        batch = first.shape[0]
        size = bucket(batch, self.largest)
        if size is None:
            return self.fn(*inputs)
        if size not in self._sizes:
            self._sizes[size] = self._prepare(size, inputs)
        captured = self._sizes[size]
        if captured is None:
            return self.fn(*inputs)
        for static, x in zip(captured.inputs, inputs, strict=True):
            if static is not None and x is not None:
                static[:batch].copy_(x)
        return captured.run()[:batch].clone()

    def _prepare(self, size: int, inputs: Sequence[torch.Tensor | None]) -> _Captured | None:
        static = [None if x is None else
                  torch.zeros((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
                  for x in inputs]
        if not self.capture:
            return _Captured(static, lambda: self.fn(*static))
        try:
            return self._capture(static)
        except RuntimeError as err:
            log.warning("torch: batch size %d runs eagerly: its CUDA graph capture failed (%s)",
                        size, str(err).splitlines()[0])
            return None

    def _capture(self, static: list[torch.Tensor | None]) -> _Captured:
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (library handles, autotuning) off the graph,
            for _ in range(3):  # on the stream the capture uses
                self.fn(*static)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the server's other thread may allocate while this one captures
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            out = self.fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        log.info("torch: captured a CUDA graph for batch size %d", static[0].shape[0]
                 if static[0] is not None else 0)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return _Captured(static, replay)
