from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import Discriminator, WorldModel
from models.codebook import code_spread, kmeans, nearest_code, patchify, unpatchify
from tests.train.helpers import BABY_MODEL, baby_config, moving_square_recording
from train.checkpoint import CheckpointError, list_steps, load_checkpoint, model_from_checkpoint
from train.data import load_frames
from train.drift import detail_energy
from train.fitting import grain_spread
from train.loop import fit
from train.optim import lr_factor
from train.runlog import csv_writer

ROOT = Path(__file__).resolve().parents[2]


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_fit_writes_checkpoints_config_and_metrics(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    result = fit(baby_config(rec), tmp_path / "run")
    run = tmp_path / "run"
    assert result.step == 6
    assert {"latest.pt", "best.pt", "config.json", "metrics.csv"} <= {p.name for p in
                                                                      run.iterdir()}
    assert list_steps(run) == [3, 6]
    state = load_checkpoint(run / "latest.pt")
    assert state["step"] == 6
    assert state["config"]["model"]["height"] == 16
    assert state["ema"] is not None
    model, _ = model_from_checkpoint(run / "latest.pt")
    assert model.config.embed_dim == 32
    logged = rows(run)
    assert [int(r["step"]) for r in logged if r["loss"]] == [1, 2, 3, 4, 5, 6]
    scored = [r for r in logged if r["val_psnr"]]
    assert [int(r["step"]) for r in scored] == [3, 6]  # eval_every 3, and the last step
    # Copy-last does not depend on the model: the same held-out score at every eval.
    assert len({r["val_copy_psnr"] for r in scored}) == 1
    assert 10.0 < float(scored[0]["val_copy_psnr"]) < 58.9
    best = max(float(r["val_psnr"]) for r in scored)
    assert result.best_val_psnr == pytest.approx(best)
    assert load_checkpoint(run / "best.pt")["best_val_psnr"] == pytest.approx(best)


@pytest.mark.parametrize(("grain", "rounds"), [(False, 1), (True, 1), (True, 3)])
def test_a_codebook_run_fits_its_codebook_to_the_recording_and_keeps_it(
        tmp_path: Path, grain: bool, rounds: int) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    config = baby_config(rec, **{"model.output_mode": "codebook", "model.codebook_size": 4,
                                 "model.codebook_patch": 2, "unroll.schedule": "1,2",
                                 "unroll.boundaries": "0.5", "unroll.rollin": 2,
                                 "model.codebook_grain": grain,
                                 "model.codebook_rounds": rounds, "model.codebook_refiner": 8})
    fit(config, tmp_path / "run")
    logged = rows(tmp_path / "run")
    assert all(float(r["ce"]) > 0 for r in logged if r["loss"])
    model, _ = model_from_checkpoint(tmp_path / "run" / "latest.pt")
    # The recording is a grey floor and a yellow square: its patches are few, and
    # the fitted codebook paints every frame back almost exactly.
    frames = load_frames(rec, (16, 16)).frames
    real = torch.from_numpy(frames[:12].astype("float32") / 255)
    error = (model.paint(model.codes_of(real)) - real).abs().max()
    assert error < 0.1, error
    assert model(real[:, None], torch.zeros(12, 4)).shape == (12, 3, 16, 16)
    likely = model.most_likely(real[:, None], torch.zeros(12, 4))
    torch.testing.assert_close(likely, model.most_likely(real[:, None], torch.zeros(12, 4)))
    if rounds > 1:  # the refiner learned from the hidden codes: its change left zero
        assert model.refiner is not None
        assert float(model.refiner.out.weight.detach().abs().max()) > 0
    if grain:  # the grain's spread is fitted with the codes and kept beside them
        state = load_checkpoint(tmp_path / "run" / "latest.pt")
        torch.testing.assert_close(model.codebook_spread, state["ema"]["codebook_spread"])
        assert torch.isfinite(model.codebook_spread).all()
        assert float(model.codebook_spread.min()) >= 0


def test_codebook_grain_gives_painted_frames_the_fine_detail_of_the_real_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    # A faintly grainy dark sky over a floor of a coarser, smoother texture: a few
    # codes keep the two apart but paint both flatter.
    sky = 0.05 + 0.02 * torch.randn(40, 3, 8, 16, generator=gen)
    floor = 0.4 + 0.4 * torch.nn.functional.avg_pool2d(
        torch.randn(40, 3, 10, 18, generator=gen), 3, 1)
    images = torch.cat([sky, floor], dim=2).clamp(0, 1)
    patches = patchify(images, 2).reshape(-1, 12)
    centres = kmeans(patches, 8, generator=gen)
    codes = nearest_code(patchify(images, 2), centres)
    want = float(detail_energy(images.numpy()).mean())
    flat = unpatchify(centres[codes], 2)
    assert float(detail_energy(flat.numpy()).mean()) < 0.8 * want
    spread = grain_spread(images, patches, centres, 2, gen)
    noise = torch.randn((*codes.shape, 12), generator=gen)  # another draw than the fit's
    painted = unpatchify((centres[codes] + spread[codes] * noise).clamp(0, 1), 2)
    assert abs(float(detail_energy(painted.numpy()).mean()) / want - 1) < 0.05
    # The spread is each code's own, scaled by one factor well below 1 (the grain
    # is finer than the floor's texture); the sky's codes get a faint grain.
    raw = code_spread(patches, centres)
    scale = (spread / raw.clamp(min=1e-9))[raw > 0]
    assert 0.3 < float(scale.min()) <= float(scale.max()) < 0.8
    sky_codes = codes[:, :4].unique()
    assert float(spread[sky_codes].mean()) < 0.5 * float(spread.mean())


def nan_on(steps: set[int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the loss of the given (1-based) training steps NaN; returns the calls seen."""
    import train.loop

    real, calls = train.loop.unrolled_loss, []

    def broken(*args: Any, **kwargs: Any) -> Any:
        terms, pred = real(*args, **kwargs)
        calls.append(len(calls) + 1)
        if calls[-1] in steps:
            terms = {**terms, "total": terms["total"] * torch.nan}
        return terms, pred

    monkeypatch.setattr(train.loop, "unrolled_loss", broken)
    return calls


def test_a_step_whose_loss_is_not_finite_is_skipped_not_learned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In bf16 or fp32 no grad scaler guards the step: one NaN gradient would make
    # every weight NaN and every later checkpoint useless.
    rec = moving_square_recording(tmp_path / "rec")
    calls = nan_on({2, 4}, monkeypatch)
    result = fit(baby_config(rec), tmp_path / "run")
    assert len(calls) == 6
    assert result.step == 6
    assert result.skipped_steps == 2
    state = load_checkpoint(tmp_path / "run" / "latest.pt")
    for part in ("model", "ema"):
        assert all(torch.isfinite(v).all() for v in state[part].values()
                   if v.is_floating_point()), part
    assert [r["loss"] for r in rows(tmp_path / "run") if r["loss"]][1] == "nan"


def test_a_run_whose_loss_stays_not_finite_stops_with_its_last_good_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import train.loop

    rec = moving_square_recording(tmp_path / "rec")
    monkeypatch.setattr(train.loop, "MAX_BAD_STEPS", 3)
    nan_on({4, 5, 6, 7, 8}, monkeypatch)
    with pytest.raises(train.loop.TrainingDiverged, match="3 steps in a row up to step 6"):
        fit(baby_config(rec, steps=9), tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())


def test_resumed_run_continues_the_step_and_schedule(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    config = baby_config(rec, steps=8, checkpoint_every=4, eval_every=100)
    fit(config, tmp_path / "straight", "never")
    # Stop at 4 (as if killed right after that checkpoint), then resume to 8.
    def stop(step: int, row: dict[str, float]) -> None:
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", "never", on_step=stop)
    assert load_checkpoint(tmp_path / "resumed" / "latest.pt")["step"] == 4
    fit(config, tmp_path / "resumed", "auto")
    straight, resumed = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [str(s) for s in range(1, 9)]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in straight]
    expected = [config.optim.lr * lr_factor(s, 2, 8, config.optim.min_lr_ratio)
                for s in range(1, 9)]
    assert [float(r["lr"]) for r in straight] == pytest.approx(expected)
    a = load_checkpoint(tmp_path / "straight" / "latest.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "latest.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_resumed_run_keeps_the_columns_of_its_older_metrics_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,l1\n1,0.5,0.4\n")  # written by a version with fewer columns
    f, writer = csv_writer(path)
    writer.writerow({"step": 2, "loss": 0.3, "l1": 0.2, "sobel": 0.1})
    f.close()
    assert rows(tmp_path) == [{"step": "1", "loss": "0.5", "l1": "0.4"},
                              {"step": "2", "loss": "0.3", "l1": "0.2"}]


def test_incompatible_model_is_refused_with_the_differing_fields(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    fit(baby_config(rec, steps=3), tmp_path / "run")
    other = baby_config(rec, steps=6, **{"model.depth": 3, "model.num_registers": 2,
                                         "model.dropout": 0.1})
    with pytest.raises(CheckpointError, match=r"depth: 2 -> 3; num_registers: 0 -> 2\. "):
        fit(other, tmp_path / "run")


def test_a_new_run_starts_from_the_weights_it_is_given(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    fit(baby_config(rec, steps=3), tmp_path / "first")
    given = load_checkpoint(tmp_path / "first" / "latest.pt")["ema"]
    # At a learning rate of ~0 the weights cannot move: the run holds what it was given.
    still = baby_config(rec, steps=2, **{"optim.lr": 1e-30, "optim.weight_decay": 0.0})
    result = fit(still, tmp_path / "second", init=tmp_path / "first" / "latest.pt")
    assert result.step == 2
    assert [int(r["step"]) for r in rows(tmp_path / "second") if r["loss"]] == [1, 2]
    state = load_checkpoint(tmp_path / "second" / "latest.pt")
    for k, v in given.items():
        torch.testing.assert_close(state["model"][k], v, msg=k)
        torch.testing.assert_close(state["ema"][k], v, msg=k)
    # A fresh run's weights are not those.
    fit(still, tmp_path / "fresh")
    fresh = load_checkpoint(tmp_path / "fresh" / "latest.pt")["model"]
    assert any(not torch.equal(fresh[k], v) for k, v in given.items())
    other = baby_config(rec, steps=2, **{"model.depth": 3})
    with pytest.raises(CheckpointError, match=r"refusing to start from it\. .*depth: 2 -> 3"):
        fit(other, tmp_path / "third", init=tmp_path / "first" / "latest.pt")
    # A latent is only a new layer: the run keeps every given weight and builds the rest.
    latent = baby_config(rec, steps=2, **{"optim.lr": 1e-30, "optim.weight_decay": 0.0,
                                          "model.latent_dim": 4, "loss.crps": 1.0,
                                          "loss.l1": 0.0})
    fit(latent, tmp_path / "latent", init=tmp_path / "first" / "latest.pt")
    state = load_checkpoint(tmp_path / "latent" / "latest.pt")
    assert set(state["model"]) == set(given) | {"latent_embed.weight", "latent_embed.bias"}
    for k, v in given.items():
        torch.testing.assert_close(state["model"][k], v, msg=k)
    crps = [float(r["crps"]) for r in rows(tmp_path / "latent") if r["loss"]]
    assert len(crps) == 2
    assert all(v > 0 for v in crps)


@pytest.mark.parametrize("conditional", [False, True])
def test_gan_path_runs_with_each_discriminator(tmp_path: Path, conditional: bool) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    config = baby_config(rec, steps=4, **{"gan.enabled": True, "gan.start_step": 1,
                                          "gan.conditional": conditional, "gan.filters": "8,16"})
    result = fit(config, tmp_path / "run")
    gan_rows = [r for r in result.history if "gan_d" in r]
    assert [r["step"] for r in gan_rows] == [2, 3, 4]  # from gan.start_step on
    assert all(torch.isfinite(torch.tensor([r["gan_g"], r["gan_d"]])).all() for r in gan_rows)
    assert "gan_g" not in result.history[0]
    # The discriminator learned: its weights left their initial values, as built
    # after the model from the run's seed.
    torch.manual_seed(config.seed)
    WorldModel(config.model)
    initial = Discriminator(config.gan.discriminator(), config.model).state_dict()
    trained = load_checkpoint(tmp_path / "run" / "latest.pt")["discriminator"]
    assert trained.keys() == initial.keys()
    moved = [k for k in initial if initial[k].is_floating_point()
             and not torch.equal(initial[k], trained[k])]
    assert len(moved) > len(initial) // 2


def test_bf16_autocast_and_gradient_checkpointing_train_as_without_them(
        tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    losses = {"ssim": 0.1, "fft": 0.1, "sobel": 0.1}
    runs = {}
    for name, precision, ckpt in (("fp32", "fp32", False), ("bf16", "bf16", False),
                                  ("bf16-ckpt", "bf16", True)):
        config = baby_config(rec, steps=3, precision=precision, **{
            "model.grad_checkpointing": ckpt, **{f"loss.{k}": v for k, v in losses.items()}})
        runs[name] = [r["loss"] for r in fit(config, tmp_path / name).history if "loss" in r]
    assert len(runs["bf16"]) == 3
    # Checkpointing recomputes the same bf16 forward: the same losses, step for step.
    torch.testing.assert_close(torch.tensor(runs["bf16-ckpt"]), torch.tensor(runs["bf16"]))
    # bf16 is an approximation of the same training, not another one: the first loss
    # (same weights, same batch) to bf16's precision, the later ones close behind.
    assert runs["bf16"][0] == pytest.approx(runs["fp32"][0], rel=0.02)
    torch.testing.assert_close(torch.tensor(runs["bf16"]), torch.tensor(runs["fp32"]),
                               rtol=0.15, atol=0.0)


def test_torchrun_two_processes_on_gloo(tmp_path: Path) -> None:
    rec = moving_square_recording(tmp_path / "rec")
    sets = [f"--set={k}={v}" for k, v in BABY_MODEL.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "train", "--data", str(rec), "--run-dir", str(tmp_path / "run"),
           "--steps", "4", "--batch-size", "2", "--device", "cpu", "--quiet",
           "--set=checkpoint_every=100",
           "--set=eval_every=100", "--set=log_every=1", *sets,
           # The remedies too: a roll-in, then two forward passes per backward under DDP.
           "--set=model.context_frames=2", "--set=model.noise_conditioning=true",
           "--set=noise.max_level=0.1", "--set=unroll.schedule=1,2", "--set=unroll.boundaries=",
           "--set=unroll.rollin=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list_steps(tmp_path / "run") == [4]
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["step"] == 4
    logged = [r for r in rows(tmp_path / "run") if r["loss"]]
    assert [r["step"] for r in logged] == ["1", "2", "3", "4"]
    assert [r["unroll"] for r in logged] == ["1", "1", "2", "2"]


DDP_GAN_WORKER = """
import os, sys
from pathlib import Path
import torch
from tests.train.helpers import baby_config
from train.loop import Trainer

out = Path(sys.argv[1])
config = baby_config(Path(sys.argv[2]), steps=4, batch_size=2, device="cpu",
                     **{"gan.enabled": True, "gan.start_step": 0, "gan.filters": "8,16",
                        "checkpoint_every": 100, "eval_every": 100})
trainer = Trainer(config, out / "run")
trainer.start("never")
first = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
trainer.run()
trainer.close()
torch.save({"first": first, "last": trainer.disc.state_dict()},
           out / f"disc-{os.environ['RANK']}.pt")
"""


def test_torchrun_trains_one_discriminator_across_ranks(tmp_path: Path) -> None:
    """Under DDP each rank draws its own batches: the discriminator's weights stay
    equal across ranks only because its gradients are averaged like the model's."""
    rec = moving_square_recording(tmp_path / "rec")
    (tmp_path / "worker.py").write_text(DDP_GAN_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(tmp_path / "worker.py"), str(tmp_path), str(rec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"disc-{r}.pt") for r in (0, 1)]
    for name, weight in ranks[0]["last"].items():
        torch.testing.assert_close(ranks[1]["last"][name], weight, rtol=0, atol=1e-6)
    moved = [name for name, w in ranks[0]["last"].items()
             if not torch.equal(w, ranks[0]["first"][name])]
    assert len(moved) >= len(ranks[0]["last"]) // 2  # it trained: equal is not trivially so


def test_sigkill_during_checkpoint_writes_never_leaves_a_bad_latest(tmp_path: Path) -> None:
    """A real-size model (the tiny preset, ~45 MB checkpoints) checkpoints every
    step, so a good share of the kills land inside a write."""
    rec = moving_square_recording(tmp_path / "rec", size=64, episodes=2, steps=20)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "train", "--data", str(rec), "--run-dir", str(run),
           "--steps", "100000", "--batch-size", "1", "--quiet", "--set=checkpoint_every=1",
           "--set=eval_every=1000000", "--set=keep_last=2",
           # Short steps, so many kills land inside a write: no unrolls.
           "--set=unroll.rollin=0", "--set=unroll.schedule=1", "--set=unroll.boundaries="]
    rng = random.Random(0)
    steps_seen, mid_write = [], 0
    for kill in range(10):
        latest = run / "latest.pt"
        before = load_checkpoint(latest)["step"] if latest.exists() else 0
        linked = latest.stat().st_ino if latest.exists() else None
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            # Wait until latest.pt is a link to a newer step file (a step file alone
            # may exist a moment before latest.pt is relinked to it).
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if latest.exists() and latest.stat().st_ino != linked:
                    break
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr \
                else ""
            if kill % 2:  # at a random moment
                time.sleep(rng.uniform(0.0, 0.6))
            else:  # as soon as the next checkpoint's temporary file appears
                while time.monotonic() < deadline and not any(run.glob("*.tmp")):
                    time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        mid_write += any(run.glob("*.tmp"))  # a torn temporary: killed inside a write
        state = load_checkpoint(run / "latest.pt")  # whole, loadable, every time
        assert state["step"] > before  # and the next run resumed from it
        steps_seen.append(state["step"])
    assert steps_seen == sorted(steps_seen)
    # Half the kills aim at a write, but on a busy machine a write can finish
    # before the kill lands; none at all would mean this test no longer tests
    # what it says.
    assert mid_write >= 1, "no kill landed inside a checkpoint write"
    model, _ = model_from_checkpoint(run / "latest.pt")
    assert model.config.height == 64


def test_a_stick_view_model_starts_from_how_the_recording_moves_with_the_sticks(
        tmp_path: Path) -> None:
    from models.config import FLOW_PIXELS
    from train.data import TransitionSet, transition_rows
    from train.fitting import fit_view_motion

    rec = moving_square_recording(tmp_path / "rec", episodes=3, steps=30)
    frames = load_frames(rec, (16, 16), 4)
    weight, bias = fit_view_motion(TransitionSet([(frames, transition_rows(frames, 1))], 1))
    pixels = weight * FLOW_PIXELS
    # left x moves the square 3 px right (less at the walls): the picture samples 3 px left.
    assert -3.0 <= pixels[0, 0] < -1.5, pixels
    assert abs(pixels[1, 0]) < 0.2, pixels  # and never up or down
    assert abs(bias).max() * FLOW_PIXELS < 0.3
    fit(baby_config(rec, steps=1, **{"model.stick_view": True}), tmp_path / "run")
    model, _ = model_from_checkpoint(tmp_path / "run" / "latest.pt")
    assert model.view_motion is not None
    learned = model.view_motion.weight.detach().numpy() * FLOW_PIXELS
    assert abs(learned[0, 0] - pixels[0, 0]) < 0.1  # one step on, still the fitted map
    assert abs(learned[2]).max() < 0.1  # no zoom to fit


def test_a_stick_view_held_at_its_fit_keeps_it_through_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import train.fitting

    fitted: list[tuple[np.ndarray, np.ndarray]] = []
    original = train.fitting.fit_view_motion
    monkeypatch.setattr(train.fitting, "fit_view_motion",
                        lambda data: fitted.append(original(data)) or fitted[-1])
    rec = moving_square_recording(tmp_path / "rec", episodes=3, steps=30)
    fit(baby_config(rec, steps=4, **{"model.stick_view": True, "model.stick_view_learn": False}),
        tmp_path / "run")
    model, _ = model_from_checkpoint(tmp_path / "run" / "latest.pt")
    assert model.view_motion is not None
    assert len(fitted) == 1
    weight, bias = fitted[0]
    # Neither the optimizer's steps nor its weight decay moved the shift from the fit.
    torch.testing.assert_close(model.view_motion.weight.detach()[:2],
                               torch.from_numpy(weight).float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.view_motion.bias.detach()[:2],
                               torch.from_numpy(bias).float(), rtol=1e-6, atol=1e-7)


def test_fp16_with_a_grad_scaler_skips_overflowing_steps_and_trains(
        tmp_path: Path, device: torch.device) -> None:
    """fp16 autocast and torch.amp.GradScaler for real (on the CPU here, on CUDA under
    TINYDREAMS_TEST_DEVICE=cuda): a scale too large overflows the first steps'
    fp16 gradients; those steps are skipped and counted, the scale backs off, and
    the steps after it train the model, discriminator included."""
    from train.loop import Trainer

    rec = moving_square_recording(tmp_path / "rec")
    config = baby_config(rec, steps=40, batch_size=2, precision="fp16", device=str(device),
                         eval_every=100, checkpoint_every=100,
                         **{"gan.enabled": True, "gan.start_step": 0, "gan.filters": "8,16"})
    trainer = Trainer(config, tmp_path / "run")
    trainer.start("never")
    assert trainer.amp is torch.float16
    assert trainer.scaler.is_enabled()
    trainer.scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 40)
    first = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.run()
    trainer.close()
    assert 1 <= result.skipped_steps < 40
    assert trainer.scaler.get_scale() <= 2.0 ** (40 - result.skipped_steps)
    weights = trainer.model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert any(not torch.equal(w, first[k]) for k, w in weights.items())
    losses = [float(r["loss"]) for r in result.history if "loss" in r]
    assert all(np.isfinite(losses))
