from __future__ import annotations

import pytest
import torch
from torch import nn

from models import Discriminator, DiscriminatorConfig, ResNetBlock
from models.attention import Attention
from models.tokenizer import sincos_pos_embed_2d
from tests.models.helpers import baby_config, random_inputs


@pytest.mark.parametrize(("resample", "size", "projected"), [
    ("none", 16, False), ("down", 8, True), ("up", 32, False)])
# An "up" block upsamples x before both branches, so only a channel change needs a projection.
def test_resnet_block_resamples_and_projects_only_when_needed(
        resample: str, size: int, projected: bool, device: torch.device) -> None:
    block = ResNetBlock(8, 8, "relu", resample).to(device)  # type: ignore[arg-type]
    out = block(torch.randn(2, 8, 16, 16, device=device))
    assert out.shape == (2, 8, size, size)
    assert isinstance(block.shortcut, nn.Conv2d) == projected


def test_resnet_block_projects_a_channel_change() -> None:
    block = ResNetBlock(8, 16)
    assert isinstance(block.shortcut, nn.Conv2d)
    assert block(torch.randn(1, 8, 8, 8)).shape == (1, 16, 8, 8)


def test_resnet_block_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="resample"):
        ResNetBlock(8, 8, "gelu", "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="activation"):
        ResNetBlock(8, 8, "swish")


def test_cross_attention_to_one_token_ignores_the_query_weights() -> None:
    # With a single key the softmax is 1: every query receives the projected value.
    attn = Attention(16, 2).eval()
    x = torch.randn(2, 5, 16)
    context = torch.randn(2, 1, 16)
    out = attn(x, context)
    torch.testing.assert_close(out[:, 0], out[:, 4])
    attn.fused_attn = False
    torch.testing.assert_close(attn(x, context), out, atol=1e-6, rtol=1e-5)


def test_sincos_embedding_is_distinct_per_position() -> None:
    table = sincos_pos_embed_2d(32, 4, 6)
    assert table.shape == (24, 32)
    assert torch.cdist(table, table).add(torch.eye(24) * 1e3).min() > 0.1


def test_sincos_model_has_no_learned_position_table() -> None:
    from models import WorldModel

    model = WorldModel(baby_config(pos_embed="sincos"))
    assert model.tokenizer.pos_embed is None
    assert not any("pos" in name for name in model.state_dict())  # a buffer, not saved
    frames, controls = random_inputs(model.config)
    assert model(frames, controls).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("conditional", [False, True])
def test_discriminator_scores_patches_and_trains(conditional: bool,
                                                 device: torch.device) -> None:
    config = baby_config(context_frames=2)
    disc = Discriminator(DiscriminatorConfig(filters=(8, 16), conditional=conditional),
                         config).to(device)
    frames, controls = random_inputs(config, device=device)
    logits = disc(frames[:, -1], frames, controls)
    assert logits.shape == (2, 1, 8, 8)
    logits.mean().backward()
    starved = [n for n, p in disc.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert starved == []


def test_conditional_discriminator_sees_the_controls() -> None:
    config = baby_config()
    disc = Discriminator(DiscriminatorConfig(filters=(8, 16), conditional=True), config).eval()
    frames, _ = random_inputs(config)
    a = disc(frames[:, -1], frames, torch.ones(2, 4))
    b = disc(frames[:, -1], frames, -torch.ones(2, 4))
    assert (a - b).abs().max() > 1e-6
    with pytest.raises(ValueError, match="context frames and controls"):
        disc(frames[:, -1])


def test_discriminator_config_round_trip() -> None:
    config = DiscriminatorConfig(filters=(8, 16, 32), conditional=True)
    assert DiscriminatorConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("norm", ["instance", "layer", "none"])
def test_every_conv_norm_keeps_the_shape(norm: str, device: torch.device) -> None:
    block = ResNetBlock(8, 16, "gelu", "up", norm).to(device)  # type: ignore[arg-type]
    assert block(torch.randn(2, 8, 8, 8, device=device)).shape == (2, 16, 16, 16)


def test_unnormed_block_starts_as_its_shortcut() -> None:
    block = ResNetBlock(8, 8, norm="none")
    x = torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(block(x), block.act2(x))
    with pytest.raises(ValueError, match="conv norm"):
        ResNetBlock(8, 8, norm="batch")  # type: ignore[arg-type]


@pytest.mark.parametrize(("norm", "sees_exposure"),
                         [("instance", False), ("layer", True), ("none", True)])
def test_only_instance_norm_hides_an_images_exposure(norm: str, sees_exposure: bool) -> None:
    # Halving every pixel is invisible after an instance norm (a bias-free conv
    # scales, the norm divides it out), so such a model cannot tell a dream that
    # darkens or brightens from a normal one, and cannot pull it back.
    from models.tokenizer import ConvTokenizer

    torch.manual_seed(0)
    tokenizer = ConvTokenizer(3, (8, 16), 1, 32, (8, 8), norm=norm).eval()  # type: ignore[arg-type]
    frames = torch.rand(2, 3, 32, 32) * 0.6 + 0.2
    with torch.no_grad():
        tokens = tokenizer(frames)
        change = float((tokenizer(0.5 * frames) - tokens).norm() / tokens.norm())
    assert (change > 5e-3) == sees_exposure, change
