"""The ablation runner: one budget per variant, one table, each run paired with
the baseline of its own seed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.train.helpers import baby_config, moving_square_recording

ROOT = Path(__file__).resolve().parents[2]


def test_ablation_gives_every_variant_one_budget_and_prints_one_table(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec", episodes=3, steps=30)
    val = moving_square_recording(tmp_path / "val", episodes=1, steps=30, seed=1)
    baby = tmp_path / "baby.toml"
    baby.write_text('batch_size = 4\nval_batches = 1\nlog_every = 5\n[model]\n'
                    'height = 16\nwidth = 16\nembed_dim = 32\ndepth = 2\nnum_heads = 2\n'
                    'tokenizer_filters = [8, 16]\ndecoder_filters = [16, 8]\n'
                    'action_hidden = 16\n')

    def ablate(*only: str, define: bool = True,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        variants = ["--variant", "k2", "all-remedies", "model.context_frames=2"]
        return subprocess.run(
            [sys.executable, "-m", "experiments.ablate", "--config", str(baby), "--data", str(rec),
             "--val-data", str(val), "--minutes", "0.04", "--out", str(tmp_path / "out"),
             "--only", *(only or ("baseline", "all-remedies", "plus-unroll", "k2")),
             *(variants if define else []),
             "--horizons", "1", "4", "16",
             "--collapse-steps", "20", "--precision", "fp32", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)

    first = ablate()
    assert first.returncode == 0, first.stderr[-3000:]
    rows = [line for line in first.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| run", "| baseline", "| all-remedies", "| plus-unroll", "| k2", "| copy-last-frame",
        "| mean frame",
        # Then each run's lead over the baseline, sample by sample, with its spread.
        "| lead (paired, ±95%)", "| all-remedies", "| plus-unroll", "| k2"]
    assert re.fullmatch(r"\| k2 \| baseline \| [+-]\d+\.\d\d ±\d+\.\d\d \| "
                        r"[+-]\d+\.\d\d ±\d+\.\d\d \|", rows[-1]), rows[-1]
    assert "| k2 | 2 | ≤0.05 (play 0.01) | 1, roll-in ≤8 on 25% |" in first.stdout
    assert "| 4 | ≤0.05 (play 0.01) | 1, roll-in ≤8 on 25% |" in first.stdout
    assert "| 4 | ≤0.05 (play 0.01) | 1→2→4, roll-in ≤8 |" in first.stdout
    assert first.stdout.count("| left x ") == 4  # each run's stick response
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    steps = {name: plan[name]["steps"] for name in ("baseline", "all-remedies", "plus-unroll")}
    # The same compute: a roll-in of 4 forward passes on average, on a quarter of
    # the batch, costs about one forward pass a step; a mean unroll of 1.9 steps,
    # each a forward and a backward, after a roll-in of the whole batch, buys
    # about 3 times fewer steps than the baseline.
    assert steps["baseline"] > steps["all-remedies"] > steps["plus-unroll"], steps
    assert 2.0 < steps["baseline"] / steps["plus-unroll"] < 5.0, steps
    assert steps["all-remedies"] / steps["plus-unroll"] > 1.4, steps
    results = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert results["all-remedies"]["eval"]["collapse"]["steps"] == 20
    assert "collapse" not in results["baseline"]["eval"]
    again = ablate()  # finished runs are reused, not retrained
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained in" not in again.stderr
    assert again.stdout.splitlines()[-7:] == first.stdout.splitlines()[-7:]
    # A variant planned in --out is known there by its name, without --variant again.
    planned = ablate("k2", define=False)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert "| k2 | 2 |" in planned.stdout
    # Scored on other rollouts, a run is scored again (not trained again), so
    # its samples pair with the others'.
    fewer = ablate("baseline", "all-remedies", extra=("--rollouts", "4"))
    assert fewer.returncode == 0, fewer.stderr[-3000:]
    rescored = json.loads((tmp_path / "out" / "baseline" / "eval" / "eval.json").read_text())
    assert rescored["rollouts"] == 4
    assert len(rescored["rollout"]["4"]["psnr_samples"]) == 4
    assert rescored["steps"] == results["baseline"]["steps"]
    # Alone, the K=1 baseline is scored on other targets than beside K=4 runs: it is
    # scored again (not trained again), so a table never mixes target sets.
    report = tmp_path / "out" / "baseline" / "eval" / "eval.json"
    assert json.loads(report.read_text())["align_context"] == 4
    alone = ablate("baseline")
    assert alone.returncode == 0, alone.stderr[-3000:]
    rescored = json.loads(report.read_text())
    assert rescored["align_context"] == 1
    assert rescored["steps"] == results["baseline"]["steps"]
    # A run written before a config field existed is still this configuration:
    # the field takes its default.
    stored = tmp_path / "out" / "baseline" / "config.json"
    older = json.loads(stored.read_text())
    del older["loss"]["mse"]
    stored.write_text(json.dumps(older))
    reused = ablate("baseline")
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert "trained in" not in reused.stderr
    # One with a field this version does not know is refused, naming the file.
    older["loss"]["retired"] = 1.0
    stored.write_text(json.dumps(older))
    unknown = ablate("baseline")
    assert unknown.returncode == 2
    assert f"{stored} is not a configuration of this version (unknown config field(s): " \
           "loss.retired" in unknown.stderr
    del older["loss"]["retired"]
    stored.write_text(json.dumps(older))
    # A plan changed under a finished run is refused, not answered with the old run.
    plan_path = tmp_path / "out" / "plan.json"
    plan["baseline"]["optim"]["lr"] = 3e-4
    plan_path.write_text(json.dumps(plan))
    changed = ablate("baseline")
    assert changed.returncode == 2
    assert "holds a run of another configuration (optim.lr 0.001 -> 0.0003)" in changed.stderr


def test_each_run_leads_over_the_baseline_of_its_own_seed() -> None:
    """Two seeds of a baseline and of the remedies: the remedies of seed 1 are
    paired with the baseline of seed 1 (same weights at the start, same batches),
    the second baseline with the first, and each lead is the paired mean."""
    from experiments.ablate import leads
    from train.evaluate import paired_gain

    g = torch.Generator().manual_seed(0)

    def run(seed: int, level: float) -> dict[str, Any]:
        samples = (level + torch.randn(32, generator=g)).tolist()
        return {"config": {"seed": seed},
                "eval": {"rollout": {"16": {"psnr_samples": samples}}}}

    results = {"baseline": run(0, 19.0), "all-remedies": run(0, 20.0),
               "baseline-s1": run(1, 18.5), "all-remedies-s1": run(1, 21.0)}
    lines = leads(results, [1, 16])
    assert lines[1] == "| lead (paired, ±95%) | over | 16-step |"
    refs = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in lines[3:]}
    assert refs == {"all-remedies": "baseline", "baseline-s1": "baseline",
                    "all-remedies-s1": "baseline-s1"}
    mean, se = paired_gain(results["all-remedies-s1"]["eval"]["rollout"]["16"]["psnr_samples"],
                           results["baseline-s1"]["eval"]["rollout"]["16"]["psnr_samples"])
    assert lines[-1] == f"| all-remedies-s1 | baseline-s1 | {mean:+.2f} ±{1.96 * se:.2f} |"
    assert 2.0 < mean < 3.0


def test_the_ablation_times_a_codebook_preset_with_its_cross_entropy(tmp_path: Path) -> None:
    # `python -m experiments.ablate --config tiny-codebook` times each variant's step before it
    # trains anything; a codebook model's loss needs its codebook to find the
    # targets' codes, so the timing must give it one.
    from experiments.ablate import VARIANTS, step_seconds

    base = baby_config(tmp_path, **{"model.output_mode": "codebook", "model.codebook_size": 8,
                                    "model.codebook_patch": 2, "model.codebook_grain": True})
    configs = {name: base.replace(VARIANTS[name]) for name in ("baseline", "all-remedies")}
    seconds = step_seconds(configs, rounds=1)
    assert all(0 < s < 60 for s in seconds.values())


def test_an_ablation_variant_is_defined_as_another_with_overrides() -> None:
    from experiments.ablate import define_variants

    defined = define_variants([["fft", "all-remedies", "loss.fft=1", "batch_size=64"],
                               ["plain", "baseline"]])
    assert defined["fft"]["loss.fft"] == "1"
    assert defined["fft"]["batch_size"] == "64"
    assert defined["fft"]["unroll.rollin"] == 8  # all-remedies' own
    assert defined["plain"]["model.context_frames"] == 1
    with pytest.raises(ValueError, match="give NAME, then one of baseline, all-remedies"):
        define_variants([["fft", "everything", "loss.fft=1"]])
    with pytest.raises(ValueError,
                       match=r"--variant fft expects SECTION\.FIELD=VALUE, got 'loss.fft'"):
        define_variants([["fft", "all-remedies", "loss.fft"]])
    refused = subprocess.run(
        [sys.executable, "-m", "experiments.ablate", "--data", ".", "--val-data", ".",
         "--only", "baseline", "nosuch"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False)
    assert refused.returncode == 2
    assert "unknown variants nosuch" in refused.stderr
