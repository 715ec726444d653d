"""``python -m models``: print a model's size, cost and measured latency."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models.device import resolve_device
from models.presets import preset, preset_names
from models.summary import format_summary, summarize


def parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description="Build a world model from a preset and print its parameters, tokens, "
                    "GFLOPs per frame and measured latency (eager PyTorch).")
    parser.add_argument("--preset", default="tiny", choices=preset_names(),
                        help="preset, a file in configs/ (default: tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set attention_mode=interleaved "
                             "--set tokenizer_filters=32,64,128 (repeatable)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8],
                        help="batch sizes to time (default: 1 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's choice)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per batch size")
    parser.add_argument("--bf16", action="store_true",
                        help="time under bfloat16 autocast instead of float32")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    try:
        config = preset(args.preset, **parse_overrides(args.overrides))
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = str(resolve_device(args.device))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = summarize(config, tuple(args.batch), device, args.repeats,
                        torch.bfloat16 if args.bf16 else None)
    print(format_summary(args.preset, summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
