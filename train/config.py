"""The training configuration: one dataclass nesting the model's, loadable from a
TOML preset in ``configs/`` with ``section.field=value`` overrides."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from export.dream import LATENT_MODES
from models.config import WorldModelConfig, coerce
from models.discriminator import DiscriminatorConfig
from models.presets import read_preset
from recording.format import read_meta

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class DataConfig:
    """Args:
        recordings: Recording directories to train on (combined).
        val_recordings: Recording directories to validate on. Without them the
            last ``val_fraction`` of each recording's episodes is held out (or
            the tail of a recording with a single episode).
        val_fraction: Share held out when ``val_recordings`` is empty.
        workers: DataLoader worker processes (-1: none on CPU, 4 on CUDA).
        cache_dir: Where the decoded-frame caches go (default: inside each
            recording, in ``.tinydreams-cache/``).
    """

    recordings: list[str] = field(default_factory=list)
    val_recordings: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    workers: int = -1
    cache_dir: str | None = None


@dataclass
class LossConfig:
    """Weights of the reconstruction losses (0 turns one off).

    Args:
        l1: Mean absolute error against the real next frame: least at the median
            of what the model cannot predict.
        mse: Mean squared error, the error PSNR measures: least at the mean of
            what the model cannot predict (blurrier than the median).
        sobel: L1 between the Sobel edge maps: keeps edges sharp.
        fft: L1 between the 2-D Fourier amplitude spectra: keeps fine texture.
        ssim: 1 - SSIM (structural similarity).
        crps: The continuous ranked probability score of two predictions drawn
            with different latents (a model with ``model.latent_dim``): each
            pixel's distance to the real one, less half their distance to each
            other. It is least when the draws spread as the real next frame
            does, so it trains the model to paint texture it cannot predict
            rather than its blurred mean, as L1 does. Costs a second forward
            pass a step.
    """

    l1: float = 1.0
    mse: float = 0.0
    sobel: float = 0.0
    fft: float = 0.0
    ssim: float = 0.0
    crps: float = 0.0


@dataclass
class GanConfig:
    """Args:
        enabled: Add an adversarial loss from a patch discriminator.
        conditional: The discriminator also sees the context frames and controls.
        weight: Weight of the generator's adversarial loss.
        start_step: Step at which the adversarial loss switches on (the
            discriminator trains from here too).
        lr: Discriminator learning rate.
        real_label: Soft label for real frames (one-sided label smoothing).
        label_noise: Probability of flipping a discriminator label.
        filters: Discriminator channels per stage.
    """

    enabled: bool = False
    conditional: bool = False
    weight: float = 0.05
    start_step: int = 1000
    lr: float = 2e-4
    real_label: float = 0.9
    label_noise: float = 0.05
    filters: tuple[int, ...] = (32, 64, 128)

    def discriminator(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(filters=self.filters, conditional=self.conditional)


@dataclass
class NoiseConfig:
    """Noise augmentation (GameNGen's): Gaussian noise on the context frames in
    training, so the model learns to repair, not copy, imperfect context such as
    its own fed-back predictions.

    Args:
        max_level: Each sample's level (standard deviation, in [0, 1] pixel units)
            is drawn uniformly from [0, max_level]; 0 turns the augmentation off.
        prob: Share of samples that get noise; the rest train at level 0.
        play_level: The fixed level a model with ``model.noise_conditioning`` is
            told in evaluation and play (no noise is added then). Export writes it
            into the bundle's manifest as the default ``noise_level``.
    """

    max_level: float = 0.0
    prob: float = 1.0
    play_level: float = 0.0

    def __post_init__(self) -> None:
        if self.max_level < 0 or self.play_level < 0:
            raise ValueError("noise.max_level and noise.play_level must be >= 0")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"noise.prob must be in [0, 1], got {self.prob}")


@dataclass
class UnrollConfig:
    """Multi-step training: the model's predictions are fed back as context for N
    steps, with a loss on every step, N following a curriculum.

    Args:
        schedule: Unroll lengths of the curriculum stages, e.g. ``1,2,4,8``.
        boundaries: Fractions of ``steps`` at which the stages after the first
            begin, e.g. ``0.25,0.5,0.75``; empty gives each stage an equal share.
        detach: Stop gradients between unrolled steps: cheaper, but the model no
            longer learns how its errors compound.
        rollin: Roll-in (as in DAgger; "self-forcing" in video models): before the
            supervised steps the model dreams a random 0 to ``rollin`` steps from
            the true context under the true controls, without gradients and told
            ``noise.play_level``, and the supervised steps start from the
            window it dreamed. So it learns to repair the drift it meets deep in a long
            dream, not only in its first few steps. Costs up to ``rollin`` extra
            forward passes a step (no backward); 0 turns it off.
        rollin_share: The share of each batch's samples that are rolled in; the
            others start from the true context. The roll-in's cost scales with it,
            so a small share buys drift repair for a fraction of the price.
        rollin_latent: How a model with a latent dreams its roll-in: ``hold``
            one latent a sample, or draw a ``fresh`` one every step; the way it
            will be played (``--latent`` on ``play``, ``serve``, ``train eval``).
    """

    schedule: tuple[int, ...] = (1,)
    boundaries: tuple[float, ...] = ()
    detach: bool = False
    rollin: int = 0
    rollin_share: float = 1.0
    rollin_latent: str = "hold"

    def __post_init__(self) -> None:
        if not self.schedule or min(self.schedule) < 1:
            raise ValueError(f"unroll.schedule must be unroll lengths >= 1, got {self.schedule}")
        if self.boundaries:
            b = self.boundaries
            if len(b) != len(self.schedule) - 1:
                raise ValueError(f"unroll.boundaries needs {len(self.schedule) - 1} fraction(s), "
                                 f"one per stage after the first, got {len(b)}")
            if any(not 0 < x < 1 for x in b) or list(b) != sorted(b):
                raise ValueError(f"unroll.boundaries must rise within (0, 1), got {b}")
        if self.rollin < 0:
            raise ValueError(f"unroll.rollin must be >= 0, got {self.rollin}")
        if not 0 < self.rollin_share <= 1:
            raise ValueError(f"unroll.rollin_share must be in (0, 1], got {self.rollin_share}")
        if self.rollin_latent not in LATENT_MODES:
            raise ValueError(f"unroll.rollin_latent must be one of {', '.join(LATENT_MODES)}, "
                             f"got {self.rollin_latent!r}")

    @property
    def max_length(self) -> int:
        return max(self.schedule)

    @property
    def horizon(self) -> int:
        """Target frames a training sample needs: the longest roll-in and unroll."""
        return self.rollin + self.max_length

    def length(self, step: int, total: int) -> int:
        """The unroll length at ``step`` (0-based) of ``total`` steps."""
        n = len(self.schedule)
        starts = self.boundaries or tuple(i / n for i in range(1, n))
        stage = sum(step >= round(f * total) for f in starts)
        return self.schedule[stage]


@dataclass
class OptimConfig:
    """AdamW with linear warm-up, then cosine decay to ``min_lr_ratio * lr``.

    Args:
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (not applied to norms, biases,
            positional embeddings and registers).
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        warmup_steps: Steps of linear warm-up from 0 to ``lr``.
        min_lr_ratio: Where the cosine ends, as a fraction of ``lr``.
        grad_clip: Clip the gradient norm to this (0: no clipping).
        ema_decay: Decay of the exponential moving average of the weights that
            evaluation, ``best.pt`` and export use (0: no EMA).
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in the run directory and in every
    checkpoint.

    Args:
        model: The architecture (``models.WorldModelConfig``).
        noise: Noise augmentation of the context frames.
        unroll: Multi-step training and its curriculum.
        steps: Optimizer steps; also the length of the cosine schedule.
        max_minutes: Stop (with a checkpoint) after this much wall time; 0 = no limit.
        batch_size: Samples per step (per process under torchrun).
        precision: ``auto`` (bf16 on a GPU that has it, else fp16 with a
            GradScaler; fp32 on CPU), or ``fp32``, ``bf16``, ``fp16``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        compile: Wrap the model in ``torch.compile``.
        seed: Seeds weights and batch sampling.
        log_every: Steps between CSV / TensorBoard rows.
        eval_every: Steps between validation passes (also picks ``best.pt``).
        checkpoint_every: Steps between checkpoints (one is always written at the end).
        keep_last: Step checkpoints kept beside ``latest.pt`` and ``best.pt``.
        val_batches: Batches per validation pass.
    """

    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    unroll: UnrollConfig = field(default_factory=UnrollConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 2000
    max_minutes: float = 0.0
    batch_size: int = 32
    precision: Precision = "auto"
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    log_every: int = 20
    eval_every: int = 250
    checkpoint_every: int = 250
    keep_last: int = 3
    val_batches: int = 8

    def __post_init__(self) -> None:
        if self.loss.crps and not self.model.latent_dim:
            raise ValueError("loss.crps scores two draws of a model with a latent; a "
                             "deterministic model draws the same frame twice: set "
                             "model.latent_dim too (e.g. 32)")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return dict(_plain(out))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "")

    def replace(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with dotted-key overrides applied, e.g. ``{"optim.lr": "3e-4"}``."""
        data = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        return TrainConfig.from_dict(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    if cls is WorldModelConfig:
        return WorldModelConfig.from_dict(data)
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(prefix + u for u in unknown)}; "
                         f"known: {', '.join(sorted(prefix + n for n in names))}")
    kwargs = {}
    for key, value in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(kind, value, prefix + key)
            if typing.get_origin(kind) is Literal and kwargs[key] not in typing.get_args(kind):
                raise ValueError(f"{prefix}{key} must be one of {typing.get_args(kind)}, "
                                 f"got {value!r}")
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ValueError(f"unknown config section {part!r} in {key!r}")
        node = node[part]
    if leaf not in node:
        raise ValueError(f"unknown config field {key!r}")
    node[leaf] = value


def load_config(name_or_path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A preset by name (``configs/<name>.toml``) or a TOML path (see
    ``models.presets``), then ``SECTION.FIELD`` overrides."""
    data = read_preset(name_or_path) if name_or_path is not None else {}
    data["model"] = WorldModelConfig.from_dict(data.get("model", {})).to_dict()
    config = TrainConfig.from_dict(data)
    return config.replace(overrides) if overrides else config


AUTO_BASE_MEMORY_GIB = 24  # a GPU with this much memory trains `base`


def auto_preset(recordings: list[str], gpu_memory_gib: float | None) -> tuple[str, str]:
    """The preset ``--config auto`` trains, and why: the CPU's dream-worthy
    ``tiny-rounds``; on a GPU, ``base`` (128x128) when it has the memory and
    the recordings' frames are at least 128 pixels a side, else ``small``."""
    if gpu_memory_gib is None:
        return "tiny-rounds", "no GPU: the tiny model, its codes drawn in rounds"
    sides = [min(int(m.get("height", 0)), int(m.get("width", 0)))
             for m in (read_meta(Path(d)) for d in recordings)]
    smallest = min(sides, default=0)
    if gpu_memory_gib >= AUTO_BASE_MEMORY_GIB and smallest >= 128:
        return "base", f"a GPU with {gpu_memory_gib:.0f} GiB and frames of {smallest} px or more"
    why = (f"frames of {smallest} px (base wants 128)" if smallest < 128 else
           f"{gpu_memory_gib:.0f} GiB of GPU memory (base wants {AUTO_BASE_MEMORY_GIB})")
    return "small", f"a GPU, {why}"


def recordings_control_dim(recordings: list[str]) -> int | None:
    """How many controls the recordings' lines hold (their ``meta.json``'s
    control names), or None when no recording says; ``ValueError`` when two
    recordings disagree."""
    dims = {d: len(read_meta(Path(d)).get("control_names") or ()) for d in recordings}
    known = {n for n in dims.values() if n}
    if len(known) > 1:
        raise ValueError("the recordings hold different controls: " + ", ".join(
            f"{d} {n}" for d, n in dims.items()))
    return known.pop() if known else None


def parse_overrides(items: list[str], flag: str = "--set") -> dict[str, str]:
    """``SECTION.FIELD=VALUE`` strings (``--set``) as overrides for ``load_config``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects SECTION.FIELD=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
