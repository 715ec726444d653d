"""The training loop: AdamW with warm-up and cosine decay, gradient clipping,
mixed precision, EMA, optional GAN, resumable atomic checkpoints, and
DistributedDataParallel when started by ``torchrun``."""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models import Discriminator, WorldModel
from models.codebook import code_spread, kmeans, nearest_code, patchify, unpatchify
from models.config import WorldModelConfig
from models.device import resolve_device
from models.world_model import FLOW_PIXELS
from train.checkpoint import (
    CheckpointError,
    check_compatible,
    find_resume,
    load_checkpoint,
    model_weights,
    save_checkpoint,
)
from train.config import NoiseConfig, TrainConfig
from train.data import (
    WORKER_CONTEXT,
    StepBatches,
    TransitionSet,
    build_datasets,
    to_model_inputs,
)
from train.drift import detail_energy, dream
from train.evaluate import best_shift, evenly_spaced, one_step_metrics
from train.losses import discriminator_loss, generator_loss, reconstruction_losses

log = logging.getLogger(__name__)

MAX_BAD_STEPS = 20  # non-finite steps in a row before a run is declared diverged

CSV_FIELDS = ["step", "seconds", "lr", "unroll", "loss", "l1", "mse", "sobel", "fft", "ssim",
              "crps", "ce", "gan_g", "gan_d", "samples_per_s", "val_psnr", "val_copy_psnr",
              "val_ssim", "val_l1"]


def _rank_device(name: str, local_rank: int) -> torch.device:
    """The device of one torchrun process: ``auto`` and ``cuda`` take GPU ``local_rank``."""
    device = resolve_device(name, local_rank)
    if device.type == "cuda" and name in ("auto", "cuda"):
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {local_rank} has no GPU of its own: this machine has "
                f"{torch.cuda.device_count()}; start at most that many (--nproc_per_node) or "
                f"train on --device cpu")
        device = torch.device(f"cuda:{local_rank}")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on a GPU that supports it, else fp16; full precision on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's weights (warmed up so early
    averages are not dominated by the random initialisation)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_p: list[torch.Tensor] = [p for p in self.model.parameters()]
        new_p: list[torch.Tensor] = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, new_p, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases, positions and registers (AdamW practice),
    nor on ``stick_view``'s map: it is how far the view moves, fitted to the
    recording, and decay would shrink it (or move one held at its fit)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or any(k in name for k in ("pos_embed", "registers", "view_motion"))
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def noise_levels(noise: NoiseConfig, batch: int, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """Per-sample context noise levels ``(B,)``: uniform in [0, max_level] for a
    share ``prob`` of the samples, 0 for the rest."""
    u = torch.rand(batch, generator=generator, device=device)
    on = torch.rand(batch, generator=generator, device=device) < noise.prob
    return torch.where(on, u * noise.max_level, torch.zeros_like(u))


def fit_view_motion(data: TransitionSet, pairs: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``stick_view``'s start: the least-squares map from the sticks to the
    whole-frame shift (``best_shift``, pixels x and y) between about ``pairs``
    consecutive training frames, as ``(2, control_dim)`` weights and ``(2,)``
    biases in the model's raw units (``FLOW_PIXELS`` pixels)."""
    each = max(1, pairs // len(data.parts))
    firsts, seconds, sticks = [], [], []
    for part, rows in data.parts:
        chosen = rows[evenly_spaced(len(rows), each)]
        firsts.append(np.asarray(part.frames[chosen[:, -2]]))
        seconds.append(np.asarray(part.frames[chosen[:, -1]]))
        sticks.append(part.controls[chosen[:, -1]])
    shifts = best_shift(np.concatenate(firsts) / 255.0, np.concatenate(seconds) / 255.0)
    x = np.concatenate(sticks)
    design = np.concatenate([x, np.ones((len(x), 1))], 1)
    fit = np.linalg.lstsq(design, shifts, rcond=None)[0] / FLOW_PIXELS  # (C + 1, 2)
    log.info("the picture shifts %s pixels left and %s up a step per unit of each stick",
             "/".join(f"{v:+.1f}" for v in fit[:-1, 0] * FLOW_PIXELS),
             "/".join(f"{v:+.1f}" for v in fit[:-1, 1] * FLOW_PIXELS))
    return fit[:-1].T, fit[-1]


def fit_codebook(data: TransitionSet, config: WorldModelConfig, seed: int,
                 frames: int = 600) -> tuple[torch.Tensor, torch.Tensor | None]:
    """k-means centres of the patches of about ``frames`` frames spread evenly
    over the training recordings: the ``codebook`` output mode's patches; and
    with ``codebook_grain``, each centre's grain (``grain_spread``), else None."""
    each = max(1, frames // len(data.parts))
    picked = []
    for part, _ in data.parts:
        good = np.flatnonzero(~part.bad)  # not the images that failed to decode
        picked.append(np.asarray(part.frames[good[evenly_spaced(len(good), each)]]))
    images = torch.from_numpy(np.concatenate(picked)).float() / 255.0
    patches = patchify(images, config.codebook_patch).reshape(-1, 3 * config.codebook_patch ** 2)
    log.info("fitting a codebook of %d patches to %d frames", config.codebook_size, len(images))
    generator = torch.Generator().manual_seed(seed)
    centres = kmeans(patches, config.codebook_size, generator=generator)
    if not config.codebook_grain:
        return centres, None
    return centres, grain_spread(images, patches, centres, config.codebook_patch, generator)


def grain_spread(images: torch.Tensor, patches: torch.Tensor, centres: torch.Tensor,
                 patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each centre's per-pixel spread (``code_spread``) times the one factor that
    gives ``images`` (N, 3, H, W), painted with their nearest codes and that grain,
    the fine detail (``detail_energy``) they have: Gaussian grain is finer than a
    game's texture, so the spread itself would overshoot it."""
    spread = code_spread(patches, centres)
    sample = images[evenly_spaced(len(images), min(len(images), 200))]
    codes = nearest_code(patchify(sample, patch), centres)
    flat, noise = centres[codes], spread[codes] * torch.randn(
        codes.shape + centres.shape[1:], generator=generator)
    want = float(detail_energy(sample.numpy()).mean())

    def detail(scale: float) -> float:
        painted = unpatchify((flat + scale * noise).clamp(0.0, 1.0), patch)
        return float(detail_energy(painted.numpy()).mean())

    low, high = 0.0, 2.0
    if detail(low) >= want:  # the codes alone keep all the detail: no grain
        return torch.zeros_like(spread)
    for _ in range(20):  # detail grows with the scale: bisect
        mid = (low + high) / 2
        low, high = (mid, high) if detail(mid) < want else (low, mid)
    scale = (low + high) / 2
    log.info("codebook grain: %.2f of each code's spread keeps the frames' fine detail", scale)
    return spread * scale


def roll_in(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
            level: torch.Tensor | None, latent: torch.Tensor | None = None) -> torch.Tensor:
    """The window ``(B, K, 3, H, W)`` the model reaches by dreaming ``controls.shape[1]``
    steps from ``context`` on its own, no gradient, told noise ``level``, a latent
    model holding ``latent`` ``(B, latent_dim)`` throughout (None: a fresh one a step)."""
    frames = dream(net, context, controls, level, latent)
    return torch.cat([context, frames], dim=1)[:, -context.shape[1]:]


def roll_in_share(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
                  targets: torch.Tensor, steps: int, share: float,
                  level: torch.Tensor | None, latent: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roll the first ``share`` of the batch in by ``steps`` steps (see ``roll_in``);
    the rest keep the true context. Returns the windows, controls ``(B, T - steps, C)``
    and targets ``(B, T - steps, 3, H, W)`` the supervised steps start from."""
    n = max(1, round(share * len(context)))
    rest = controls.shape[1] - steps
    rolled = roll_in(net, context[:n], controls[:n, :steps],
                     None if level is None else level[:n],
                     None if latent is None else latent[:n])
    return (torch.cat([rolled, context[n:]]),
            torch.cat([controls[:n, steps:], controls[n:, :rest]]),
            torch.cat([targets[:n, steps:], targets[n:, :rest]]))


def unrolled_loss(net: nn.Module, context: torch.Tensor, controls: torch.Tensor,
                  targets: torch.Tensor, config: TrainConfig, steps: int,
                  generator: torch.Generator, coder: WorldModel | None = None,
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Predict ``steps`` frames, feeding each prediction back into the rolling
    window of K context frames; returns the loss terms averaged over the steps
    and the first prediction. A ``codebook`` model is passed as ``coder`` too:
    its loss is the cross-entropy of each patch's code, and the frame it feeds
    back is painted from its most likely codes.

    With noise augmentation on, every step's window (true frames and fed-back
    predictions alike) gets fresh noise at a per-sample level, and a
    noise-conditioned model is told the level.
    """
    noise, conditioned = config.noise, config.model.noise_conditioning
    window, first = context, None
    terms: dict[str, torch.Tensor] = {}
    for t in range(steps):
        level = None
        seen = window
        if noise.max_level > 0:
            level = noise_levels(noise, window.shape[0], generator, window.device)
            jitter = torch.randn(window.shape, generator=generator, device=window.device)
            seen = window + jitter * level.view(-1, 1, 1, 1, 1)
        told = level if conditioned else None
        if coder is not None:  # codebook mode: classify each patch, feed back the painted frame
            logits = net(seen, controls[:, t], told, logits=True)
            ce = F.cross_entropy(logits.float(), coder.codes_of(targets[:, t]))
            step_terms = {"ce": ce, "total": ce}
            pred = coder.paint(logits.detach().argmax(1))
        else:
            pred = net(seen, controls[:, t], told)
            other = net(seen, controls[:, t], told) if config.loss.crps else None  # another latent
            step_terms = reconstruction_losses(pred, targets[:, t], config.loss, other)
        for k, v in step_terms.items():
            terms[k] = terms[k] + v / steps if k in terms else v / steps
        first = pred if first is None else first
        if t + 1 < steps:
            fed = pred.detach() if config.unroll.detach else pred
            window = torch.cat([window[:, 1:], fed.float()[:, None]], dim=1)
    assert first is not None
    return terms, first


@dataclass
class FitResult:
    step: int
    run_dir: Path
    best_val_psnr: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0  # steps whose loss or gradient was not finite


class TrainingDiverged(RuntimeError):
    """Many steps in a row had a loss or gradient that is not finite."""


class _Dist:
    """Rank facts under torchrun (a single process otherwise)."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _rank_device(device_name, self.local_rank)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on one (e.g. the time budget ran out)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)


def _csv_writer(path: Path) -> tuple[Any, csv.DictWriter[str]]:
    header = None
    if path.exists():  # a resumed run keeps its file's columns, even an older version's
        with path.open(newline="") as old:
            header = next(csv.reader(old), None)
    f = path.open("a", newline="")
    writer = csv.DictWriter(f, fieldnames=header or CSV_FIELDS, extrasaction="ignore",
                            restval="")
    if not header:
        writer.writeheader()
    return f, writer


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


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
    run_dir = Path(run_dir)
    ctx = _Dist(config.device)
    device = ctx.device
    torch.manual_seed(config.seed)
    m = config.model
    size = (m.height, m.width)
    if ctx.main:  # rank 0 builds any frame cache; the others then find it
        train_set, val_set, _ = build_datasets(
            config.data.recordings, config.data.val_recordings, size, m.context_frames,
            m.control_dim, config.data.val_fraction, config.data.cache_dir,
            horizon=config.unroll.horizon, progress=on_cache)
    ctx.barrier()
    if not ctx.main:
        train_set, val_set, _ = build_datasets(
            config.data.recordings, config.data.val_recordings, size, m.context_frames,
            m.control_dim, config.data.val_fraction, config.data.cache_dir,
            horizon=config.unroll.horizon)
    if m.noise_conditioning and config.noise.max_level == 0 and ctx.main:
        log.warning("model.noise_conditioning is on but noise.max_level is 0: the model "
                    "only ever sees level 0")

    model = WorldModel(m).to(device)
    coder = model if m.output_mode == "codebook" else None
    ema = EMA(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    eval_model: WorldModel = ema.model if ema is not None else model  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(param_groups(model, config.optim.weight_decay),
                                  lr=config.optim.lr,
                                  betas=(config.optim.beta1, config.optim.beta2))
    schedule = functools.partial(lr_factor, warmup=config.optim.warmup_steps, total=config.steps,
                                 min_ratio=config.optim.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    amp = autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    disc: Discriminator | None = None
    disc_opt: torch.optim.Optimizer | None = None
    if config.gan.enabled:
        disc = Discriminator(config.gan.discriminator(), m).to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=config.gan.lr, betas=(0.5, 0.999))

    start_step, best = 0, None
    resume_path = find_resume(run_dir, resume)
    if resume_path is not None:
        state = load_checkpoint(resume_path, device)
        check_compatible(state, m, resume_path)
        model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if disc is not None and state.get("discriminator") is not None and disc_opt is not None:
            disc.load_state_dict(state["discriminator"])
            disc_opt.load_state_dict(state["discriminator_optimizer"])
        start_step, best = int(state["step"]), state.get("best_val_psnr")
        if ctx.main:
            log.info("resumed from %s at step %d", resume_path, start_step)
    elif init is not None:
        state = load_checkpoint(init, device)
        check_compatible(state, m, Path(init), start=True)
        weights = model_weights(state)
        for target in [model] + ([ema.model] if ema is not None else []):
            missing, unexpected = target.load_state_dict(weights, strict=False)
            if unexpected or any(not k.startswith("latent_embed.") for k in missing):
                raise CheckpointError(f"{init} does not hold this model's weights: missing "
                                      f"{missing}, unexpected {unexpected}")
        if ctx.main:
            log.info("starting from the weights of %s (step %d)", init, int(state["step"]))
    else:  # a new model: fit what it takes from the recordings
        if coder is not None:  # a codebook model's codebook
            book, spread = fit_codebook(train_set, m, config.seed)
            for target in (coder, eval_model):  # (the EMA's copy, or the model itself)
                target.set_codebook(book.to(device),
                                    None if spread is None else spread.to(device))
        if m.stick_view:  # and the map from sticks to how the view moves
            weight, bias = fit_view_motion(train_set)
            for target in [model] if eval_model is model else [model, eval_model]:
                assert target.view_motion is not None
                with torch.no_grad():
                    target.view_motion.weight[:2] = torch.from_numpy(weight).float()
                    target.view_motion.bias[:2] = torch.from_numpy(bias).float()

    net: nn.Module = model
    if ctx.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)  # type: ignore[assignment]

    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    workers = config.data.workers if config.data.workers >= 0 else (
        4 if device.type == "cuda" else 0)
    loader = torch.utils.data.DataLoader(
        StepBatches(train_set, config.batch_size, config.steps, config.seed, ctx.rank),
        batch_size=None, sampler=range(start_step, config.steps), num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        multiprocessing_context=WORKER_CONTEXT if workers > 0 else None)
    val_idx = evenly_spaced(len(val_set), config.val_batches * config.batch_size)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    def state_dict(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(),
                "ema": ema.model.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "discriminator": disc.state_dict() if disc is not None else None,
                "discriminator_optimizer": disc_opt.state_dict() if disc_opt else None,
                "step": step, "best_val_psnr": best, "config": config.to_dict(),
                "data": [{"recording": str(f), "transitions": len(r)}
                         for f, r in ((p[0].recording.directory, p[1]) for p in train_set.parts)],
                "versions": {"torch": str(torch.__version__)}}

    csv_file, csv_out = _csv_writer(run_dir / "metrics.csv") if ctx.main else (None, None)
    tb = _tensorboard(run_dir) if ctx.main else None
    result = FitResult(start_step, run_dir, best)
    started = time.monotonic()
    window_start, window_samples = time.monotonic(), 0
    step = start_step
    bad_in_a_row = 0
    K = m.context_frames
    model.train()
    try:
        batches: Iterator[dict[str, torch.Tensor]] = iter(loader)
        for step in range(start_step, config.steps):
            context, controls, targets = to_model_inputs(next(batches), device, K)
            gan_on = disc is not None and step >= config.gan.start_step
            unroll = config.unroll.length(step, config.steps)
            # Seeded by (seed, step, rank): a resumed run draws the same noise.
            generator = torch.Generator(device).manual_seed(
                (config.seed * 1_000_003 + step) * 64 + ctx.rank)
            if config.unroll.rollin:
                n_in = int(torch.randint(0, config.unroll.rollin + 1, (1,),
                                         generator=generator, device=generator.device))
                if n_in:
                    told = (torch.full((len(context),), config.noise.play_level, device=device)
                            if m.noise_conditioning else None)
                    held = (model.draw_latent(len(context), device, generator)
                            if config.unroll.rollin_latent == "hold" else None)
                    with autocast():
                        context, controls, targets = roll_in_share(
                            net, context, controls, targets, n_in, config.unroll.rollin_share,
                            told, held)
            with autocast():
                terms, pred = unrolled_loss(net, context, controls, targets, config, unroll,
                                            generator, coder)
                loss = terms["total"]
                if gan_on and disc is not None:
                    cond = config.gan.conditional
                    disc.requires_grad_(False)
                    terms["gan_g"] = generator_loss(disc, pred, context if cond else None,
                                                    controls[:, 0] if cond else None)
                    disc.requires_grad_(True)
                    loss = loss + config.gan.weight * terms["gan_g"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(optimizer)
            norm = nn.utils.clip_grad_norm_(
                model.parameters(),
                config.optim.grad_clip if config.optim.grad_clip > 0 else math.inf)
            # fp16's scaler skips a step whose gradients overflowed; in bf16 and
            # fp32 one non-finite step would poison every weight, so skip it here.
            finite = scaler.is_enabled() or bool(torch.isfinite(norm))
            if finite:
                scaler.step(optimizer)
                bad_in_a_row = 0
            else:
                optimizer.zero_grad(set_to_none=True)
                result.skipped_steps += 1
                bad_in_a_row += 1
                log.warning("step %d: the loss or its gradient is not finite (loss %s); "
                            "step skipped, the weights kept", step + 1, float(loss.detach()))
                if bad_in_a_row >= MAX_BAD_STEPS:
                    raise TrainingDiverged(
                        f"training diverged: {bad_in_a_row} steps in a row up to step "
                        f"{step + 1} had a loss or gradient that is not finite; the last "
                        f"checkpoint in {run_dir} has finite weights (try a lower optim.lr, or "
                        f"--init from it)")
            scaler.update()
            scheduler.step()
            if finite and gan_on and disc is not None and disc_opt is not None:
                cond = config.gan.conditional
                with autocast():
                    terms["gan_d"] = discriminator_loss(
                        disc, targets[:, 0], pred.detach(), context if cond else None,
                        controls[:, 0] if cond else None, config.gan)
                disc_opt.zero_grad(set_to_none=True)
                terms["gan_d"].backward()  # type: ignore[no-untyped-call]
                disc_opt.step()
            if ema is not None and finite:
                ema.update(model, step)
            window_samples += config.batch_size * ctx.world
            done = step + 1
            row: dict[str, float] = {}
            if done % config.log_every == 0 or done == config.steps:
                now = time.monotonic()
                row = {"step": done, "seconds": now - started, "unroll": unroll,
                       "lr": float(scheduler.get_last_lr()[0]), "loss": float(loss.detach()),
                       "samples_per_s": window_samples / max(now - window_start, 1e-9),
                       **{k: float(v.detach()) for k, v in terms.items() if k != "total"}}
                window_start, window_samples = now, 0
            out_of_time = ctx.any(config.max_minutes > 0 and
                                  time.monotonic() - started > 60 * config.max_minutes)
            last = done == config.steps or out_of_time
            is_best = False
            if len(val_idx) and (done % config.eval_every == 0 or last):
                val = one_step_metrics(eval_model, val_set, val_idx, device, config.batch_size,
                                       autocast, config.noise.play_level)
                row.update({"step": done, "val_psnr": val["psnr"],
                            "val_copy_psnr": val["copy_psnr"], "val_ssim": val["ssim"],
                            "val_l1": val["l1"]})
                is_best = best is None or val["psnr"] > best
                best = max(best or val["psnr"], val["psnr"])
            if row:
                result.history.append(row)
                if csv_out is not None and csv_file is not None:
                    csv_out.writerow(row)
                    csv_file.flush()
                if tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(k, v, done)
            if ctx.main and (done % config.checkpoint_every == 0 or last or is_best):
                save_checkpoint(state_dict(done), run_dir, done, config.keep_last, is_best)
            if on_step is not None:
                on_step(done, row)
            if out_of_time:
                log.info("time budget of %.1f min used at step %d", config.max_minutes, done)
                break
        result.step = step + 1 if config.steps > start_step else start_step
        result.best_val_psnr = best
        if result.skipped_steps:
            log.warning("%d steps skipped: their loss or gradient was not finite",
                        result.skipped_steps)
    finally:
        if csv_file is not None:
            csv_file.close()
        if tb is not None:
            tb.close()
        if ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return result
