"""``python -m train`` end to end on a real ViZDoom recording, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.helpers import BABY_MODEL

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, module: str = "train") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_help_explains_every_option() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for option in ("--data", "--val-data", "--config", "--run-dir", "--resume", "--steps",
                   "--minutes", "--batch-size", "--lr", "--precision", "--device", "--compile",
                   "--grad-checkpointing", "--workers", "--seed", "--set", "python -m train eval",
                   "torchrun"):
        assert option in result.stdout, option
    assert "--horizons" in cli("eval", "--help").stdout
    assert "pipeline" in cli("bench", "--help").stdout


@pytest.mark.parametrize("args", [
    ["--data", "no/such/dir"],
    ["--data", "."],  # a directory, but not a recording
    ["eval", "--checkpoint", "no/such.pt", "--data", "."],
    ["--config", "huge", "--data", "."],
    ["--set", "optim.nope=1", "--data", "."],
])
def test_bad_paths_and_options_give_one_line_errors(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_record_train_and_evaluate_a_real_doom_recording(tmp_path: Path) -> None:
    pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")
    rec, run = tmp_path / "doom", tmp_path / "run"
    recorded = cli("record", "--world", "doom:health_gathering", "--steps", "120", "--out",
                   str(rec), "--size", "16", "--quiet", module="play")
    assert recorded.returncode == 0, recorded.stderr
    sets = [f"--set={k}={v}" for k, v in BABY_MODEL.items()]
    trained = cli("--data", str(rec), "--run-dir", str(run), "--steps", "4", "--batch-size", "4",
                  "--quiet", *sets)
    assert trained.returncode == 0, trained.stderr
    assert "trained to step 4" in trained.stdout
    evaluated = cli("eval", "--checkpoint", str(run / "latest.pt"), "--data", str(rec),
                    "--horizons", "1", "4", "--samples", "32", "--rollouts", "4",
                    "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "1-step PSNR" in evaluated.stdout
    assert "rollout 4" in evaluated.stdout
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    # PSNRs of 16x16 Doom frames in [0, 1]: tens of dB, under the 8-bit rounding cap.
    assert 10.0 < report["one_step"]["copy_psnr"] < 58.9
    assert 5.0 < report["rollout"]["4"]["mean_psnr"] < 58.9  # the held-out mean picture
    assert "mean frame" in evaluated.stdout
    assert set(report["rollout"]) == {"1", "4"}
    assert (tmp_path / "eval" / "rollout.png").stat().st_size > 0
    assert (tmp_path / "eval" / "rollout.gif").stat().st_size > 0


def test_config_auto_names_the_preset_it_picked(tmp_path: Path) -> None:
    from tests.train.helpers import moving_square_recording

    rec = moving_square_recording(tmp_path / "rec", steps=40)
    result = cli("--config", "auto", "--data", str(rec), "--run-dir", str(tmp_path / "run"),
                 "--steps", "1", "--batch-size", "2", "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "--config auto: tiny-rounds (no GPU" in result.stdout
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["codebook_rounds"] == 4
    short = moving_square_recording(tmp_path / "short", steps=6)
    result = cli("--config", "auto", "--data", str(short), "--run-dir", str(tmp_path / "r2"))
    assert result.returncode == 2
    assert "no training transitions in" in result.stderr
