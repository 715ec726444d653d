from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.helpers import baby_config, moving_square_recording


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (baby) bundle, trained two steps and exported."""
    pytest.importorskip("onnxruntime", reason="needs the export extra")
    from export.exporter import export_bundle
    from train.loop import fit

    root = tmp_path_factory.mktemp("serve-bundle")
    rec = moving_square_recording(root / "rec")
    fit(baby_config(rec, steps=2), root / "run")
    export_bundle(root / "run" / "latest.pt", root / "bundle")
    return root / "bundle"
