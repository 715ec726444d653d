"""The action-conditioned next-frame predictor: tokenize -> trunk -> decode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.attention import AdaptiveNorm, Attention, TransformerBlock, modulate
from models.blocks import Mlp
from models.codebook import CodeRefiner
from models.codebook_head import CodebookHead
from models.config import FLOW_PIXELS, WorldModelConfig
from models.decoder import CNNDecoder
from models.held_latent import HeldLatent
from models.tokenizer import ActionEmbed, ConvTokenizer


class WorldModel(HeldLatent, CodebookHead, nn.Module):
    """Predicts the next RGB frame from the last K frames and the controls.

    ``forward(frames, controls)`` maps ``(B, K, 3, H, W)`` frames in [0, 1] and
    ``(B, control_dim)`` controls in [-1, 1] to the next frame ``(B, 3, H, W)`` in
    [0, 1]. A model with ``noise_conditioning`` also takes ``noise_level`` ``(B,)``,
    the standard deviation of the noise on its context frames (zero if omitted).
    The stages are usable alone: ``tokenize(frames) -> (B, N, D)``,
    ``embed_action(controls, noise_level) -> (B, 1, D)``,
    ``trunk(tokens, action) -> (B, N, D)``, ``decode(tokens, last_frame) -> (B, 3, H, W)``.

    Args:
        config: The architecture; ``config.to_dict()`` is all a checkpoint needs
            to rebuild it.
    """

    sample_grid: torch.Tensor  # in ``warp`` mode or with ``stick_view``: the identity grid
    motion_scale: torch.Tensor  # and the grid units of one unit of raw motion (x, y)

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.grad_checkpointing = c.grad_checkpointing
        self.tokenizer = ConvTokenizer(
            3 * (c.context_frames + c.stick_view), c.tokenizer_filters, c.tokenizer_blocks,
            c.embed_dim, c.grid_size, c.activation, c.pos_embed, c.dropout, c.conv_norm)
        self.action_embed = ActionEmbed(c.control_dim, c.action_hidden, c.embed_dim, c.activation)
        # stick_view: the controls -> the view's shift (x, y) and zoom, raw units.
        self.view_motion = nn.Linear(c.control_dim, 3) if c.stick_view else None
        self.noise_embed: Mlp | None = None
        if c.noise_conditioning:
            self.noise_embed = Mlp(1, c.action_hidden, c.embed_dim, c.activation)
        self.latent_embed = nn.Linear(c.latent_dim, c.embed_dim) if c.latent_dim else None
        self.registers: nn.Parameter | None = None
        if c.num_registers:
            self.registers = nn.Parameter(torch.zeros(1, c.num_registers, c.embed_dim))
        cross, adaptive = c.attention_mode == "interleaved", c.attention_mode == "adaln"
        self.blocks = nn.ModuleList(
            TransformerBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.activation, c.dropout,
                             cross_attention=cross, adaptive_norm=adaptive)
            for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, elementwise_affine=not adaptive)
        # adaln: the final norm's shift and scale come from the action too (DiT's last layer).
        self.final_modulation = AdaptiveNorm(c.embed_dim, 2) if adaptive else None
        warp = c.output_mode == "warp"
        if c.output_mode == "codebook":
            # Upsample the token grid only as far as the patch grid, then a logit per code.
            stages = (c.patch_size // c.codebook_patch).bit_length() - 1
            self.decoder = CNNDecoder(c.embed_dim, c.decoder_filters[:stages], c.decoder_blocks,
                                      c.grid_size, c.activation, c.conv_norm,
                                      out_channels=c.codebook_size)
            # Fitted to the training recording when training starts (``set_codebook``).
            self.register_buffer("codebook", torch.rand(
                c.codebook_size, 3 * c.codebook_patch ** 2))
            if c.codebook_grain:  # and each code's per-pixel spread, its grain
                self.register_buffer("codebook_spread", torch.zeros_like(self.codebook))
        else:
            self.decoder = CNNDecoder(c.embed_dim, c.decoder_filters, c.decoder_blocks,
                                      c.grid_size, c.activation, c.conv_norm,
                                      out_channels=5 if warp else 3)
        self.refiner: CodeRefiner | None = None
        if c.output_mode == "codebook" and c.codebook_rounds > 1:
            self.refiner = CodeRefiner(c.codebook_size, c.code_grid, c.codebook_refiner,
                                       c.activation, c.conv_norm)
        if warp or c.stick_view:  # where each pixel samples the last frame, before the motion
            identity = torch.eye(2, 3)[None]
            self.register_buffer("sample_grid", F.affine_grid(
                identity, [1, 3, c.height, c.width], align_corners=False), persistent=False)
            # A raw motion of 1 is FLOW_PIXELS pixels, in grid units (2 spans the frame).
            self.register_buffer("motion_scale", torch.tensor(
                [2.0 * FLOW_PIXELS / c.width, 2.0 * FLOW_PIXELS / c.height]), persistent=False)
        self.apply(_init_weights)
        for module in self.modules():
            if isinstance(module, AdaptiveNorm):
                module.reset_parameters()  # back to zero after the generic init
        if self.registers is not None:
            nn.init.trunc_normal_(self.registers, std=0.02)
        if self.view_motion is not None:  # the moved view starts as the last frame itself
            nn.init.zeros_(self.view_motion.weight)
            nn.init.zeros_(self.view_motion.bias)

    # -- stages ---------------------------------------------------------------

    def tokenize(self, frames: torch.Tensor, controls: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """``(B, K, 3, H, W)`` frames -> ``(B, N, D)`` image tokens with positions;
        with ``stick_view``, the ``(B, control_dim)`` controls move the view too."""
        B, K, C, H, W = frames.shape
        stacked = frames.reshape(B, K * C, H, W)  # stack frames on channels
        if self.view_motion is not None:
            if controls is None:
                raise ValueError("a stick_view model tokenizes its frames with the controls")
            stacked = torch.cat([stacked, self.moved_view(frames[:, -1], controls)], 1)
        return self.tokenizer(stacked)

    def moved_view(self, frame: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """``stick_view``: ``frame`` (B, 3, H, W) shifted and zoomed as a linear map of
        the ``(B, control_dim)`` controls says the view moves, bilinearly (the model
        paints its own output from it, so this resampling is never fed back);
        pixels from beyond the edge repeat the border."""
        assert self.view_motion is not None
        motion = self.view_motion(controls.float()).float()  # (B, 3): x, y, zoom
        if not self.config.stick_view_learn:  # the shift held at its fit, the zoom learned
            motion = torch.cat([motion[:, :2].detach(), motion[:, 2:]], 1)
        shift = (motion[:, :2] * self.motion_scale)[:, None, None, :]
        zoom = torch.exp(-VIEW_ZOOM * motion[:, 2])[:, None, None, None]  # > 0: zoom in
        moved = F.grid_sample(frame.float(), self.sample_grid * zoom + shift, mode="bilinear",
                              padding_mode="border", align_corners=False)
        return moved.to(frame.dtype)

    def embed_action(self, controls: torch.Tensor, noise_level: torch.Tensor | None = None,
                     latent: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, control_dim)`` controls (and ``(B,)`` context noise levels, and a
        ``(B, latent_dim)`` latent, drawn from N(0, 1) when not given) ->
        ``(B, 1, D)`` action token."""
        action = self.action_embed(controls)
        if self.latent_embed is not None:
            if latent is None:
                latent = torch.randn(controls.shape[0], self.config.latent_dim,
                                     device=controls.device, dtype=controls.dtype)
            action = action + self.latent_embed(latent.to(controls.dtype)).unsqueeze(1)
        if self.noise_embed is not None:
            if noise_level is None:
                noise_level = controls.new_zeros(controls.shape[0])
            level = noise_level.to(controls.dtype).reshape(-1, 1) * NOISE_INPUT_SCALE
            action = action + self.noise_embed(level).unsqueeze(1)
        return action

    def trunk(self, tokens: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Transformer over image tokens (B, N, D) conditioned on the action token
        (B, 1, D); returns the image tokens (B, N, D)."""
        B, N, _ = tokens.shape
        prefix = [] if self.registers is None else [self.registers.expand(B, -1, -1)]
        context: torch.Tensor | None = None
        if self.config.attention_mode == "concat":
            prefix.insert(0, action)
        else:  # interleaved: cross-attended; adaln: modulates every norm
            context = action
        x = torch.cat([*prefix, tokens], dim=1)  # (B, P + N, D)
        use_checkpoint = (self.grad_checkpointing and self.training
                          and torch.is_grad_enabled() and not _is_tracing())
        for block in self.blocks:
            if use_checkpoint:
                x = checkpoint(block, x, context, use_reentrant=False)
            else:
                x = block(x, context)
        x = self.norm(x)
        if self.final_modulation is not None:
            shift, scale = self.final_modulation(action)
            x = modulate(x, shift, scale)
        return x[:, x.shape[1] - N:]  # drop the action and register tokens

    def decode(self, tokens: torch.Tensor, last_frame: torch.Tensor,
               latent: torch.Tensor | None = None) -> torch.Tensor:
        """Image tokens (B, N, D) -> next frame (B, 3, H, W) in [0, 1].

        ``last_frame`` (B, 3, H, W) is the most recent context frame, which the
        ``residual`` output mode adds its predicted change to, and the ``warp``
        mode first moves along its predicted motion. A ``codebook`` model draws
        its codes (see ``pick_codes``) and its grain (see ``paint``) with
        ``latent``.
        """
        out = self.decoder(tokens)
        mode = self.config.output_mode
        if mode == "codebook":
            n = self.config.code_latent_size
            codes = self.pick_codes(out, None if latent is None else latent[:, :n])
            return self.paint(codes, None if latent is None else latent[:, n:])
        if mode in ("residual", "warp"):
            if mode == "warp":
                last_frame = self.warp(last_frame, out[:, 3:])
            frame = last_frame + out[:, :3]
            clamped = frame.clamp(0.0, 1.0)
            if self.training:
                # Straight-through: the clamp's value, the identity's gradient. A plain
                # clamp gives a pixel pushed below black no gradient back, so dark
                # regions (most of Doom) sink to black and stay there in a dream.
                return frame + (clamped - frame).detach()
            return clamped
        return torch.sigmoid(out)

    def warp(self, frame: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """Resample ``frame`` (B, 3, H, W) along ``motion`` (B, 2, H, W), each output
        pixel taking the colour ``FLOW_PIXELS * motion`` pixels (x, y) away,
        bicubically (bilinear resampling would blur a dream a little more every
        step); pixels from beyond the edge repeat the border."""
        grid = self.sample_grid + motion.float().permute(0, 2, 3, 1) * self.motion_scale
        return F.grid_sample(frame.float(), grid, mode="bicubic", padding_mode="border",
                             align_corners=False)

    def code_logits(self, frames: torch.Tensor, controls: torch.Tensor,
                    noise_level: torch.Tensor | None = None,
                    settled: torch.Tensor | None = None) -> torch.Tensor:
        """``codebook`` mode: ``(B, codebook_size, h, w)`` logits of the next frame's
        patches; ``forward`` paints the codes ``pick_codes`` draws from them.
        With a refiner, given the ``(B, h, w)`` codes already ``settled``
        (``codebook_size`` where none is): the refiner's logits."""
        if self.config.output_mode != "codebook":
            raise ValueError(f"code_logits needs output_mode 'codebook', this model's is "
                             f"{self.config.output_mode!r}")
        tokens = self.tokenize(frames, controls)
        logits = self.decoder(self.trunk(tokens, self.embed_action(controls, noise_level)))
        if settled is None or self.refiner is None:
            return logits
        return self.refiner(logits, settled)

    def forward(self, frames: torch.Tensor, controls: torch.Tensor,
                noise_level: torch.Tensor | None = None,
                latent: torch.Tensor | None = None, logits: bool = False,
                settled: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame; with ``logits`` (``codebook`` mode, training), its code
        logits instead, given the codes ``settled`` (see ``code_logits``)."""
        if not _is_tracing():  # a trace would freeze these checks as constants
            self.check_inputs(frames, controls, noise_level, latent)
        if logits:  # the latent only draws
            return self.code_logits(frames, controls, noise_level, settled)
        tokens = self.tokenize(frames, controls)
        tokens = self.trunk(tokens, self.embed_action(controls, noise_level, latent))
        return self.decode(tokens, frames[:, -1], latent)

    # -- helpers --------------------------------------------------------------

    def check_inputs(self, frames: torch.Tensor, controls: torch.Tensor,
                     noise_level: torch.Tensor | None = None,
                     latent: torch.Tensor | None = None) -> None:
        """Raise a ``ValueError`` that names the expected shapes if the inputs are off."""
        c = self.config
        expected = (c.context_frames, 3, c.height, c.width)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(
                f"frames must have shape (B, {', '.join(map(str, expected))}) = "
                f"(batch, context_frames, RGB, height, width), got {tuple(frames.shape)}")
        if controls.dim() != 2 or controls.shape[1] != c.control_dim:
            raise ValueError(
                f"controls must have shape (B, {c.control_dim}) = (batch, control_dim), "
                f"got {tuple(controls.shape)}")
        if controls.shape[0] != frames.shape[0]:
            raise ValueError(
                f"frames and controls must share the batch size, got {frames.shape[0]} "
                f"and {controls.shape[0]}")
        if noise_level is not None:
            if not c.noise_conditioning:
                raise ValueError("this model was not built with noise_conditioning: it takes "
                                 "no noise_level")
            if tuple(noise_level.shape) != (frames.shape[0],):
                raise ValueError(f"noise_level must have shape (B,) = ({frames.shape[0]},), "
                                 f"got {tuple(noise_level.shape)}")
        if latent is not None:
            if not c.latent_size:
                raise ValueError("this model's latent_size is 0: it takes no latent")
            if tuple(latent.shape) != (frames.shape[0], c.latent_size):
                raise ValueError(f"latent must have shape (B, latent_size) = "
                                 f"({frames.shape[0]}, {c.latent_size}), got "
                                 f"{tuple(latent.shape)}")
        if not frames.is_floating_point() or not controls.is_floating_point():
            raise ValueError(
                f"frames and controls must be floating point (frames in [0, 1]), got "
                f"{frames.dtype} and {controls.dtype}")

    def noise_input(self, batch: int, level: float,
                    device: torch.device | str = "cpu") -> torch.Tensor | None:
        """The ``noise_level`` argument for ``batch`` samples at one ``level``:
        ``None`` for a model without noise conditioning."""
        if not self.config.noise_conditioning:
            return None
        return torch.full((batch,), float(level), device=device)

    def draw_latent(self, batch: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``(batch, latent_size)`` N(0, 1) latents to hold for a whole dream (one
        world per dream); ``None`` for a model without a latent."""
        if not self.config.latent_size:
            return None
        return torch.randn(batch, self.config.latent_size, device=device, generator=generator)

    def set_fused_attention(self, enabled: bool) -> None:
        """Choose ``scaled_dot_product_attention`` (True) or the reference path."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.fused_attn = enabled

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# The noise MLP sees 10x the level: levels of interest (up to ~0.3 in [0, 1] pixel
# units) then span a unit range, like the controls do.
NOISE_INPUT_SCALE = 10.0


# A stick_view model's raw zoom of 1 scales the view by e^0.1, about a tenth.
VIEW_ZOOM = 0.1


def _is_tracing() -> bool:
    return bool(torch.jit.is_tracing())  # type: ignore[attr-defined,no-untyped-call]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
