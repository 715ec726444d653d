#!/usr/bin/env python3
"""The model's side of the GPU serving figures, with torch alone (no recording,
no bundle, no ONNX Runtime): made for a lent GPU machine, whose image has torch
but none of the serving extras.

For each preset (random weights: speed does not depend on training), the torch
backend's step at each batch size, eager kernel by kernel beside replayed from
CUDA graphs ("replayed"; off CUDA, the same padded static buffers, uncaptured),
inputs already on the device; then ``step_dreams`` over that many dreams, their
state on the device beside the same dreams kept on the host.
Every figure is a median of round-robin rounds in one run.

    python -m experiments.device_dreams_gpu --presets tiny base --json "$OUT/figures.json"
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.dream import HOST, Dream, arrays_of, step_dreams
from export.torch_backends import TorchBackend
from models import WorldModel
from train.config import load_config


def _timed(fn: Callable[[], Any], device: str) -> float:
    """Milliseconds of one call, the device's queued work included."""
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0


def _medians(runs: dict[str, Callable[[], Any]], rounds: int, device: str) -> dict[str, float]:
    for fn in runs.values():  # warm up: graph captures, autotuning
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(_timed(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(preset: str, batches: list[int], rounds: int, device: str) -> dict[str, Any]:
    """ms per step of ``preset`` at each batch: model calls and whole dream steps."""
    model = WorldModel(load_config(preset).model)
    eager, graphed = (TorchBackend(model, device=device) for _ in range(2))
    eager.use_graphs(False)
    graphed.use_graphs(True)
    assert arrays_of(graphed) is not HOST
    return {"preset": preset, "device": device,
            "batches": {b: _batch(eager, graphed, b, rounds) for b in batches}}


def _batch(eager: TorchBackend, graphed: TorchBackend, b: int, rounds: int) -> dict[str, Any]:
    m, rng = eager.manifest, np.random.default_rng(0)
    frames = eager.arrays.put(rng.random((b, *m.frame_shape), np.float32))
    controls = eager.arrays.put(rng.uniform(-1, 1, (b, m.control_dim)))
    latent = eager.arrays.put(rng.standard_normal((b, m.latent_dim))) if m.latent_dim else None
    sticks = rng.uniform(-1, 1, (b, m.control_dim)).astype(np.float32)
    start = rng.random(m.frame_shape, np.float32)
    on_device = [Dream.of(graphed, seed=i) for i in range(b)]
    on_host = [Dream(m, seed=i) for i in range(b)]
    for dream in (*on_device, *on_host):
        dream.reset(start)
    ms = _medians({
        "eager": lambda: eager.step(frames, controls, None, latent),
        "graphs": lambda: graphed.step(frames, controls, None, latent),
        "dreams on device": lambda: step_dreams(graphed, on_device, sticks),
        "dreams on host": lambda: step_dreams(graphed, on_host, sticks),
    }, rounds, eager.device)
    diff = (graphed.step(frames, controls, None, latent)
            - eager.step(frames, controls, None, latent)).abs().max()
    return {"ms": ms, "graphs_vs_eager_max_abs": float(diff)}


def format_table(results: list[dict[str, Any]]) -> str:
    lines = ["| preset | batch | eager ms | replayed ms | x eager | dreams on device ms | "
             "on host ms | frames/s on device | max diff |", "|---" * 9 + "|"]
    for r in results:
        for b, row in r["batches"].items():
            ms = row["ms"]
            lines.append(
                f"| {r['preset']} | {b} | {ms['eager']:.2f} | {ms['graphs']:.2f} | "
                f"{ms['eager'] / ms['graphs']:.2f}x | {ms['dreams on device']:.2f} | "
                f"{ms['dreams on host']:.2f} | {1000.0 * int(b) / ms['dreams on device']:.0f} | "
                f"{row['graphs_vs_eager_max_abs']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.device_dreams_gpu",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "base"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "the CPU"
    print(f"torch {torch.__version__} on {where}", flush=True)
    results = []
    for preset in args.presets:
        results.append(measure(preset, args.batches, args.rounds, args.device))
        print(format_table(results[-1:]), flush=True)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
