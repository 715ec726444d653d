from __future__ import annotations

import pytest

from models import WorldModelConfig, preset


@pytest.mark.parametrize(("changes", "match"), [
    ({"embed_dim": 100, "num_heads": 3}, "divisible by num_heads"),
    ({"height": 60}, r"divisible by 2\^3 = 8"),
    ({"decoder_filters": (64, 32)}, "one positive entry per tokenizer stage"),
    ({"attention_mode": "sideways"}, "attention_mode must be one of"),
    ({"output_mode": "delta"}, "output_mode must be one of"),
    ({"activation": "swish"}, "activation must be one of"),
    ({"context_frames": 0}, "context_frames must be >= 1"),
    ({"num_registers": -1}, "num_registers must be >= 0"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"pos_embed": "sincos", "embed_dim": 6, "num_heads": 2}, "divisible by 4"),
])
def test_invalid_configs_are_refused_with_the_reason(changes: dict[str, object],
                                                     match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorldModelConfig().replace(**changes)


def test_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown WorldModelConfig field.*: patch_size"):
        WorldModelConfig.from_dict({**WorldModelConfig().to_dict(), "patch_size": 8})


def test_command_line_strings_are_coerced() -> None:
    config = preset("tiny", depth="2", tokenizer_filters="16,32,64", mlp_ratio="2.5",
                    grad_checkpointing="true")
    assert config.depth == 2
    assert config.tokenizer_filters == (16, 32, 64)
    assert config.mlp_ratio == 2.5
    assert config.grad_checkpointing is True
    with pytest.raises(ValueError, match="grad_checkpointing must be true or false"):
        preset("tiny", grad_checkpointing="maybe")


def test_derived_sizes() -> None:
    config = WorldModelConfig(height=64, width=96, num_registers=4)
    assert config.grid_size == (8, 12)
    assert config.num_image_tokens == 96
    assert config.sequence_length == 96 + 4 + 1
    assert config.replace(attention_mode="interleaved").sequence_length == 100


def test_flops_are_counted_for_every_kind_of_model() -> None:
    # A model that moves its view with the sticks tokenizes with its controls, and a
    # noise-conditioned one embeds its noise level: both must be counted, not crash.
    from models import WorldModel
    from models.summary import flop_counts
    from tests.models.helpers import baby_config

    plain = flop_counts(WorldModel(baby_config()))
    for extra in ({"stick_view": True}, {"noise_conditioning": True},
                  {"output_mode": "codebook", "codebook_size": 8, "codebook_patch": 2,
                   "stick_view": True, "noise_conditioning": True}):
        figures = flop_counts(WorldModel(baby_config(**extra)))
        assert figures["total"] > 0, extra
        assert figures["total"] == pytest.approx(sum(v for k, v in figures.items()
                                                     if k != "total"))
    assert plain["total"] > 0
