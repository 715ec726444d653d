"""ONNX Runtime's execution providers: TensorRT, then CUDA, then the CPU; the
CPU fallback for real on this machine, the GPU choices from the lists ONNX
Runtime would report."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="needs the runtime extra: pip install -e "
                                                "'.[runtime]'")

from export.manifest import BundleError  # noqa: E402
from export.onnx_runtime import (  # noqa: E402
    CPU,
    CUDA,
    TENSORRT,
    TRT_CACHE_DIR,
    OnnxBackend,
    open_session,
    provider_chain,
    tensorrt_profile,
)

ROOT = Path(__file__).resolve().parents[2]


def test_tensorrt_first_with_its_cache_beside_the_bundle_then_cuda_then_cpu(
        tmp_path: Path) -> None:
    cache = tmp_path / TRT_CACHE_DIR
    chain = provider_chain("auto", [TENSORRT, CUDA, CPU], cache, fp16=True)
    name, options = chain[0]
    assert name == TENSORRT
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(cache)
    assert options["trt_fp16_enable"] is True
    assert chain[1:] == [CUDA, CPU]
    assert provider_chain("auto", [TENSORRT, CUDA, CPU], cache)[0][1]["trt_fp16_enable"] is False
    assert provider_chain("cuda", [CUDA, CPU], cache) == [CUDA, CPU]
    assert provider_chain("cpu", [TENSORRT, CUDA, CPU], cache) == [CPU]
    assert provider_chain("auto", [CPU], cache) == [CPU]
    with pytest.raises(ValueError, match="install onnxruntime-gpu"):
        provider_chain("cuda", [CPU], cache)


def test_on_a_cpu_machine_the_bundle_runs_on_the_cpu_and_says_so(
        bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    if set(ort.get_available_providers()) & {TENSORRT, CUDA}:
        pytest.skip("this machine has a GPU provider; the CPU fallback is what is tested")
    with caplog.at_level(logging.INFO, logger="export.onnx_runtime"):
        backend = OnnxBackend(bundle, "auto")
    assert backend.provider == CPU
    assert backend.device == "cpu"
    assert backend.parity is None  # measured only where a GPU runs it
    assert f"on {CPU}" in caplog.text
    assert not (bundle / TRT_CACHE_DIR).exists()  # no cache made where no engine is built
    with pytest.raises(ValueError, match="device cuda asked for"):
        OnnxBackend(bundle, "cuda")
    with pytest.raises(ValueError, match="TensorRT provider"):
        OnnxBackend(bundle, "auto", fp16=True)


def test_the_parity_check_compares_one_step_with_a_cpu_session(bundle: Path) -> None:
    """The check a GPU session runs on load, here against itself: zero."""
    backend = OnnxBackend(bundle, "cpu")
    options = ort.SessionOptions()
    assert backend._parity_against_cpu(ort, bundle / "model.onnx", options) == 0.0
    frames = backend.start_frames()[:1].astype(np.float32) / 255.0
    assert backend.step(frames, np.zeros((1, backend.manifest.control_dim), np.float32)
                        ).shape == (1, 3, *frames.shape[-2:])


@pytest.mark.parametrize(("gpu", "expected"), [("1", "dev,export,gpu"),
                                               ("0", "dev,export,runtime")])
def test_install_picks_one_onnx_runtime_for_the_machine(gpu: str, expected: str) -> None:
    for asked in ("dev,export,runtime", "dev,export,gpu", "dev,export,runtime,gpu"):
        done = subprocess.run(["bash", "tools/install.sh", "--print-extras", asked], cwd=ROOT,
                              capture_output=True, text=True, env={"TINYDREAMS_GPU": gpu,
                                                                   "PATH": "/usr/bin:/bin"},
                              check=True)
        assert done.stdout.strip() == expected


def test_tensorrt_builds_one_engine_for_every_batch_a_server_forms(bundle: Path,
                                                                    tmp_path: Path) -> None:
    manifest = OnnxBackend(bundle, "cpu").manifest  # K = 3, 16x16, noise conditioned
    profile = tensorrt_profile(manifest)
    assert profile == {
        "trt_profile_min_shapes": "frames:1x3x3x16x16,controls:1x4,noise_level:1",
        "trt_profile_opt_shapes": "frames:16x3x3x16x16,controls:16x4,noise_level:16",
        "trt_profile_max_shapes": "frames:64x3x3x16x16,controls:64x4,noise_level:64"}
    options = provider_chain("auto", [TENSORRT, CUDA, CPU], tmp_path, profile=profile)[0][1]
    assert options["trt_profile_max_shapes"] == profile["trt_profile_max_shapes"]


class RefusesProfiles:
    """ONNX Runtime as it answers when TensorRT cannot take an explicit profile
    (and for a model it cannot read at all)."""

    def __init__(self) -> None:
        self.asked: list[list[Any]] = []

    def InferenceSession(self, path: str, options: object, providers: list[Any]) -> str:
        self.asked.append(providers)
        if path.endswith("broken.onnx"):
            raise RuntimeError("INVALID_PROTOBUF : Load model failed")
        if isinstance(providers[0], tuple) and "trt_profile_min_shapes" in providers[0][1]:
            raise RuntimeError("EP_FAIL : User needs to provide all the dynamic shape "
                               "inputs with associated profiles")
        return "session"


def test_a_refused_tensorrt_profile_falls_back_to_engines_per_batch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = RefusesProfiles()
    chain = provider_chain("auto", [TENSORRT, CUDA, CPU], tmp_path,
                           profile={"trt_profile_min_shapes": "frames:1x1"})
    with caplog.at_level(logging.WARNING, logger="export.onnx_runtime"):
        assert open_session(fake, tmp_path / "m.onnx", None, chain) == "session"
    assert "refused the batch profile" in caplog.text
    assert len(fake.asked) == 2
    retried = fake.asked[-1]
    assert retried[1:] == [CUDA, CPU]
    assert not any(k.startswith("trt_profile_") for k in retried[0][1])
    assert retried[0][1]["trt_engine_cache_enable"] is True
    with pytest.raises(BundleError, match=r"broken\.onnx: ONNX Runtime cannot load it"):
        open_session(fake, tmp_path / "broken.onnx", None, [CPU])
