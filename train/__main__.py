"""``python -m train``: train a world model, evaluate it, or benchmark the loop."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from export.cli import add_device_arg, add_dream_args
from models.presets import preset_names

EPILOG = """\
other commands:
  python -m train eval --checkpoint RUN/latest.pt --data DIR   evaluate against copy-last-frame
  python -m train bench --data DIR                             samples/s: data pipeline vs loop
  python -m train config-docs > docs/configuration.md          the configuration reference

examples:
  python -m train --data recordings/doom --run-dir runs/doom
  python -m train --config tiny --data recordings/doom --val-data recordings/doom-val \\
      --minutes 20 --precision bf16
  python -m train --data recordings/doom --set model.context_frames=4 --set loss.ssim=0.1
  torchrun --standalone --nproc_per_node=4 -m train --config base \\
      --data recordings/doom --run-dir runs/base

Every field of the configuration (see configs/*.toml and train/config.py) can
be set with --set SECTION.FIELD=VALUE; the resolved configuration is written to
RUN/config.json and into every checkpoint.
"""


def fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the world model on recordings. Resumes from RUN/latest.pt when "
                    "there is one; checkpoints are written atomically as RUN/latest.pt, "
                    "RUN/best.pt (best validation PSNR) and the last few RUN/step-N.pt.")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="recording directory to train on (repeat to combine several)")
    p.add_argument("--val-data", action="append", default=[], metavar="DIR",
                   help="recording directory to validate on (repeatable); without it the last "
                        "10%% of each recording's episodes are held out")
    p.add_argument("--config", default="tiny",
                   help=f"TOML preset in configs/ ({', '.join(preset_names())}), a path, or "
                        "auto: tiny-rounds on a CPU, small or base on a GPU by its memory and "
                        "the recordings' frame size (default: tiny)")
    p.add_argument("--run-dir", dest="run", type=Path, default=Path("runs/default"),
                   help="run directory for checkpoints and logs (default: runs/default; "
                        "named so that torchrun does not take it for its --run-path)")
    p.add_argument("--resume", default="auto",
                   help="auto: continue from RUN/latest.pt if present; never: start over "
                        "(the directory must hold no checkpoint); or a checkpoint path")
    p.add_argument("--init", type=Path, metavar="CHECKPOINT",
                   help="start a new run from this checkpoint's weights (its EMA), with a fresh "
                        "optimizer and schedule: fine-tune on new recordings, or train a "
                        "finished run further; the model config must match")
    p.add_argument("--steps", type=int, help="optimizer steps (the cosine schedule's length)")
    p.add_argument("--minutes", type=float,
                   help="stop after this much wall time, with a checkpoint (0: no limit)")
    p.add_argument("--batch-size", type=int, help="samples per step (per process)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 (or fp16 + GradScaler) on CUDA, fp32 on CPU; bf16 is also "
                        "about 2x faster on CPUs with AMX")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--compile", action="store_true", default=None, help="use torch.compile")
    p.add_argument("--grad-checkpointing", action="store_true", default=None,
                   help="recompute transformer layers in backward to save memory")
    p.add_argument("--workers", type=int, help="DataLoader workers (-1: 0 on CPU, 4 on CUDA)")
    p.add_argument("--seed", type=int, help="seed of weights and batch sampling")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set optim.warmup_steps=50 "
                        "--set gan.enabled=true --set model.num_registers=4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _auto_preset(args: argparse.Namespace) -> str:
    """``--config auto``: the preset for this machine and these recordings."""
    import torch

    from models.device import resolve_device
    from train.config import auto_preset

    device = resolve_device(args.device or "auto")
    memory = (torch.cuda.get_device_properties(device).total_memory / 2**30
              if device.type == "cuda" else None)
    name, why = auto_preset(list(args.data or []), memory)
    print(f"--config auto: {name} ({why})")
    return name


def _fit(argv: list[str]) -> int:
    from tqdm import tqdm

    from train.checkpoint import LATEST
    from train.config import load_config, parse_overrides, recordings_control_dim
    from train.loop import fit

    args = fit_parser().parse_args(argv)
    overrides: dict[str, Any] = parse_overrides(args.overrides)
    flags = {"steps": args.steps, "max_minutes": args.minutes, "batch_size": args.batch_size,
             "optim.lr": args.lr, "precision": args.precision, "device": args.device,
             "compile": args.compile, "model.grad_checkpointing": args.grad_checkpointing,
             "data.workers": args.workers, "seed": args.seed}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if args.data:
        overrides["data.recordings"] = args.data
    if args.val_data:
        overrides["data.val_recordings"] = args.val_data
    if args.config == "auto":
        args.config = _auto_preset(args)
    config = load_config(args.config, overrides)
    for d in [*config.data.recordings, *config.data.val_recordings]:
        if not Path(d).is_dir():
            raise ValueError(f"recording directory {d} does not exist")
    # The model takes the controls the recordings hold (sticks, triggers, buttons).
    dim = recordings_control_dim([*config.data.recordings, *config.data.val_recordings])
    if dim and "model.control_dim" not in overrides and dim != config.model.control_dim:
        config = load_config(args.config, {**overrides, "model.control_dim": dim})
    if args.resume == "never" and (args.run / LATEST).exists():
        raise ValueError(f"{args.run} already holds a run; pick another --run-dir or --resume auto")

    bars: dict[str, Any] = {}  # made on first use, so early errors print alone

    def on_cache(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = tqdm(total=total, unit="frame", desc=f"caching {name}",
                              disable=args.quiet, leave=False)
        bars[name].n = done
        bars[name].refresh()

    def on_step(step: int, row: dict[str, float]) -> None:
        if "train" not in bars:
            bars["train"] = tqdm(total=config.steps, initial=step - 1, unit="step",
                                 disable=args.quiet, dynamic_ncols=True)
        bar = bars["train"]
        bar.n = step
        if row:
            shown = {k: f"{row[k]:.4g}" for k in ("loss", "samples_per_s", "val_psnr",
                                                  "val_copy_psnr") if k in row}
            bar.set_postfix(shown, refresh=False)
        bar.refresh()

    try:
        result = fit(config, args.run, args.resume, on_step, on_cache, init=args.init)
    finally:
        for b in bars.values():
            b.close()
    best = f", best validation PSNR {result.best_val_psnr:.2f} dB" if result.best_val_psnr else ""
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        print(f"trained to step {result.step}{best}; checkpoints in {args.run}")
    return 0


def _eval(argv: list[str]) -> int:
    import torch

    from models.device import resolve_device
    from train.checkpoint import model_from_checkpoint, play_noise_level
    from train.data import load_frames
    from train.evaluate import collapse_sweep, evaluate
    from train.report import format_report, format_sweep

    p = argparse.ArgumentParser(
        prog="python -m train eval",
        description="One-step PSNR, SSIM and L1, and autoregressive rollouts (predictions fed "
                    "back) at several horizons, each beside the copy-last-frame baseline on the "
                    "same samples; then a collapse check: a free-running dream under scripted "
                    "sticks, checked for freezing, blowing out, losing detail and boiling "
                    "against the recording's own statistics. Writes eval.json, rollout.png "
                    "(ground truth over dream), rollout.gif, freerun.png (every 100th frame) "
                    "and freerun.gif.")
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint (.pt)")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="recording(s) to evaluate on, all of it (use held-out episodes)")
    p.add_argument("--out", type=Path, help="report directory (default: next to the checkpoint)")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 16, 64, 256],
                   help="rollout lengths to report (default: 1 4 16 64 256)")
    p.add_argument("--samples", type=int, default=512, help="one-step samples")
    p.add_argument("--rollouts", type=int, default=64,
                   help="rollout start points per horizon (fewer beyond 64 steps)")
    p.add_argument("--collapse-steps", type=int, default=1000,
                   help="length of the collapse check's free-running dream (0: skip it)")
    p.add_argument("--realism-frames", type=int, default=800,
                   help="dream frames each band of the realism figure judges against the "
                        "held-out game (0: skip it)")
    add_dream_args(p)
    p.add_argument("--collapse-seeds", type=int, nargs="+", metavar="SEED",
                   help="also run the collapse check once for each of these latent seeds (a "
                        "latent model's dream depends on its draw) and each --collapse-starts "
                        "entry, and report how many dreams pass")
    p.add_argument("--collapse-starts", type=int, nargs="+", default=[0], metavar="ENTRY",
                   help="with --collapse-seeds: the recording entries the dreams start from "
                        "(default: 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    add_device_arg(p)
    args = p.parse_args(argv)
    if min(args.collapse_starts) < 0:
        p.error("--collapse-starts: entries count from 0")
    device = resolve_device(args.device)
    model, state = model_from_checkpoint(args.checkpoint, ema=not args.no_ema, map_location=device)
    c = model.config
    recordings = [load_frames(d, (c.height, c.width), c.control_dim) for d in args.data]
    out = args.out or args.checkpoint.parent / f"eval-step{state['step']}"
    fps = float(recordings[0].recording.meta.get("fps", 8.75))
    level = play_noise_level(state) if args.noise_level is None else args.noise_level
    torch.manual_seed(0)
    report = evaluate(model, recordings, device, out, args.horizons, args.samples,
                      args.rollouts, fps, level, args.collapse_steps, latent=args.latent,
                      realism_frames=args.realism_frames)
    report["checkpoint"] = {"path": str(args.checkpoint), "step": state["step"]}
    print(format_report(report))
    if args.collapse_seeds:
        report["collapse_sweep"] = collapse_sweep(
            model, recordings, device, args.collapse_seeds, args.collapse_starts,
            args.collapse_steps or 1000, level, args.latent)
        print(format_sweep(report["collapse_sweep"]))
        (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report, strips and GIFs in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = ("fit", "eval", "bench", "config-docs")
    command = argv[0] if argv and argv[0] in commands else "fit"
    if argv and argv[0] == command:
        argv = argv[1:]
    from recording.format import RecordingError
    from train.checkpoint import CheckpointError
    from train.loop import TrainingDiverged

    try:
        if command == "eval":
            return _eval(argv)
        if command == "config-docs":
            from train.config_docs import generate

            print(generate(), end="")
            return 0
        if command == "bench":
            from train.bench import main as bench_main

            return bench_main(argv)
        return _fit(argv)
    except (ValueError, CheckpointError, RecordingError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with the same command (the last checkpoint is intact)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
