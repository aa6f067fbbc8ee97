"""The perception upper bounds and the fovea with room (issue 22): `privileged`, `gaze-oracle`,
the DrQ-v2 backbone, the residual map and the grid-scaled sigma floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from gaze_rl.build import env_spec_for
from gaze_rl.configuration.commands import GazeOptions, TrainConfig
from gaze_rl.configuration.presets import load_preset
from gaze_rl.envs.task_objects import GAZE_TARGET_KEY
from gaze_rl.nets.attention import GaussianGaze, OracleGaze, reweight
from gaze_rl.nets.encoders import feature_map_shape, make_backbone, min_image_size
from gaze_rl.nets.extractor import GazeExtractor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dict_space(size: int = 64, state: int = 25, targets: int | None = None) -> spaces.Dict:
    parts = {"rgb": spaces.Box(0, 255, (3, size, size), np.uint8), "state": spaces.Box(-1, 1, (state,), np.float32)}
    if targets:
        parts[GAZE_TARGET_KEY] = spaces.Box(-np.inf, np.inf, (targets, 4), np.float32)
    return spaces.Dict(parts)


@pytest.mark.parametrize(("size", "side"), [(64, 25), (84, 35), (128, 57)])
def test_drq_backbone_map_shapes(size: int, side: int) -> None:
    # 3x3 stride 2 then three 3x3 stride 1, 32 channels: (size - 3) // 2 + 1 - 6 cells a side
    assert feature_map_shape(make_backbone("drq", 3, size), 3, size, size) == (32, side, side)
    assert min_image_size("drq", 3, min_side=2) == 17


def test_drq_extractor_has_dr_qv2_trunk() -> None:
    extractor = GazeExtractor(dict_space(), backbone="drq", attention="gaussian")
    assert extractor.map_shape == (32, 25, 25)
    kinds = [type(m).__name__ for m in extractor.image_fc]
    assert kinds == ["Flatten", "Linear", "LayerNorm", "Tanh"]
    out = extractor({"rgb": torch.rand(2, 3, 64, 64), "state": torch.rand(2, 25)})
    assert out.shape == (2, extractor.features_dim)


def test_residual_form_equals_the_plain_features_when_the_map_is_zero() -> None:
    fmap = torch.randn(3, 8, 5, 5)
    assert torch.equal(reweight(fmap, torch.zeros(3, 5, 5), residual=True), fmap)
    weights = torch.rand(3, 5, 5)
    assert torch.allclose(reweight(fmap, weights, residual=True), fmap + fmap * weights[:, None])
    assert torch.allclose(reweight(fmap, weights, residual=False), fmap * weights[:, None])


def test_residual_gaze_adds_emphasis_and_deletes_nothing() -> None:
    torch.manual_seed(0)
    plain, residual = GaussianGaze(8, 6, 6), GaussianGaze(8, 6, 6, residual=True)
    residual.load_state_dict(plain.state_dict())
    fmap = torch.rand(2, 8, 6, 6) + 0.1
    a, b = plain(fmap), residual(fmap)
    assert torch.equal(a.weights, b.weights)
    assert torch.allclose(b.features, fmap + a.features)
    assert (b.features >= fmap).all()  # the periphery keeps at least its own features


def test_oracle_gaze_peaks_on_its_targets_with_the_floor() -> None:
    oracle = OracleGaze(4, 8, 8)
    assert oracle.sigma_floor == pytest.approx(1 / 8)  # half a cell of an 8x8 grid (cells are 2/8 wide)
    # two targets: the cells at (row 1, col 6) and (row 5, col 2): centres x = -1 + (2j + 1) / 8
    centre = lambda i: -1 + (2 * i + 1) / 8  # noqa: E731
    targets = torch.tensor([[[centre(6), centre(1), 0.01, 0.01], [centre(2), centre(5), 0.01, 0.01]]])
    out = oracle(torch.ones(1, 4, 8, 8), targets)
    top = torch.topk(out.weights.flatten(), 2).indices.sort().values
    assert top.tolist() == [1 * 8 + 6, 5 * 8 + 2]
    assert torch.allclose(out.params.sigma, torch.full((1, 2, 2), 1 / 8))
    assert out.weights.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="gaze_targets=True"):
        oracle(torch.ones(1, 4, 8, 8), torch.zeros(1, 4))


def test_oracle_extractor_needs_the_targets_and_hides_them_from_the_state_mlp() -> None:
    with pytest.raises(ValueError, match="gaze_targets=True"):
        GazeExtractor(dict_space(), attention="oracle")
    extractor = GazeExtractor(dict_space(targets=2), attention="oracle")
    assert extractor.vector_keys == ["state"]
    assert extractor.state_fc[0].in_features == 25
    # the same for any method: the targets are privileged and reach the policy only through a map
    assert GazeExtractor(dict_space(targets=2), attention="none").vector_keys == ["state"]
    obs = {"rgb": torch.rand(2, 3, 64, 64), "state": torch.rand(2, 25),
           GAZE_TARGET_KEY: torch.tensor([[[0.5, -0.5, 0.1, 0.1], [0.0, 0.0, 0.2, 0.2]]] * 2)}
    out = extractor.attend(obs)
    assert torch.allclose(out.params.mu[0], torch.tensor([[0.5, -0.5], [0.0, 0.0]]))


def test_methods_switch_on_their_env_observations() -> None:
    preset = load_preset("ppo", "PushCube-v1")
    def spec(method: str):  # noqa: E306
        return env_spec_for(TrainConfig(env_id="PushCube-v1", method=method), preset)
    assert (spec("privileged").privileged_state, spec("privileged").gaze_targets) == (True, False)
    assert (spec("gaze-oracle").privileged_state, spec("gaze-oracle").gaze_targets) == (False, True)
    assert (spec("baseline").privileged_state, spec("baseline").gaze_targets) == (False, False)


def test_sigma_floor_in_cells_scales_with_the_grid() -> None:
    options = GazeOptions(sigma_floor_cells=0.5)
    assert options.floor_on(4) == pytest.approx(0.25)
    assert options.floor_on(25) == pytest.approx(0.04)
    assert options.attention_kwargs("gaussian", 25)["sigma_floor"] == pytest.approx(0.04)
    assert GazeOptions().attention_kwargs("gaussian", 25)["sigma_floor"] == 0.15  # default unchanged
    assert GazeOptions(residual=True).attention_kwargs("oracle", 4) == {"sigma_floor": None, "normalize": "peak",
                                                                         "residual": True}


# --- real ManiSkill envs ---------------------------------------------------------------------

ENV_KW = dict(image_size=64, include_state=True, control_mode="pd_ee_delta_pos", reward_scale=1.0,
              ignore_terminations=False)


@pytest.mark.slow
def test_privileged_adds_exactly_the_task_objects_pose_keys() -> None:
    from gaze_rl.envs.single import make_single_env

    plain, privileged = make_single_env("PushCube-v1", **ENV_KW), make_single_env("PushCube-v1", privileged_state=True, **ENV_KW)
    try:
        rng = np.random.default_rng(0)
        a, _ = plain.reset(seed=7)
        b, _ = privileged.reset(seed=7)
        for _ in range(3):
            n = a["state"].shape[0]
            np.testing.assert_array_equal(b["state"][:n], a["state"])
            np.testing.assert_array_equal(b["rgb"], a["rgb"])
            base = privileged.unwrapped
            # ManiSkill's PushCube _get_obs_extra with state: goal_pos (3) then obj_pose (7), after tcp_pose
            expected = np.concatenate([base.goal_region.pose.p[0].numpy(), base.obj.pose.raw_pose[0].numpy()])
            np.testing.assert_allclose(b["state"][n:], expected, rtol=0, atol=1e-6)
            action = rng.uniform(-1, 1, plain.action_space.shape).astype(np.float32)
            a, *_ = plain.step(action)
            b, *_ = privileged.step(action)
    finally:
        plain.close()
        privileged.close()


@pytest.mark.slow
def test_oracle_mean_lands_on_each_objects_segmentation_centroid() -> None:
    from gaze_rl.segmentation.envs import make_segmented_env, segmentation_names

    env = make_segmented_env("PushCube-v1", image_size=64, control_mode="pd_ee_delta_pos", gaze_targets=True)
    try:
        names = segmentation_names(env)
        rng = np.random.default_rng(1)
        obs, _ = env.reset(seed=3)
        checked = 0
        for _ in range(12):
            seg = env.get_wrapper_attr("frame").segmentation["base_camera"]
            for k, target in enumerate(env.get_wrapper_attr("targets")):
                rows, cols = np.nonzero(np.isin(seg, [i for i, n in names.items() if n == target]))
                if len(rows) < 3:  # hidden behind the arm
                    continue
                centroid = np.array([2 * (cols.mean() + 0.5) / 64 - 1, 2 * (rows.mean() + 0.5) / 64 - 1])
                # within a cell of the paper's 12x12 map (a cell spans 2/12 of the grid)
                assert np.abs(obs[GAZE_TARGET_KEY][k, :2] - centroid).max() < 2 / 12, (target, centroid)
                checked += 1
            obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        assert checked >= 20
    finally:
        env.close()
