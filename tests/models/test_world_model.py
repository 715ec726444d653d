from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from models import ResNetBlock, WorldModel, WorldModelConfig, preset, preset_names
from models.attention import AdaptiveNorm
from models.codebook import code_spread, kmeans, patchify, unpatchify
from models.config import FLOW_PIXELS
from tests.models.helpers import baby_config, random_inputs

ALL_MODES = list(itertools.product(
    ["concat", "interleaved", "adaln"], [0, 4], [1, 4],
    ["absolute", "residual", "warp", "codebook"],
    ["gelu", "relu"]))


@pytest.mark.parametrize(("attention", "registers", "k", "output", "activation"), ALL_MODES)
def test_every_mode_predicts_a_frame_in_unit_range(
        attention: str, registers: int, k: int, output: str, activation: str,
        device: torch.device) -> None:
    config = baby_config(attention_mode=attention, num_registers=registers, context_frames=k,
                         output_mode=output, activation=activation)
    model = WorldModel(config).to(device)
    frames, controls = random_inputs(config, batch=3, device=device)
    out = model(frames, controls)
    assert out.shape == (3, 3, 32, 32)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0
    assert out.max() <= 1.0


def test_stages_compose_to_forward(device: torch.device) -> None:
    config = baby_config(num_registers=2, context_frames=2)
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, device=device)
    tokens = model.tokenize(frames)
    assert tokens.shape == (2, config.num_image_tokens, config.embed_dim)
    action = model.embed_action(controls)
    assert action.shape == (2, 1, config.embed_dim)
    mixed = model.trunk(tokens, action)
    assert mixed.shape == tokens.shape
    out = model.decode(mixed, frames[:, -1])
    torch.testing.assert_close(out, model(frames, controls))


@pytest.mark.parametrize("output", ["residual", "warp"])
def test_residual_and_warp_modes_start_near_copy_last_frame(output: str,
                                                            device: torch.device) -> None:
    config = baby_config(output_mode=output, context_frames=2)
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, device=device)
    frames = torch.nn.functional.avg_pool3d(frames, (1, 5, 5), 1, (0, 2, 2),
                                            count_include_pad=False)  # smooth, like a picture
    out = model(frames, controls)
    assert (out - frames[:, -1]).abs().max() < 0.05
    assert (out - frames[:, 0]).abs().mean() > 0.05  # the last frame, not the first


def test_warp_moves_the_picture_by_the_motion_field(device: torch.device) -> None:
    model = WorldModel(baby_config(output_mode="warp")).to(device)
    frame = torch.rand(2, 3, 32, 32, device=device)
    motion = torch.zeros(2, 2, 32, 32, device=device)
    torch.testing.assert_close(model.warp(frame, motion), frame)  # no motion: the frame
    motion[0, 0] = 2 / FLOW_PIXELS  # sample 2 pixels to the right: the picture moves left
    motion[1, 1] = -1 / FLOW_PIXELS  # sample 1 pixel up: the picture moves down
    out = model.warp(frame, motion)
    torch.testing.assert_close(out[0, :, :, :-2], frame[0, :, :, 2:])
    torch.testing.assert_close(out[0, :, :, -1], frame[0, :, :, -1])  # the border repeats
    torch.testing.assert_close(out[1, :, 1:], frame[1, :, :-1])
    ramp = torch.linspace(0, 1, 32, device=device).view(1, 1, 32, 1).expand(2, 3, 32, 32)
    half = model.warp(ramp, motion / 2)  # half a pixel down: a ramp moves exactly
    torch.testing.assert_close(half[1, :, 2:-2], ramp[1, :, 2:-2] - 0.5 / 31)


def test_stick_view_moves_the_last_frame_as_its_map_of_the_sticks_says(
        device: torch.device) -> None:
    config = baby_config(stick_view=True, context_frames=2, output_mode="residual")
    model = WorldModel(config).to(device)
    frame = torch.rand(2, 3, 32, 32, device=device)
    turn = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], device=device)
    torch.testing.assert_close(model.moved_view(frame, turn), frame)  # untrained: the frame
    assert model.view_motion is not None
    with torch.no_grad():  # a full turn samples 2 pixels to the right: the view moves left
        model.view_motion.weight[0, 2] = 2 / FLOW_PIXELS
    moved = model.moved_view(frame, turn)
    torch.testing.assert_close(moved[0, :, :, :-2], frame[0, :, :, 2:])
    torch.testing.assert_close(moved[1], frame[1])  # at rest the view stays
    ramp = torch.linspace(0, 1, 32, device=device).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    with torch.no_grad():
        model.view_motion.bias[2] = 2.0  # zoom in by e^0.2 about the centre
    zoomed = model.moved_view(ramp, turn[1:])
    expected = (ramp - 0.5) * torch.exp(torch.tensor(-0.2)).item() + 0.5
    torch.testing.assert_close(zoomed[..., 2:-2], expected[..., 2:-2])
    # The tokenizer sees the moved view beside the K frames, so it needs the controls.
    frames = torch.rand(2, 2, 3, 32, 32, device=device)
    assert model.tokenize(frames, turn).shape == model.tokenize(frames, turn.flip(0)).shape
    with pytest.raises(ValueError, match="controls"):
        model.tokenize(frames)


def train_moved_view(model: WorldModel, frames: torch.Tensor, sticks: torch.Tensor,
                     target: torch.Tensor) -> None:
    """150 Adam steps of the view map alone towards ``target``, the borders left out."""
    assert model.view_motion is not None
    optimizer = torch.optim.Adam(model.view_motion.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = (model.moved_view(frames, sticks) - target)[..., 4:-4, 4:-4].abs().mean()
        loss.backward()
        optimizer.step()


def test_the_stick_view_learns_how_far_a_turn_moves_the_picture(device: torch.device) -> None:
    torch.manual_seed(0)
    model = WorldModel(baby_config(stick_view=True, output_mode="residual")).to(device)
    assert model.view_motion is not None
    smooth = torch.nn.functional.avg_pool2d(torch.rand(8, 3, 40, 40, device=device), 9, 1)
    sticks = torch.rand(8, 4, device=device) * 2 - 1
    # The game: a turn of s moves the picture 3s pixels to the left; nothing else moves it.
    shift = model.motion_scale[0] * 3 / FLOW_PIXELS * sticks[:, 2]
    grid = model.sample_grid.expand(8, -1, -1, -1).clone()
    grid[..., 0] += shift[:, None, None]
    target = torch.nn.functional.grid_sample(smooth, grid, mode="bilinear",
                                             padding_mode="border", align_corners=False)
    train_moved_view(model, smooth, sticks, target)
    learned = model.view_motion.weight.detach() * FLOW_PIXELS  # pixels per unit of stick
    assert abs(float(learned[0, 2]) - 3) < 0.3, learned
    assert float(learned[0].abs().sum() - learned[0, 2].abs()) < 0.5, learned


def test_a_stick_view_held_at_its_fit_learns_only_its_zoom(device: torch.device) -> None:
    from models.world_model import VIEW_ZOOM

    torch.manual_seed(0)
    config = baby_config(stick_view=True, stick_view_learn=False, output_mode="residual")
    model = WorldModel(config).to(device)
    assert model.view_motion is not None
    with torch.no_grad():  # the fit: a full turn samples 2 pixels to the right
        model.view_motion.weight[0, 2] = 2 / FLOW_PIXELS
    fitted = [p.detach().clone() for p in model.view_motion.parameters()]
    smooth = torch.nn.functional.avg_pool2d(torch.rand(8, 3, 40, 40, device=device), 9, 1)
    sticks = torch.rand(8, 4, device=device) * 2 - 1
    # The game turns 3 pixels a unit of stick and zooms in by e^0.1 (a raw zoom of 1).
    grid = model.sample_grid * float(torch.exp(torch.tensor(-VIEW_ZOOM)))
    grid = grid.expand(8, -1, -1, -1).clone()
    grid[..., 0] += model.motion_scale[0] * 3 / FLOW_PIXELS * sticks[:, 2, None, None]
    target = torch.nn.functional.grid_sample(smooth, grid, mode="bilinear",
                                             padding_mode="border", align_corners=False)
    train_moved_view(model, smooth, sticks, target)
    weight, bias = (p.detach() for p in model.view_motion.parameters())
    torch.testing.assert_close(weight[:2], fitted[0][:2], rtol=0, atol=0)  # the shift held
    torch.testing.assert_close(bias[:2], fitted[1][:2], rtol=0, atol=0)
    assert abs(float(bias[2]) - 1) < 0.3, bias  # the zoom learned


def test_warp_keeps_the_detail_that_bilinear_resampling_loses(device: torch.device) -> None:
    from train.drift import detail_energy

    model = WorldModel(baby_config(output_mode="warp")).to(device)
    frame = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 34, 34, device=device), 3, 1)
    motion = torch.zeros(1, 2, 32, 32, device=device)
    detail = float(detail_energy(frame.cpu().numpy())[0])
    blurred, x = frame, frame
    for i in range(10):  # half a pixel there and back, five times
        motion[:, :] = (0.5 if i % 2 == 0 else -0.5) / FLOW_PIXELS
        x = model.warp(x, motion)
        blurred = torch.nn.functional.grid_sample(
            blurred, model.sample_grid + motion.permute(0, 2, 3, 1) * model.motion_scale,
            mode="bilinear", padding_mode="border", align_corners=False)
    kept, bilinear = (float(detail_energy(t.cpu().numpy())[0]) / detail for t in (x, blurred))
    assert kept > 0.6 > 2 * bilinear, (kept, bilinear)  # a dream warps every step


def test_controls_change_the_prediction(device: torch.device) -> None:
    config = baby_config()
    model = WorldModel(config).to(device).eval()
    frames, _ = random_inputs(config, device=device)
    left = model(frames, torch.tensor([[-1.0, 0, 0, 0]] * 2, device=device))
    right = model(frames, torch.tensor([[1.0, 0, 0, 0]] * 2, device=device))
    assert (left - right).abs().max() > 1e-6


@pytest.mark.parametrize(("attention", "output", "noise", "norm"), [
    ("concat", "absolute", False, "instance"), ("concat", "residual", True, "layer"),
    ("interleaved", "absolute", True, "none"), ("interleaved", "residual", False, "instance"),
    ("adaln", "absolute", True, "layer"), ("adaln", "residual", False, "none"),
    ("adaln", "warp", True, "layer"), ("concat", "warp", False, "instance")])
def test_every_parameter_receives_a_gradient(attention: str, output: str, noise: bool,
                                             norm: str, device: torch.device) -> None:
    config = baby_config(attention_mode=attention, output_mode=output, num_registers=2,
                         context_frames=2, noise_conditioning=noise, conv_norm=norm)
    model = WorldModel(config).to(device).train()
    for module in model.modules():  # adaLN-Zero gates and SkipInit gains start shut:
        if isinstance(module, AdaptiveNorm):  # open them a little, as the first
            torch.nn.init.normal_(module.proj.weight, std=0.05)  # optimizer step would
        if isinstance(module, ResNetBlock) and module.gain is not None:
            torch.nn.init.constant_(module.gain, 0.1)
    frames, controls = random_inputs(config, device=device)
    target = torch.rand(2, 3, 32, 32, device=device)
    level = torch.rand(2, device=device) * 0.2 if noise else None
    (model(frames, controls, level) - target).abs().mean().backward()
    starved = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert starved == []


@pytest.mark.parametrize("attention", ["concat", "interleaved"])
def test_gradient_checkpointing_changes_nothing_but_memory(attention: str,
                                                           device: torch.device) -> None:
    # Dropout on, so this also checks that recomputation replays the same RNG draws.
    config = baby_config(attention_mode=attention, num_registers=2, dropout=0.1)
    plain = WorldModel(config).to(device).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    frames, controls = random_inputs(config, device=device)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        out = model(frames, controls)
        out.square().mean().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1])
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert a.grad is not None
        assert b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_the_config_flag_checkpoints_every_block_in_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import models.world_model

    calls: list[object] = []
    real = models.world_model.checkpoint

    def counting(block: object, *args: object, **kwargs: object) -> object:
        calls.append(block)
        return real(block, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(models.world_model, "checkpoint", counting)
    config = baby_config(grad_checkpointing=True)
    frames, controls = random_inputs(config)
    WorldModel(config).train()(frames, controls)
    assert len(calls) == config.depth  # each transformer block recomputed in backward
    WorldModel(config).eval()(frames, controls)
    WorldModel(baby_config()).train()(frames, controls)
    assert len(calls) == config.depth  # not at inference, nor without the flag


@pytest.mark.parametrize("attention", ["concat", "interleaved"])
def test_fused_attention_equals_reference_path(attention: str, device: torch.device) -> None:
    config = baby_config(attention_mode=attention, num_registers=4, context_frames=2)
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, batch=4, device=device)
    model.set_fused_attention(True)
    fused = model(frames, controls)
    model.set_fused_attention(False)
    reference = model(frames, controls)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", preset_names())
def test_config_dict_round_trip_rebuilds_an_identical_model(name: str) -> None:
    config = preset(name)
    if name == "base":  # keep the test fast: same code path at a smaller size
        config = config.replace(height=32, width=32)
    model = WorldModel(config).eval()
    data = json.loads(json.dumps(config.to_dict()))  # as a checkpoint or manifest holds it
    rebuilt = WorldModel(WorldModelConfig.from_dict(data)).eval()
    assert rebuilt.config == config
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    rebuilt.load_state_dict(model.state_dict())
    frames, controls = random_inputs(config)
    noise = torch.zeros(len(frames)) if config.noise_conditioning else None
    latent = torch.randn(len(frames), config.latent_size) if config.latent_size else None
    torch.testing.assert_close(rebuilt(frames, controls, noise, latent),
                               model(frames, controls, noise, latent), atol=0.0, rtol=0.0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning:torch")  # torch's own modules
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")  # bundles ship it
def test_jit_trace_runs_and_matches_eager(device: torch.device) -> None:
    config = baby_config(attention_mode="interleaved", num_registers=2, context_frames=2,
                         output_mode="residual")
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, batch=2, device=device)
    with torch.no_grad():
        traced = torch.jit.trace(model, (frames, controls))
        torch.testing.assert_close(traced(frames, controls), model(frames, controls))
        # The traced graph keeps the batch axis dynamic (serving batches clients).
        frames, controls = random_inputs(config, batch=5, device=device)
        torch.testing.assert_close(traced(frames, controls), model(frames, controls))


@pytest.mark.parametrize("fill", ["random", "zeros", "ones"])
def test_no_nan_on_random_or_extreme_input(fill: str, device: torch.device) -> None:
    config = baby_config(num_registers=2, context_frames=2, output_mode="residual")
    model = WorldModel(config).to(device).train()
    frames, controls = random_inputs(config, device=device)
    if fill != "random":
        frames.fill_(0.0 if fill == "zeros" else 1.0)
        controls = controls.sign()
    out = model(frames, controls)
    out.mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(("frames_shape", "controls_shape", "match"), [
    ((2, 3, 32, 32), (2, 4), r"frames must have shape \(B, 1, 3, 32, 32\)"),
    ((2, 1, 3, 64, 64), (2, 4), r"frames must have shape \(B, 1, 3, 32, 32\).*got \(2, 1, 3, 64"),
    ((2, 2, 3, 32, 32), (2, 4), r"frames must have shape \(B, 1, 3, 32, 32\)"),
    ((2, 1, 3, 32, 32), (2, 3), r"controls must have shape \(B, 4\)"),
    ((2, 1, 3, 32, 32), (4,), r"controls must have shape \(B, 4\)"),
    ((2, 1, 3, 32, 32), (3, 4), r"share the batch size"),
])
def test_wrong_input_shape_names_the_expected_shape(
        frames_shape: tuple[int, ...], controls_shape: tuple[int, ...], match: str) -> None:
    model = WorldModel(baby_config())
    with pytest.raises(ValueError, match=match):
        model(torch.rand(frames_shape), torch.rand(controls_shape))


def test_integer_frames_are_rejected() -> None:
    model = WorldModel(baby_config())
    frames = torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="floating point"):
        model(frames, torch.zeros(1, 4))


def test_presets_have_the_documented_sizes() -> None:
    # The table in docs/guide.md: every preset, its frame size and parameter count.
    guide = (Path(__file__).resolve().parents[2] / "docs" / "guide.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \| (\d+)x(\d+) \|[^|]*\|[^|]*\| ([\d.]+) M \|",
                      guide, re.MULTILINE)
    assert sorted(name for name, *_ in rows) == preset_names()
    for name, height, width, millions in rows:
        config = preset(name)
        assert (config.height, config.width) == (int(height), int(width)), name
        count = WorldModel(config).num_parameters() / 1e6
        assert abs(count - float(millions)) < 0.006, f"{name}: {count:.3f} M"
    assert preset("tiny", depth=2).depth == 2
    with pytest.raises(ValueError, match="no config 'huge'"):
        preset("huge")


def test_adaln_trunk_starts_as_identity(device: torch.device) -> None:
    # adaLN-Zero: every gate, shift and scale is zero at init, so the trunk only
    # normalises the tokens, whatever the controls.
    config = baby_config(attention_mode="adaln", num_registers=2)
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, device=device)
    tokens = model.tokenize(frames)
    out = model.trunk(tokens, model.embed_action(controls))
    expected = torch.nn.functional.layer_norm(tokens, (config.embed_dim,))
    torch.testing.assert_close(out, expected)


def test_adaln_controls_steer_once_the_modulation_is_learned(device: torch.device) -> None:
    config = baby_config(attention_mode="adaln")
    model = WorldModel(config).to(device).eval()
    for module in model.modules():
        if isinstance(module, AdaptiveNorm):
            torch.nn.init.normal_(module.proj.weight, std=0.05)
    frames, _ = random_inputs(config, device=device)
    left = model(frames, torch.tensor([[-1.0, 0, 0, 0]] * 2, device=device))
    right = model(frames, torch.tensor([[1.0, 0, 0, 0]] * 2, device=device))
    assert (left - right).abs().max() > 1e-6


def test_noise_level_is_an_input_that_changes_the_prediction(device: torch.device) -> None:
    config = baby_config(noise_conditioning=True)
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, device=device)
    zero = torch.zeros(2, device=device)
    torch.testing.assert_close(model(frames, controls), model(frames, controls, zero))
    noisy = model(frames, controls, torch.full((2,), 0.2, device=device))
    assert (noisy - model(frames, controls, zero)).abs().max() > 1e-6
    with pytest.raises(ValueError, match=r"noise_level must have shape \(B,\) = \(2,\)"):
        model(frames, controls, torch.zeros(3, device=device))
    plain = WorldModel(baby_config()).to(device)
    with pytest.raises(ValueError, match="not built with noise_conditioning"):
        plain(frames, controls, zero)


def test_a_latent_model_draws_a_fresh_latent_unless_given_one(device: torch.device) -> None:
    config = baby_config(latent_dim=8)
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, device=device)
    z = torch.randn(2, 8, device=device)
    torch.testing.assert_close(model(frames, controls, None, z), model(frames, controls, None, z))
    assert (model(frames, controls) - model(frames, controls)).abs().max() > 1e-6
    with pytest.raises(ValueError, match=r"latent must have shape \(B, latent_size\) = \(2, 8\)"):
        model(frames, controls, None, torch.zeros(2, 7, device=device))
    plain = WorldModel(baby_config()).to(device)
    with pytest.raises(ValueError, match="latent_size is 0: it takes no latent"):
        plain(frames, controls, None, z)


def test_residual_clamp_passes_gradient_to_pixels_pushed_out_of_range() -> None:
    config = baby_config(output_mode="residual")
    model = WorldModel(config).train()
    frames = torch.rand(1, 1, 3, 32, 32)
    tokens = model.trunk(model.tokenize(frames), model.embed_action(torch.zeros(1, 4)))
    below_black = torch.full((1, 3, 32, 32), -1.0)  # every pixel ends up clamped to 0
    out = model.decode(tokens, below_black)
    assert float(out.detach().max()) == 0.0
    (out - 0.5).abs().mean().backward()  # a plain clamp would give no gradient at all
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in model.decoder.parameters())
    model.eval()  # inference clamps exactly, as the exported models do
    with torch.no_grad():
        torch.testing.assert_close(model.decode(tokens, below_black), torch.zeros(1, 3, 32, 32))


def test_codebook_mode_paints_only_codebook_patches(device: torch.device) -> None:
    config = baby_config(output_mode="codebook", codebook_size=6, codebook_patch=2,
                         context_frames=2, codebook_temperature=0.0)
    model = WorldModel(config).to(device).eval()
    codebook = torch.rand(6, 12, device=device)
    model.set_codebook(codebook)
    frames, controls = random_inputs(config, batch=3, device=device)
    logits = model(frames, controls, logits=True)
    assert logits.shape == (3, 6, 16, 16)
    out = model(frames, controls)
    torch.testing.assert_close(out, model.paint(logits.argmax(1)))  # the most likely codes
    patches = patchify(out, 2)  # every 2x2 patch is a codebook row, exactly
    assert (patches[..., None, :] == codebook).all(-1).any(-1).all()
    torch.testing.assert_close(model.paint(model.codes_of(out)), out)
    assert config.latent_size == 0
    with pytest.raises(ValueError, match="codebook must have shape"):
        model.set_codebook(torch.rand(5, 12))


def test_a_sampling_codebook_model_draws_its_codes_with_its_latent(device: torch.device) -> None:
    config = baby_config(output_mode="codebook", codebook_size=6, codebook_patch=2,
                         codebook_temperature=1.0)
    assert config.latent_size == 6 * 16 * 16
    model = WorldModel(config).to(device).eval()
    frames, controls = random_inputs(config, batch=2, device=device)
    z = model.draw_latent(2, device)
    assert z is not None
    assert z.shape == (2, config.latent_size)
    held = model(frames, controls, None, z)
    torch.testing.assert_close(held, model(frames, controls, None, z))  # the same draw
    assert (held != model(frames, controls, None, model.draw_latent(2, device))).any()
    # The codes are drawn from the model's distribution: over many draws each
    # patch's code frequencies follow softmax(logits / T) (T = 1 here).
    torch.nn.init.normal_(model.decoder.head.weight, std=0.5)  # far from uniform
    logits = model(frames[:1], controls[:1], logits=True)[0, :, 0, 0]
    draws = torch.stack([model.pick_codes(model(frames[:1], controls[:1], logits=True))[0, 0, 0]
                         for _ in range(2000)])
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert logits.softmax(0).max() > 0.3, logits.softmax(0)
    assert (freq - logits.softmax(0)).abs().max() < 0.04
    model.train()  # training's own dreams (the roll-in) paint the most likely codes
    torch.testing.assert_close(model(frames, controls, None, z),
                               model.paint(model(frames, controls, logits=True).argmax(1)))
    with pytest.raises(ValueError, match="latent_dim must be 0"):
        baby_config(output_mode="codebook", latent_dim=4)


def test_codebook_grain_paints_each_code_plus_its_spread_times_the_latent(
        device: torch.device) -> None:
    config = baby_config(output_mode="codebook", codebook_size=6, codebook_patch=2,
                         codebook_temperature=0.5, codebook_grain=True)
    plain = config.replace(codebook_grain=False)
    codes_part = plain.latent_size
    assert config.code_latent_size == codes_part == 6 * 16 * 16
    assert config.latent_size == codes_part + 3 * 32 * 32  # then a draw per pixel and channel
    assert config.replace(codebook_temperature=0.0).latent_size == 3 * 32 * 32
    model = WorldModel(config).to(device).eval()
    codebook = torch.rand(6, 12, device=device) * 0.5 + 0.25
    spread = torch.rand(6, 12, device=device) * 0.05
    model.set_codebook(codebook, spread)
    frames, controls = random_inputs(config, batch=2, device=device)
    z = model.draw_latent(2, device)
    assert z is not None
    out = model(frames, controls, None, z)
    torch.testing.assert_close(out, model(frames, controls, None, z))  # held: the same picture
    # The codes are drawn from the first part of the latent, as a model without
    # grain draws them; each patch is its code plus its spread times the rest.
    twin = WorldModel(plain).to(device).eval()
    twin.load_state_dict(model.state_dict(), strict=False)
    flat = twin(frames, controls, None, z[:, :codes_part])
    codes = twin.codes_of(flat)
    grain = spread[codes] * z[:, codes_part:].reshape(2, 16, 16, 12)
    torch.testing.assert_close(out, unpatchify((codebook[codes] + grain).clamp(0, 1), 2))
    assert float((out - flat).abs().max()) > 0.01
    model.set_codebook(codebook, torch.zeros_like(spread))  # no spread: no grain
    torch.testing.assert_close(model(frames, controls, None, z), flat)
    with pytest.raises(ValueError, match="needs its codes' spread"):
        model.set_codebook(codebook)
    with pytest.raises(ValueError, match="takes no spread"):
        twin.set_codebook(codebook, spread)


def test_code_spread_is_the_spread_of_each_codes_own_patches() -> None:
    points = torch.tensor([[0.0, 1.0], [2.0, 1.0], [10.0, 10.0], [10.0, 14.0]])
    centres = torch.tensor([[1.0, 1.0], [10.0, 12.0], [50.0, 50.0]])
    torch.testing.assert_close(code_spread(points, centres),
                               torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))


def test_a_held_latent_is_redrawn_only_as_far_as_the_sticks_move(device: torch.device) -> None:
    config = baby_config(output_mode="codebook", codebook_size=6, codebook_patch=2,
                         codebook_refresh=0.2)
    model = WorldModel(config).to(device)
    z = model.draw_latent(2, device)
    assert z is not None
    rest = torch.zeros(2, 4, device=device)
    torch.testing.assert_close(model.refresh_latent(z, rest), z)  # at rest: held
    half = torch.tensor([[0.5, 0, 0, 0], [0, 0, -1.0, 0.3]], device=device)
    changed = (model.refresh_latent(z, half) != z).float().mean(1)
    assert abs(changed[0] - 0.1) < 0.02, changed
    assert abs(changed[1] - 0.2) < 0.02, changed


def test_a_held_latent_moves_with_the_view_its_sticks_move(device: torch.device) -> None:
    # Held noise that stays on the screen pins the drawn picture there: the
    # dream would not turn. It moves as the view does, new patches drawn afresh.
    config = baby_config(output_mode="codebook", codebook_size=6, codebook_patch=4,
                         codebook_temperature=1.0, codebook_grain=True, stick_view=True)
    model = WorldModel(config).to(device)
    assert model.view_motion is not None
    with torch.no_grad():  # full turn: one patch (4 pixels) to the right; full look: one up
        model.view_motion.weight[0, 2] = 4 / FLOW_PIXELS
        model.view_motion.weight[1, 3] = -4 / FLOW_PIXELS
        model.view_motion.bias[:2] = 1.0  # the map's bias never moves the latent
    motion = model.latent_motion()
    assert motion is not None
    assert motion["grid"] == [8, 8]
    assert motion["codes"] == 6
    assert motion["patches"][0][2] == pytest.approx(1.0)
    z = model.draw_latent(3, device)
    assert z is not None
    sticks = torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]], device=device)
    moved = model.move_latent(z, sticks)
    n = config.code_latent_size
    codes, new_codes = (v[:, :n].reshape(3, 6, 8, 8) for v in (z, moved))
    grain, new_grain = (v[:, n:].reshape(3, 8, 8, 48) for v in (z, moved))
    # A turn: each patch takes its right neighbour's draws; the last column is new.
    torch.testing.assert_close(new_codes[0, :, :, :-1], codes[0, :, :, 1:])
    torch.testing.assert_close(new_grain[0, :, :-1], grain[0, :, 1:])
    assert (new_codes[0, :, :, -1] != codes[0, :, :, -1]).all()
    # Looking up: each patch takes the draws of the one above; the top row is new.
    torch.testing.assert_close(new_codes[1, :, 1:], codes[1, :, :-1])
    assert (new_grain[1, 0] != grain[1, 0]).all()
    torch.testing.assert_close(moved[2], z[2])  # at rest: held where it is
    # A third of a turn moves a whole patch on a third of the steps, at random.
    many = model.draw_latent(600, device)
    assert many is not None
    third = torch.tensor([[0, 0, 1 / 3, 0]], device=device).expand(600, 4)
    stepped = model.move_latent(many, third)[:, :n].reshape(600, 6, 8, 8)
    shifted = (stepped[..., :-1] == many[:, :n].reshape(600, 6, 8, 8)[..., 1:]).all(3).all(2).all(1)
    assert 0.25 < shifted.float().mean() < 0.42
    # A model whose view the sticks do not move keeps its latent where it is.
    still = WorldModel(baby_config(output_mode="codebook", codebook_size=6,
                                   codebook_temperature=1.0)).to(device)
    assert still.latent_motion() is None
    z = still.draw_latent(3, device)
    assert z is not None
    torch.testing.assert_close(still.move_latent(z, sticks), z)


def test_codebook_logits_train_every_parameter(device: torch.device) -> None:
    config = baby_config(output_mode="codebook", codebook_size=8, codebook_patch=4,
                         attention_mode="adaln", noise_conditioning=True, conv_norm="layer",
                         stick_view=True)
    model = WorldModel(config).to(device).train()
    for module in model.modules():  # open the adaLN-Zero gates as the first step would
        if isinstance(module, AdaptiveNorm):
            torch.nn.init.normal_(module.proj.weight, std=0.05)
        if isinstance(module, ResNetBlock) and module.gain is not None:
            torch.nn.init.constant_(module.gain, 0.1)
    frames, controls = random_inputs(config, device=device)
    logits = model(frames, controls, torch.rand(2, device=device) * 0.2, logits=True)
    target = torch.randint(8, (2, 8, 8), device=device)
    torch.nn.functional.cross_entropy(logits, target).backward()
    starved = [name for name, p in model.named_parameters()
               if p.grad is None or p.grad.abs().sum() == 0]
    assert starved == []
    with pytest.raises(ValueError, match="needs output_mode 'codebook'"):
        WorldModel(baby_config()).code_logits(frames[:, -1:], controls)


def test_codebook_patch_must_be_a_power_of_two_within_a_token() -> None:
    for patch in (3, 16):  # the baby model's tokens are 4 pixels a side
        with pytest.raises(ValueError, match="codebook_patch must be a power of two"):
            baby_config(output_mode="codebook", codebook_patch=patch)
    baby_config(output_mode="residual", codebook_patch=3)  # only the codebook mode cares


def test_kmeans_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    points = (centres.repeat(200, 1) + 0.02 * torch.randn(600, 2, generator=g))
    found = kmeans(points, 3, generator=g)
    assert torch.cdist(centres, found).min(1).values.max() < 0.01
    with pytest.raises(ValueError, match="at least 3 points"):
        kmeans(points[:2], 3)
