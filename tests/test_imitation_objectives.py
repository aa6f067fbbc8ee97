"""Gaze-KL and saliency-MSE against hand-computed values; attention modes; attention-on-target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gaze_rl.imitation.objectives import DEFAULT_WEIGHTS, AttentionObjective, gaze_kl, saliency_map, saliency_mse
from gaze_rl.nets.extractor import GazeExtractor
from gaze_rl.segmentation.on_target import attention_on_target, energy_softmax, policy_attention, resolve_metric_mode

from net_inputs import dict_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def test_gaze_kl_by_hand():
    a = torch.tensor([[[0.5, 0.25], [0.125, 0.125]], [[0.25, 0.25], [0.25, 0.25]]])
    g = torch.full((2, 2, 2), 0.25)
    # sample 0: sum 0.25 * log(0.25 / a) = 0.25 * (log 0.5 + log 1 + 2 log 2) = 0.25 log 2; sample 1: 0
    expected = (0.25 * math.log(2.0) + 0.0) / 2
    assert float(gaze_kl(a, g)) == pytest.approx(expected, rel=1e-6)
    # the Gaze-VLM call it reproduces
    assert float(gaze_kl(a, g)) == pytest.approx(float(F.kl_div(a.log().flatten(1), g.flatten(1), reduction="batchmean")))
    assert float(gaze_kl(g, g)) == pytest.approx(0.0, abs=1e-7)


def test_saliency_mse_by_hand():
    grid = torch.tensor([[[3.0, 1.0], [1.0, 1.0]]])  # min-max -> [[1, 0], [0, 0]] (same size: no resampling)
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert float(saliency_mse(grid, target)) == pytest.approx(0.25)
    flat = torch.full((1, 2, 2), 0.25)  # a flat map min-max normalises to 0
    assert float(saliency_mse(flat, target)) == pytest.approx(0.5)
    up = saliency_map(torch.rand(3, 4, 4), (64, 64))
    assert up.shape == (3, 64, 64) and float(up.amin()) == 0.0 and float(up.amax()) == pytest.approx(1.0)


def test_energy_softmax_by_hand():
    z = torch.zeros(1, 2, 1, 2)
    z[0, 0, 0, 0], z[0, 1, 0, 0] = 30.0, -20.0  # sum_c |z_c| = 50 in cell 0, 0 in cell 1
    a = energy_softmax(z, beta=50.0)
    e = math.exp(1.0)
    np.testing.assert_allclose(a.numpy()[0, 0], [e / (e + 1), 1 / (e + 1)], rtol=1e-6)


def extractor(method_attention: str) -> GazeExtractor:
    return GazeExtractor(dict_space(), attention=method_attention, image_features=16, state_features=8)


def observations(n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"rgb": torch.rand(n, 3, 64, 64, generator=g), "state": torch.randn(n, 5, generator=g)}


def test_attention_modes():
    gaze, baseline = extractor("gaussian"), extractor("none")
    assert AttentionObjective("gaze-kl", gaze).mode == "map"
    assert AttentionObjective("gaze-kl", baseline).mode == "features"
    assert AttentionObjective("saliency-mse", gaze).mode == "features"  # AutoFocus-IL's parameter-free map
    assert AttentionObjective("saliency-mse", gaze, mode="map").mode == "map"
    assert AttentionObjective("gaze-kl", gaze).weight == DEFAULT_WEIGHTS["gaze-kl"] == 0.01
    assert AttentionObjective("saliency-mse", gaze).weight == 10.0
    for ext, mode in ((gaze, "map"), (gaze, "features"), (baseline, "features")):
        att = policy_attention(ext, observations(), mode, beta=50.0)
        assert att.grid.shape == (3, 4, 4)
        torch.testing.assert_close(att.grid.sum(dim=(1, 2)), torch.ones(3))
    # the gaze map normalised to sum 1
    out = gaze.attend(observations())
    torch.testing.assert_close(policy_attention(gaze, observations(), "map", 50.0).grid,
                               out.weights / out.weights.sum(dim=(1, 2), keepdim=True))


def test_objective_needing_a_map_the_policy_lacks_fails_at_construction():
    with pytest.raises(ValueError, match="baseline CNN has none"):
        AttentionObjective("gaze-kl", extractor("none"), mode="map")
    with pytest.raises(ValueError, match="GazeExtractor"):
        AttentionObjective("gaze-kl", torch.nn.Identity())
    with pytest.raises(ValueError, match="unknown objective"):
        AttentionObjective("kl", extractor("none"))
    with pytest.raises(ValueError, match="no attention map"):
        resolve_metric_mode(extractor("none"), "map")


def test_gaze_kl_gradient_moves_the_gaze_towards_the_target():
    torch.manual_seed(0)
    ext = extractor("gaussian")
    objective = AttentionObjective("gaze-kl", ext)
    target = torch.full((3, 4, 4), 0.001)
    target[:, 0, 0] = 1.0 - 15 * 0.001  # all mass in the top-left cell
    optimizer = torch.optim.Adam(ext.parameters(), lr=3e-3)
    before = float(objective.loss(objective.attention(observations()), target).detach())
    for _ in range(30):
        loss = objective.loss(objective.attention(observations()), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = objective.attention(observations())
    assert float(objective.loss(after, target).detach()) < 0.5 * before
    mu = after.params.mu.detach()
    assert float(mu[..., 0].mean()) < 0 and float(mu[..., 1].mean()) < 0  # up-left


def test_attention_on_target_by_hand():
    a = torch.zeros(2, 2, 2)
    a[0, 0, 0], a[0, 1, 1] = 0.75, 0.25
    a[1] = 0.25
    coverage = torch.tensor([[[0.5, 0.0], [0.0, 1.0]]]).expand(2, 2, 2)
    np.testing.assert_allclose(attention_on_target(a, coverage), [0.75 * 0.5 + 0.25, 0.25 * 1.5])
