"""The whole chain, one stage after another: record -> train -> evaluate ->
export -> serve -> report. Each stage leaves files behind and is skipped when
they are already there, so running the demo again reuses the recording and
the trained checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from demo.options import FRAME_SKIP, WORLD, DemoOptions, DemoResult

log = logging.getLogger(__name__)

VAL_SEED = 100_000  # held-out episodes: seeds training never saw


def _bar(options: DemoOptions, total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not options.progress,
                dynamic_ncols=True)


def recorded_steps(directory: Path) -> int:
    """Steps a recording's runs wrote (0 when there is none)."""
    from recording.format import read_meta

    if not (directory / "meta.json").is_file():
        return 0
    return sum(int(r.get("steps", 0)) for r in read_meta(directory).get("runs", []))


def record_stage(options: DemoOptions, directory: Path, steps: int, seed: int,
                 info: dict[str, Any]) -> None:
    """Record ``steps`` steps of the wander policy (the missing ones, when an
    earlier run was cut short: appended as new episodes)."""
    from play.policies import WanderPolicy
    from play.record import record
    from play.worlds import make_world

    have = recorded_steps(directory)
    info.update({"directory": str(directory), "steps": steps, "seed": seed})
    if have >= steps:
        info["reused"] = True
        log.info("reusing %s (%d steps)", directory, have)
        return
    world = make_world(WORLD, frame_skip=FRAME_SKIP)
    start = time.perf_counter()
    try:
        with _bar(options, steps - have, f"recording {directory.name}", "step") as bar:
            run_seed = seed + (1 if have else 0) * 7919  # a fresh stretch when appending
            record(world, WanderPolicy(len(world.control_names), seed=run_seed), directory,
                   steps - have, size=(64, 64), seed=run_seed, meta={"policy": "wander"},
                   progress=bar.update)
    finally:
        world.close()
    info["seconds"] = time.perf_counter() - start
    info["steps_per_s"] = (steps - have) / info["seconds"]


def train_stage(options: DemoOptions, data: Path, val: Path, info: dict[str, Any]) -> Path:
    """Train the preset for the time budget (resuming an earlier demo's run)."""
    from train.checkpoint import LATEST, load_checkpoint
    from train.config import load_config
    from train.loop import fit

    run = options.work / "run"
    overrides: dict[str, Any] = {"data.recordings": [str(data)],
                                 "data.val_recordings": [str(val)],
                                 "max_minutes": options.minutes, "device": options.device}
    if options.train_steps:
        overrides["steps"] = options.train_steps
        overrides["eval_every"] = max(1, options.train_steps // 4)
        overrides["checkpoint_every"] = max(1, options.train_steps // 4)
    config = load_config(options.config, overrides)
    preset_minutes = load_config(options.config).max_minutes
    if not options.train_steps and preset_minutes > 0:
        ratio = options.minutes / preset_minutes
        steps = max(10, round(config.steps * ratio))
        config = config.replace({
            "steps": steps, "eval_every": max(1, steps // 8),
            "checkpoint_every": max(1, steps // 8),
            "optim.warmup_steps": max(1, round(config.optim.warmup_steps * ratio))})
    if config.precision == "auto":  # bf16 trains about twice as fast on CPUs with AMX
        config = config.replace({"precision": "bf16"})
    info.update({"config": options.config, "steps": config.steps, "minutes": options.minutes,
                 "batch_size": config.batch_size, "precision": config.precision})
    done_file = run / "done.json"
    if done_file.is_file() and (run / LATEST).is_file():
        info.update(json.loads(done_file.read_text()))
        info["reused"] = True
        log.info("reusing the trained checkpoint %s", run / LATEST)
        return run / LATEST
    start = time.perf_counter()
    with _bar(options, config.steps, "training", "step") as bar:
        def on_step(step: int, row: dict[str, float]) -> None:
            bar.n = step
            if "val_psnr" in row:
                bar.set_postfix({"val PSNR": f"{row['val_psnr']:.2f}",
                                 "copy": f"{row['val_copy_psnr']:.2f}"}, refresh=False)
            bar.refresh()

        result = fit(config, run, "auto", on_step=on_step)
    state = load_checkpoint(run / LATEST)
    summary = {"trained_steps": int(state["step"]), "seconds": time.perf_counter() - start,
               "best_val_psnr": result.best_val_psnr}
    done_file.write_text(json.dumps(summary, indent=2) + "\n")
    info.update(summary)
    return run / LATEST


def eval_stage(options: DemoOptions, checkpoint: Path, val: Path, info: dict[str, Any]) -> Path:
    """Held-out metrics against copy-last-frame, the rollout GIF and the
    collapse check's free-running dream."""
    import torch

    from models.device import resolve_device
    from train.checkpoint import model_from_checkpoint, play_noise_level
    from train.data import load_frames
    from train.evaluate import evaluate

    out = options.work / "eval"
    device = resolve_device(options.device)
    model, state = model_from_checkpoint(checkpoint, map_location=device)
    c = model.config
    start = time.perf_counter()
    frames = load_frames(val, (c.height, c.width), c.control_dim)
    torch.manual_seed(0)
    horizons = (1, 4, 16, 64) if options.quick else (1, 4, 16, 64, 256)
    report = evaluate(model, [frames], device, out, horizons,
                      samples=128 if options.quick else 512,
                      rollouts=8 if options.quick else 32,
                      fps=float(frames.recording.meta.get("fps", 8.75)),
                      noise_level=play_noise_level(state),
                      collapse_steps=200 if options.quick else 1000,
                      realism_frames=200 if options.quick else 800)
    info.update({"report": report, "seconds": time.perf_counter() - start, "dir": str(out)})
    return out


def export_stage(options: DemoOptions, checkpoint: Path, info: dict[str, Any]) -> Path:
    """Export the checkpoint to a bundle, unless this very checkpoint was exported."""
    from export.bundle import sha256_file
    from export.exporter import export_bundle
    from export.manifest import MANIFEST, BundleError, Manifest

    bundle = options.work / "bundle"
    digest = sha256_file(checkpoint)
    if (bundle / MANIFEST).is_file():
        with contextlib.suppress(BundleError):  # a bundle this tool cannot read: export anew
            manifest = Manifest.read(bundle)
            if manifest.checkpoint.get("sha256") == digest:
                info.update({"reused": True, "parity": manifest.parity, "dir": str(bundle)})
                return bundle
    start = time.perf_counter()
    manifest = export_bundle(checkpoint, bundle)
    info.update({"seconds": time.perf_counter() - start, "parity": manifest.parity,
                 "dir": str(bundle)})
    return bundle


def scripted_path(frames: int) -> np.ndarray:
    """The client's stick path: walk forward, turn right, strafe left, turn left,
    look around, each for an equal share of the frames."""
    moves = [[0, 0.8, 0, 0], [0, 0.6, 0.8, 0], [-0.8, 0.3, 0, 0], [0, 0.6, -0.8, 0],
             [0, 0, 0.5, 0.6]]
    per = max(1, frames // len(moves))
    path = [moves[min(i // per, len(moves) - 1)] for i in range(frames)]
    return np.asarray(path, np.float32)


async def _serve(bundle: Path, frames: int, options: DemoOptions) -> dict[str, Any]:
    from export.runtime import load_backend
    from serve.bench import in_process_rate, run_clients
    from serve.client import DreamClient, decode_image
    from serve.server import DreamServer, ServerConfig

    backend = load_backend(bundle, "auto", options.device)
    server = DreamServer(backend, ServerConfig(host="127.0.0.1", port=0, max_sessions=8,
                                               max_batch=8))
    await server.start()
    try:
        url = f"ws://127.0.0.1:{server.port}/dream"
        client = await DreamClient.connect(url, mode="lockstep", encoding="png", seed=0)
        images = [decode_image(await client.frame())]
        latencies = []
        with _bar(options, frames, "playing through the server", "frame") as bar:
            for sticks in scripted_path(frames):
                t = time.perf_counter()
                images.append(decode_image(await client.step(sticks.tolist())))
                latencies.append((time.perf_counter() - t) * 1000.0)
                bar.update()
        await client.close()
        seconds = 2.0 if options.quick else 4.0
        in_proc = await asyncio.to_thread(in_process_rate, backend, seconds)
        runs = [await run_clients(server, n, seconds, "raw") for n in (1, 4)]
        return {"backend": f"{getattr(backend, 'name', '?')} on {backend.device}",
                "images": images, "frames": frames,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p95_ms": float(np.percentile(latencies, 95)),
                "in_process_fps": in_proc, "runs": runs}
    finally:
        await server.close()


def serve_stage(options: DemoOptions, bundle: Path, info: dict[str, Any]) -> None:
    """A dream server on loopback and a headless client that plays the
    scripted stick path; then a short benchmark of 1 and 4 clients."""
    from PIL import Image

    start = time.perf_counter()
    result = asyncio.run(_serve(bundle, options.frames, options))
    images = result.pop("images")
    gif = options.work / "served.gif"
    pics = [Image.fromarray(i).resize((i.shape[1] * 3, i.shape[0] * 3), Image.Resampling.NEAREST)
            for i in images]
    pics[0].save(gif, save_all=True, append_images=pics[1:], duration=80, loop=0)
    info.update(result)
    info.update({"gif": str(gif), "seconds": time.perf_counter() - start})


def run(options: DemoOptions, on_stage: Callable[[str], None] | None = None) -> DemoResult:
    """Every stage in order; returns what the report shows."""
    from demo.report import write_report

    result = DemoResult()
    from benchmarks.suite import machine
    from models.device import resolve_device

    result.stage("machine").update(machine(resolve_device(options.device)))
    total = time.perf_counter()

    def stage(name: str) -> dict[str, Any]:
        if on_stage is not None:
            on_stage(name)
        return result.stage(name)

    # Named by frame skip: a recording of another pace is another world to the model.
    data, val = (options.work / "recordings" / f"doom-skip{FRAME_SKIP}",
                 options.work / "recordings" / f"doom-val-skip{FRAME_SKIP}")
    record_stage(options, data, options.record_steps, 0, stage("record"))
    record_stage(options, val, options.val_steps, VAL_SEED, stage("record held-out"))
    checkpoint = train_stage(options, data, val, stage("train"))
    eval_stage(options, checkpoint, val, stage("evaluate"))
    bundle = export_stage(options, checkpoint, stage("export"))
    serve_stage(options, bundle, stage("serve"))
    result.stage("total")["seconds"] = time.perf_counter() - total
    write_report(result, options)
    return result
