"""``python -m experiments.data_scaling``: how much recording a world needs.

Records one long stretch of a Doom scenario with the wander policy (and a
held-out stretch from unseen seeds), then trains the same preset at the same
budget on its first 5k, 10k, 20k and 40k steps, and evaluates each run on the
held-out recording: one-step PSNR of the most likely frame beside copy-last,
and the realism figure at its step bands. Prints one table and writes
``OUT/data_scaling.json``.

A subset is a recording directory whose log holds the first N lines of the
full log and whose ``frames/`` links to the full recording's, so nothing is
copied. Every stage is skipped when its files are there, so a second run
only prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from recording.format import FRAMES_DIR, LOG_NAME, META_NAME


def _run(args: list[str]) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True)


def record(out: Path, world: str, steps: int, seed: int, frame_skip: int) -> None:
    if (out / LOG_NAME).exists():
        return
    _run(["-m", "play", "record", "--world", world, "--steps", str(steps), "--out", str(out),
          "--seed", str(seed), "--size", "64", "--frame-skip", str(frame_skip), "--quiet"])


def subset(full: Path, out: Path, steps: int) -> Path:
    """A recording of the first ``steps`` lines of ``full`` (frames linked)."""
    if not (out / LOG_NAME).exists():
        out.mkdir(parents=True, exist_ok=True)
        lines = (full / LOG_NAME).read_text(encoding="utf-8").splitlines(keepends=True)
        (out / META_NAME).write_text((full / META_NAME).read_text(encoding="utf-8"),
                                     encoding="utf-8")
        if not (out / FRAMES_DIR).exists():
            os.symlink((full / FRAMES_DIR).resolve(), out / FRAMES_DIR)
        (out / LOG_NAME).write_text("".join(lines[:steps]), encoding="utf-8")
    return out


def train_and_evaluate(data: Path, val: Path, run: Path, args: argparse.Namespace
                       ) -> dict[str, Any]:
    checkpoint = run / "latest.pt"
    if not (run / "done").exists():
        _run(["-m", "train", "--config", args.config, "--data", str(data), "--val-data",
              str(val), "--run-dir", str(run), "--precision", args.precision,
              "--steps", str(args.train_steps), "--minutes", "0", "--seed", "0", "--quiet",
              "--set", f"optim.warmup_steps={max(1, args.train_steps // 28)}"])
        (run / "done").touch()
    report = run / "eval" / "eval.json"
    if not report.exists():
        _run(["-m", "train", "eval", "--checkpoint", str(checkpoint), "--data", str(val),
              "--out", str(report.parent), "--horizons", "1", "16", "--rollouts", "32",
              "--collapse-steps", "0", "--realism-frames", str(args.realism_frames)])
    return dict(json.loads(report.read_text(encoding="utf-8")))


def summarise(steps: int, report: dict[str, Any]) -> dict[str, Any]:
    one = report["one_step"]
    bands = {name: band["accuracy"] for name, band in report.get("realism", {}).items()
             if name.startswith("steps")}
    return {"steps": steps, "psnr": one.get("likely_psnr", one["psnr"]),
            "copy_last_psnr": one["copy_psnr"], "realism": bands}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/data-scaling"))
    p.add_argument("--world", default="doom:health_gathering")
    p.add_argument("--frame-skip", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 40000])
    p.add_argument("--val-steps", type=int, default=2500)
    p.add_argument("--config", default="tiny-rounds")
    p.add_argument("--train-steps", type=int, default=1050,
                   help="optimizer steps of every run (the demo's budget: 1,050)")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--realism-frames", type=int, default=400)
    args = p.parse_args(argv)
    full, val = args.out / "recordings" / "full", args.out / "recordings" / "val"
    record(full, args.world, max(args.sizes), 0, args.frame_skip)
    record(val, args.world, args.val_steps, 100_000, args.frame_skip)
    rows = []
    for steps in sorted(args.sizes):
        data = subset(full, args.out / "recordings" / f"first-{steps}", steps)
        report = train_and_evaluate(data, val, args.out / f"run-{steps}", args)
        rows.append(summarise(steps, report))
    (args.out / "data_scaling.json").write_text(json.dumps(rows, indent=2) + "\n",
                                                encoding="utf-8")
    bands = list(dict.fromkeys(b for row in rows for b in row["realism"]))
    print("| recorded steps | PSNR, 1 step | copy-last | " + " | ".join(
        f"realism, {b}" for b in bands) + " |")
    print("|---|---|---|" + "---|" * len(bands))
    for row in rows:
        print(f"| {row['steps']:,} | {row['psnr']:.2f} | {row['copy_last_psnr']:.2f} | "
              + " | ".join(f"{100 * row['realism'].get(b, float('nan')):.0f}%"
                           for b in bands) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
