"""Codes drawn in parallel rounds (MaskGIT): the schedule, the refiner's
training masks, and what the rounds buy: neighbouring patches that agree."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from models import WorldModel
from models.codebook import CodeRefiner, known_after_rounds, mask_for_training
from tests.models.helpers import baby_config, random_inputs


@pytest.mark.parametrize(("patches", "rounds"), [(256, 4), (256, 1), (64, 8), (3, 3), (16, 6)])
def test_each_round_settles_more_codes_and_the_last_settles_all(patches: int,
                                                                 rounds: int) -> None:
    counts = known_after_rounds(patches, rounds)
    assert len(counts) == rounds
    assert counts[-1] == patches
    assert all(b > a for a, b in itertools.pairwise([0, *counts]))


def test_the_schedule_settles_few_codes_first_and_most_at_the_end() -> None:
    assert known_after_rounds(256, 4) == [19, 75, 158, 256]  # 256 (1 - cos(pi/2 r/4))


def test_a_training_mask_hides_a_share_of_each_frame_and_keeps_the_rest() -> None:
    codes = torch.randint(0, 10, (64, 4, 4))
    settled, hidden = mask_for_training(codes, 10, torch.Generator().manual_seed(0))
    per_frame = hidden.flatten(1).sum(1)
    assert per_frame.min() >= 1
    assert per_frame.max() <= 16
    assert per_frame.float().std() > 2  # the share differs from frame to frame
    assert torch.equal(settled[~hidden], codes[~hidden])
    assert (settled[hidden] == 10).all()


def _model(rounds: int) -> WorldModel:
    config = baby_config(output_mode="codebook", codebook_size=16, codebook_patch=4,
                         codebook_temperature=1.0, codebook_rounds=rounds,
                         codebook_refiner=8, context_frames=2)
    return WorldModel(config).eval()


def test_an_untrained_refiner_draws_what_one_round_draws() -> None:
    # The refiner's change starts at zero: with the same noise, every round
    # draws each patch as the trunk's logits alone do.
    torch.manual_seed(0)
    rounds, once = _model(4), _model(1)
    once.load_state_dict({k: v for k, v in rounds.state_dict().items()
                          if not k.startswith("refiner.")})
    frames, controls = random_inputs(rounds.config, batch=3)
    latent = torch.randn(3, rounds.config.latent_size)
    torch.testing.assert_close(rounds(frames, controls, latent=latent),
                               once(frames, controls, latent=latent), atol=0.0, rtol=0.0)


def test_the_rounds_settle_codes_on_schedule_and_keep_them() -> None:
    model = _model(4)
    assert model.refiner is not None
    seen: list[torch.Tensor] = []
    forward = model.refiner.forward

    def spy(logits: torch.Tensor, settled: torch.Tensor) -> torch.Tensor:
        seen.append(settled.clone())
        return forward(logits, settled)

    model.refiner.forward = spy  # type: ignore[method-assign]
    frames, controls = random_inputs(model.config, batch=2)
    out = model(frames, controls)
    mask = model.refiner.mask_code
    assert [int((s < mask).sum()) // 2 for s in seen] == [0, *known_after_rounds(64, 4)[:-1]]
    for before, after in itertools.pairwise(seen):  # a settled code stays settled, unchanged
        kept = before < mask
        assert torch.equal(after[kept], before[kept])
    assert torch.equal(model.codes_of(out), model.codes_of(out))  # a frame of codebook patches
    model.train()  # training's own dreams draw the most likely codes, in one round
    seen.clear()
    model(frames, controls)
    assert len(seen) == 1


def test_a_trained_refiner_draws_frames_whose_patches_agree() -> None:
    # Each frame of this world is one code all over, code 0 or code 1 alike, so
    # each patch alone is a coin toss: drawn patch by patch, a frame is a
    # speckle of both; drawn in rounds, each patch sees what its neighbours
    # settled on and the frame comes out whole.
    torch.manual_seed(0)
    refiner = CodeRefiner(2, (4, 4), 16, "gelu", "layer")
    opt = torch.optim.Adam(refiner.parameters(), lr=3e-3)
    flat = torch.zeros(64, 2, 4, 4)  # the trunk's logits: no idea which
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        codes = torch.randint(0, 2, (64, 1, 1), generator=gen).expand(64, 4, 4)
        settled, hidden = mask_for_training(codes, 2, gen)
        each = F.cross_entropy(refiner(flat, settled), codes, reduction="none")
        loss = (each * hidden).sum() / hidden.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    refiner.eval()
    gumbel = -torch.log(-torch.log(torch.rand(256, 2, 4, 4).clamp(1e-7, 1 - 1e-7)))
    with torch.no_grad():
        rounds = refiner.draw(torch.zeros(256, 2, 4, 4), 4, 1.0, gumbel)
    at_once = (flat[:1] + gumbel).argmax(1)
    whole = lambda codes: (codes.flatten(1).float().mean(1) % 1 == 0).float().mean()  # noqa: E731
    assert whole(at_once) < 0.01
    assert whole(rounds) > 0.9
    assert 0.3 < rounds.float().mean() < 0.7  # both worlds, not one
