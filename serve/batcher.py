"""The inference worker: one owner of the model, stepping every due session in
one batched call, off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from export.dream import StepInput, StepOutput, Stepper, run_inputs
from serve.metrics import Metrics


class _Request(NamedTuple):
    inputs: StepInput
    future: asyncio.Future[StepOutput]
    asked: float  # perf_counter() when it was queued


class Batcher:
    """Collects step requests and runs them through ``backend.step`` in batches.

    A batch closes when it holds ``max_batch`` requests, when every open
    session has asked (nobody else is coming), or ``max_delay_ms`` after its
    first request, whichever is first. The model runs in a worker thread, so
    the event loop keeps serving sockets meanwhile.

    Args:
        backend: The model (``export.runtime.Backend``).
        max_batch: Largest batch per model call.
        max_delay_ms: Longest wait for stragglers after the first request.
        expected: How many sessions could ask now (open sessions).
        metrics: Where batch sizes and latencies are recorded.
    """

    def __init__(self, backend: Stepper, max_batch: int, max_delay_ms: float,
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

    def batch_sizes(self) -> list[int]:
        """The batch sizes to warm up: the powers of two below ``max_batch``, and it."""
        sizes = [1 << i for i in range(self.max_batch.bit_length()) if 1 << i < self.max_batch]
        return [*sizes, self.max_batch]

    async def warm_up(self, inputs: StepInput) -> list[int]:
        """Run ``inputs`` once at every batch size of ``batch_sizes`` (nothing
        counted in the metrics), so the first players wait for no TensorRT
        engine build or CUDA graph capture; returns the sizes run."""
        loop = asyncio.get_running_loop()
        sizes = self.batch_sizes()
        for size in sizes:
            await loop.run_in_executor(self._executor, run_inputs, self.backend, [inputs] * size)
        return sizes

    async def step(self, inputs: StepInput) -> StepOutput:
        """The next frame ``(3, H, W)`` for one dream's inputs (``Dream.inputs``),
        where the model made it and on the host."""
        future: asyncio.Future[StepOutput] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(inputs, future, time.perf_counter()))
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
            start = time.perf_counter()
            for b in batch:
                self.metrics.queue_seconds.observe(start - b.asked)
            try:
                out = await loop.run_in_executor(self._executor, run_inputs, self.backend,
                                                 [b.inputs for b in batch])
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
                    b.future.set_result(StepOutput(out.device[i], out.host[i]))
