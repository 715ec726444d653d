from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "models", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_summary_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = run_cli("--preset", "tiny", "--batch", "1", "2", "--repeats", "3",
                     "--json", str(out))
    assert result.returncode == 0, result.stderr
    for row in ("parameters", "tokens", "GFLOPs / frame", "latency, batch 1",
                "latency, batch 2", "frames/s"):
        assert row in result.stdout
    data = json.loads(out.read_text())
    assert 2.0e6 < data["parameters"]["total"] < 4.0e6
    assert data["tokens"]["image"] == 64
    assert 0.5 < data["gflops"]["total"] < 2.0
    assert [row["batch"] for row in data["latency"]] == [1, 2]
    assert all(row["ms_median"] > 0 for row in data["latency"])


def test_overrides_change_the_model() -> None:
    result = run_cli("--preset", "tiny", "--set", "attention_mode=interleaved",
                     "--set", "num_registers=4", "--batch", "1", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    assert "interleaved" in result.stdout
    assert "4 registers" in result.stdout


def test_bad_override_is_a_clear_error() -> None:
    result = run_cli("--set", "embed_dim=100")
    assert result.returncode == 2
    assert "embed_dim (100) must be divisible by num_heads (3)" in result.stderr
    result = run_cli("--set", "nonsense")
    assert result.returncode != 0
    assert "KEY=VALUE" in result.stderr
