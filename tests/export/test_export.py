"""Export to bundles, parity of every backend with eager PyTorch, and bundle hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from export.bundle import ONNX_FILE
from export.dream import DreamLatent
from export.exporter import ParityError, check_parity, export_bundle, parity
from export.manifest import MANIFEST, BundleError, Manifest
from export.runtime import load_backend
from models import WorldModel
from tests.train.helpers import baby_config, moving_square_recording
from train.checkpoint import model_from_checkpoint
from train.loop import fit

NEEDS = "needs the export and runtime extras: pip install -e '.[export,runtime]'"
pytest.importorskip("onnxruntime", reason=NEEDS)
pytest.importorskip("onnxscript", reason=NEEDS)

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    # Noise conditioning, trained with noise and a 1 -> 2 unroll: a third ONNX input.
    "concat-registers-k4-noise": {
        "model.attention_mode": "concat", "model.num_registers": 4, "model.context_frames": 4,
        "model.output_mode": "residual", "model.noise_conditioning": True,
        "noise.max_level": 0.2, "noise.play_level": 0.05, "unroll.schedule": "1,2"},
    "interleaved-registers-k4-unnormed": {
        "model.attention_mode": "interleaved", "model.num_registers": 4,
        "model.context_frames": 4, "model.conv_norm": "none"},
    # The warp output: grid_sample in every backend.
    "adaln-k2-layernorm-warp": {"model.attention_mode": "adaln", "model.context_frames": 2,
                                "model.conv_norm": "layer", "model.output_mode": "warp"},
    # The codebook output: an argmax over codes and a gather of their patches, and
    # of their grain's spread, times the latent's last part; a view the sticks move
    # (grid_sample again).
    "adaln-k2-codebook": {"model.attention_mode": "adaln", "model.context_frames": 2,
                          "model.conv_norm": "layer", "model.output_mode": "codebook",
                          "model.codebook_size": 16, "model.codebook_patch": 2,
                          "model.codebook_grain": True, "model.stick_view": True},
    # Codes drawn in parallel rounds: a refiner run once a round, a top-k of the
    # most confident draws settled, every round inside the graph.
    "adaln-k2-codebook-rounds": {"model.attention_mode": "adaln", "model.context_frames": 2,
                                 "model.conv_norm": "layer", "model.output_mode": "codebook",
                                 "model.codebook_size": 16, "model.codebook_patch": 2,
                                 "model.codebook_rounds": 3, "model.codebook_refiner": 8},
    # A latent, trained with the CRPS: a last input of N(0, 1) draws, and no noise_level
    # before it.
    "adaln-k2-latent": {"model.attention_mode": "adaln", "model.context_frames": 2,
                        "model.latent_dim": 8, "loss.crps": 1.0},
}


def make_bundle(root: Path, **model: object) -> tuple[Path, Path]:
    rec = moving_square_recording(root / "rec")
    fit(baby_config(rec, steps=2, **model), root / "run")
    bundle = root / "bundle"
    export_bundle(root / "run" / "latest.pt", bundle)
    return root / "run" / "latest.pt", bundle


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_bundle(tmp_path_factory.mktemp(request.param), **VARIANTS[request.param])


def eager(model: WorldModel, manifest: Manifest, frames: np.ndarray,
          controls: np.ndarray, level: Any = None, latent: Any = None) -> np.ndarray:
    """Eager PyTorch's answer, told the manifest's noise level unless given one
    (and the ``latent``, for a model with one)."""
    if level is None:
        noise = model.noise_input(len(frames), manifest.noise_level)
    else:
        noise = torch.as_tensor(level, dtype=torch.float32) if model.config.noise_conditioning \
            else None
    with torch.no_grad():
        out: np.ndarray = model(torch.from_numpy(frames), torch.from_numpy(controls),
                                noise, None if latent is None else torch.from_numpy(latent)
                                ).numpy()
    return out


def inputs(manifest: Manifest, batch: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    frames = rng.random((batch, *manifest.frame_shape), dtype=np.float32)
    controls = rng.uniform(-1, 1, (batch, manifest.control_dim)).astype(np.float32)
    return frames, controls


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript", "torch"])
@pytest.mark.parametrize("batch", [1, 8])
def test_every_backend_matches_eager(exported: tuple[Path, Path], backend: str,
                                     batch: int) -> None:
    checkpoint, bundle = exported
    model, _ = model_from_checkpoint(checkpoint)
    runner = load_backend(bundle, backend, "cpu")
    frames, controls = inputs(runner.manifest, batch)
    dim = model.config.latent_size
    z = np.random.default_rng(1).standard_normal((batch, dim), dtype=np.float32) if dim else None
    expected = eager(model, runner.manifest, frames, controls, latent=z)
    out = runner.step(frames, controls, None, z)
    assert out.shape == (batch, 3, 16, 16)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    if model.config.noise_conditioning:  # the third input, at levels other than the default
        levels = np.linspace(0.0, 0.3, batch).astype(np.float32)
        np.testing.assert_allclose(runner.step(frames, controls, levels, z),
                                   eager(model, runner.manifest, frames, controls, levels, z),
                                   atol=1e-4, rtol=0)
    if dim:  # by default every step draws a fresh latent: another plausible frame
        a, b = runner.step(frames, controls), runner.step(frames, controls)
        assert np.abs(a - b).max() > 1e-6  # (a model trained 2 steps barely uses it)
        np.testing.assert_array_equal(runner.step(frames, controls, None, z), out)
        with pytest.raises(ValueError, match=r"latent must have shape"):
            runner.step(frames, controls, None, z[:, :-1])
    as_torch = runner.step(torch.from_numpy(frames), torch.from_numpy(controls))
    assert isinstance(as_torch, torch.Tensor)  # torch in, torch out


def test_a_dream_latent_is_held_or_fresh_and_seeded() -> None:
    held = DreamLatent(8, "hold", seed=3)
    first = held.next()
    assert first is not None
    assert first.shape == (8,)
    assert first.dtype == np.float32
    assert np.array_equal(held.next(), first)  # held: the same every step
    held.reset()
    assert not np.array_equal(held.next(), first)  # a new dream draws another
    held.reset(seed=3)
    assert np.array_equal(held.next(), first)  # a seed gives the same dream again
    fresh = DreamLatent(8, "fresh", seed=3)
    assert not np.array_equal(fresh.next(), fresh.next())
    assert DreamLatent(0).next() is None  # a model without a latent
    with pytest.raises(ValueError, match="latent mode must be one of hold, fresh, got 'fixed'"):
        DreamLatent(8, "fixed")


class _Painter:
    """A stand-in backend painting 2x2 patches from its frames' last context
    frame; ``flip`` changes that many patches of each call's output (the
    backend that took the other side of an argmax tie)."""

    def __init__(self, flip: int = 0) -> None:
        self.flip = flip
        self.manifest = Manifest(model={"codebook_patch": 2}, height=32, width=32,
                                 context_frames=1, control_dim=4, output_mode="codebook")

    def step(self, frames: np.ndarray, controls: np.ndarray, level: Any = None,
             latent: Any = None) -> np.ndarray:
        out = 1.0 - frames[:, -1]
        B, _, H, W = out.shape
        patches = out.reshape(B, 3, H // 2, 2, W // 2, 2).transpose(0, 2, 4, 1, 3, 5)
        flat = patches.reshape(B, -1, 12).copy()
        flat[:, :self.flip] = 0.5 - flat[:, :self.flip]  # another code in those patches
        return flat.reshape(B, H // 2, W // 2, 3, 2, 2).transpose(0, 3, 1, 4, 2, 5).reshape(
            out.shape).astype(np.float32)


def test_a_codebook_models_parity_allows_its_ties_but_not_a_broken_export() -> None:
    start = np.random.default_rng(0).integers(0, 256, (4, 1, 3, 32, 32)).astype(np.uint8)
    same = parity(_Painter(), _Painter(), start)
    assert same["batch8_tied_share"] == same["rollout16_tied_share"] == 0.0
    assert same["batch8_max_abs"] == 0.0
    # One patch of the 256 a frame took the other code: a tie, not a broken export;
    # the rest agree exactly, and the rollout does not drift away after it.
    tie = parity(_Painter(), _Painter(flip=1), start)
    assert tie["batch8_tied_share"] == tie["rollout16_tied_share"] == pytest.approx(1 / 256)
    assert tie["batch8_max_abs"] == tie["rollout16_max_abs"] == 0.0
    check_parity("painter", tie)
    for flips in (8, 256):  # 3 % of the patches, or all of them: broken
        with pytest.raises(ParityError, match="batch1_tied_share"):
            check_parity("painter", parity(_Painter(), _Painter(flip=flips), start))


def test_manifest_records_parity_and_round_trips(exported: tuple[Path, Path]) -> None:
    checkpoint, bundle = exported
    manifest = Manifest.read(bundle)
    for name in ("onnxruntime", "torchscript"):
        figures = manifest.parity[name]
        assert figures["batch1_max_abs"] <= 1e-4
        assert figures["batch8_max_abs"] <= 1e-4
        assert figures["rollout16_max_abs"] <= 1e-3
    model, state = model_from_checkpoint(checkpoint)
    assert manifest.model == model.config.to_dict()
    assert manifest.latent_motion == model.latent_motion()  # None but for a moved view
    assert (manifest.latent_motion is None) == (not model.config.stick_view or
                                                not model.config.latent_size)
    assert manifest.checkpoint["step"] == state["step"] == 2
    assert manifest.control_names == ["left_x", "left_y", "right_x", "right_y"]
    assert manifest.fps == 10
    assert json.loads((bundle / MANIFEST).read_text()) == load_backend(bundle).manifest.to_dict()
    start = load_backend(bundle, "onnxruntime").start_frames()
    assert start.dtype == np.uint8
    assert start.shape[1:] == (manifest.context_frames, 3, 16, 16)


def test_a_held_latent_is_redrawn_as_far_as_the_sticks_push() -> None:
    held = DreamLatent(20_000, "hold", seed=0, refresh=0.2)
    first = held.next(np.ones(4))  # the first step: the latent as drawn
    assert first is not None
    assert np.array_equal(held.next(np.zeros(4)), first)  # at rest: held still
    pushed = held.next(np.array([0.0, -0.5, 0.25, 0.0]))  # half a stick: a tenth redrawn
    assert pushed is not None
    assert abs((pushed != first).mean() - 0.1) < 0.01
    assert np.array_equal(held.next(), pushed)  # no sticks given: held
    held.reset(seed=0)
    assert np.array_equal(held.next(np.ones(4)), first)  # seeded: the same dream again
    assert (held.next(np.ones(4)) != first).mean() > 0.15  # full stick: a fifth
    assert np.array_equal(DreamLatent(8, "hold", seed=1).next(np.ones(4)),
                          DreamLatent(8, "hold", seed=1, refresh=0.5).next(np.ones(4)))


def test_a_dream_latent_moves_with_the_view_as_the_model_moves_it() -> None:
    # The bundle's numpy dream (play, serve) and the model's own (train eval)
    # move a held latent alike: the same draws land on the same patches.
    from models.config import FLOW_PIXELS
    from tests.models.helpers import baby_config as model_config

    model = WorldModel(model_config(output_mode="codebook", codebook_size=6, codebook_patch=4,
                                    codebook_temperature=1.0, codebook_grain=True,
                                    stick_view=True))
    assert model.view_motion is not None
    with torch.no_grad():  # the turn stick: a patch a step; the look stick: two
        model.view_motion.weight[0, 2] = 4 / FLOW_PIXELS
        model.view_motion.weight[1, 3] = 8 / FLOW_PIXELS
    latent = DreamLatent(model.config.latent_size, "hold", seed=0,
                         motion=json.loads(json.dumps(model.latent_motion())))
    held = latent.next(np.zeros(4))
    assert held is not None
    n = model.config.code_latent_size
    for sticks in ([0, 0, 1.0, 0], [0, 0, -1.0, 1.0], [0, 0, 0, -1.0]):
        moved = latent.next(np.array(sticks))
        assert moved is not None
        expected = model.move_latent(torch.from_numpy(held)[None],
                                     torch.tensor([sticks]))[0].numpy()
        kept = np.zeros((8, 8), bool)  # the patches whose draws came from the old view
        dx, dy = int(sticks[2]), int(2 * sticks[3])  # new[r, c] = old[r + dy, c + dx]
        kept[max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)] = True
        rows, cols = np.nonzero(kept)
        codes = (v[:n].reshape(6, 8, 8) for v in (moved, expected))
        np.testing.assert_array_equal(*(c[:, rows, cols] for c in codes))
        grain = (v[n:].reshape(8, 8, 48) for v in (moved, expected))
        np.testing.assert_array_equal(*(g[rows, cols] for g in grain))
        new = (v[:n].reshape(6, 8, 8)[:, ~kept] for v in (moved, held))
        assert np.all(np.not_equal(*new))  # the patches new to the view: fresh draws
        held = moved
    assert np.array_equal(latent.next(np.zeros(4)), held)  # at rest: held where it is
    with pytest.raises(ValueError, match="does not fit"):
        DreamLatent(100, motion=model.latent_motion())


def test_onnx_bundle_runs_without_torch_or_models(exported: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    checkpoint, bundle = exported
    frames, controls = inputs(Manifest.read(bundle), 3, seed=5)
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "controls.npy", controls)
    model, _ = model_from_checkpoint(checkpoint)
    dim = model.config.latent_size  # a stochastic model: the same draws in both
    z = np.random.default_rng(2).standard_normal((3, dim), dtype=np.float32) if dim else None
    np.save(tmp_path / "latent.npy", z if z is not None else np.zeros(0))
    script = f"""
import sys
class Forbid:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "models", "train"):
            raise ImportError("forbidden in this test: " + name)
sys.meta_path.insert(0, Forbid())
import numpy as np
from export.dream import Dream, step_dreams
from export.runtime import load_backend
backend = load_backend({str(bundle)!r}, "auto", "cpu")
assert backend.name == "onnxruntime", backend.name
z = np.load({str(tmp_path / "latent.npy")!r})
out = backend.step(np.load({str(tmp_path / "frames.npy")!r}),
                   np.load({str(tmp_path / "controls.npy")!r}), None, z if z.size else None)
np.save({str(tmp_path / "out.npy")!r}, out)
dreams = [Dream(backend.manifest, seed=i) for i in range(2)]
for i, dream in enumerate(dreams):
    dream.reset(backend.start_frames()[i])
for t in range(5):
    frames = step_dreams(backend, dreams, np.full((2, backend.manifest.control_dim), 0.5))
    assert frames.shape == (2, 3, 16, 16) and 0 <= frames.min() and frames.max() <= 1
assert dreams[0].steps == 5
np.testing.assert_array_equal(dreams[1].window[-1], frames[1])
assert not any(m.split(".")[0] in ("torch", "models", "train") for m in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    expected = eager(model, Manifest.read(bundle), frames, controls, latent=z)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-4, rtol=0)


def test_a_manifest_refuses_unknown_and_missing_fields_by_name(tmp_path: Path) -> None:
    good = Manifest(model={}, height=16, width=16, context_frames=2, control_dim=4)
    assert Manifest.from_dict(json.loads(json.dumps(good.to_dict()))) == good
    assert good.control_names == ["left_x", "left_y", "right_x", "right_y"]
    assert good.inputs == ("frames", "controls")
    with pytest.raises(BundleError, match="unknown field 'colour'"):
        Manifest.from_dict({**good.to_dict(), "colour": "red"})
    data = good.to_dict()
    del data["context_frames"]
    with pytest.raises(BundleError, match="missing field 'context_frames'"):
        Manifest.from_dict(data)
    with pytest.raises(BundleError, match="field 'height' must be a whole number"):
        Manifest.from_dict({**good.to_dict(), "height": "16"})
    with pytest.raises(BundleError, match="newer than this tool reads"):
        Manifest.from_dict({**good.to_dict(), "version": 99})
    with pytest.raises(BundleError, match="not a TinyDreams bundle manifest"):
        Manifest.from_dict({**good.to_dict(), "format": "other"})
    with pytest.raises(BundleError, match="3 control names for 4 controls"):
        Manifest.from_dict({**good.to_dict(), "control_names": ["a", "b", "c"]})
    with pytest.raises(BundleError, match=r"manifest\.json: missing; .* is not a bundle"):
        Manifest.read(tmp_path)


@pytest.fixture
def bundle_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, bundle = make_bundle(tmp_path_factory.mktemp("damage"))
    return bundle


def test_damaged_bundle_files_are_named(bundle_copy: Path) -> None:
    onnx_path = bundle_copy / ONNX_FILE
    data = onnx_path.read_bytes()
    onnx_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model\.onnx: truncated or damaged"):
        load_backend(bundle_copy, "onnxruntime")
    ts_path = bundle_copy / "model.ts"
    ts = bytearray(ts_path.read_bytes())
    ts[len(ts) // 2] ^= 0xFF
    ts_path.write_bytes(bytes(ts))
    with pytest.raises(BundleError, match=r"model\.ts: damaged \(SHA-256"):
        load_backend(bundle_copy, "torchscript")
    (bundle_copy / "weights.pt").unlink()
    with pytest.raises(BundleError, match=r"weights\.pt: missing from the bundle"):
        load_backend(bundle_copy, "torch")
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: unreadable manifest"):
        load_backend(bundle_copy)


def test_a_manifest_that_disagrees_with_the_model_is_refused(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["control_dim"] = 6
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="4 control names for 6 controls"):
        load_backend(bundle_copy, "onnxruntime")
    manifest["control_names"] = [f"c{i}" for i in range(6)]
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    for backend in ("onnxruntime", "torchscript", "torch"):
        with pytest.raises(BundleError, match="control_dim 6"):
            load_backend(bundle_copy, backend)
    manifest["model"]["control_dim"] = 6  # the architecture too: the weights do not fit
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="weights do not fit"):
        load_backend(bundle_copy, "torch")


def test_cli_exports_benches_and_reports_errors(bundle_copy: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, check=False)

    checkpoint = bundle_copy.parent / "run" / "latest.pt"
    result = cli("--checkpoint", str(checkpoint), "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert "parity onnxruntime" in result.stdout
    result = cli("bench", str(tmp_path / "b"), "--batch", "1", "2", "--rounds", "1",
                 "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    for name in ("eager", "torchscript", "onnxruntime", "x eager @1"):
        assert name in result.stdout
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["backends"]["onnxruntime"]["max_abs_vs_eager"] < 1e-4
    result = cli("--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "c"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.pt'}: no such "
                                                  f"checkpoint"]


def test_a_checkpoint_runs_with_start_frames_from_its_recording(
        exported: tuple[Path, Path]) -> None:
    checkpoint, _ = exported
    runner = load_backend(checkpoint)
    assert runner.name == "torch"
    start = runner.start_frames()
    assert start.dtype == np.uint8
    assert start.shape[1:] == (runner.manifest.context_frames, 3, 16, 16)
    with pytest.raises(ValueError, match="only the torch backend"):
        load_backend(checkpoint, "onnxruntime")


def test_noise_conditioning_is_a_third_input_with_the_play_level_as_default(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    _checkpoint, bundle = make_bundle(tmp_path_factory.mktemp("noise"),
                                     **VARIANTS["concat-registers-k4-noise"])
    manifest = Manifest.read(bundle)
    assert manifest.io["inputs"] == ["frames", "controls", "noise_level"]
    assert manifest.noise_level == 0.05
    assert manifest.parity["onnxruntime"]["batch8_max_abs"] <= 1e-4
    runner = load_backend(bundle, "onnxruntime", "cpu")
    assert [i.name for i in runner.session.get_inputs()] == manifest.io["inputs"]
    frames, controls = inputs(manifest, 4, seed=3)
    default = runner.step(frames, controls)
    np.testing.assert_array_equal(default, runner.step(frames, controls, 0.05))
    assert np.abs(default - runner.step(frames, controls, 0.3)).max() > 1e-6
    plain_manifest = json.loads((bundle / MANIFEST).read_text())
    plain_manifest["model"]["noise_conditioning"] = False  # a manifest that lies about it
    (bundle / MANIFEST).write_text(json.dumps(plain_manifest))
    with pytest.raises(BundleError, match=r"noise_conditioning and model\.latent_dim decide"):
        load_backend(bundle, "onnxruntime", "cpu")


def test_a_stick_view_model_moves_its_view_alike_in_every_backend(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("view")
    rec = moving_square_recording(root / "rec")
    fit(baby_config(rec, steps=2, **{"model.stick_view": True, "model.context_frames": 2,
                                     "model.output_mode": "residual"}), root / "run")
    checkpoint = root / "run" / "latest.pt"
    state = torch.load(checkpoint, weights_only=False)
    moved = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))  # a view that moves
    for weights in (state["model"], state["ema"]):
        weights["view_motion.weight"] = moved
    torch.save(state, checkpoint)
    export_bundle(checkpoint, root / "bundle")
    manifest = Manifest.read(root / "bundle")
    for backend in ("onnxruntime", "torchscript"):
        assert manifest.parity[backend]["batch8_max_abs"] <= 1e-4, manifest.parity
    model, _ = model_from_checkpoint(checkpoint)
    frames, controls = inputs(manifest, 4, seed=1)
    with torch.no_grad():
        view = model.moved_view(torch.from_numpy(frames[:, -1]), torch.from_numpy(controls))
    assert float((view - torch.from_numpy(frames[:, -1])).abs().mean()) > 0.05  # it moved
    runner = load_backend(root / "bundle", "onnxruntime", "cpu")
    np.testing.assert_allclose(runner.step(frames, controls), eager(model, manifest, frames,
                                                                    controls), atol=1e-4)
