"""The command-line flags of every CLI that runs a model, declared once: the
server, the player, ``train eval`` and the benchmarks take them from here.
Declaring a flag imports nothing heavy; ``export.runtime.backend_from_args``
loads the model they describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.dream import LATENT_MODES

BACKENDS = ("auto", "torch", "torchscript", "onnxruntime")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def add_dream_args(p: argparse.ArgumentParser) -> None:
    """``--noise-level`` and ``--latent``: how a model is stepped in a dream."""
    p.add_argument("--noise-level", type=float, default=None,
                   help="context noise level a noise-conditioned model is told (default: the "
                        "model's, from training's noise.play_level)")
    p.add_argument("--latent", default="hold", choices=LATENT_MODES,
                   help="a model with a latent: hold one latent for each dream (default: one "
                        "world that stands still when the sticks rest; a reset draws another) "
                        "or draw a fresh one every step (every frame a new draw: it shimmers)")


def add_model_args(p: argparse.ArgumentParser, bf16: bool = False) -> None:
    """``--bundle``, ``--backend``, ``--device``, ``--noise-level``, ``--latent``
    (and ``--bf16`` where the torch backend's autocast is offered)."""
    p.add_argument("--bundle", type=Path, required=True,
                   help="bundle directory (python -m export) or a checkpoint .pt")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: ONNX Runtime when installed, else TorchScript; a checkpoint "
                        "runs in eager torch")
    add_device_arg(p)
    if bf16:
        p.add_argument("--bf16", action="store_true",
                       help="torch backend: bf16 autocast on the CPU too (approximate; on "
                            "CPUs with AMX about twice the frames/s at batch 8)")
        p.add_argument("--fp16", action="store_true",
                       help="ONNX Runtime on TensorRT: fp16 engines (approximate; the "
                            "difference from the CPU is logged on load)")
    add_dream_args(p)


def add_fps_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--fps", type=float, default=None,
                   help=f"{what} per second (default: the recording's, from the model)")
