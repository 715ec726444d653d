"""experiments/device_dreams_gpu.py runs end to end (here on the CPU, as it will
on a lent GPU) and writes a figure for every preset, batch and way of stepping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.device_dreams_gpu import main


def test_figures_for_every_batch_and_way_of_stepping(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    assert main(["--presets", "tiny", "--batches", "1", "3", "--rounds", "1",
                 "--device", "cpu", "--json", str(out)]) == 0
    (figures,) = json.loads(out.read_text())
    assert figures["preset"] == "tiny"
    assert set(figures["batches"]) == {"1", "3"}
    for row in figures["batches"].values():
        assert set(row["ms"]) == {"eager", "graphs", "dreams on device", "dreams on host"}
        assert all(ms > 0 for ms in row["ms"].values())
        assert row["graphs_vs_eager_max_abs"] == 0.0  # float32, the same kernels padded
    assert "| tiny | 3 |" in capsys.readouterr().out
