"""``python -m export bench BUNDLE``: every backend this machine has, side by side."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.dream import arrays_of
from export.exporter import max_diff
from export.runtime import Backend, load_backend


def _backends(bundle: Path, device: str, compile: bool) -> dict[str, tuple[Backend, bool]]:
    """name -> (backend, exact float32?). On CUDA, eager runs kernel by kernel
    and again replayed from CUDA graphs (the torch backends' default there)."""
    plain = load_backend(bundle, "torch", device)
    plain.use_graphs(False)  # type: ignore[attr-defined]
    found: dict[str, tuple[Backend, bool]] = {"eager": (plain, True)}
    if plain.device == "cuda":
        found["eager + CUDA graphs"] = (load_backend(bundle, "torch", device), True)
    approx = load_backend(bundle, "torch", device)
    approx._autocast = torch.bfloat16  # type: ignore[attr-defined]
    found["eager bf16 (approx)"] = (approx, False)
    found["torchscript"] = (load_backend(bundle, "torchscript", device), True)
    with contextlib.suppress(ImportError):  # the export extra may be absent
        found["onnxruntime"] = (load_backend(bundle, "onnxruntime", device), True)
    if compile:
        compiled = load_backend(bundle, "torch", device, compile=True)
        compiled._autocast = torch.bfloat16  # type: ignore[attr-defined]
        found["compile bf16 (approx)"] = (compiled, False)
    return found


def bench(bundle: str | Path, batches: tuple[int, ...] = (1, 8, 32), rounds: int = 7,
          device: str = "cpu", compile: bool = False) -> dict[str, Any]:
    """Median ms per call for each backend and batch size, measured round-robin
    (each round runs every backend), so machine drift hits all of them alike.
    Each backend steps inputs already where it keeps its dreams (on a GPU, its
    tensors there), as a server's dreams are, and a call ends when its frames
    are written there."""
    bundle = Path(bundle)
    backends = _backends(bundle, device, compile)
    eager = backends["eager"][0]
    m = eager.manifest
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"bundle": str(bundle), "device": device,
                               "threads": torch.get_num_threads(), "backends": {}}
    for name, (_, exact) in backends.items():
        results["backends"][name] = {"exact": exact, "ms": {}, "frames_per_s": {}}
    for b in batches:
        frames = rng.random((b, *m.frame_shape), np.float32)
        controls = rng.uniform(-1, 1, (b, m.control_dim)).astype(np.float32)
        # Every backend draws from the same latent, so "max diff" compares one draw.
        z = rng.standard_normal((b, m.latent_dim), dtype=np.float32) if m.latent_dim else None
        reference = eager.step(frames, controls, latent=z)
        calls = max(2, 16 // b)
        times: dict[str, list[float]] = {name: [] for name in backends}
        placed = {name: _placed(backend, frames, controls, z)
                  for name, (backend, _) in backends.items()}
        for name, (backend, _) in backends.items():  # warm up, and check agreement
            for _ in range(3):
                out = backend.step(*placed[name])
            results["backends"][name].setdefault("max_abs_vs_eager", 0.0)
            results["backends"][name]["max_abs_vs_eager"] = max(
                results["backends"][name]["max_abs_vs_eager"],
                max_diff(arrays_of(backend).get(out), reference))
        for _ in range(rounds):
            for name, (backend, _) in backends.items():
                arrays = arrays_of(backend)
                for _ in range(calls):
                    start = time.perf_counter()
                    backend.step(*placed[name])
                    arrays.settle()
                    times[name].append((time.perf_counter() - start) * 1000.0)
        for name, t in times.items():
            ms = statistics.median(t)
            results["backends"][name]["ms"][b] = ms
            results["backends"][name]["frames_per_s"][b] = 1000.0 * b / ms
    return results


def _placed(backend: Backend, frames: np.ndarray, controls: np.ndarray,
            latent: np.ndarray | None) -> tuple[Any, Any, None, Any]:
    """A step's inputs where ``backend`` keeps its dreams' arrays."""
    arrays = arrays_of(backend)
    return (arrays.put(frames), arrays.put(controls), None,
            None if latent is None else arrays.put(latent))


def format_bench(results: dict[str, Any]) -> str:
    eager = results["backends"]["eager"]["frames_per_s"]
    batches = list(eager)
    head = (f"{'backend':<22}{'ms @1':>8}" + "".join(f"{'fps @' + str(b):>10}" for b in batches)
            + "".join(f"{'x eager @' + str(b):>12}" for b in batches) + f"{'max |diff|':>12}")
    lines = [f"{results['bundle']} on {results['device']}, {results['threads']} threads; "
             f"median of round-robin runs", head]
    for name, r in results["backends"].items():
        fps = r["frames_per_s"]
        lines.append(f"{name:<22}{r['ms'][batches[0]]:>8.1f}"
                     + "".join(f"{fps[b]:>10.0f}" for b in batches)
                     + "".join(f"{fps[b] / eager[b]:>11.2f}x" for b in batches)
                     + f"{r['max_abs_vs_eager']:>12.1e}")
    return "\n".join(lines)


def save(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")
