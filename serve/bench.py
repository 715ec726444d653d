"""``python -m serve bench``: N lockstep clients over loopback against the model
called in-process, measured in one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.dream import LARGEST_BATCH, Dream
from export.runtime import load_backend
from serve.client import DreamClient
from serve.server import DreamServer, ServerConfig


def in_process_rate(backend: Any, seconds: float) -> float:
    """Frames/s of one dream stepped in-process (its state where the model runs,
    each frame brought to the host, as a session's are), no network."""
    dream = Dream.of(backend, seed=0)
    dream.reset(backend.start_frames()[0])
    controls = np.zeros(backend.manifest.control_dim, np.float32)
    for _ in range(5):
        dream.step(backend, controls)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dream.step(backend, controls)
        n += 1
    return n / (time.perf_counter() - start)


async def run_clients(server: DreamServer, clients: int, seconds: float,
                      encoding: str) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{server.port}/dream"
    conns = [await DreamClient.connect(url, mode="lockstep", encoding=encoding)
             for _ in range(clients)]
    for c in conns:
        await c.frame()
    batches_before = (server.metrics.batch_size.n, server.metrics.batch_size.total)
    rng = np.random.default_rng(0)

    async def drive(c: DreamClient) -> list[float]:
        latencies: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            await c.step(rng.uniform(-1, 1, c.control_dim).astype(np.float32))
            latencies.append((time.perf_counter() - t) * 1000.0)
        return latencies

    start = time.perf_counter()
    per_client = await asyncio.gather(*[drive(c) for c in conns])
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.close()
    calls = server.metrics.batch_size.n - batches_before[0]
    total = server.metrics.batch_size.total - batches_before[1]
    every = sorted(x for lat in per_client for x in lat)
    rates = [len(lat) / elapsed for lat in per_client]
    return {"clients": clients, "aggregate_fps": sum(rates), "per_client_fps": rates,
            "p50_ms": float(np.percentile(every, 50)), "p95_ms": float(np.percentile(every, 95)),
            "p99_ms": float(np.percentile(every, 99)), "mean_batch": total / max(calls, 1),
            "spread": (max(rates) - min(rates)) / statistics.mean(rates)}


async def bench(bundle: Path, backend_name: str, device: str, counts: list[int],
                seconds: float, encoding: str, bf16: bool = False) -> dict[str, Any]:
    backend = load_backend(bundle, backend_name, device, autocast=True if bf16 else None)
    server = DreamServer(backend, ServerConfig(port=0, max_sessions=max(counts) + 1,
                                               max_batch=min(max(counts), LARGEST_BATCH)))
    await server.start()
    try:
        results: dict[str, Any] = {"backend": getattr(backend, "name", backend_name)
                                   + (" bf16" if bf16 else ""),
                                   "device": getattr(backend, "device", device),
                                   "encoding": encoding, "runs": []}
        results["in_process_fps"] = await asyncio.to_thread(in_process_rate, backend, seconds)
        for n in counts:
            results["runs"].append(await run_clients(server, n, seconds, encoding))
        results["in_process_fps_after"] = await asyncio.to_thread(in_process_rate, backend,
                                                                  seconds)
        return results
    finally:
        await server.close()


def format_results(r: dict[str, Any]) -> str:
    base = (r["in_process_fps"] + r["in_process_fps_after"]) / 2
    one = r["runs"][0]["aggregate_fps"]
    lines = [f"in-process model, batch 1: {base:.1f} frames/s ({r['backend']} on {r['device']}, "
             f"mean of before and after: {r['in_process_fps']:.1f}, "
             f"{r['in_process_fps_after']:.1f})",
             f"{'clients':>7} {'aggregate':>10} {'per client (min-max)':>22} {'p50':>7} "
             f"{'p95':>7} {'p99':>7} {'batch':>6} {'vs 1':>6} {'vs in-proc':>10}"]
    for run in r["runs"]:
        lo, hi = min(run["per_client_fps"]), max(run["per_client_fps"])
        lines.append(f"{run['clients']:>7} {run['aggregate_fps']:>10.1f} {lo:>10.1f}-{hi:<11.1f}"
                     f"{run['p50_ms']:>7.1f} {run['p95_ms']:>7.1f} {run['p99_ms']:>7.1f} "
                     f"{run['mean_batch']:>6.2f} {run['aggregate_fps'] / one:>5.2f}x "
                     f"{run['aggregate_fps'] / base:>9.2f}x")
    lines.append("latencies in ms per lockstep step (send INPUT -> FRAME received); "
                 f"{r['encoding']} frames")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m serve bench",
        description="Start a server on loopback, drive it with N concurrent lockstep clients "
                    "for a fixed time each, and print per-client and aggregate frames/s, step "
                    "latency percentiles and the mean batch size, beside the model's own "
                    "frames/s called in-process in the same run.")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=5.0, help="per client count")
    p.add_argument("--encoding", default="raw", choices=["raw", "jpeg", "png"])
    p.add_argument("--bf16", action="store_true", help="torch backend under bf16 autocast")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    results = asyncio.run(bench(args.bundle, args.backend, args.device, args.clients,
                                args.seconds, args.encoding, args.bf16))
    print(format_results(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
