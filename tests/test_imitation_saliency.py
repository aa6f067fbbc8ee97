"""Saliency sources, temporal aggregation and the mapping to the feature grid (synthetic data)."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from gaze_rl.envs.task_objects import TASK_TARGETS, project_points, task_targets
from gaze_rl.imitation.saliency import (
    HeatmapSaliency,
    OracleSaliency,
    gaussian_blobs,
    grid_distribution,
    minmax,
    temporal_aggregate,
)
from gaze_rl.segmentation.targets import coverage_grid, sum_pool_to_grid

K = np.array([[32.0, 0, 32], [0, 32, 32], [0, 0, 1]])  # 64x64 camera, principal point at the centre
E = np.hstack([np.eye(3), np.zeros((3, 1))])           # camera at the world origin, looking along +z
NAMES = {1: "panda_link0", 5: "cube", 6: "goal_region", 7: "table-workspace"}


def test_temporal_aggregation_by_hand():
    maps = np.zeros((3, 1, 3))
    maps[0, 0, 0] = maps[1, 0, 1] = maps[2, 0, 2] = 1.0
    # S_2 = m2 + 0.5 m1 + 0.25 m0 = [0.25, 0.5, 1] -> min-max [0, 1/3, 1]
    out = temporal_aggregate(maps, alpha=0.5)
    np.testing.assert_allclose(out[2, 0], [0.0, 1 / 3, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[0, 0], [1.0, 0.0, 0.0])
    # window 2: S_2 = m2 + 0.5 m1 = [0, 0.5, 1]
    np.testing.assert_allclose(temporal_aggregate(maps, alpha=0.5, window=2)[2, 0], [0.0, 0.5, 1.0], atol=1e-6)
    # alpha 0: each frame on its own
    np.testing.assert_allclose(temporal_aggregate(maps, alpha=0.0), maps)
    # the running sum equals the explicit sum over every past frame
    rng = np.random.default_rng(0)
    noise = rng.random((6, 4, 4))
    np.testing.assert_allclose(temporal_aggregate(noise, 0.7), temporal_aggregate(noise, 0.7, window=6), atol=1e-6)


@pytest.mark.parametrize("alpha, window", [(1.0, None), (-0.1, None), (0.7, 0)])
def test_temporal_aggregation_rejects_bad_settings(alpha, window):
    with pytest.raises(ValueError):
        temporal_aggregate(np.zeros((2, 4, 4)), alpha, window)


def test_pooling_is_exact_area_sum():
    image = np.arange(64 * 64, dtype=np.float64).reshape(64, 64)
    pooled = sum_pool_to_grid(image, 4, 4)
    np.testing.assert_allclose(pooled, image.reshape(4, 16, 4, 16).sum(axis=(1, 3)))
    # 3 pixels into 2 cells: the middle pixel is split in half
    np.testing.assert_allclose(sum_pool_to_grid(np.ones((3, 3)), 2, 2), np.full((2, 2), 2.25))
    odd = np.random.default_rng(1).random((2, 128, 128))
    np.testing.assert_allclose(sum_pool_to_grid(odd, 12, 12).sum(axis=(1, 2)), odd.sum(axis=(1, 2)))


def test_grid_distribution_sums_to_one_and_is_smoothed():
    maps = np.zeros((2, 64, 64))
    maps[0, :16, :16] = 1.0  # all mass in cell (0, 0); map 1 is empty
    g = grid_distribution(maps, 4, 4, eps=0.16)
    np.testing.assert_allclose(g.sum(axis=(1, 2)), 1.0, atol=1e-6)
    # (g + eps / N) / (1 + eps) with N = 16: empty cells get 0.01 / 1.16
    np.testing.assert_allclose(g[0, 0, 0], (1 + 0.01) / 1.16, atol=1e-6)
    np.testing.assert_allclose(g[0, 3, 3], 0.01 / 1.16, atol=1e-6)
    np.testing.assert_allclose(g[1], np.full((4, 4), 1 / 16), atol=1e-6)  # empty -> uniform


def test_coverage_grid():
    mask = np.zeros((64, 64), bool)
    mask[:8, :16] = True  # half of cell (0, 0)
    cov = coverage_grid(mask[None], 4, 4)[0]
    assert cov[0, 0] == pytest.approx(0.5) and cov.sum() == pytest.approx(0.5)


def test_projection_matches_a_pinhole_camera():
    np.testing.assert_allclose(project_points([0.0, 0.0, 1.0], K, E), [32.0, 32.0])
    np.testing.assert_allclose(project_points([0.5, -0.25, 1.0], K, E), [48.0, 24.0])
    assert np.isnan(project_points([0.0, 0.0, -1.0], K, E)).all()  # behind the camera


def test_oracle_blob_sits_on_the_segmentation_centroid():
    seg = np.zeros((64, 64), np.int16)
    seg[10:14, 20:24] = 5  # cube: centroid at pixel coordinates (22, 12)
    oracle = OracleSaliency("PushCube-v1", NAMES, ["cube", "goal_region"], sigma=0.05)
    centres = oracle.resolver.centres(seg, {}, K, E)
    assert centres == [("cube", 22.0, 12.0, True)]  # goal_region neither visible nor recorded
    sal = oracle.frame(seg, {}, K, E)
    assert sal.max() == pytest.approx(1.0) and sal.min() == pytest.approx(0.0)
    row, col = np.unravel_index(np.argmax(sal), sal.shape)
    assert (row, col) in {(11, 21), (11, 22), (12, 21), (12, 22)}  # pixels next to (22, 12)


def test_oracle_projects_actors_the_camera_does_not_see():
    seg = np.zeros((64, 64), np.int16)
    oracle = OracleSaliency("PickCube-v1", NAMES, ["cube", "goal_site"], sigma=0.05)
    positions = {"goal_site": np.array([0.5, -0.25, 1.0]), "cube": np.array([0.0, 0.0, 1.0])}
    centres = {name: (x, y, visible) for name, x, y, visible in oracle.resolver.centres(seg, positions, K, E)}
    assert centres["goal_site"] == pytest.approx((48.0, 24.0, False))
    assert centres["cube"] == pytest.approx((32.0, 32.0, False))  # occluded: projected too
    mask = oracle.target_mask(seg, positions, K, E)
    assert mask[24, 48] and mask[32, 32] and not mask[0, 0]  # discs around the projections


def test_mask_shape_blurs_the_segmentation():
    seg = np.zeros((64, 64), np.int16)
    seg[30:34, 30:34] = 6
    sal = OracleSaliency("PushCube-v1", NAMES, ["cube", "goal_region"], shape="mask", sigma=0.03).frame(seg, {}, K, E)
    assert sal[31, 31] == pytest.approx(1.0, abs=0.05) and sal[0, 0] == 0.0


def test_task_targets_defaults_and_errors():
    assert task_targets("PushCube-v1") == ("cube", "goal_region")
    assert task_targets("PushT-v1") == ("Tee", "goal_Tee")
    assert task_targets("LiftPegUpright-v1", ["peg"]) == ("peg",)
    assert set(TASK_TARGETS) >= {"PushCube-v1", "PickCube-v1", "StackCube-v1", "PullCube-v1", "PushT-v1", "PokeCube-v1"}
    with pytest.raises(ValueError, match="--saliency.actors"):
        task_targets("LiftPegUpright-v1")
    with pytest.raises(ValueError, match="not in this task's scene.*cube"):
        OracleSaliency("PushCube-v1", NAMES, ["cube"], actors=["sphere"])


def test_gaussian_blobs_and_minmax():
    blob = gaussian_blobs([(10.0, 20.0)], 32, 32, sigma=2.0)
    assert blob[19, 9] == pytest.approx(np.exp(-0.5 / 8.0))  # pixel centre (9.5, 19.5): d^2 = 0.5
    np.testing.assert_allclose(minmax(np.full((2, 3, 3), 4.0)), 0.0)


def fake_demo_set(lengths=(3, 4), size=8):
    demos = [type("Demo", (), {"__len__": lambda self, n=n: n})() for n in lengths]
    return SimpleNamespace(image_size=size, demos=demos)


def test_heatmaps_from_npz_and_h5(tmp_path):
    demo_set = fake_demo_set()
    rng = np.random.default_rng(0)
    maps = {"traj_0": rng.random((4, 8, 8)) * 5, "traj_1": rng.random((4, 8, 8))}  # T+1 and T frames
    np.savez(tmp_path / "h.npz", **maps)
    source = HeatmapSaliency(tmp_path / "h.npz", demo_set)
    assert source.maps(0, demo_set.demos[0]).shape == (4, 8, 8)
    np.testing.assert_allclose(source.maps(0, None), minmax(maps["traj_0"]))
    padded = source.maps(1, None)
    assert padded.shape == (5, 8, 8) and np.array_equal(padded[-1], padded[-2])
    with h5py.File(tmp_path / "h.h5", "w") as f:
        f["traj_0/heatmap"] = maps["traj_0"]
        f["traj_1"] = maps["traj_1"]
    np.testing.assert_allclose(HeatmapSaliency(tmp_path / "h.h5", demo_set).maps(1, None), padded)


@pytest.mark.parametrize("arrays, message", [
    ({"traj_0": np.ones((4, 8, 8))}, "no heatmaps for demonstration 1"),
    ({"traj_0": np.ones((4, 8, 9)), "traj_1": np.ones((5, 8, 8))}, "resize heatmaps"),
    ({"traj_0": np.ones((7, 8, 8)), "traj_1": np.ones((5, 8, 8))}, "has 7 frames but demonstration 0 has 4"),
    ({"traj_0": -np.ones((4, 8, 8)), "traj_1": np.ones((5, 8, 8))}, "must be >= 0"),
])
def test_heatmap_errors_name_the_fix(tmp_path, arrays, message):
    np.savez(tmp_path / "h.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        HeatmapSaliency(tmp_path / "h.npz", fake_demo_set())


def test_heatmap_file_type_and_existence(tmp_path):
    with pytest.raises(FileNotFoundError):
        HeatmapSaliency(tmp_path / "none.npz", fake_demo_set())
    (tmp_path / "h.txt").write_text("x")
    with pytest.raises(ValueError, match=".npz or .h5"):
        HeatmapSaliency(tmp_path / "h.txt", fake_demo_set())
