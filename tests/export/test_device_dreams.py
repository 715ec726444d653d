"""Dreams kept where their model runs: the torch backends' tensors, ONNX
Runtime's I/O binding of them, and the static-buffer replay that CUDA graphs
use, against dreams kept in host numpy. On the CPU by default; with
``TINYDREAMS_TEST_DEVICE=cuda`` on the GPU, where the graphs are captured for
real and ONNX Runtime binds CUDA memory (onnxruntime-gpu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.dream import HOST, Dream, arrays_of, step_dreams
from export.runtime import load_backend
from export.torch_device import GraphedSteps, TorchArrays, bucket

pytest.importorskip("onnxruntime", reason="needs the runtime extra")


def tolerance(device: torch.device) -> float:
    """float32 on the CPU; bf16 autocast on CUDA."""
    return 1e-6 if device.type == "cpu" else 2e-2


def rollout(backend: object, dreams: list[Dream], steps: int = 5) -> np.ndarray:
    """Frames ``(T, B, 3, H, W)`` of ``dreams`` stepped together under fixed sticks."""
    start = backend.start_frames()  # type: ignore[attr-defined]
    for i, dream in enumerate(dreams):
        dream.reset(start[i], seed=i)
    rng = np.random.default_rng(0)
    dim = dreams[0].manifest.control_dim
    return np.stack([step_dreams(backend, dreams,  # type: ignore[arg-type]
                                 rng.uniform(-1, 1, (len(dreams), dim)).astype(np.float32))
                     for _ in range(steps)])


@pytest.mark.parametrize("fixture", ["bundle", "latent_bundle", "codebook_bundle"])
def test_a_torch_backends_dreams_live_in_its_tensors_and_step_as_on_the_host(
        fixture: str, request: pytest.FixtureRequest, device: torch.device) -> None:
    bundle: Path = request.getfixturevalue(fixture)
    backend = load_backend(bundle, "torch", device.type)
    on_device = [Dream.of(backend, seed=i) for i in range(2)]
    on_host = [Dream(backend.manifest, seed=i) for i in range(2)]
    assert isinstance(arrays_of(backend), TorchArrays)
    assert on_host[0].arrays is HOST
    ours, theirs = rollout(backend, on_device), rollout(backend, on_host)
    np.testing.assert_allclose(ours, theirs, atol=tolerance(device))
    step = on_device[0].inputs(np.zeros(backend.manifest.control_dim))
    assert isinstance(step.window, torch.Tensor)
    assert step.window.device.type == device.type
    assert isinstance(step.noise_level, torch.Tensor)
    assert isinstance(on_device[0].window, np.ndarray)  # read back for whoever asks
    np.testing.assert_allclose(on_device[1].window[-1], ours[-1, 1])


def test_a_held_latent_crosses_to_the_device_only_when_it_changes(
        latent_bundle: Path, codebook_bundle: Path, device: torch.device) -> None:
    backend = load_backend(latent_bundle, "torch", device.type)
    held, fresh = Dream.of(backend, "hold", seed=0), Dream.of(backend, "fresh", seed=0)
    sticks = np.ones(backend.manifest.control_dim, np.float32)
    for dream in (held, fresh):
        dream.reset(backend.start_frames()[0], seed=0)
    assert held.inputs(sticks).latent is held.inputs(sticks).latent  # uploaded once
    assert fresh.inputs(sticks).latent is not fresh.inputs(sticks).latent
    # A latent moved with the view and partly redrawn by the sticks is uploaded
    # as it changes: the device's copy is always the host's latest.
    moving = load_backend(codebook_bundle, "torch", device.type)
    dream = Dream.of(moving, seed=3)
    dream.reset(moving.start_frames()[0], seed=3)
    for _ in range(4):
        z = dream.inputs(np.ones(moving.manifest.control_dim, np.float32)).latent
        np.testing.assert_array_equal(z.cpu().numpy(), dream.latent.held)


def test_onnx_runtime_binds_dreams_tensors_where_they_lie(
        bundle: Path, latent_bundle: Path, device: torch.device) -> None:
    # On a GPU the tensors are CUDA's; on the CPU the same I/O binding reads
    # and writes torch's CPU memory, against a plain numpy session.
    for path in (bundle, latent_bundle):
        bound, plain = (load_backend(path, "onnxruntime", device.type) for _ in range(2))
        bound.arrays = TorchArrays(device)  # type: ignore[attr-defined]
        plain.arrays = HOST  # type: ignore[attr-defined]
        dreams = [Dream.of(bound, seed=i) for i in range(3)]
        assert isinstance(dreams[0].inputs(np.zeros(4)).window, torch.Tensor)
        np.testing.assert_allclose(rollout(bound, dreams),
                                   rollout(plain, [Dream.of(plain, seed=i) for i in range(3)]),
                                   atol=1e-5 if device.type == "cpu" else 1e-3)
        out = bound.step(torch.zeros(2, *bound.manifest.frame_shape), torch.zeros(2, 4))
        assert isinstance(out, torch.Tensor)
        assert out.shape == (2, 3, 16, 16)


def test_onnx_runtime_names_a_bad_latent_or_noise_level(bundle: Path,
                                                        latent_bundle: Path) -> None:
    backend = load_backend(latent_bundle, "onnxruntime", "cpu")
    backend.arrays = TorchArrays("cpu")  # type: ignore[attr-defined]
    frames = torch.zeros(2, *backend.manifest.frame_shape)
    with pytest.raises(ValueError, match=r"latent must have shape \(2, 4\).*got \(2, 3\)"):
        backend.step(frames, torch.zeros(2, 4), latent=torch.zeros(2, 3))
    noisy = load_backend(bundle, "onnxruntime", "cpu")
    frames = np.zeros((2, *noisy.manifest.frame_shape), np.float32)
    with pytest.raises(ValueError, match="noise_level must be one number or 2, got 3"):
        noisy.step(frames, np.zeros((2, 4), np.float32), noise_level=np.zeros(3))
    one, each = (noisy.step(frames, np.zeros((2, 4), np.float32), noise_level=level)
                 for level in (0.05, np.full(2, 0.05)))
    np.testing.assert_array_equal(one, each)


def test_batches_are_padded_to_powers_of_two_up_to_the_largest() -> None:
    assert [bucket(b, 64) for b in (1, 2, 3, 4, 5, 16, 17, 64)] == [1, 2, 4, 4, 8, 16, 32, 64]
    assert bucket(65, 64) is None


def test_replayed_steps_match_eager_and_outlive_the_next_replay(device: torch.device) -> None:
    calls: list[int] = []

    def fn(x: torch.Tensor, y: torch.Tensor, level: None) -> torch.Tensor:
        calls.append(x.shape[0])
        return x * 2 + y

    cuda = device.type == "cuda"
    steps = GraphedSteps(fn, capture=cuda, largest=4)
    x, y = torch.arange(6.0, device=device).reshape(3, 2), torch.ones(3, 2, device=device)
    first = steps(x, y, None)
    torch.testing.assert_close(first, x * 2 + y)
    again = steps(x[:2] + 10, y[:2], None)  # size 2: its own buffers
    steps(x * 0, y * 0, None)  # size 4 again: overwrites the static output
    torch.testing.assert_close(first, x * 2 + y)  # each answer is its own copy
    torch.testing.assert_close(again, (x[:2] + 10) * 2 + 1)
    steps(torch.zeros(5, 2, device=device), torch.zeros(5, 2, device=device), None)
    # Each size ran once as it was prepared (on CUDA: 3 warm-ups and the
    # capture), then replayed; past the largest, eagerly as it is.
    assert calls == ([4, 4, 4, 4, 2, 2, 2, 2, 5] if cuda else [4, 2, 4, 5])
    assert steps.captured == ([2, 4] if cuda else [])


@pytest.mark.parametrize("fixture", ["bundle", "codebook_bundle"])
def test_a_torch_backend_replaying_from_static_buffers_steps_as_eager(
        fixture: str, request: pytest.FixtureRequest, device: torch.device) -> None:
    bundle: Path = request.getfixturevalue(fixture)
    eager, replayed = (load_backend(bundle, "torch", device.type) for _ in range(2))
    eager.use_graphs(False)  # type: ignore[attr-defined]
    replayed.use_graphs(True, largest=4)  # type: ignore[attr-defined]
    for batch in (1, 3, 6):  # as it is, padded to 4, past the largest
        dreams = [[Dream.of(b, seed=i) for i in range(batch)] for b in (eager, replayed)]
        np.testing.assert_allclose(rollout(replayed, dreams[1], 3), rollout(eager, dreams[0], 3),
                                   atol=1e-5 if device.type == "cpu" else 2e-2)
