"""A run's logs: ``metrics.csv`` always, TensorBoard when it is installed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

CSV_FIELDS = ["step", "seconds", "lr", "unroll", "loss", "l1", "mse", "sobel", "fft", "ssim",
              "crps", "ce", "gan_g", "gan_d", "samples_per_s", "val_psnr", "val_copy_psnr",
              "val_ssim", "val_l1"]


def csv_writer(path: Path) -> tuple[Any, csv.DictWriter[str]]:
    header = None
    if path.exists():  # a resumed run keeps its file's columns, even an older version's
        with path.open(newline="") as old:
            header = next(csv.reader(old), None)
    f = path.open("a", newline="")
    writer = csv.DictWriter(f, fieldnames=header or CSV_FIELDS, extrasaction="ignore",
                            restval="")
    if not header:
        writer.writeheader()
    return f, writer


def tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))
