"""The remedies for long dreams: the unroll curriculum, multi-step training with
fed-back predictions, noise augmentation, and the collapse check."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import train.rollout
from models import WorldModel
from tests.train.helpers import baby_config, moving_square_recording
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.config import UnrollConfig
from train.data import TransitionSet, load_frames, start_context, transition_rows
from train.drift import MOVING, Reference, collapse_check, frame_stats, scripted_sticks
from train.evaluate import collapse_sweep
from train.loop import fit
from train.objective import unrolled_loss
from train.report import format_sweep
from train.rollout import dream, free_run, roll_in, roll_in_share
from train.sticks import stick_response

ROOT = Path(__file__).resolve().parents[2]


def test_curriculum_stages_split_the_run_evenly_or_at_the_boundaries() -> None:
    even = UnrollConfig(schedule=(1, 2, 4, 8))
    assert [even.length(s, 100) for s in (0, 24, 25, 49, 50, 74, 75, 99)] == [
        1, 1, 2, 2, 4, 4, 8, 8]
    assert even.max_length == 8
    custom = UnrollConfig(schedule=(1, 2, 4), boundaries=(0.4, 0.7))
    assert [custom.length(s, 10) for s in range(10)] == [1, 1, 1, 1, 2, 2, 2, 4, 4, 4]
    assert UnrollConfig().length(123, 200) == 1
    with pytest.raises(ValueError, match="needs 2 fraction"):
        UnrollConfig(schedule=(1, 2, 4), boundaries=(0.5,))
    with pytest.raises(ValueError, match="must rise within"):
        UnrollConfig(schedule=(1, 2, 4), boundaries=(0.7, 0.4))
    with pytest.raises(ValueError, match="lengths >= 1"):
        UnrollConfig(schedule=(0, 2))
    with pytest.raises(ValueError, match="rollin must be >= 0"):
        UnrollConfig(rollin=-1)
    with pytest.raises(ValueError, match="rollin_share must be in"):
        UnrollConfig(rollin=4, rollin_share=0.0)
    assert UnrollConfig(schedule=(1, 2, 4), rollin=8).horizon == 12


class Spy(nn.Module):
    """Records each call's inputs; predicts the last context frame plus 0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self.latents: list[torch.Tensor | None] = []

    def forward(self, frames: torch.Tensor, controls: torch.Tensor,
                noise: torch.Tensor | None = None,
                latent: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((frames.detach().clone(), controls.clone(), noise))
        self.latents.append(latent)
        return (frames[:, -1] + 0.1) * self.scale


def test_unroll_feeds_predictions_back_into_the_window(tmp_path: Path) -> None:
    config = baby_config(tmp_path, **{"model.context_frames": 3})
    spy = Spy()
    context = torch.rand(2, 3, 3, 16, 16)
    controls = torch.rand(2, 4, 4)
    targets = torch.rand(2, 4, 3, 16, 16)
    terms, first = unrolled_loss(spy, context, controls, targets, config, 4,
                                 torch.Generator().manual_seed(0))
    assert len(spy.calls) == 4
    for t, (frames, ctrl, noise) in enumerate(spy.calls):
        assert noise is None  # no noise configured
        torch.testing.assert_close(ctrl, controls[:, t])
        # The window holds 3 - t true frames, then the t predictions so far.
        true = context[:, t:] if t < 3 else context[:, :0]
        torch.testing.assert_close(frames[:, :true.shape[1]], true)
        for j in range(t):
            slot = 3 - t + j
            if slot >= 0:
                torch.testing.assert_close(frames[:, slot], context[:, -1] + 0.1 * (j + 1))
    torch.testing.assert_close(first, context[:, -1] + 0.1)
    expected = np.mean([float((context[:, -1] + 0.1 * (t + 1) - targets[:, t]).abs().mean())
                        for t in range(4)])
    assert float(terms["l1"].detach()) == pytest.approx(expected, rel=1e-5)


def test_detach_cuts_the_gradient_between_steps(tmp_path: Path) -> None:
    grads = {}
    for detach in (False, True):
        config = baby_config(tmp_path, **{"unroll.detach": detach, "loss.sobel": 0.0})
        spy = Spy()
        context = torch.full((1, 1, 3, 4, 4), 0.5)
        targets = torch.zeros(1, 2, 3, 4, 4)
        terms, _ = unrolled_loss(spy, context, torch.zeros(1, 2, 4), targets, config, 2,
                                 torch.Generator().manual_seed(0))
        terms["total"].backward()
        grads[detach] = float(spy.scale.grad)
    # Through the window, step 2's prediction is 0.6 * scale ** 2 + 0.1 * scale.
    assert grads[False] == pytest.approx(0.5 * (0.6 + (2 * 0.6 + 0.1)))
    assert grads[True] == pytest.approx(0.5 * (0.6 + 0.7))


def test_roll_in_dreams_the_window_without_gradients() -> None:
    spy = Spy()
    context = torch.rand(2, 3, 3, 8, 8) * 0.5
    controls = torch.rand(2, 5, 4)
    level = torch.full((2,), 0.01)
    window = roll_in(spy, context, controls, level)
    assert len(spy.calls) == 5
    assert not window.requires_grad
    for t, (_, ctrl, told) in enumerate(spy.calls):
        torch.testing.assert_close(ctrl, controls[:, t])
        assert told is level
    # Five steps of "last frame + 0.1", clamped at white: the window holds the last three.
    for j, k in enumerate((3, 4, 5)):
        torch.testing.assert_close(window[:, j], (context[:, -1] + 0.1 * k).clamp(0, 1))


def test_a_roll_in_share_dreams_part_of_the_batch_and_shifts_only_its_targets() -> None:
    spy = Spy()
    context = torch.rand(4, 2, 3, 8, 8) * 0.5
    controls = torch.arange(4 * 6 * 4, dtype=torch.float32).reshape(4, 6, 4)
    targets = torch.rand(4, 6, 3, 8, 8)
    level = torch.full((4,), 0.01)
    held = torch.randn(4, 3)
    window, ctrl, tgt = roll_in_share(spy, context, controls, targets, 2, 0.5, level, held)
    assert len(spy.calls) == 2
    # A latent model dreams as it is played: the rolled-in samples' latents, held throughout.
    assert all(z is not None and torch.equal(z, held[:2]) for z in spy.latents)
    assert all(len(frames) == 2 for frames, _, _ in spy.calls)  # only half the batch dreams
    # The rolled-in half: two dreamt steps in the window, its controls and targets
    # two steps on. The other half: the true context and the first four targets.
    torch.testing.assert_close(window[:2, -1], context[:2, -1] + 0.2)
    torch.testing.assert_close(window[2:], context[2:])
    assert ctrl.shape == (4, 4, 4)
    assert tgt.shape == (4, 4, 3, 8, 8)
    torch.testing.assert_close(ctrl[:2], controls[:2, 2:])
    torch.testing.assert_close(ctrl[2:], controls[2:, :4])
    torch.testing.assert_close(tgt[:2], targets[:2, 2:])
    torch.testing.assert_close(tgt[2:], targets[2:, :4])


def test_a_latent_dream_holds_one_latent_or_draws_one_every_step() -> None:
    model = WorldModel(baby_config(Path("unused"), **{"model.latent_dim": 4}).model)
    seen: list[torch.Tensor] = []
    embed = model.embed_action

    def spy(controls: torch.Tensor, noise_level: torch.Tensor | None = None,
            latent: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(latent if latent is not None else torch.full((1, 4), torch.nan))
        return embed(controls, noise_level, latent)

    model.embed_action = spy  # type: ignore[method-assign]
    context, sticks = torch.rand(1, 1, 3, 16, 16), scripted_sticks(6)
    free_run(model, context, sticks)  # hold, the default
    assert len(seen) == 6
    assert all(torch.equal(z, seen[0]) for z in seen)
    assert not seen[0].isnan().any()
    first = seen[0]
    seen.clear()
    free_run(model, context, sticks)  # the same seed, the same world
    assert torch.equal(seen[0], first)
    seen.clear()
    free_run(model, context, sticks, seed=1)  # another seed, another world
    assert not torch.equal(seen[0], first)
    seen.clear()
    free_run(model, context, sticks, latent="fresh")  # a new draw every step
    assert len(seen) == 6
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(seen))
    with pytest.raises(ValueError, match="latent mode must be one of hold, fresh"):
        free_run(model, context, sticks, latent="still")


def test_noise_reaches_the_frames_and_its_level_the_model(tmp_path: Path) -> None:
    config = baby_config(tmp_path, **{"model.noise_conditioning": True,
                                      "noise.max_level": 0.2})
    spy = Spy()
    context = torch.full((64, 1, 3, 8, 8), 0.5)
    unrolled_loss(spy, context, torch.zeros(64, 2, 4), torch.zeros(64, 2, 3, 8, 8), config, 2,
                  torch.Generator().manual_seed(0))
    for t, (frames, _, level) in enumerate(spy.calls):
        assert level is not None
        assert level.shape == (64,)
        assert float(level.min()) >= 0
        assert float(level.max()) <= 0.2
        assert float(level.std()) > 0.03  # drawn per sample
        if t == 0:  # later windows also hold predictions made from noisy input
            measured = (frames[:, -1] - 0.5).flatten(1).std(dim=1)
            np.testing.assert_allclose(measured, level, atol=0.04)
    config = baby_config(tmp_path, **{"model.noise_conditioning": True, "noise.max_level": 0.2,
                                      "noise.prob": 0.0})
    spy = Spy()
    unrolled_loss(spy, context, torch.zeros(64, 1, 4), torch.zeros(64, 1, 3, 8, 8), config, 1,
                  torch.Generator().manual_seed(0))
    frames, _, level = spy.calls[0]
    assert level is not None
    assert float(level.abs().max()) == 0
    torch.testing.assert_close(frames, context)


def test_multistep_noisy_training_with_amp_and_checkpointing_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    settings = {"model.context_frames": 2, "model.noise_conditioning": True,
                "noise.max_level": 0.1, "noise.play_level": 0.02, "unroll.schedule": "1,2,3",
                "model.grad_checkpointing": True, "precision": "bf16", "steps": 6,
                "checkpoint_every": 3, "eval_every": 100}
    config = baby_config(rec, **settings, **{"unroll.rollin": 2})
    rolled: list[int] = []

    def spy_roll_in(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
                    level: torch.Tensor | None, latent: torch.Tensor | None) -> torch.Tensor:
        rolled.append(controls.shape[1])
        assert level is not None
        assert float(level[0]) == pytest.approx(0.02)
        assert latent is None  # this model has none
        return real_roll_in(net, context, controls, level, latent)

    real_roll_in = train.rollout.roll_in
    monkeypatch.setattr(train.rollout, "roll_in", spy_roll_in)
    straight = fit(config, tmp_path / "straight", "never")
    assert [r["unroll"] for r in straight.history] == [1, 1, 2, 2, 3, 3]
    assert rolled  # 0 to 2 steps a batch; 0 skips the call
    assert set(rolled) <= {1, 2}

    def stop(step: int, row: dict[str, float]) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", "never", on_step=stop)
    fit(config, tmp_path / "resumed", "auto")
    a = load_checkpoint(tmp_path / "straight" / "latest.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "latest.pt")["model"]
    for k in a:  # the same noise and the same batches after the resume
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def constant_model(config: Any) -> WorldModel:
    """A deliberately broken model: every prediction is the same grey image."""
    model = WorldModel(config)

    def forward(frames: torch.Tensor, controls: torch.Tensor,
                noise: torch.Tensor | None = None,
                latent: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full_like(frames[:, -1], 0.4)

    model.forward = forward  # type: ignore[method-assign]
    return model


@pytest.fixture(scope="module")
def doom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 steps of real ViZDoom health_gathering under the wander policy."""
    pytest.importorskip("vizdoom", reason="needs the envs extra: pip install -e '.[envs]'")
    from play.policies import WanderPolicy
    from play.record import record
    from play.worlds import make_world

    out = tmp_path_factory.mktemp("doom") / "rec"
    world = make_world("doom:health_gathering")
    try:
        policy = WanderPolicy(len(world.control_names), seed=3)
        record(world, policy, out, 600, size=(64, 64), seed=3)
    finally:
        world.close()
    return out


def test_collapse_check_passes_the_recording_and_flags_a_constant_model(doom: Path) -> None:
    from train.data import load_frames

    frames = load_frames(doom, (64, 64))
    real = np.asarray(frames.frames, np.float32) / 255.0
    ref = Reference.from_frames(frames.frames, frames.controls)
    assert ref.change > 0.005
    assert ref.detail > 0.01
    itself = collapse_check(real, frames.controls, ref)
    assert itself.passed, itself.summary()

    config = baby_config(doom).model.replace(height=64, width=64)
    broken = constant_model(config)
    sticks = scripted_sticks(200)
    context = torch.from_numpy(real[:1])[None]
    dream = free_run(broken, context, sticks)
    report = collapse_check(dream, sticks, ref)
    assert not report.passed
    assert report.freeze_step is not None
    assert report.freeze_step <= 20
    assert report.detail_step is not None
    assert report.detail_step <= 20
    assert "FAILED" in report.summary()

    # A frozen copy of a real frame keeps its detail and brightness: only the freeze fires.
    typical = int(np.argsort(frame_stats(real)["detail"])[len(real) // 2])
    still = np.repeat(real[typical:typical + 1], 200, axis=0)
    report = collapse_check(still, sticks, ref)
    assert report.freeze_step == 16
    assert report.blowout_step is None
    assert report.detail_step is None

    # A model that breaks down to NaN (a diverged run) blows out where it does: NaN
    # compares False against every bound, so it must be caught on its own.
    broken_down = real[:200].copy()
    broken_down[40:] = np.nan
    report = collapse_check(broken_down, frames.controls[:200], ref)
    assert report.blowout_step == 41  # the first window that holds step 41's NaN frame
    assert not report.passed

    # A dream that washes out to white blows out.
    washed = np.clip(real[:200] + np.linspace(0, 1, 200)[:, None, None, None], 0, 1)
    report = collapse_check(washed.astype(np.float32), frames.controls[:200], ref)
    assert report.blowout_step is not None

    # The programme's sticks rest for its last quarter: a dream that stands still there
    # passes; one that keeps repainting itself (two real frames in turn) boils.
    # (The real frames where the recording's own sticks moved: the scripted sticks move
    # all through the first 150 steps, and the recording rests now and then.)
    assert np.abs(sticks[:150]).max(axis=1).min() > 0.2
    assert not sticks[150:].any()
    moved = real[np.abs(frames.controls).max(axis=1) >= MOVING]
    calm = moved[:200].copy()
    calm[150:] = moved[150]
    assert collapse_check(calm, sticks, ref).passed
    flicker = calm.copy()
    flicker[150::2] = moved[10]
    report = collapse_check(flicker, sticks, ref)
    assert (report.freeze_step, report.blowout_step, report.detail_step) == (None, None, None)
    assert report.boil_step == 150 + 8 + 16  # the sticks have rested 8 steps, then a window
    assert report.figures["rest_change_max_ratio"] > 1.0
    assert "boil         from step 174" in report.summary()


def test_detail_loss_is_judged_against_the_recordings_own_plainest_stretch() -> None:
    # A recording that looks at the sky for 30 steps: its plainest windows hold
    # a tenth of its mean detail, and it must still pass its own check.
    rng = np.random.default_rng(0)
    frames = rng.random((300, 3, 16, 16)).astype(np.float32)
    frames[100:130] = 0.5 + 0.05 * (frames[100:130] - 0.5)
    controls = np.ones((300, 4), np.float32)
    controls[100:130] = 0.0  # (and stands still there: no freeze, no boil)
    ref = Reference.from_frames(frames, controls)
    assert ref.detail_low < 0.2 * ref.detail
    itself = collapse_check(frames, controls, ref)
    assert itself.passed, itself.summary()
    assert itself.figures["detail_bound_ratio"] == pytest.approx(ref.detail_low / ref.detail)
    # Plainer than anything in the recording, and under half its mean: detail loss.
    plain = 0.5 + 0.02 * (rng.random((40, 3, 16, 16)).astype(np.float32) - 0.5)
    report = collapse_check(plain, controls[:40], ref)
    assert report.detail_step == 16
    assert f"bounds {ref.detail_low / ref.detail:.2f}x-2.00x" in report.summary()
    # A recording without plain stretches keeps the plain bound: half its mean.
    busy = Reference.from_frames(rng.random((100, 3, 16, 16)).astype(np.float32),
                                 controls[:100])
    assert collapse_check(plain, controls[:40], busy).figures["detail_bound_ratio"] == 0.5


def test_a_dream_that_dissolves_into_a_fine_pattern_fails_the_detail_check() -> None:
    # The FFT-loss and latent models' dreams dissolve into stripes and speckle: the
    # brightness and contrast of the real game, far more fine detail than it has.
    rng = np.random.default_rng(0)
    frames = (0.5 + 0.2 * (rng.random((200, 3, 16, 16)) - 0.5)).astype(np.float32)
    controls = np.ones((200, 4), np.float32)
    ref = Reference.from_frames(frames, controls)
    assert collapse_check(frames, controls, ref).passed
    amplitude = float(frames.std())  # the recording's contrast
    checker = np.indices((16, 16)).sum(axis=0) % 2 * 2 - 1.0
    pattern = np.broadcast_to(0.5 + amplitude * checker, (60, 3, 16, 16)).astype(np.float32)
    report = collapse_check(pattern, np.zeros((60, 4), np.float32), ref)  # still, at rest
    assert (report.freeze_step, report.blowout_step, report.boil_step) == (None, None, None)
    assert report.detail_step == 16
    f = report.figures
    assert f["detail_ceiling_ratio"] == pytest.approx(max(2.0, ref.detail_high / ref.detail))
    assert f["detail_max_ratio"] > f["detail_ceiling_ratio"]
    assert f"max {f['detail_max_ratio']:.2f}x" in report.summary()


def test_the_real_world_under_the_scripted_sticks_passes(doom: Path) -> None:
    # The check's stick programme is fair: Doom itself, driven by it, does not
    # freeze, blow out or lose detail against a wander recording's statistics.
    from play.record import resize
    from play.worlds import make_world
    from train.data import load_frames

    frames = load_frames(doom, (64, 64))
    ref = Reference.from_frames(frames.frames, frames.controls)
    sticks = scripted_sticks(400)
    world = make_world("doom:health_gathering")
    real = []
    try:
        world.reset(seed=5)
        for s in sticks:
            frame, done = world.step(s)
            if done:
                frame = world.reset()
            real.append(resize(frame, (64, 64)).transpose(2, 0, 1) / 255.0)
    finally:
        world.close()
    report = collapse_check(np.asarray(real, np.float32), sticks, ref)
    assert report.passed, report.summary()


def test_a_collapse_sweep_dreams_each_start_and_latent_seed_as_one_batch(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec", episodes=1, steps=40)
    config = baby_config(rec, **{"model.latent_dim": 4, "model.context_frames": 2})
    model = WorldModel(config.model).eval()
    frames = [load_frames(rec, (16, 16))]
    runs = collapse_sweep(model, frames, torch.device("cpu"), seeds=[3, 4], starts=[0, 20],
                          steps=24)
    assert [(r["start"], r["seed"], r["latent"]) for r in runs] == [
        (0, 3, "hold"), (0, 4, "hold"), (20, 3, "hold"), (20, 4, "hold")]
    # Each is the dream of its own start, holding the latent its seed draws.
    sticks = torch.from_numpy(scripted_sticks(24))[None]
    ref = Reference.from_frames(frames[0].frames, frames[0].controls)
    for r in runs:
        z = torch.from_numpy(np.random.default_rng(r["seed"]).standard_normal(4, np.float32))[None]
        alone = dream(model, start_context(frames[0], 2, r["start"])[None], sticks, None, z)[0]
        expected = collapse_check(alone.numpy(), sticks[0].numpy(), ref).to_dict()
        assert r["figures"]["mean_min"] == pytest.approx(expected["figures"]["mean_min"],
                                                         abs=1e-4)
        assert r["freeze_step"] == expected["freeze_step"]
    assert runs[0]["figures"] != runs[2]["figures"]  # another start, another dream
    assert runs[0]["figures"] != runs[1]["figures"]  # another draw, another world
    # A model without a latent dreams once from each start.
    plain = WorldModel(baby_config(rec).model)
    assert [(r["start"], r["seed"], r["latent"]) for r in collapse_sweep(
        plain, frames, torch.device("cpu"), seeds=[3, 4], starts=[0, 20], steps=24)] == [
        (0, 3, None), (20, 3, None)]
    text = format_sweep(runs).splitlines()
    assert text[0].startswith(
        f"collapse check of 4 dreams, latent hold: {sum(r['passed'] for r in runs)} passed")
    assert len(text) == 5
    assert text[3].startswith("  start    20 seed   3: ")


def test_eval_cli_reports_rollouts_and_the_collapse_check(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec", episodes=2, steps=30)
    config = baby_config(rec, **{"model.context_frames": 2, "model.noise_conditioning": True,
                                 "noise.max_level": 0.1, "noise.play_level": 0.03,
                                 "unroll.schedule": "1,2", "model.latent_dim": 4,
                                 "loss.crps": 1.0, "unroll.rollin": 2})
    fit(config, tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-m", "train", "eval", "--checkpoint", str(tmp_path / "run/latest.pt"),
         "--data", str(rec), "--out", str(tmp_path / "eval"), "--horizons", "1", "4", "16",
         "--collapse-steps", "40", "--rollouts", "8", "--device", "cpu", "--latent", "fresh",
         "--collapse-seeds", "0", "1", "--collapse-starts", "0", "30", "--realism-frames", "64"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "rollout 16" in result.stdout
    assert "collapse check over 40 free-running steps" in result.stdout
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["noise_level"] == 0.03
    assert report["latent"] == "fresh"
    assert "latent: fresh" in result.stdout
    assert set(report["rollout"]) == {"1", "4", "16"}
    assert report["collapse"]["steps"] == 40
    assert "stick response" in result.stdout
    assert set(report["sticks"]) == {"left_x"}  # the only axis the recording pushes
    # The sweep: one dream for each start and latent seed, each with its own verdict.
    sweep = report["collapse_sweep"]
    assert [(r["start"], r["seed"]) for r in sweep] == [(0, 0), (0, 1), (30, 0), (30, 1)]
    assert all(r["steps"] == 40 and r["latent"] == "fresh" for r in sweep)
    assert f"collapse check of 4 dreams, latent fresh: {sum(r['passed'] for r in sweep)} " \
        "passed" in result.stdout
    assert "start    30 seed   1:" in result.stdout
    for name in ("rollout.png", "rollout.gif", "freerun.png", "freerun.gif"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    # The realism figure: each band of dream frames against half of the 60 real frames
    # (a short recording judges fewer than the 64 asked for), then the free run's tail.
    realism = report["realism"]
    assert list(realism) == ["steps 1-4", "steps 8-24", "steps 48-96", "steps 128-256",
                             "last 40 of the free run"]
    assert all(r["test_images"] == 30 and 0 <= r["low"] <= r["accuracy"] <= r["high"] <= 1
               for r in realism.values())
    assert "realism: a critic tells these frames from the held-out game" in result.stdout
    from recording.video import read_mp4

    video = read_mp4(tmp_path / "eval" / "freerun.mp4")  # every frame of the dream, 4x
    assert len(video) == 40
    assert video[0].shape == (64, 64, 3)
    model, _ = model_from_checkpoint(tmp_path / "run" / "latest.pt")
    assert model.config.noise_conditioning


class FollowsLeftX(WorldModel):
    """The square world's true dynamics: left stick x moves the picture 3 px."""

    def forward(self, frames: torch.Tensor, controls: torch.Tensor,
                noise_level: torch.Tensor | None = None,
                latent: torch.Tensor | None = None) -> torch.Tensor:
        shifts = (3 * controls[:, 0]).round().long().tolist()
        return torch.stack([f.roll(s, dims=-1) for f, s in zip(frames[:, -1], shifts, strict=True)])


class IgnoresSticks(WorldModel):
    def forward(self, frames: torch.Tensor, controls: torch.Tensor,
                noise_level: torch.Tensor | None = None,
                latent: torch.Tensor | None = None) -> torch.Tensor:
        return frames[:, -1]


def test_the_mean_frame_scores_what_a_dream_faded_to_the_average_scores(
        tmp_path: Path) -> None:
    from train.evaluate import evaluate, mean_frame
    from train.report import format_report

    rec = load_frames(moving_square_recording(tmp_path / "rec", episodes=2, steps=30), (16, 16), 4)
    still = mean_frame([rec])
    assert still.shape == (3, 16, 16)
    expected = np.asarray(rec.frames, np.float64).mean(0) / 255.0
    np.testing.assert_allclose(still.numpy(), expected, atol=1e-6)
    assert float(still.std()) > 0.01  # a picture, not a grey level
    # A model that paints the mean picture whatever it sees scores exactly the
    # mean frame's PSNR, at one step and at every rollout length.
    config = baby_config(tmp_path).model.replace(height=16, width=16)
    faded = constant_model(config)
    faded.forward = lambda frames, *_: still.expand_as(frames[:, -1])  # type: ignore[method-assign]
    report = evaluate(faded, [rec], torch.device("cpu"), tmp_path / "eval", horizons=(1, 4, 16),
                      samples=32, rollouts=8, collapse_steps=0)
    for r in [report["one_step"], *report["rollout"].values()]:
        assert r["psnr"] == pytest.approx(r["mean_psnr"], abs=1e-4)
    # A real (here: copy-last) prediction is scored beside it on the same samples.
    copying = constant_model(config)
    copying.forward = lambda frames, *_: frames[:, -1]  # type: ignore[method-assign]
    report = evaluate(copying, [rec], torch.device("cpu"), tmp_path / "eval2",
                      horizons=(1, 4), samples=32, rollouts=8, collapse_steps=0)
    one = report["one_step"]
    assert one["psnr"] == pytest.approx(one["copy_psnr"])
    assert one["mean_psnr"] != pytest.approx(one["copy_psnr"])
    text = format_report(report)
    assert "mean frame" in text
    assert f"{one['mean_psnr']:.2f}" in text.splitlines()[1]


def test_stick_response_tells_a_model_that_follows_the_stick_from_one_that_ignores_it(
        tmp_path: Path) -> None:
    rec = load_frames(moving_square_recording(tmp_path / "rec", episodes=2, steps=30), (16, 16), 4)
    config = baby_config(tmp_path).model
    data = TransitionSet([(rec, transition_rows(rec, 1))], 1)
    follows = stick_response(FollowsLeftX(config), data, torch.device("cpu"))
    ignores = stick_response(IgnoresSticks(config), data, torch.device("cpu"))
    assert set(follows) == set(ignores) == {"left_x"}  # the other axes are never pushed
    assert follows["left_x"]["samples"] > 20
    assert follows["left_x"]["flip_l1_ratio"] > 3
    assert follows["left_x"]["response"] > 1
    assert ignores["left_x"]["flip_l1_ratio"] == 1.0
    assert ignores["left_x"]["response"] == 0.0


def test_view_motion_says_how_far_the_sticks_move_a_dream_beside_the_game(
        tmp_path: Path) -> None:
    from train.report import format_report
    from train.sticks import view_motion

    rec = load_frames(moving_square_recording(tmp_path / "rec", episodes=2, steps=30), (16, 16), 4)
    config = baby_config(tmp_path).model
    follows = view_motion(FollowsLeftX(config), [rec], steps=3)
    ignores = view_motion(IgnoresSticks(config), [rec], steps=3)
    assert set(follows) == set(ignores) == {"left_x"}  # the other axes are never pushed
    game = follows["left_x"]["game"]
    assert ignores["left_x"]["game"] == game
    assert -3.0 <= game[0] < -2.0  # the square moves 3 px right, less where it meets a wall
    assert game[1] == 0.0
    assert follows["left_x"]["dream"] == [-3.0, 0.0]  # this dream moves its picture as far
    assert ignores["left_x"]["dream"] == [0.0, 0.0]
    line = format_report({"one_step": {"psnr": 0, "copy_psnr": 0, "psnr_gain_db": 0, "ssim": 0,
                                       "copy_ssim": 0, "l1": 0, "copy_l1": 0}, "samples": 1,
                          "view_motion": follows}).splitlines()[-1]
    assert line == f"  left_x -3.0,+0.0 / {game[0]:+.1f},+0.0"


def test_a_paired_gain_is_the_mean_difference_and_its_standard_error() -> None:
    from train.evaluate import paired_gain

    rng = np.random.default_rng(0)
    shared = rng.normal(20, 3, 400)  # what the samples' difficulty does to both models
    lead, se = paired_gain(shared + 0.5 + rng.normal(0, 0.2, 400), shared)
    assert lead == pytest.approx(0.5, abs=0.05)
    # Paired, the samples' own spread (3 dB) cancels: only the 0.2 dB noise is left.
    assert se == pytest.approx(0.2 / 20, rel=0.2)
    assert paired_gain([1.0, 2.0], [1.0, 2.0]) == (0.0, 0.0)
    lead, se = paired_gain([], [])
    assert np.isnan(lead)
    assert np.isnan(se)
