"""The world model's configuration: one frozen dataclass and its dict form (the
presets are files: ``models.presets``).

A checkpoint stores ``config.to_dict()``; ``WorldModelConfig.from_dict`` rebuilds the
exact same architecture from that dict alone.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

Activation = Literal["gelu", "relu"]
AttentionMode = Literal["concat", "interleaved", "adaln"]
OutputMode = Literal["absolute", "residual", "warp", "codebook"]
PosEmbed = Literal["learned", "sincos"]
ConvNorm = Literal["instance", "layer", "none"]


# A warp model's raw motion output of 1 moves the picture this many pixels: at
# 64x64 a full-stick turn in Doom is about 8; a stick_view map is in these units too.
FLOW_PIXELS = 8.0


@dataclass(frozen=True)
class WorldModelConfig:
    """Architecture of the action-conditioned next-frame predictor.

    Args:
        height: Frame height in pixels; divisible by ``2 ** len(tokenizer_filters)``.
        width: Frame width in pixels; same rule.
        context_frames: K, the number of most recent frames the model sees, stacked on
            the channel axis. K = 1 is the design's single-frame predictor.
        control_dim: Length of the control vector (4 gamepad stick axes by default).
        embed_dim: Transformer width D.
        depth: Number of transformer layers.
        num_heads: Attention heads; must divide ``embed_dim``.
        mlp_ratio: Hidden width of each transformer MLP, as a multiple of D.
        tokenizer_filters: Channels of each stride-2 ResNet stage of the tokenizer.
            S stages give a token grid of (height / 2^S, width / 2^S).
        tokenizer_blocks: ResNet blocks per tokenizer stage (the first one downsamples).
        decoder_filters: Channels of each x2-upsampling ResNet stage of the decoder;
            as many stages as the tokenizer has, so the output is full size.
        decoder_blocks: ResNet blocks per decoder stage (the first one upsamples).
        action_hidden: Hidden width of the MLP that turns controls into the action token.
        activation: ``gelu`` or ``relu``, used everywhere.
        conv_norm: The norm of the tokenizer's and decoder's convolutions:
            ``instance`` (the design's; it hides each image's brightness and
            contrast from the model), ``layer`` (over the channels of each pixel)
            or ``none`` (zero-initialised residual gains instead).
        num_registers: Learned register tokens added to the sequence (0 for none).
        attention_mode: How the controls reach the transformer. ``concat`` joins the
            action token and registers to the image tokens and self-attends over all;
            ``interleaved`` self-attends over image tokens and registers, then
            cross-attends to the action token, in each layer; ``adaln`` keeps the action
            out of the sequence and sets the scale, shift and gate of every norm from
            it (adaptive LayerNorm, zero-initialised, as in DiT).
        output_mode: ``absolute`` predicts the next frame through a sigmoid;
            ``residual`` predicts a change added to the last context frame;
            ``warp`` predicts a per-pixel motion field that resamples the last
            context frame, plus a change added to the warped frame: turning and
            walking move the picture's texture instead of repainting it.
            ``codebook`` classifies every ``codebook_patch`` square of the next
            frame into one of ``codebook_size`` real patches (k-means centres of
            the training recording's patches, fitted when training starts;
            trained by cross-entropy, the ``loss`` weights do not apply) and
            paints one drawn at ``codebook_temperature``: a dream made only of
            the game's own patches cannot fade into a blur (as VQ world models'
            discrete tokens).
        pos_embed: ``learned`` or fixed 2-D ``sincos`` positional embedding.
        dropout: Dropout in attention, MLPs and after the positional embedding.
        noise_conditioning: The model takes a third input, the level (standard
            deviation) of the Gaussian noise added to its context frames, embedded by an
            MLP and added to the action embedding. Training draws random levels; play
            uses a small fixed one, so the model knows not to trust its own fed-back
            frames too much.
        latent_dim: Length of a random latent vector the model draws for every
            prediction (0: a deterministic model). It is embedded by a linear layer
            and added to the action embedding, so each draw paints one plausible
            next frame instead of the blurred mean of all of them. Train such a
            model with ``loss.crps``.
        codebook_size: Patches in the codebook (``codebook`` output mode only).
        codebook_patch: Their side in pixels: a power of two from 1 to the token
            side, as the decoder upsamples the token grid to the patch grid.
        codebook_temperature: Each patch's code is drawn from the model's
            distribution at this temperature (Gumbel-max: the most likely code plus
            Gumbel noise made from the model's latent input, N(0, 1) draws of
            ``latent_size``); 0 paints the most likely code, deterministically,
            which drops everything uncertain (walls, items). Training's own
            dreams (the roll-in) paint the most likely codes.
        codebook_grain: Paint every patch as its code plus the code's grain: the
            per-pixel spread of the training patches the code stands for
            (scaled so that painted training frames keep the recording's fine
            detail) times N(0, 1) noise that is part of the latent, held like
            the codes' noise. A code is the mean of its patches: without grain
            a painted frame loses the fine texture the mean averages away.
        codebook_rounds: Draw a frame's codes in this many parallel rounds
            (MaskGIT): each round draws every patch not yet settled given the
            codes its neighbours settled on, and settles the most confident,
            so neighbouring patches agree. 1: every code drawn at once, each
            patch alone. More than one adds a refiner trained to predict
            hidden codes from the settled ones.
        codebook_refiner: The refiner's channels (``codebook_rounds`` > 1).
        codebook_refresh: A dream holds its sampling noise, so a picture at rest
            stays still; each step redraws this share of it times the largest
            stick deflection, so a moving view keeps finding new detail.
        stick_view: The tokenizer also sees the last context frame moved as the
            sticks move the view: shifted and zoomed by a linear map of the
            controls, resampled bilinearly. Training starts the shift from a
            least-squares fit of the recording's whole-frame shifts on the
            sticks (the zoom from none) and goes on learning it (see
            ``stick_view_learn``). Doom's view moves as a whole when the player
            turns or strafes; with the moved frame in hand the model need not
            learn to shift texture itself.
        stick_view_learn: Go on learning ``stick_view``'s shift after the fit.
            Off, the shift stays at the fit and only the zoom is learned, and a
            dream whose held latent moves with the view turns as far as the
            fitted map says.
        grad_checkpointing: Recompute each transformer layer in the backward pass
            to save memory (training only; outputs are unchanged).
    """

    height: int = 64
    width: int = 64
    context_frames: int = 1
    control_dim: int = 4
    embed_dim: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    tokenizer_filters: tuple[int, ...] = (32, 64, 128)
    tokenizer_blocks: int = 1
    decoder_filters: tuple[int, ...] = (128, 64, 32)
    decoder_blocks: int = 1
    action_hidden: int = 128
    activation: Activation = "gelu"
    conv_norm: ConvNorm = "instance"
    num_registers: int = 0
    attention_mode: AttentionMode = "concat"
    output_mode: OutputMode = "absolute"
    pos_embed: PosEmbed = "learned"
    dropout: float = 0.0
    noise_conditioning: bool = False
    latent_dim: int = 0
    stick_view: bool = False
    stick_view_learn: bool = True
    grad_checkpointing: bool = False
    codebook_size: int = 512
    codebook_patch: int = 4
    codebook_temperature: float = 0.8
    codebook_grain: bool = False
    codebook_refresh: float = 0.1
    codebook_rounds: int = 1
    codebook_refiner: int = 64

    def __post_init__(self) -> None:
        positive = ("height", "width", "context_frames", "control_dim", "embed_dim", "depth",
                    "num_heads", "tokenizer_blocks", "decoder_blocks", "action_hidden")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0, got {self.latent_dim}")
        if self.num_registers < 0:
            raise ValueError(f"num_registers must be >= 0, got {self.num_registers}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if not self.tokenizer_filters or min(self.tokenizer_filters) < 1:
            raise ValueError(f"tokenizer_filters must be positive, got {self.tokenizer_filters}")
        if len(self.decoder_filters) != len(self.tokenizer_filters) or min(
                self.decoder_filters) < 1:
            raise ValueError(
                f"decoder_filters {self.decoder_filters} must have one positive entry per "
                f"tokenizer stage ({len(self.tokenizer_filters)}) so the output is full size")
        factor = self.patch_size
        if self.height % factor or self.width % factor:
            raise ValueError(
                f"height and width ({self.height}x{self.width}) must be divisible by "
                f"2^{len(self.tokenizer_filters)} = {factor}, one halving per tokenizer stage")
        if self.output_mode == "codebook":
            if self.codebook_size < 2:
                raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
            if self.latent_dim:
                raise ValueError("the codebook output mode's latent input is its sampling "
                                 "noise: latent_dim must be 0")
            if self.codebook_temperature < 0:
                raise ValueError(f"codebook_temperature must be >= 0, got "
                                 f"{self.codebook_temperature}")
            if self.codebook_rounds < 1 or self.codebook_refiner < 1:
                raise ValueError(f"codebook_rounds and codebook_refiner must be >= 1, got "
                                 f"{self.codebook_rounds} and {self.codebook_refiner}")
            if not 0.0 <= self.codebook_refresh <= 1.0:
                raise ValueError(f"codebook_refresh must be in [0, 1], got "
                                 f"{self.codebook_refresh}")
            p = self.codebook_patch
            if p < 1 or p & (p - 1) or p > factor:
                raise ValueError(f"codebook_patch must be a power of two from 1 to {factor} "
                                 f"(the token side), got {p}")
        if self.pos_embed == "sincos" and self.embed_dim % 4:
            raise ValueError(
                f"sincos pos_embed needs embed_dim divisible by 4, got {self.embed_dim}")
        for name in ("activation", "conv_norm", "attention_mode", "output_mode", "pos_embed"):
            allowed = typing.get_args(_FIELD_TYPES[name])
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def patch_size(self) -> int:
        """Pixels per token side: the tokenizer halves the resolution once per stage."""
        return int(2 ** len(self.tokenizer_filters))

    @property
    def grid_size(self) -> tuple[int, int]:
        """The token grid (rows, columns)."""
        return self.height // self.patch_size, self.width // self.patch_size

    @property
    def code_grid(self) -> tuple[int, int]:
        """The ``codebook`` mode's patch grid (rows, columns)."""
        return self.height // self.codebook_patch, self.width // self.codebook_patch

    @property
    def code_latent_size(self) -> int:
        """The part of a ``codebook`` model's latent its codes are drawn with:
        one N(0, 1) draw per code and patch (0 at temperature 0)."""
        if self.output_mode != "codebook" or self.codebook_temperature <= 0:
            return 0
        rows, cols = self.code_grid
        return self.codebook_size * rows * cols

    @property
    def latent_size(self) -> int:
        """Length of the model's random input: ``latent_dim``, or for a
        ``codebook`` model the codes' draws (``code_latent_size``) then, with
        ``codebook_grain``, one N(0, 1) draw per pixel and channel (0: none)."""
        if self.output_mode == "codebook":
            grain = 3 * self.height * self.width if self.codebook_grain else 0
            return self.code_latent_size + grain
        return self.latent_dim

    @property
    def latent_refresh(self) -> float:
        """Share of a held latent a dream redraws each step at full stick."""
        return self.codebook_refresh if self.latent_size and not self.latent_dim else 0.0

    @property
    def num_image_tokens(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    @property
    def sequence_length(self) -> int:
        """Tokens the self-attention sees: image tokens, registers, and in ``concat``
        mode the action token."""
        action = 1 if self.attention_mode == "concat" else 0  # adaln, interleaved: outside
        return self.num_image_tokens + self.num_registers + action

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples) that ``from_dict`` turns back into this config."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldModelConfig:
        """Rebuild a config from ``to_dict`` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown WorldModelConfig field(s): {', '.join(unknown)}")
        return cls(**{k: coerce(_FIELD_TYPES[k], v, k) for k, v in data.items()})

    def replace(self, **changes: Any) -> WorldModelConfig:
        """A copy with some fields changed (values are coerced like ``from_dict``'s)."""
        return WorldModelConfig.from_dict({**self.to_dict(), **changes})


_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(WorldModelConfig)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def coerce(kind: Any, value: Any, name: str) -> Any:
    """Turn a value from JSON, TOML or the command line into a field's type.

    Handles ``int``, ``float``, ``bool``, ``str``, ``tuple[X, ...]``, ``Literal``
    and ``X | None``; the error names the field.
    """
    origin = typing.get_origin(kind)
    if origin is types.UnionType or origin is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
            return None
        return coerce(args[0], value, name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        inner = typing.get_args(kind)[0]
        return tuple(coerce(inner, v, name) for v in value)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        inner = typing.get_args(kind)[0]
        return [coerce(inner, v, name) for v in value]
    if origin is Literal:
        return value
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
    except ValueError:
        article = {"bool": "true or false", "int": "an integer", "float": "a number"}
        raise ValueError(f"{name} must be {article[kind.__name__]}, got {value!r}") from None
    return value
