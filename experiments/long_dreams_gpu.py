#!/usr/bin/env python3
"""The long-dream ablation on one GPU, unattended and inside a hard time limit
(made for a lent GPU machine, which keeps nothing and may run 10 minutes):

1. record Doom shards for training and the held-out recording, in parallel,
   while the GPU times one step of each variant (``experiments.ablate``);
2. decode every recording's frame cache once;
3. train the variants side by side on the one GPU, each for the steps its own
   timing buys in ``--minutes``, every run also stopped (with a checkpoint) at
   the time left before the deadline;
4. score each on the held-out recording as ``python -m experiments.ablate`` does (copy-last,
   rollouts, the stick response, and here the collapse check for every run);
5. write the table, the logs and each model's EMA weights to ``--out``.

    python -m experiments.long_dreams_gpu --out "$OUT" --deadline 560

``--variant NAME BASE KEY=VALUE...`` adds a variant: BASE (an ablation variant)
with config overrides, e.g. ``--variant fft all-remedies loss.fft=1``. After
scoring, each run's collapse check is also run from every ``--sweep-starts``
entry and, for a latent model, every ``--sweep-seeds`` seed, held and fresh
(``sweep.json``, and one line a dream in the log). Recordings and finished runs
in ``--work`` are reused (a warm machine keeps them); a run directory there that
holds another configuration is refused: remove it, or give another ``--work``.

``gan`` is the all-remedies run with the conditional GAN loss from a quarter of
the way in; the planner does not time the discriminator, so that run gets
all-remedies' steps and spends more than the others (its report says how
long it took). docs/long-dreams.md has the figures of its runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.ablate import (  # noqa: E402
    VARIANTS,
    define_variants,
    plan,
    step_seconds,
    table,
    train_and_score,
)
from models.device import resolve_device  # noqa: E402
from train.checkpoint import model_from_checkpoint, model_weights, play_noise_level  # noqa: E402
from train.config import TrainConfig, load_config  # noqa: E402
from train.data import load_frames  # noqa: E402
from train.evaluate import collapse_sweep  # noqa: E402
from train.report import format_sweep  # noqa: E402

log = logging.getLogger("long_dreams_gpu")
HORIZONS = [1, 4, 16, 64, 256]
VAL_SEED = 100000  # the README's held-out recording


def gan_config(remedies: TrainConfig) -> TrainConfig:
    return remedies.replace({"gan.enabled": True, "gan.conditional": True,
                             "gan.start_step": remedies.steps // 4})


def record(work: Path, shards: int, shard_steps: int, val_steps: int,
           rest: float) -> list[subprocess.Popen[bytes]]:
    """The training shards rest ``rest`` of the time; the held-out recording is
    the README's (no rests), so its figures compare with earlier tables."""
    procs = []
    jobs = [(f"doom-{i}", i, shard_steps, rest) for i in range(shards)] + [
        ("doom-val", VAL_SEED, val_steps, 0.0)]
    for name, seed, steps, rests in jobs:
        if (work / name / "recording_log.jsonl").is_file():
            continue
        logf = (work / f"record-{name}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "play", "record", "--world", "doom:health_gathering",
             "--steps", str(steps), "--seed", str(seed), "--rest", str(rests),
             "--out", str(work / name), "--quiet"],
            cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT))
    return procs


def _cache(directory: str) -> str:
    frames = load_frames(directory, (64, 64))
    return f"{directory}: {len(frames.frames)} frames"


def run_one(args: argparse.Namespace) -> int:
    """The ``run NAME`` subcommand: train and score one planned variant."""
    planned = json.loads((args.work / "plan.json").read_text())
    config = TrainConfig.from_dict(planned[args.name])
    started = time.monotonic()
    init = args.init / f"{args.name}.pt" if args.init else None
    report = train_and_score(args.name, config, args.work / args.name,
                             list(config.data.val_recordings), HORIZONS, args.rollouts,
                             args.collapse_steps, align_context=4,
                             init=init if init is not None and init.is_file() else None)
    report["wall_seconds"] = time.monotonic() - started
    (args.work / args.name / "eval" / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.sweep_seeds and args.collapse_steps:
        sweep(args.work / args.name, list(config.data.val_recordings), args)
    return 0


def sweep(run: Path, val_dirs: list[str], args: argparse.Namespace) -> None:
    """The collapse check from every start and seed, held and (a latent model) fresh."""
    device = resolve_device(args.device)
    model, state = model_from_checkpoint(run / "latest.pt", map_location=device)
    c = model.config
    val = [load_frames(d, (c.height, c.width), c.control_dim) for d in val_dirs]
    results = {}
    for latent in ("hold", "fresh") if c.latent_size else ("hold",):
        runs = collapse_sweep(model, val, device, args.sweep_seeds, args.sweep_starts,
                              args.collapse_steps, play_noise_level(state), latent)
        results[latent] = runs
        print(f"{run.name}: {format_sweep(runs)}", flush=True)
    (run / "eval" / "sweep.json").write_text(json.dumps(results, indent=2) + "\n")


def pack(work: Path, out: Path, names: list[str], budget_mb: float = 56) -> None:
    """Each run's EMA weights as a checkpoint ``train eval`` loads (float32 while
    they fit in ``budget_mb``, else float16), plus one archive of the rest."""
    used = 0.0
    for name in names:
        latest = work / name / "latest.pt"
        if not latest.is_file():
            continue
        state = torch.load(latest, map_location="cpu", weights_only=True)
        weights = model_weights(state)
        size = sum(t.numel() * 4 for t in weights.values()) / 1e6
        if used + size > budget_mb:
            weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
            size /= 2
        used += size
        torch.save({"config": state["config"], "model": weights, "step": state["step"]},
                   out / f"{name}.pt")
    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.suffix in {".json", ".csv", ".log", ".md", ".png"} \
                    and "frames" not in path.parts and ".tinydreams-cache" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(work)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="all", choices=["all", "run"])
    p.add_argument("name", nargs="?", help="run: the variant")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu-ablation")))
    p.add_argument("--work", type=Path, default=Path("/tmp/long-dreams"))
    p.add_argument("--variants", nargs="+", default=["baseline", "all-remedies"],
                   help="variants to train side by side: the ablation's, gan (see above), "
                        "and any --variant")
    p.add_argument("--variant", nargs="+", action="append", default=[],
                   metavar="NAME BASE KEY=VALUE",
                   help="define a variant: an ablation variant with config overrides")
    p.add_argument("--rest", type=float, default=0.1,
                   help="share of the training shards' steps every stick rests (play record)")
    p.add_argument("--sweep-seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="latent seeds of the collapse sweep (none: no sweep)")
    p.add_argument("--sweep-starts", type=int, nargs="+", default=[0, 1000, 2000],
                   help="held-out entries the sweep's dreams start from")
    p.add_argument("--shards", type=int, default=8, help="training recordings (seeds 0..N-1)")
    p.add_argument("--shard-steps", type=int, default=10000)
    p.add_argument("--val-steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--minutes", type=float, default=2.0,
                   help="each variant's budget: the steps its timed step buys in this time")
    p.add_argument("--deadline", type=float, default=560,
                   help="seconds from start by which everything is packed")
    p.add_argument("--reserve", type=float, default=90,
                   help="seconds kept after training for scoring and packing")
    p.add_argument("--rollouts", type=int, default=256)
    p.add_argument("--collapse-steps", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--init", type=Path, metavar="DIR",
                   help="each variant starts from DIR/NAME.pt's weights (an earlier run's "
                        "packed weights) with a fresh optimizer and schedule")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "run":
        return run_one(args)
    try:
        defined = define_variants(args.variant)
    except ValueError as err:
        p.error(str(err))
    unknown = set(args.variants) - set(VARIANTS) - set(defined) - {"gan"}
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}: define them with --variant")

    start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    recorders = record(args.work, args.shards, args.shard_steps, args.val_steps, args.rest)
    shards = [str(args.work / f"doom-{i}") for i in range(args.shards)]
    val = str(args.work / "doom-val")
    base = load_config("tiny", {"data.recordings": shards, "data.val_recordings": [val],
                                "precision": "bf16", "batch_size": args.batch_size,
                                "device": args.device, "data.workers": 2})
    planned_names = [n for n in args.variants if n != "gan"]
    if "gan" in args.variants and "all-remedies" not in planned_names:
        planned_names.append("all-remedies")
    known = {**VARIANTS, **defined}
    seconds = step_seconds({n: base.replace(known[n]) for n in planned_names})
    log.info("step seconds: %s", seconds)
    for proc in recorders:
        if proc.wait() != 0:
            log.error("a recording failed: see %s", args.work)
            return 1
    log.info("recorded in %.0f s", time.monotonic() - start)
    with ProcessPoolExecutor(len(shards) + 1) as pool:
        for line in pool.map(_cache, [*shards, val]):
            log.info("cache %s", line)

    cap = (args.deadline - args.reserve - (time.monotonic() - start)) / 60
    configs = plan(base, planned_names, args.minutes, seconds, defined)
    if "gan" in args.variants:
        configs["gan"] = gan_config(configs["all-remedies"])
    planned = {n: configs[n].replace({"max_minutes": cap}).to_dict() for n in args.variants}
    (args.work / "plan.json").write_text(json.dumps(planned, indent=2) + "\n")
    log.info("training %s side by side, each stopped after %.1f min at most: %s",
             args.variants, cap, {n: c["steps"] for n, c in planned.items()})
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    runs = {}
    for name in args.variants:
        logf = (args.work / f"{name}.log").open("wb")
        runs[name] = subprocess.Popen(
            [sys.executable, __file__, "run", name, "--work", str(args.work),
             *(["--init", str(args.init)] if args.init else []),
             "--rollouts", str(args.rollouts), "--collapse-steps", str(args.collapse_steps),
             "--device", args.device, "--sweep-starts", *map(str, args.sweep_starts),
             "--sweep-seeds", *map(str, args.sweep_seeds)],
            cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
    for name, proc in runs.items():
        left = args.deadline - 20 - (time.monotonic() - start)
        try:
            code = proc.wait(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.info("%s exited %s", name, code)

    results = {}
    for name in args.variants:
        report_path = args.work / name / "eval" / "eval.json"
        if report_path.is_file():
            report = json.loads(report_path.read_text())
            results[name] = {"config": planned[name], "steps": report["steps"], "eval": report}
    if results:
        text = table(results, HORIZONS)
        (args.work / "ablation.md").write_text(text + "\n")
        print(text)
        for name, r in results.items():
            c = r["eval"].get("collapse") or {}
            print(f"{name}: {r['steps']} steps in {r['eval'].get('wall_seconds', 0):.0f} s; "
                  f"collapse passed {c.get('passed')}: freeze {c.get('freeze_step')}, "
                  f"blow-out {c.get('blowout_step')}, detail {c.get('detail_step')}")
    pack(args.work, args.out, args.variants)
    log.info("done in %.0f s", time.monotonic() - start)
    return 0 if len(results) == len(args.variants) else 1


if __name__ == "__main__":
    sys.exit(main())
