"""``python -m train bench``: samples/s of the data pipeline alone and of the
whole training loop, measured in one run on the same recording and config."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from models.device import resolve_device
from train.config import load_config
from train.data import WORKER_CONTEXT, StepBatches, build_datasets, to_model_inputs
from train.loop import fit


def pipeline_rate(config_name: str, data: list[str], batch_size: int, batches: int,
                  workers: int) -> float:
    config = load_config(config_name)
    m = config.model
    train_set, _, _ = build_datasets(data, [], (m.height, m.width), m.context_frames,
                                     m.control_dim, config.data.val_fraction)
    device = resolve_device("auto")
    loader = torch.utils.data.DataLoader(
        StepBatches(train_set, batch_size, batches, seed=0), batch_size=None,
        sampler=range(batches), num_workers=workers, pin_memory=device.type == "cuda",
        multiprocessing_context=WORKER_CONTEXT if workers > 0 else None)
    start = time.perf_counter()
    for batch in loader:
        to_model_inputs(batch, device, m.context_frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def loop_rate(config_name: str, data: list[str], batch_size: int, steps: int, warmup: int,
              precision: str) -> float:
    """Steps of the real loop (``fit``), timed after ``warmup`` steps, before the
    final checkpoint."""
    marks: dict[int, float] = {}

    def on_step(step: int, row: dict[str, float]) -> None:
        marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as run:
        config = load_config(config_name, {
            "data.recordings": data, "steps": steps, "batch_size": batch_size,
            "precision": precision, "eval_every": 10**9, "checkpoint_every": 10**9,
            "log_every": 10**9})
        fit(config, Path(run), "never", on_step)
    return (steps - 1 - warmup) * batch_size / (marks[steps - 1] - marks[warmup])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train bench",
        description="Samples/s of the data pipeline alone (cached frames -> batches on the "
                    "device) and of the full training loop, and their ratio. The pipeline "
                    "should be many times faster, so data never starves the model.")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="recording directory")
    p.add_argument("--config", default="tiny", help="training preset (default: tiny)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="training steps timed (default: 30)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the pipeline")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    loop = loop_rate(args.config, args.data, args.batch_size, args.steps, 5, args.precision)
    pipe = pipeline_rate(args.config, args.data, args.batch_size, 200, args.workers)
    figures = {"pipeline_samples_per_s": pipe, "loop_samples_per_s": loop,
               "ratio": pipe / loop, "batch_size": args.batch_size, "config": args.config,
               "precision": args.precision, "threads": torch.get_num_threads(),
               "device": str(resolve_device("auto"))}
    print(f"data pipeline alone  {pipe:10.0f} samples/s")
    print(f"full training loop   {loop:10.1f} samples/s  ({args.config}, batch {args.batch_size}, "
          f"{args.precision}, {figures['device']}, {figures['threads']} threads)")
    print(f"pipeline / loop      {pipe / loop:10.1f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
