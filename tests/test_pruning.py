"""Tests for attention-guided pruning of feature cells (gaze_rl.nets.pruning and GazeExtractor's
prune_top_k / prune_source options)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaze_rl.build import check_prune_top_k
from gaze_rl.configuration.commands import TrainConfig
from gaze_rl.nets.extractor import GazeExtractor
from gaze_rl.nets.levels import layer_outputs
from gaze_rl.nets.pruning import check_top_k, prune_cells, pruned_features_dim, select_cells

from conftest import one_line_error
from net_inputs import batch, dict_space, head_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def reference_prune(features: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """numpy reference: (B, k, C + 2), best cell first, ties by raster order, then (x, y)."""
    b, c, h, w = features.shape
    xs = -1.0 + (2.0 * np.arange(w) + 1.0) / w
    ys = -1.0 + (2.0 * np.arange(h) + 1.0) / h
    out = np.zeros((b, k, c + 2))
    for i in range(b):
        order = np.argsort(-scores[i].ravel(), kind="stable")[:k]
        rows, cols = np.unravel_index(order, (h, w))
        out[i, :, :c] = features[i].reshape(c, -1)[:, order].T
        out[i, :, c] = xs[cols]
        out[i, :, c + 1] = ys[rows]
    return out


@pytest.mark.parametrize("k", [1, 4, 8, 16])
def test_keeps_exactly_the_k_highest_cells(k):
    rng = np.random.default_rng(k)
    features = rng.normal(size=(3, 5, 4, 4)).astype(np.float32)
    scores = rng.random((3, 4, 4)).astype(np.float32)
    scores[0] = np.round(scores[0] * 3) / 3  # many exact ties: raster order decides
    scores[1] = 0.5  # all tied: the first k cells in raster order
    out = prune_cells(torch.from_numpy(features), torch.from_numpy(scores), k)
    assert out.shape == (3, k, 5 + 2)
    np.testing.assert_allclose(out.numpy(), reference_prune(features, scores, k), rtol=0, atol=0)
    index = select_cells(torch.from_numpy(scores), k).numpy()
    np.testing.assert_array_equal(index[1], np.arange(k))
    for i in range(3):  # the kept set is the top-k set
        kept = set(index[i].tolist())
        threshold = np.sort(scores[i].ravel())[::-1][k - 1]
        assert all(scores[i].ravel()[j] >= threshold for j in kept)
        assert all(scores[i].ravel()[j] <= threshold for j in set(range(16)) - kept)


def test_gradients_reach_only_the_kept_cells():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 5, 5, requires_grad=True)
    scores = torch.rand(2, 5, 5, requires_grad=True)
    out = prune_cells(features, scores, 6)
    (out * torch.randn_like(out)).sum().backward()
    kept = np.zeros((2, 25), dtype=bool)
    for i, cells in enumerate(select_cells(scores, 6).numpy()):
        kept[i, cells] = True
    grad = features.grad.flatten(2).abs().sum(dim=1).numpy()  # (B, cells)
    assert (grad[kept] > 0).all()
    assert (grad[~kept] == 0).all()
    assert scores.grad is None  # the selection is not differentiable; the scores get nothing


def test_k_errors_name_the_grid():
    check_top_k(16, 4, 4)
    for k in (0, -1, 17):
        with pytest.raises(ValueError, match=r"4x4 = 16 \(got " + str(k)):
            check_top_k(k, 4, 4)
    with pytest.raises(ValueError, match=r"4x4 = 16"):
        GazeExtractor(dict_space(64), attention="gaussian", prune_top_k=17)
    with pytest.raises(ValueError, match=r"12x12 = 144"):
        check_prune_top_k(TrainConfig(image_size=128, prune_top_k=145))
    check_prune_top_k(TrainConfig(image_size=128, prune_top_k=144))
    with pytest.raises(ValueError, match=r"prune_source 'gaze'.*attention, shallow"):
        GazeExtractor(dict_space(64), prune_source="gaze")


def test_cli_rejects_bad_k_before_any_env(capsys, tmp_path):
    assert "4x4 = 16 (got 17)" in one_line_error(capsys, ["train", "--prune-top-k", "17", "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("attention", ["gaussian", "patch"])
def test_extractor_keeps_the_attention_maps_top_cells(attention):
    torch.manual_seed(0)
    space = dict_space(128)
    ext = GazeExtractor(space, attention=attention, prune_top_k=8)
    assert ext.prune_source == "attention"
    assert ext.image_fc[1].in_features == pruned_features_dim(64, 8) == 8 * 66
    obs = batch(space, n=3)
    with torch.no_grad():
        out = ext.attend(obs)
        expected = reference_prune(out.features.numpy(), out.weights.numpy(), 8)
        fc_in = head_input(ext, obs)
    np.testing.assert_allclose(fc_in["x"].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_extractor_gradients_flow_only_through_kept_cells():
    """With the paper's split (RL stops at the gaze map), the backbone output gets head gradients
    only at the kept cells; attached, the gaze head learns through the kept F * A values."""
    torch.manual_seed(0)
    space = dict_space(128)
    obs = batch(space, n=2)
    ext = GazeExtractor(space, attention="gaussian", prune_top_k=4, detach_attention=True)
    saved = {}

    def keep_grad(_m, _inp, out):
        out.retain_grad()
        saved["fmap"] = out

    handle = ext.backbone[-1].register_forward_hook(keep_grad)
    ext(obs)[:, :256].square().sum().backward()  # the image part only
    handle.remove()
    weights = ext.attend(obs).weights.detach()
    kept = np.zeros((2, 144), dtype=bool)
    for i, cells in enumerate(select_cells(weights, 4).numpy()):
        kept[i, cells] = True
    grad = saved["fmap"].grad.flatten(2).abs().sum(dim=1).numpy()
    assert (grad[kept] > 0).all() and (grad[~kept] == 0).all()

    attached = GazeExtractor(space, attention="gaussian", prune_top_k=4)
    attached(obs).square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in attached.attention.parameters())


def test_baseline_and_shallow_source_rank_by_first_layer_energy():
    torch.manual_seed(0)
    space = dict_space(128)
    obs = batch(space, n=2)
    baseline = GazeExtractor(space, attention="none", prune_top_k=5)  # no map: shallow
    gaze = GazeExtractor(space, attention="gaussian", prune_top_k=5, prune_source="shallow")
    for ext in (baseline, gaze):
        assert ext.prune_source == "shallow"
        with torch.no_grad():
            levels = layer_outputs(ext.backbone, obs["rgb"])
            scores = torch.nn.functional.adaptive_avg_pool2d(levels[0].abs().sum(1, keepdim=True), (12, 12))[:, 0]
            expected = reference_prune(ext.attend(obs).features.numpy(), scores.numpy(), 5)
            fc_in = head_input(ext, obs)
        np.testing.assert_allclose(fc_in["x"].numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [16, 8, 4])
def test_the_head_gets_smaller(k):
    full = GazeExtractor(dict_space(128), attention="gaussian")
    pruned = GazeExtractor(dict_space(128), attention="gaussian", prune_top_k=k)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full.image_fc) == 64 * 144 * 256 + 256
    assert count(pruned.image_fc) == k * 66 * 256 + 256
    assert full.features_dim == pruned.features_dim  # the policy MLP after it is unchanged
