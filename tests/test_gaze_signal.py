"""The default contrastive configuration moves the gaze onto the cell that decides the return
(gaze_rl.contrastive.synthetic), for every seed, and shuffled labels do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.synthetic import cell_mass, synthetic_states
from gaze_rl.nets.extractor import GazeExtractor

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

CHANCE = 1 / 16  # a 4x4 map


def trained_mass(seed: int, updates: int = 15, **config) -> tuple[float, float, float, dict]:
    """Deciding-cell mass before and after `updates` updates, clock-cell mass after, last metrics."""
    torch.manual_seed(seed)
    data = synthetic_states(seed, num_episodes=128)
    extractor = GazeExtractor(spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8)), attention="gaussian")
    learner = ContrastiveLearner(extractor, ContrastiveConfig(buffer_size=len(data.to_go), **config), seed=seed)
    learner.add(data.features, data.to_go, data.episodes, data.steps, data.episode_return)
    before = cell_mass(extractor.attention, data.features, data.deciding_cell)
    for _ in range(updates):
        metrics = learner.update()
    return (before, cell_mass(extractor.attention, data.features, data.deciding_cell),
            cell_mass(extractor.attention, data.features, data.clock_cell), metrics)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_config_looks_at_the_deciding_cell(seed):
    before, after, clock, metrics = trained_mass(seed)
    assert before < CHANCE  # the initial vignette under-weights the corner cell
    assert after > 1.5 * before and after > CHANCE, (before, after)
    assert clock < before  # and not at the clock, which the return-to-go would teach
    assert metrics["gaze/valid_fraction"] > 0.2 and metrics["gaze/steps_taken"] == 8
    assert abs(metrics["gaze/label_step_spearman"]) < 0.2  # the episode label does not measure time


def test_shuffled_labels_stay_at_chance():
    before, after, _, metrics = trained_mass(0, shuffle_labels=True)
    assert after <= max(before, CHANCE), (before, after)
    assert metrics["gaze/valid_fraction"] > 0.5  # it did train, on noise


def test_return_to_go_teaches_the_clock():
    """The failure issue 12 reported: with G_t as the label the gaze learns time, not the outcome."""
    _, after, clock, metrics = trained_mass(0, label="to-go")
    assert clock > 2 * CHANCE and after < CHANCE
    assert metrics["gaze/label_step_spearman"] < -0.9
