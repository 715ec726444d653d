"""experiments/long_dreams_gpu.py packs each run's weights as a checkpoint that
`train eval` and `play` load."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from tests.train.helpers import baby_config, moving_square_recording
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.loop import fit

TOOL = Path(__file__).resolve().parents[2] / "experiments" / "long_dreams_gpu.py"


def load_tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("long_dreams_gpu", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packed_weights_load_as_checkpoints_in_float32_or_float16(tmp_path: Path) -> None:
    tool = load_tool()
    rec = moving_square_recording(tmp_path / "rec")
    work = tmp_path / "work"
    fit(baby_config(rec, steps=3), work / "run")
    ema = load_checkpoint(work / "run" / "latest.pt")["ema"]
    for budget, dtype in [(100.0, torch.float32), (0.0, torch.float16)]:
        out = tmp_path / f"out-{budget}"
        out.mkdir()
        tool.pack(work, out, ["run", "never-trained"], budget_mb=budget)
        assert sorted(p.name for p in out.iterdir()) == ["results.tar.gz", "run.pt"]
        packed = load_checkpoint(out / "run.pt")
        assert packed["step"] == 3
        assert {v.dtype for v in packed["model"].values() if v.is_floating_point()} == {dtype}
        model, _ = model_from_checkpoint(out / "run.pt")
        tol = 0 if dtype == torch.float32 else 1e-3
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, ema[k], atol=tol, rtol=tol, msg=k)
        with tarfile.open(out / "results.tar.gz") as tar:
            assert {"run/config.json", "run/metrics.csv"} <= set(tar.getnames())


def test_help_explains_the_run() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True,
                          check=True)
    assert "--deadline" in done.stdout
    assert "--init" in done.stdout

