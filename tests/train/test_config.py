from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from models.presets import preset_names
from train.config import TrainConfig, load_config


@pytest.mark.parametrize("name", preset_names())
def test_presets_load_and_round_trip(name: str) -> None:
    config = load_config(name)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_overrides_are_typed_and_nested() -> None:
    config = load_config("tiny", {"optim.lr": "3e-4", "model.depth": "2", "gan.enabled": "true",
                                  "data.recordings": ["a", "b"], "gan.filters": "8,16"})
    assert config.optim.lr == 3e-4
    assert config.model.depth == 2
    assert config.gan.enabled is True
    assert config.data.recordings == ["a", "b"]
    assert config.gan.filters == (8, 16)
    assert config.model.output_mode == "residual"  # from configs/tiny.toml


@pytest.mark.parametrize(("overrides", "match"), [
    ({"optim.lrr": 1}, "unknown config field 'optim.lrr'"),
    ({"optimizer.lr": 1}, "unknown config section 'optimizer'"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"steps": "many"}, "steps must be an integer"),
    ({"model.embed_dim": 100}, "divisible by num_heads"),
    ({"loss.crps": 1}, "set model.latent_dim too"),
    ({"unroll.rollin_latent": "fixed"}, "unroll.rollin_latent must be one of hold, fresh"),
])
def test_bad_overrides_are_refused_by_name(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config("tiny", overrides)


def test_unknown_preset_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ValueError,
                       match=r"no config 'huge'.*presets: base, seed, small, tiny, tiny-codebook"):
        load_config("huge")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    with pytest.raises(ValueError, match=r"bad\.toml"):
        load_config(bad)


def test_a_preset_extends_another_and_the_seed_preset_is_the_plain_model(
        tmp_path: Path) -> None:
    tiny, codebook = load_config("tiny"), load_config("tiny-codebook")
    assert codebook.model.output_mode == "codebook"
    for name in ("context_frames", "attention_mode", "conv_norm", "noise_conditioning"):
        assert getattr(codebook.model, name) == getattr(tiny.model, name), name
    assert (codebook.noise, codebook.unroll, codebook.steps) == (tiny.noise, tiny.unroll,
                                                                 tiny.steps)
    seed = load_config("seed")
    assert (seed.model.context_frames, seed.model.conv_norm, seed.model.output_mode,
            seed.model.attention_mode) == (1, "instance", "absolute", "concat")
    assert (seed.loss.l1, seed.loss.sobel > 0, seed.loss.fft > 0) == (1.0, True, True)
    assert (seed.unroll.schedule, seed.unroll.rollin, seed.noise.max_level) == ((1,), 0, 0.0)
    loop = tmp_path / "loop.toml"
    loop.write_text(f'extends = "{loop}"\n')
    with pytest.raises(ValueError, match="extends itself"):
        load_config(loop)


def test_configuration_reference_is_generated_from_the_code() -> None:
    from train.config_docs import field_docs, generate

    committed = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert committed == generate(), "regenerate: python -m train config-docs > " \
                                    "docs/configuration.md"
    # Every field of every section has its meaning written down.
    from train.config import (
        DataConfig,
        GanConfig,
        LossConfig,
        NoiseConfig,
        OptimConfig,
        UnrollConfig,
    )

    for cls in (DataConfig, GanConfig, LossConfig, NoiseConfig, OptimConfig, UnrollConfig):
        documented = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in documented]
        assert missing == [], f"{cls.__name__}: {missing}"


def test_auto_picks_the_preset_by_machine_and_frame_size(tmp_path: Path) -> None:
    from tests.train.helpers import moving_square_recording
    from train.config import auto_preset

    small_frames = str(moving_square_recording(tmp_path / "small", size=16))
    big = tmp_path / "big"
    big.mkdir()
    (big / "meta.json").write_text('{"height": 180, "width": 320}', encoding="utf-8")
    assert auto_preset([small_frames], None)[0] == "tiny-rounds"
    assert auto_preset([str(big)], None)[0] == "tiny-rounds"
    assert auto_preset([str(big)], 80.0)[0] == "base"
    name, why = auto_preset([str(big)], 12.0)
    assert name == "small"
    assert "12 GiB" in why
    name, why = auto_preset([small_frames, str(big)], 80.0)
    assert name == "small"
    assert "16 px" in why
    assert all(name in preset_names() for name in ("tiny-rounds", "small", "base"))
