"""The training loop: AdamW with warm-up and cosine decay, gradient clipping,
mixed precision, EMA, optional GAN, resumable atomic checkpoints, and
DistributedDataParallel when started by ``torchrun``. ``fit`` runs a ``Trainer``,
whose methods each do one part: set up, resume, step, validate, checkpoint."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from models import Discriminator, WorldModel
from train.checkpoint import (
    CheckpointError,
    check_compatible,
    find_resume,
    load_checkpoint,
    model_weights,
    save_checkpoint,
)
from train.config import TrainConfig
from train.data import WORKER_CONTEXT, StepBatches, build_datasets, evenly_spaced, to_model_inputs
from train.distributed import Distributed
from train.evaluate import one_step_metrics
from train.fitting import fit_model_parts
from train.losses import discriminator_loss, generator_loss
from train.objective import unrolled_loss
from train.optim import EMA, autocast_dtype, lr_factor, param_groups
from train.rollout import roll_in_share
from train.runlog import csv_writer, tensorboard

log = logging.getLogger(__name__)

MAX_BAD_STEPS = 20  # non-finite steps in a row before a run is declared diverged


@dataclass
class FitResult:
    step: int
    run_dir: Path
    best_val_psnr: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0  # steps whose loss or gradient was not finite


class TrainingDiverged(RuntimeError):
    """Many steps in a row had a loss or gradient that is not finite."""


def fit(config: TrainConfig, run_dir: str | Path, resume: str = "auto",
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        on_cache: Callable[[str, int, int], None] | None = None,
        init: str | Path | None = None) -> FitResult:
    """Train a world model as ``config`` says, writing into ``run_dir``.

    Args:
        config: The run's configuration (saved beside the checkpoints).
        run_dir: Directory of checkpoints, ``config.json`` and ``metrics.csv``.
        resume: ``auto`` (from ``run_dir/latest.pt`` when there is one), ``never``,
            or a checkpoint path.
        on_step: Called after each step with the step and its logged scalars.
        on_cache: Progress of frame-cache building: (recording, done, total).
        init: A checkpoint whose weights (its EMA when it has one) a new run
            starts from, with a fresh optimizer and schedule: fine-tuning, or
            more training after a finished schedule. Ignored when resuming.
    """
    trainer = Trainer(config, Path(run_dir), on_cache)
    try:
        trainer.start(resume, init)
        return trainer.run(on_step)
    finally:
        trainer.close()


class Trainer:
    """One training run: its data, model, optimizer and logs."""

    def __init__(self, config: TrainConfig, run_dir: Path,
                 on_cache: Callable[[str, int, int], None] | None = None) -> None:
        self.config, self.run_dir = config, run_dir
        self.ctx = Distributed(config.device)
        self.device = self.ctx.device
        torch.manual_seed(config.seed)
        self._load_data(on_cache)
        self._build_model()
        self.csv_file: Any = None
        self.csv_out: csv.DictWriter[str] | None = None
        self.tb: Any = None

    def _load_data(self, on_cache: Callable[[str, int, int], None] | None) -> None:
        c, m = self.config, self.config.model

        def build(progress: Callable[[str, int, int], None] | None) -> Any:
            return build_datasets(c.data.recordings, c.data.val_recordings, (m.height, m.width),
                                  m.context_frames, m.control_dim, c.data.val_fraction,
                                  c.data.cache_dir, horizon=c.unroll.horizon, progress=progress)

        if self.ctx.main:  # rank 0 builds any frame cache; the others then find it
            self.train_set, self.val_set, _ = build(on_cache)
        self.ctx.barrier()
        if not self.ctx.main:
            self.train_set, self.val_set, _ = build(None)
        if m.noise_conditioning and c.noise.max_level == 0 and self.ctx.main:
            log.warning("model.noise_conditioning is on but noise.max_level is 0: the model "
                        "only ever sees level 0")

    def _build_model(self) -> None:
        c, m, device = self.config, self.config.model, self.device
        self.model = WorldModel(m).to(device)
        self.coder = self.model if m.output_mode == "codebook" else None
        self.ema = EMA(self.model, c.optim.ema_decay) if c.optim.ema_decay > 0 else None
        self.eval_model: WorldModel = (
            self.ema.model if self.ema is not None else self.model)  # type: ignore[assignment]
        self.optimizer = torch.optim.AdamW(param_groups(self.model, c.optim.weight_decay),
                                           lr=c.optim.lr, betas=(c.optim.beta1, c.optim.beta2))
        schedule = functools.partial(lr_factor, warmup=c.optim.warmup_steps, total=c.steps,
                                     min_ratio=c.optim.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.amp = autocast_dtype(c.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        self.disc: Discriminator | None = None
        self.disc_opt: torch.optim.Optimizer | None = None
        if c.gan.enabled:
            self.disc = Discriminator(c.gan.discriminator(), m).to(device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=c.gan.lr,
                                              betas=(0.5, 0.999))

    def start(self, resume: str = "auto", init: str | Path | None = None) -> None:
        """Resume a run, start one from ``init``'s weights, or fit a new model's
        data-made parts; then wrap the model for DDP and compile, and open the logs."""
        self.start_step = 0
        self.best: float | None = None
        resume_path = find_resume(self.run_dir, resume)
        if resume_path is not None:
            self._resume(resume_path)
        elif init is not None:
            self._init_from(Path(init))
        else:
            fit_model_parts([self.model] if self.eval_model is self.model
                            else [self.model, self.eval_model], self.train_set,
                            self.config.model, self.config.seed)
        self.net: nn.Module = self.ctx.wrap(self.model)
        # The discriminator learns as one too: its gradients averaged over the
        # ranks (the generator's loss reads it unwrapped, its weights frozen).
        self.disc_net = None if self.disc is None else self.ctx.wrap(self.disc)
        if self.config.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]
        if self.ctx.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(
                json.dumps(self.config.to_dict(), indent=2) + "\n")
            self.csv_file, self.csv_out = csv_writer(self.run_dir / "metrics.csv")
            self.tb = tensorboard(self.run_dir)

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, self.device)
        check_compatible(state, self.config.model, path)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if (self.disc is not None and state.get("discriminator") is not None
                and self.disc_opt is not None):
            self.disc.load_state_dict(state["discriminator"])
            self.disc_opt.load_state_dict(state["discriminator_optimizer"])
        self.start_step, self.best = int(state["step"]), state.get("best_val_psnr")
        if self.ctx.main:
            log.info("resumed from %s at step %d", path, self.start_step)

    def _init_from(self, init: Path) -> None:
        state = load_checkpoint(init, self.device)
        check_compatible(state, self.config.model, init, start=True)
        weights = model_weights(state)
        for target in [self.model] + ([self.ema.model] if self.ema is not None else []):
            missing, unexpected = target.load_state_dict(weights, strict=False)
            if unexpected or any(not k.startswith("latent_embed.") for k in missing):
                raise CheckpointError(f"{init} does not hold this model's weights: missing "
                                      f"{missing}, unexpected {unexpected}")
        if self.ctx.main:
            log.info("starting from the weights of %s (step %d)", init, int(state["step"]))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything a checkpoint holds to resume at ``step``."""
        ema, disc, disc_opt = self.ema, self.disc, self.disc_opt
        return {"model": self.model.state_dict(),
                "ema": ema.model.state_dict() if ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "discriminator": disc.state_dict() if disc is not None else None,
                "discriminator_optimizer": disc_opt.state_dict() if disc_opt else None,
                "step": step, "best_val_psnr": self.best, "config": self.config.to_dict(),
                "data": [{"recording": str(part.recording.directory), "transitions": len(rows)}
                         for part, rows in self.train_set.parts],
                "versions": {"torch": str(torch.__version__)}}

    def _loader(self) -> Iterator[dict[str, torch.Tensor]]:
        c = self.config
        workers = c.data.workers if c.data.workers >= 0 else (
            4 if self.device.type == "cuda" else 0)
        loader = torch.utils.data.DataLoader(
            StepBatches(self.train_set, c.batch_size, c.steps, c.seed, self.ctx.rank),
            batch_size=None, sampler=range(self.start_step, c.steps), num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            multiprocessing_context=WORKER_CONTEXT if workers > 0 else None)
        return iter(loader)

    def _roll_in(self, context: torch.Tensor, controls: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Dream a random 0 to ``unroll.rollin`` steps into a share of the batch."""
        c, m = self.config, self.config.model
        n_in = int(torch.randint(0, c.unroll.rollin + 1, (1,), generator=generator,
                                 device=generator.device))
        if not n_in:
            return context, controls, targets
        told = (torch.full((len(context),), c.noise.play_level, device=self.device)
                if m.noise_conditioning else None)
        held = (self.model.draw_latent(len(context), self.device, generator)
                if c.unroll.rollin_latent == "hold" else None)
        with self.autocast():
            return roll_in_share(self.net, context, controls, targets, n_in,
                                 c.unroll.rollin_share, told, held)

    def step(self, step: int, batch: dict[str, torch.Tensor]) -> tuple[
            dict[str, torch.Tensor], torch.Tensor, bool, int]:
        """One optimizer step; returns the loss terms, the loss, whether it was
        finite (a step that is not is skipped) and the unroll length."""
        c = self.config
        context, controls, targets = to_model_inputs(batch, self.device, c.model.context_frames)
        gan_on = self.disc is not None and step >= c.gan.start_step
        unroll = c.unroll.length(step, c.steps)
        # Seeded by (seed, step, rank): a resumed run draws the same noise.
        generator = torch.Generator(self.device).manual_seed(
            (c.seed * 1_000_003 + step) * 64 + self.ctx.rank)
        if c.unroll.rollin:
            context, controls, targets = self._roll_in(context, controls, targets, generator)
        with self.autocast():
            terms, pred = unrolled_loss(self.net, context, controls, targets, c, unroll,
                                        generator, self.coder)
            loss = terms["total"]
            if gan_on and self.disc is not None:
                cond = c.gan.conditional
                self.disc.requires_grad_(False)
                terms["gan_g"] = generator_loss(self.disc, pred, context if cond else None,
                                                controls[:, 0] if cond else None)
                self.disc.requires_grad_(True)
                loss = loss + c.gan.weight * terms["gan_g"]
        finite = self._apply_gradients(loss, step)
        if finite and gan_on:
            terms["gan_d"] = self._discriminator_step(pred, context, controls, targets)
        if self.ema is not None and finite:
            self.ema.update(self.model, step)
        return terms, loss, finite, unroll

    def _apply_gradients(self, loss: torch.Tensor, step: int) -> bool:
        """Backward, clip and step; skip a step whose gradient is not finite."""
        optimizer, scaler = self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        scaler.unscale_(optimizer)
        clip = self.config.optim.grad_clip
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        if scaler.is_enabled():  # fp16: the scaler skips an overflowing step, backs off
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            finite = scaler.get_scale() >= scale
            if not finite:
                self.result.skipped_steps += 1
                log.info("step %d: fp16 gradients overflowed; step skipped", step + 1)
        else:  # bf16 and fp32: one non-finite step would poison every weight
            finite = bool(torch.isfinite(norm))
            if finite:
                optimizer.step()
                self.bad_in_a_row = 0
            else:
                self._skip_bad_step(loss, step)
        self.scheduler.step()
        return finite

    def _skip_bad_step(self, loss: torch.Tensor, step: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.result.skipped_steps += 1
        self.bad_in_a_row += 1
        log.warning("step %d: the loss or its gradient is not finite (loss %s); "
                    "step skipped, the weights kept", step + 1, float(loss.detach()))
        if self.bad_in_a_row >= MAX_BAD_STEPS:
            raise TrainingDiverged(
                f"training diverged: {self.bad_in_a_row} steps in a row up to step {step + 1} "
                f"had a loss or gradient that is not finite; the last checkpoint in "
                f"{self.run_dir} has finite weights (try a lower optim.lr, or --init from it)")

    def _discriminator_step(self, pred: torch.Tensor, context: torch.Tensor,
                            controls: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert self.disc_net is not None
        assert self.disc_opt is not None
        cond = self.config.gan.conditional
        with self.autocast():
            loss = discriminator_loss(self.disc_net, targets[:, 0], pred.detach(),
                                      context if cond else None,
                                      controls[:, 0] if cond else None, self.config.gan)
        self.disc_opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.disc_opt.step()
        return loss

    def validate(self) -> dict[str, float]:
        """One-step metrics of the EMA weights on the validation frames."""
        c = self.config
        val = one_step_metrics(self.eval_model, self.val_set, self.val_idx, self.device,
                               c.batch_size, self.autocast, c.noise.play_level)
        return {"val_psnr": val["psnr"], "val_copy_psnr": val["copy_psnr"],
                "val_ssim": val["ssim"], "val_l1": val["l1"]}

    def log(self, row: dict[str, float], done: int) -> None:
        self.result.history.append(row)
        if self.csv_out is not None and self.csv_file is not None:
            self.csv_out.writerow(row)
            self.csv_file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, done)

    def checkpoint(self, done: int, is_best: bool) -> None:
        save_checkpoint(self.state_dict(done), self.run_dir, done, self.config.keep_last,
                        is_best)

    def run(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
        """Train from the start step to the last, or until the time budget is spent."""
        c = self.config
        self.val_idx = evenly_spaced(len(self.val_set), c.val_batches * c.batch_size)
        self.result = FitResult(self.start_step, self.run_dir, self.best)
        self.bad_in_a_row = 0
        started = window_start = time.monotonic()
        window_samples, step = 0, self.start_step
        batches = self._loader()
        self.model.train()
        for step in range(self.start_step, c.steps):
            terms, loss, _, unroll = self.step(step, next(batches))
            window_samples += c.batch_size * self.ctx.world
            done = step + 1
            row: dict[str, float] = {}
            if done % c.log_every == 0 or done == c.steps:
                now = time.monotonic()
                row = {"step": done, "seconds": now - started, "unroll": unroll,
                       "lr": float(self.scheduler.get_last_lr()[0]),
                       "loss": float(loss.detach()),
                       "samples_per_s": window_samples / max(now - window_start, 1e-9),
                       **{k: float(v.detach()) for k, v in terms.items() if k != "total"}}
                window_start, window_samples = now, 0
            out_of_time = self.ctx.any(c.max_minutes > 0 and
                                       time.monotonic() - started > 60 * c.max_minutes)
            last = done == c.steps or out_of_time
            is_best = False
            if len(self.val_idx) and (done % c.eval_every == 0 or last):
                val = self.validate()
                row.update({"step": done, **val})
                is_best = self.best is None or val["val_psnr"] > self.best
                self.best = max(self.best or val["val_psnr"], val["val_psnr"])
            if row:
                self.log(row, done)
            if self.ctx.main and (done % c.checkpoint_every == 0 or last or is_best):
                self.checkpoint(done, is_best)
            if on_step is not None:
                on_step(done, row)
            if out_of_time:
                log.info("time budget of %.1f min used at step %d", c.max_minutes, done)
                break
        self.result.step = step + 1 if c.steps > self.start_step else self.start_step
        self.result.best_val_psnr = self.best
        if self.result.skipped_steps:
            log.warning("%d steps skipped: their loss or gradient was not finite",
                        self.result.skipped_steps)
        return self.result

    def close(self) -> None:
        if self.csv_file is not None:
            self.csv_file.close()
        if self.tb is not None:
            self.tb.close()
        if self.ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
