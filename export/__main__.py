"""``python -m export``: checkpoint -> bundle, and ``python -m export bench BUNDLE``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _export(argv: list[str]) -> int:
    from export.exporter import export_bundle

    p = argparse.ArgumentParser(
        prog="python -m export",
        epilog="Then: python -m export bench BUNDLE (every backend side by side).",
        description="Export a training checkpoint to a bundle: model.onnx (dynamic batch), "
                    "model.ts (TorchScript), weights.pt, start frames from the recording and "
                    "manifest.json. ONNX Runtime and TorchScript are checked against eager "
                    "PyTorch at batch 1 and 8 (max abs difference <= 1e-4) and over a 16-step "
                    "rollout (<= 1e-3); the export fails, without a manifest, above that.")
    p.add_argument("--checkpoint", type=Path, required=True, help="e.g. runs/tiny/latest.pt")
    p.add_argument("--out", type=Path, required=True, help="bundle directory, e.g. bundles/doom")
    p.add_argument("--recording", type=Path, default=None,
                   help="recording for the start frames (default: the checkpoint's training "
                        "recording)")
    p.add_argument("--start-frames", type=int, default=8, help="start contexts to include")
    p.add_argument("--raw-weights", action="store_true",
                   help="export the raw weights instead of the EMA")
    args = p.parse_args(argv)
    manifest = export_bundle(args.checkpoint, args.out, args.recording, args.start_frames,
                             use_ema=not args.raw_weights)
    print(f"bundle written to {args.out} (step {manifest.checkpoint['step']}, "
          f"{manifest.weights} weights, ONNX via the {manifest.versions['onnx_exporter']} "
          f"exporter)")
    for name in ("onnxruntime", "torchscript"):
        figures = ", ".join(f"{k} {v:.1e}" for k, v in manifest.parity[name].items())
        print(f"parity {name:<12} {figures}")
    return 0


def _bench(argv: list[str]) -> int:
    from export.bench import bench, format_bench, save

    p = argparse.ArgumentParser(
        prog="python -m export bench",
        description="Latency at batch 1 and frames/s at batch 1, 8 and 32 for every backend "
                    "available here (eager PyTorch, TorchScript, ONNX Runtime, and bf16 "
                    "approximations with their difference to eager), measured round-robin in "
                    "one run, with the ratio to eager.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=7, help="round-robin rounds")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile with bf16 (slow to start)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    results = bench(args.bundle, tuple(args.batch), args.rounds, args.device, args.compile)
    print(format_bench(results))
    if args.json:
        save(results, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from export.manifest import BundleError
    from recording.format import RecordingError
    from train.checkpoint import CheckpointError

    try:
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        return _export(argv)
    except (BundleError, CheckpointError, RecordingError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
