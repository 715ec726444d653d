"""Checkpoints: written atomically, kept as ``latest`` + the last N + ``best``,
loaded with ``weights_only=True``, and refused when the model does not match."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from models.config import WorldModelConfig

LATEST = "latest.pt"
BEST = "best.pt"
_STEP_FILE = re.compile(r"step-(\d+)\.pt$")
# Fields that change neither the weights' shapes nor their meaning.
RUNTIME_FIELDS = frozenset({"dropout", "grad_checkpointing"})


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or for another model."""


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_with_link(src: Path, dst: Path) -> None:
    """Point ``dst`` at ``src``'s data atomically (a hard link, else a copy)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int,
                    keep_last: int = 3, best: bool = False) -> Path:
    """Write ``step-NNNNNNN.pt`` (temporary file, fsync, rename), point ``latest.pt``
    (and ``best.pt`` if ``best``) at it, and drop step files beyond the last
    ``keep_last``. A crash at any moment leaves every name it finds whole."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"step-{step:07d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _replace_with_link(path, run_dir / LATEST)
    if best:
        _replace_with_link(path, run_dir / BEST)
    _fsync_dir(run_dir)
    steps = sorted(run_dir.glob("step-*.pt"))
    for old in steps[: max(0, len(steps) - keep_last)]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") \
            from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a TinyDreams checkpoint")
    return state


def find_resume(run_dir: str | Path, resume: str) -> Path | None:
    """``auto``: the run's ``latest.pt`` if any; ``never``: None; else a path."""
    if resume == "never":
        return None
    if resume == "auto":
        latest = Path(run_dir) / LATEST
        return latest if latest.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint")
    return path


def model_config_differences(saved: dict[str, Any], current: WorldModelConfig) -> list[str]:
    """``field: saved -> current`` for every field that changes the weights."""
    now = current.to_dict()
    defaults = WorldModelConfig().to_dict()  # fields added since the checkpoint was written
    saved = {k: saved.get(k, defaults.get(k)) for k in set(saved) | set(defaults)}
    keys = sorted((set(saved) | set(now)) - RUNTIME_FIELDS)
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def check_compatible(state: dict[str, Any], current: WorldModelConfig, path: Path,
                     start: bool = False) -> None:
    """Refuse a checkpoint of another model, naming the fields that differ
    (``start``: it was given as a new run's starting weights, not to resume)."""
    diffs = model_config_differences(state["config"]["model"], current)
    if start:  # a new run may give the model a latent input: only a new layer, left as built
        diffs = [d for d in diffs if not d.startswith("latent_dim: 0 ->")]
    if diffs:
        advice = ("Start from a checkpoint of this model, or set the same model fields." if start
                  else "Start a new --run-dir, or --resume never.")
        raise CheckpointError(
            f"{path} was trained with another model; refusing to "
            f"{'start from it' if start else 'resume'}. Differing fields "
            f"(checkpoint -> now): {'; '.join(diffs)}. {advice}")


def model_from_checkpoint(path: str | Path, ema: bool = True,
                          map_location: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the model a checkpoint holds (the EMA weights when present)."""
    from models import WorldModel

    state = load_checkpoint(path, map_location)
    model = WorldModel(WorldModelConfig.from_dict(state["config"]["model"]))
    model.load_state_dict(model_weights(state, ema))
    return model.to(map_location).eval(), state


def model_weights(state: dict[str, Any], ema: bool = True) -> dict[str, Any]:
    """A checkpoint's model weights: its EMA when it has one (and ``ema``)."""
    weights: dict[str, Any] = state["ema"] if ema and state.get("ema") is not None else state[
        "model"]
    return weights


def play_noise_level(state: dict[str, Any]) -> float:
    """The context noise level a checkpoint's model is told at play time (0 for
    models without noise conditioning, or from before it existed)."""
    return float(state["config"].get("noise", {}).get("play_level", 0.0))


def list_steps(run_dir: str | Path) -> list[int]:
    return sorted(int(m.group(1)) for p in Path(run_dir).glob("step-*.pt")
                  if (m := _STEP_FILE.search(p.name)))
