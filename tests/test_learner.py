"""ContrastiveLearner on synthetic feature maps: mining over the buffer, the update, guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.nets.extractor import GazeExtractor


def extractor(attention: str = "gaussian") -> GazeExtractor:
    space = spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8))
    return GazeExtractor(space, attention=attention)


def filled_learner(**config) -> ContrastiveLearner:
    torch.manual_seed(0)
    learner = ContrastiveLearner(extractor(), ContrastiveConfig(buffer_size=512, **config))
    maps = torch.rand(400, *learner.extractor.map_shape)
    learner.add(maps, torch.linspace(0, 1, 400))
    return learner


def test_update_trains_only_the_gaze_head_and_projection():
    learner = filled_learner()
    before = {n: p.detach().clone() for n, p in learner.extractor.named_parameters()}
    metrics = learner.update()
    assert metrics["gaze/num_triplets"] > 0 and np.isfinite(metrics["gaze/triplet_loss"])
    changed = {n for n, p in learner.extractor.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("attention.") for n in changed)


def test_keys_are_unit_norm_random_projections():
    learner = filled_learner()
    keys = learner.buffer.keys.float()
    assert keys.shape == (400, 256)
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(400), atol=2e-3, rtol=0)


def test_constant_returns_give_no_triplets_and_no_step():
    learner = ContrastiveLearner(extractor(), ContrastiveConfig(buffer_size=512))
    learner.add(torch.rand(100, *learner.extractor.map_shape), torch.zeros(100))
    metrics = learner.update()
    assert metrics["gaze/num_triplets"] == 0 and metrics["gaze/valid_fraction"] == 0.0
    assert learner.num_updates == 0 and not learner.optimizer.state


def test_non_finite_loss_is_skipped_and_counted():
    learner = filled_learner()
    with torch.no_grad():
        next(learner.extractor.attention.parameters()).fill_(float("nan"))
    metrics = learner.update()
    # every step of the update is skipped (and counted)
    assert metrics["gaze/skipped_nonfinite"] == learner.config.steps_per_update and metrics["gaze/steps_taken"] == 0
    assert learner.num_updates == 0 and not learner.optimizer.state


def test_needs_a_gaussian_gaze():
    with pytest.raises(ValueError, match="Gaussian gaze"):
        ContrastiveLearner(extractor("patch"), ContrastiveConfig())
