"""``python -m experiments.ablate``: train the same preset with each stability remedy on
and off, and with each way of feeding in the controls, on the same recording
and the same compute budget, then print one table.

Fair budgets: the runs differ in cost per step (an unroll of N steps costs
about N one-step steps), so each run's step count is set from a short timing
of its own one-step cost on this machine, before anything is trained: every
run then gets the same minutes of compute, yet counts steps, so the results
do not depend on what else the machine does while they train.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models import WorldModel
from models.device import resolve_device
from train.config import TrainConfig, load_config, parse_overrides
from train.evaluate import paired_gain
from train.objective import unrolled_loss
from train.optim import autocast_dtype

log = logging.getLogger(__name__)

# The remedies, as config overrides (what the "all remedies" run uses): K context
# frames, noise augmentation, and multi-step training as a roll-in on a quarter of
# each batch (the 1 -> 2 -> 4 unroll with a gradient through every step, and a
# roll-in on the whole batch, cost 2-3 times as much a step for less at a fixed
# budget: the "plus-unroll" and "full-rollin" variants measure that).
REMEDIES: dict[str, Any] = {
    "model.context_frames": 4,
    "model.noise_conditioning": True, "noise.max_level": 0.05, "noise.play_level": 0.01,
    "unroll.schedule": "1", "unroll.boundaries": "", "unroll.rollin": 8,
    "unroll.rollin_share": 0.25,
}
NO_CONTEXT = {"model.context_frames": 1}
NO_NOISE = {"model.noise_conditioning": False, "noise.max_level": 0.0, "noise.play_level": 0.0}
NO_MULTISTEP = {"unroll.schedule": "1", "unroll.boundaries": "", "unroll.rollin": 0}

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {**NO_CONTEXT, **NO_NOISE, **NO_MULTISTEP},
    "all-remedies": {**REMEDIES},
    "no-context": {**REMEDIES, **NO_CONTEXT},
    "no-noise": {**REMEDIES, **NO_NOISE},
    "no-multistep": {**REMEDIES, **NO_MULTISTEP},
    "full-rollin": {**REMEDIES, "unroll.rollin_share": 1.0},
    "plus-unroll": {**REMEDIES, "unroll.schedule": "1,2,4", "unroll.boundaries": "0.5,0.8",
                    "unroll.rollin_share": 1.0},
    "concat": {**REMEDIES, "model.attention_mode": "concat"},
    "interleaved": {**REMEDIES, "model.attention_mode": "interleaved"},
    "adaln": {**REMEDIES, "model.attention_mode": "adaln"},
}


def define_variants(specs: list[list[str]]) -> dict[str, dict[str, Any]]:
    """``--variant NAME BASE KEY=VALUE...`` specs: each a variant of ``VARIANTS``
    with config overrides, by name."""
    defined: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if len(spec) < 2 or spec[1] not in VARIANTS:
            raise ValueError(f"--variant {' '.join(spec)}: give NAME, then one of "
                             f"{', '.join(VARIANTS)}, then KEY=VALUE overrides")
        defined[spec[0]] = {**VARIANTS[spec[1]],
                            **parse_overrides(spec[2:], f"--variant {spec[0]}")}
    return defined


def mean_unroll(config: TrainConfig) -> float:
    """Average unroll length over the run (the curriculum's weighted mean)."""
    total = 1000
    return sum(config.unroll.length(s, total) for s in range(total)) / total


class _UnitTimer:
    """Times one optimizer step with a one-step unroll of a config's model, on
    random inputs, as the config trains (device, precision, batch size)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        m = config.model
        self.model = WorldModel(m).to(self.device).train()
        # A codebook model's step also finds each target patch's code: time it with
        # random codes (their values do not change the cost).
        self.coder = self.model if m.output_mode == "codebook" else None
        if self.coder is not None:
            book = torch.rand(self.coder.codebook.shape, device=self.device)
            self.coder.set_codebook(book, book * 0.1 if m.codebook_grain else None)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.amp = autocast_dtype(config.precision, self.device)
        B, d = config.batch_size, self.device
        self.context = torch.rand(B, m.context_frames, 3, m.height, m.width, device=d)
        self.controls = torch.rand(B, 1, m.control_dim, device=d) * 2 - 1
        self.targets = torch.rand(B, 1, 3, m.height, m.width, device=d)
        self.generator = torch.Generator(d).manual_seed(0)
        self.time()  # warm up

    def time_forward(self) -> float:
        """Seconds of one forward pass without gradients (a roll-in step)."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp,
                                             enabled=self.amp is not None):
            self.model(self.context, self.controls[:, 0], None)
        if cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def time(self) -> float:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            terms, _ = unrolled_loss(self.model, self.context, self.controls, self.targets,
                                     self.config, 1, self.generator, self.coder)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()  # type: ignore[no-untyped-call]
        self.opt.step()
        if cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def step_seconds(configs: dict[str, TrainConfig], rounds: int = 4) -> dict[str, float]:
    """Mean seconds of one optimizer step of each config over its run: a
    one-step step times the curriculum's mean unroll, plus the roll-in's mean
    forward passes. Each timing is the fastest of ``rounds`` rounds, every
    config timed in turn, so a burst of load on the machine cannot make one
    variant look dearer than the others."""
    timers = {name: _UnitTimer(c) for name, c in configs.items()}
    unit = {name: float("inf") for name in timers}
    forward = dict(unit)
    for _ in range(rounds):
        for name, timer in timers.items():
            unit[name] = min(unit[name], timer.time())
            forward[name] = min(forward[name], timer.time_forward())
    return {name: unit[name] * mean_unroll(c)
            + forward[name] * c.unroll.rollin / 2 * c.unroll.rollin_share
            for name, c in configs.items()}


def plan(base: TrainConfig, names: list[str], minutes: float,
         seconds: dict[str, float] | None = None,
         overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, TrainConfig]:
    """Each variant's config, its steps set so it costs ``minutes`` here
    (``seconds``: each variant's step time, when already measured; ``overrides``:
    variants beyond ``VARIANTS``, by name)."""
    known = {**VARIANTS, **(overrides or {})}
    variants = {name: base.replace(known[name]) for name in names}
    if seconds is None:
        seconds = step_seconds(variants)
    configs = {}
    for name, config in variants.items():
        steps = max(20, int(60 * minutes / seconds[name]))
        configs[name] = config.replace({
            "steps": steps, "max_minutes": 0, "optim.warmup_steps": max(5, steps // 20),
            "eval_every": max(1, steps // 4), "checkpoint_every": max(1, steps // 4)})
        log.info("%s: %.3f s a step (mean unroll %.2f, roll-in up to %d) -> %d steps", name,
                 seconds[name], mean_unroll(config), config.unroll.rollin, steps)
    return configs


def table(results: dict[str, dict[str, Any]], horizons: list[int]) -> str:
    """The ablation as a Markdown table: PSNR (dB) at each horizon, and the gain
    over copy-last-frame on the same samples (and, under the table, the PSNR of
    copy-last-frame and of the held-out mean picture); then how much each stick axis
    matters (the stick response: L1 with the axis flipped over L1 with the true
    sticks, 1.00 when the model ignores it)."""
    head = ["run", "K", "noise", "unroll", "controls", "steps", "1-step"] + [
        f"{h}-step" for h in horizons if h > 1] + ["stick response"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        c = r["config"]
        unroll = "→".join(str(n) for n in c["unroll"]["schedule"])
        if c["unroll"].get("rollin"):
            unroll += f", roll-in ≤{c['unroll']['rollin']}"
            share = c["unroll"].get("rollin_share", 1.0)
            if share < 1:
                unroll += f" on {share:.0%}"
        noise = f"≤{c['noise']['max_level']:g} (play {c['noise']['play_level']:g})" if c[
            "model"]["noise_conditioning"] else "off"
        cells = [name, str(c["model"]["context_frames"]), noise, unroll,
                 c["model"]["attention_mode"], str(r["steps"])]
        one = r["eval"]["one_step"]
        cells.append(f"{one['psnr']:.2f} ({one['psnr_gain_db']:+.2f})")
        for h in horizons:
            if h > 1:
                roll = r["eval"]["rollout"].get(str(h))
                cells.append("–" if roll is None else
                             f"{roll['psnr']:.2f} ({roll['psnr_gain_db']:+.2f})")
        sticks = r["eval"].get("sticks") or {}
        cells.append(", ".join(f"{k.replace('_', ' ')} {v['flip_l1_ratio']:.2f}"
                               for k, v in sticks.items()) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    ref = next(iter(results.values()))["eval"]  # every run is scored on the same samples
    for row, key in (("copy-last-frame", "copy_psnr"), ("mean frame", "mean_psnr")):
        if key not in ref["one_step"]:  # a report from before the mean frame was scored
            continue
        lines.append(f"| {row} | | | | | | " + " | ".join(
            [f"{ref['one_step'][key]:.2f}"] + [
                f"{ref['rollout'][str(h)][key]:.2f}" for h in horizons
                if h > 1 and str(h) in ref["rollout"]]) + " | |")
    return "\n".join(lines + leads(results, horizons))


def leads(results: dict[str, dict[str, Any]], horizons: list[int]) -> list[str]:
    """Each run's rollout PSNR over a reference run's, sample by sample on the same
    samples, as the mean lead ± 1.96 standard errors: how much of a difference the
    choice of rollout samples could make.

    The reference is the run before it of the same training seed (``baseline``
    first, then the table's order), so a run is compared with the baseline it
    shares its initial weights and batches with; a run with none before it is
    compared with the first (and so are two seeds of the baseline)."""
    order = sorted(results, key=lambda run: run != "baseline")  # stable: baseline first
    first = order[0]
    base = results[first]["eval"]["rollout"]
    shown = [h for h in horizons if h > 1 and "psnr_samples" in base.get(str(h), {})]
    if not shown or len(results) < 2:
        return []

    def seed(run: str) -> Any:
        return results[run].get("config", {}).get("seed")

    lines = ["", "| lead (paired, ±95%) | over | "
             + " | ".join(f"{h}-step" for h in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for run in results:
        if run == first:
            continue
        before = order[:order.index(run)]
        ref = next((r for r in before if seed(r) == seed(run)), first)
        cells = []
        for h in shown:
            mine = results[run]["eval"]["rollout"].get(str(h), {}).get("psnr_samples")
            theirs = results[ref]["eval"]["rollout"].get(str(h), {}).get("psnr_samples")
            if mine is None or theirs is None or len(mine) != len(theirs):
                cells.append("–")  # scored on other samples: no pairs
                continue
            lead, se = paired_gain(mine, theirs)
            cells.append(f"{lead:+.2f} ±{1.96 * se:.2f}")
        lines.append(f"| {run} | {ref} | " + " | ".join(cells) + " |")
    return lines


def _differences(a: dict[str, Any], b: dict[str, Any],
                 prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two nested config dicts."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out


def train_and_score(name: str, config: TrainConfig, run: Path, val_dirs: list[str],
                    horizons: list[int], rollouts: int, collapse_steps: int,
                    align_context: int, init: Path | None = None) -> dict[str, Any]:
    """Train one variant into ``run`` (resuming, or not at all when it finished;
    a new run starts from ``init``'s weights when given) and score its last
    checkpoint on the held-out recordings; the report is kept as
    ``run/eval/eval.json`` and reused when there is one."""
    from tqdm import tqdm

    from train.checkpoint import model_from_checkpoint, play_noise_level
    from train.data import load_frames
    from train.evaluate import evaluate
    from train.loop import fit
    from train.report import format_report

    stored = run / "config.json"
    if stored.is_file():  # a finished or interrupted run is reused: only of this config
        # Read through the config class, so that a field added since the run was
        # written takes its default rather than counting as a change.
        try:
            written = TrainConfig.from_dict(json.loads(stored.read_text())).to_dict()
        except ValueError as err:  # a field since removed, or a value no longer valid
            raise ValueError(f"{stored} is not a configuration of this version ({err}): "
                             "remove the run, or train into another directory") from err
        changed = _differences(written, config.to_dict())
        changed.pop("max_minutes", None)  # a time cap does not change what is trained
        if changed:
            raise ValueError(
                f"{run} holds a run of another configuration ("
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in
                            ((k, *v) for k, v in sorted(changed.items())))
                + "): remove it, or train into another directory")
    report_path = run / "eval" / "eval.json"
    if report_path.is_file():
        loaded: dict[str, Any] = json.loads(report_path.read_text())
        # Scored on the same targets as the runs beside it (a run scored alone with
        # K=1 picks other targets than one beside a K=4 run) and as many rollouts,
        # so leads pair sample by sample: else scored again.
        if (loaded.get("align_context"), loaded.get("rollouts")) == (align_context, rollouts):
            return loaded
    bar = tqdm(total=config.steps, desc=name, unit="step")

    def on_step(step: int, row: dict[str, float]) -> None:
        bar.n = step
        bar.refresh()

    started = time.monotonic()
    fit(config, run, on_step=on_step, init=init)
    bar.close()
    log.info("%s trained in %.1f min", name, (time.monotonic() - started) / 60)
    device = resolve_device(config.device)
    model, state = model_from_checkpoint(run / "latest.pt", map_location=device)
    c = model.config
    val = [load_frames(d, (c.height, c.width), c.control_dim) for d in val_dirs]
    report = evaluate(model, val, device, run / "eval", horizons, rollouts=rollouts,
                      noise_level=play_noise_level(state), collapse_steps=collapse_steps,
                      align_context=align_context)
    report["steps"] = state["step"]
    report["align_context"] = align_context
    report["rollouts"] = rollouts
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{name}\n{format_report(report)}", flush=True)
    return report


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.ablate",
        description="Train one preset with each remedy for long dreams on and off (context "
                    "frames, noise augmentation, multi-step training) and with each way of "
                    "feeding the controls (concat, interleaved, adaln), all on the same data "
                    "and the same compute budget; evaluate each on held-out data and print one "
                    "table. Finished runs are reused when the command is run again.")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="training recording (repeatable)")
    p.add_argument("--val-data", action="append", required=True, metavar="DIR",
                   help="held-out recording to evaluate on (repeatable)")
    p.add_argument("--config", default="tiny", help="base TOML preset (default: tiny)")
    p.add_argument("--minutes", type=float, default=7.0,
                   help="compute budget of each run on this machine (default: 7)")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"),
                   help="directory of the runs and the table (default: runs/ablation)")
    p.add_argument("--only", nargs="+", metavar="NAME", default=list(VARIANTS),
                   help=f"run only these variants (of {', '.join(VARIANTS)}, any --variant, "
                        "and any planned in --out by an earlier command)")
    p.add_argument("--variant", nargs="+", action="append", default=[],
                   metavar="NAME BASE KEY=VALUE",
                   help="define another variant: BASE (one of the above) with config "
                        "overrides, e.g. --variant k2 all-remedies model.context_frames=2 "
                        "(repeatable; name it in --only to run it)")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--rollouts", type=int, default=256,
                   help="rollout start points per horizon (fewer beyond 64 steps; default: "
                        "256; the table's last part says how far the choice of samples could "
                        "move each lead)")
    p.add_argument("--precision", default="bf16", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--collapse-steps", type=int, default=1000,
                   help="collapse check length for the all-remedies run (0: skip)")
    args = p.parse_args(argv)
    try:
        defined = define_variants(args.variant)
    except ValueError as err:
        p.error(str(err))
    plan_path = args.out / "plan.json"
    planned = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    # A variant planned by an earlier command in --out is known by its name there.
    unknown = [n for n in args.only if n not in VARIANTS and n not in defined
               and n not in planned]
    if unknown:
        p.error(f"unknown variants {', '.join(unknown)}: one of {', '.join(VARIANTS)}, "
                f"one planned in {plan_path}, or define them with --variant")

    base = load_config(args.config, {"data.recordings": args.data,
                                     "data.val_recordings": args.val_data,
                                     "precision": args.precision})
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [n for n in args.only if n not in planned]
    if todo:  # time every variant first, on a quiet machine, then keep the plan
        for name, config in plan(base, todo, args.minutes, overrides=defined).items():
            planned[name] = config.to_dict()
        plan_path.write_text(json.dumps(planned, indent=2) + "\n")
    max_k = max(int(planned[n]["model"]["context_frames"]) for n in args.only)
    results: dict[str, dict[str, Any]] = {}
    for name in args.only:
        report = train_and_score(
            name, TrainConfig.from_dict(planned[name]), args.out / name, args.val_data,
            args.horizons, args.rollouts, args.collapse_steps if name == "all-remedies" else 0,
            max_k)
        results[name] = {"config": planned[name], "steps": report["steps"], "eval": report}
    text = table(results, args.horizons)
    (args.out / "ablation.md").write_text(text + "\n")
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"runs, reports and the table in {args.out}")
    return 0



def cli(argv: list[str] | None = None) -> int:
    """``main`` with the errors a user can cause printed, exit status 2."""
    from recording.format import RecordingError
    from train.checkpoint import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except (ValueError, CheckpointError, RecordingError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
