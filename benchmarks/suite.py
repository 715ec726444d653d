"""Every stage timed beside its alternatives, in one run, as ratios:

1. model latency per backend (eager, TorchScript, ONNX Runtime) at batch 1/8/32;
2. the data pipeline against the training step, samples/s;
3. serve: aggregate frames/s of 1-16 lockstep clients against the model in-process;
4. FLOPs per frame, and the GFLOP/s each backend achieves against this
   machine's measured matmul peak.

On a GPU the same code runs the CUDA backends (device ``auto``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

WORLD = "doom:health_gathering"


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(),
                            "cpus": len(os.sched_getaffinity(0)),
                            "threads": torch.get_num_threads(), "torch": str(torch.__version__),
                            "python": platform.python_version(), "device": str(device)}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                seconds: float = 2.0) -> float:
    """GFLOP/s of square ``n x n`` matmuls, the best of repeated timings: what
    this machine's BLAS reaches on the most favourable shape."""
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    a @ b  # warm up
    while time.perf_counter() < end:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def prepare(work: Path, bundle: Path | None, device: str,
            preset: str = "tiny") -> tuple[Path, Path]:
    """A recording and a bundle to measure. Uses ``bundle`` (and its training
    recording) when given; else records 2,000 steps at the preset's frame size,
    trains ``preset`` for 30 steps and exports it: speed does not depend on how
    well a model is trained."""
    from export.exporter import export_bundle
    from export.manifest import Manifest
    from play.policies import WanderPolicy
    from play.record import record
    from play.worlds import make_world
    from train.loop import fit

    if bundle is not None:
        checkpoint = Path(Manifest.read(bundle).checkpoint["path"])
        from train.checkpoint import load_checkpoint

        recordings = load_checkpoint(checkpoint)["config"]["data"]["recordings"]
        return Path(recordings[0]), bundle
    from train.config import load_config

    size = (load_config(preset).model.height, load_config(preset).model.width)
    rec = work / f"recording-{size[0]}x{size[1]}"
    if not (rec / "meta.json").is_file():
        world = make_world(WORLD)
        try:
            policy = WanderPolicy(len(world.control_names), seed=0)
            record(world, policy, rec, 2000, size=size, seed=0)
        finally:
            world.close()
    out = work / f"bundle-{preset}"
    if not (out / "manifest.json").is_file():
        config = load_config(preset, {"data.recordings": [str(rec)], "steps": 30,
                                      "eval_every": 10**9, "checkpoint_every": 10**9,
                                      "precision": "bf16" if device == "cpu" else "auto",
                                      "device": device})
        run = work / f"run-{preset}"
        fit(config, run, "never" if not run.exists() else "auto")
        export_bundle(run / "latest.pt", out)
    return rec, out


def flops_per_frame(bundle: Path) -> float:
    from export.runtime import load_backend
    from models.summary import flop_counts

    backend = load_backend(bundle, "torch", "cpu")
    return float(flop_counts(backend.model)["total"])  # type: ignore[attr-defined]


def run(work: Path, bundle: Path | None = None, device: str = "auto", quick: bool = False,
        log_line: Any = print, preset: str = "tiny") -> dict[str, Any]:
    """Run every benchmark; returns the figures (``format_markdown`` prints them).
    A GPU is measured at batches of 1, 16 and 64 and with as many clients; a CPU
    at 1, 8 and 32, with 1-16 clients."""
    from export.bench import bench as backend_bench
    from models.device import resolve_device
    from serve.bench import bench as serve_bench
    from train.bench import loop_rate, pipeline_rate

    dev = resolve_device(device)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(dev), "quick": quick}
    log_line(f"machine: {results['machine']}")
    rec, bundle = prepare(work, bundle, device, preset)
    results["bundle"] = str(bundle)
    gpu = dev.type == "cuda"

    log_line("== matmul peak")
    peak = {"fp32": matmul_peak(dev, torch.float32),
            "bf16": matmul_peak(dev, torch.bfloat16)}
    results["matmul_peak_gflops"] = peak
    log_line(f"   {peak}")

    log_line("== model latency per backend")
    batches = (1, 16, 64) if gpu else (1, 8, 32)
    models = backend_bench(bundle, batches, rounds=3 if quick else 7, device=dev.type)
    gflop = flops_per_frame(bundle)
    results["gflops_per_frame"] = gflop
    for name, r in models["backends"].items():
        dtype = "bf16" if "bf16" in name else "fp32"
        r["achieved_gflops"] = {b: fps * gflop for b, fps in r["frames_per_s"].items()}
        r["efficiency"] = {b: g / peak[dtype] for b, g in r["achieved_gflops"].items()}
        r["peak_used"] = dtype
    results["models"] = models

    log_line("== data pipeline vs training step")
    precision = "bf16" if dev.type == "cpu" else "auto"
    steps = 12 if quick else 30
    loop = loop_rate(preset, [str(rec)], 32, steps, 4, precision)
    pipe = pipeline_rate(preset, [str(rec)], 32, 100 if quick else 300, 0)
    results["train"] = {"pipeline_samples_per_s": pipe, "loop_samples_per_s": loop,
                        "ratio": pipe / loop, "batch_size": 32, "precision": precision}

    log_line("== serve: lockstep clients vs in-process")
    counts = [1, 16, 64] if gpu else [1, 2, 4, 8, 16]
    results["serve"] = asyncio.run(serve_bench(bundle, "auto", dev.type, counts,
                                               1.5 if quick else 4.0, "raw"))
    return results


def format_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpus']} CPUs, {m['threads']} torch threads"
    models = r["models"]["backends"]
    batches = list(next(iter(models.values()))["frames_per_s"])
    eager = models["eager"]["frames_per_s"]
    lines = [f"Measured on {where}; torch {m['torch']}, Python {m['python']}; one run, every "
             f"ratio inside it.", "",
             f"### Model: frames/s per backend ({r['gflops_per_frame']:.3f} GFLOPs per frame)",
             "",
             "| backend | ms @1 | " + " | ".join(f"batch {b}" for b in batches) + " | vs eager @"
             + "/".join(map(str, batches)) + " | GFLOP/s @" + str(batches[-1])
             + " | of matmul peak | max diff from eager |",
             "|---|" + "---|" * (len(batches) + 5)]
    for name, b in models.items():
        fps = b["frames_per_s"]
        lines.append(
            f"| {name} | {b['ms'][batches[0]]:.2f} | "
            + " | ".join(f"{fps[x]:.0f}" for x in batches) + " | "
            + " / ".join(f"{fps[x] / eager[x]:.2f}x" for x in batches)
            + f" | {b['achieved_gflops'][batches[-1]]:.1f} | "
            f"{b['efficiency'][batches[-1]]:.1%} ({b['peak_used']}) | "
            f"{b['max_abs_vs_eager']:.1e} |")
    peak = r["matmul_peak_gflops"]
    lines += ["", "Matmul peak (2048x2048): " + ", ".join(
        f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()) + ".", ""]
    t = r["train"]
    lines += ["### Training: data pipeline vs training step", "",
              "| data pipeline alone | full training loop | ratio |", "|---|---|---|",
              f"| {t['pipeline_samples_per_s']:.0f} samples/s | {t['loop_samples_per_s']:.1f} "
              f"samples/s (batch {t['batch_size']}, {t['precision']}) | {t['ratio']:.0f}x |", ""]
    s = r["serve"]
    base = (s["in_process_fps"] + s["in_process_fps_after"]) / 2
    one = s["runs"][0]["aggregate_fps"]
    lines += [f"### Serving: lockstep clients over loopback ({s['backend']} on {s['device']}, "
              f"{s['encoding']} frames)", "",
              f"In-process model at batch 1: {base:.1f} frames/s.", "",
              "| clients | frames/s, all clients | slowest client | vs 1 client | "
              "vs in-process | p50 ms | p95 ms | mean batch |", "|---|---|---|---|---|---|---|---|"]
    for run_ in s["runs"]:
        lines.append(f"| {run_['clients']} | {run_['aggregate_fps']:.1f} | "
                     f"{min(run_['per_client_fps']):.1f} | "
                     f"{run_['aggregate_fps'] / one:.2f}x | {run_['aggregate_fps'] / base:.2f}x | "
                     f"{run_['p50_ms']:.1f} | {run_['p95_ms']:.1f} | {run_['mean_batch']:.2f} |")
    return "\n".join(lines)


def np_default(value: Any) -> Any:
    """JSON for numpy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
