"""The inference worker: one owner of the model, stepping every due session in
one batched call, off the event loop."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from serve.metrics import Metrics


class _Request(NamedTuple):
    context: np.ndarray  # (K, 3, H, W)
    controls: np.ndarray  # (control_dim,)
    latent: np.ndarray | None  # (latent_dim,) for a model with a latent
    future: asyncio.Future[np.ndarray]
    asked: float  # perf_counter() when it was queued


class Batcher:
    """Collects step requests and runs them through ``backend.step`` in batches.

    A batch closes when it holds ``max_batch`` requests, when every open
    session has asked (nobody else is coming), or ``max_delay_ms`` after its
    first request, whichever is first. The model runs in a worker thread, so
    the event loop keeps serving sockets meanwhile.

    Args:
        backend: Anything with ``step(frames, controls) -> next_frames`` (numpy)
            and, for a model with a latent, ``step(..., latent=latents)``.
        max_batch: Largest batch per model call.
        max_delay_ms: Longest wait for stragglers after the first request.
        expected: How many sessions could ask now (open sessions).
        metrics: Where batch sizes and latencies are recorded.
    """

    def __init__(self, backend: Any, max_batch: int, max_delay_ms: float,
                 expected: Callable[[], int], metrics: Metrics) -> None:
        self.backend = backend
        self.max_batch, self.max_delay = max_batch, max_delay_ms / 1000.0
        self.expected, self.metrics = expected, metrics
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def step(self, context: np.ndarray, controls: np.ndarray,
                   latent: np.ndarray | None = None) -> np.ndarray:
        """The next frame ``(3, H, W)`` for one session's context ``(K, 3, H, W)``
        (and its ``(latent_dim,)`` latent, for a model with one)."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(context, controls, latent, future, time.perf_counter()))
        return await future

    async def _collect(self) -> list[_Request]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_delay
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            if len(batch) >= self.expected():
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [b for b in await self._collect() if not b.future.done()]
            if not batch:
                continue
            frames = np.stack([b.context for b in batch]).astype(np.float32, copy=False)
            controls = np.stack([b.controls for b in batch]).astype(np.float32, copy=False)
            held = [b.latent for b in batch if b.latent is not None]
            latents = np.stack(held).astype(np.float32, copy=False) if held else None
            start = time.perf_counter()
            for b in batch:
                self.metrics.queue_seconds.observe(start - b.asked)
            step = (self.backend.step if latents is None else
                    functools.partial(self.backend.step, latent=latents))
            try:
                out = await loop.run_in_executor(self._executor, step, frames, controls)
            except Exception as err:  # a model failure fails these steps, not the server
                for b in batch:
                    if not b.future.done():
                        b.future.set_exception(err)
                continue
            self.metrics.step_seconds.observe(time.perf_counter() - start)
            self.metrics.batch_size.observe(len(batch))
            self.metrics.steps_total += len(batch)
            for i, b in enumerate(batch):
                if not b.future.done():
                    b.future.set_result(out[i])
