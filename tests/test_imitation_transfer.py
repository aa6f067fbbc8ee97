"""Pretrained policy -> `gaze-rl train --init-from` (weights transfer exactly), and bad input of
`gaze-rl demos` / `gaze-rl pretrain` / `--init-from`, on synthetic demonstrations (no ManiSkill env)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from gaze_rl.build import build_model, check_init_from, train_architecture
from gaze_rl.configuration.commands import PretrainConfig, TrainConfig
from gaze_rl.configuration.presets import load_preset
from gaze_rl.imitation import bc
from gaze_rl.imitation.checkpoint import read_pretrained, save_pretrained
from gaze_rl.imitation.demos import Demo, DemoSet, load_demos, read_maniskill_trajectories, write_demos

from conftest import error_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

STATE_DIM, ACTION_DIM, SIZE = 25, 8, 64


def synthetic_demo_set(env_id: str = "PushCube-v1", steps: tuple[int, ...] = (5, 6), seed: int = 0) -> DemoSet:
    """Demonstrations with the shapes of PushCube-v1 at 64 px (random pixels, a cube in the segmentation)."""
    rng = np.random.default_rng(seed)
    demos = []
    for i, t in enumerate(steps):
        seg = np.zeros((t + 1, SIZE, SIZE), np.int16)
        seg[:, 20:24, 20:24] = 18  # the cube, in feature-grid cell (1, 1); the goal is hidden
        demos.append(Demo(
            rgb=rng.integers(0, 256, (t + 1, SIZE, SIZE, 3), dtype=np.uint8),
            state=rng.standard_normal((t + 1, STATE_DIM)).astype(np.float32),
            actions=rng.uniform(-1, 1, (t, ACTION_DIM)).astype(np.float32),
            rewards=np.zeros(t, np.float32), success=np.ones(t, bool),
            segmentation={"base_camera": seg},
            intrinsic={"base_camera": np.tile(np.array([[32, 0, 32], [0, 32, 32], [0, 0, 1]], np.float32), (t + 1, 1, 1))},
            extrinsic={"base_camera": np.tile(np.hstack([np.eye(3), np.zeros((3, 1))]).astype(np.float32), (t + 1, 1, 1))},
            actor_positions={"cube": np.tile([0.0, 0.0, 1.0], (t + 1, 1)).astype(np.float32),
                             "goal_region": np.tile([-0.75, -0.75, 1.0], (t + 1, 1)).astype(np.float32)},
            seed=i,
        ))
    return DemoSet(demos, env_id, "pd_joint_delta_pos", SIZE, True, ["base_camera"],
                   {18: "cube", 19: "goal_region", 16: "table-workspace"},
                   -np.ones(ACTION_DIM, np.float32), np.ones(ACTION_DIM, np.float32))


def rl_model(cfg: TrainConfig, demo_set: DemoSet):
    """What `gaze-rl train` builds, on an env with the task's spaces."""
    observation_space, action_space = bc.demo_spaces(demo_set)
    env = DummyVecEnv([lambda: bc.SpacesEnv(observation_space, action_space)])
    return build_model(cfg, env, load_preset(cfg.algo, cfg.env_id), "cpu")


def observations(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"rgb": rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
            "state": rng.standard_normal((n, STATE_DIM)).astype(np.float32)}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_pretrained_weights_give_identical_actions_after_init_from(tmp_path, algo):
    demo_set = synthetic_demo_set()
    pretrain_cfg = bc.internal_train_config(PretrainConfig(demos=tmp_path, algo=algo, method="gaze", device="cpu"),
                                            demo_set)
    pretrained = bc.build_policy_model(pretrain_cfg, demo_set, "cpu")
    with torch.no_grad():  # move away from any initialisation
        for p in pretrained.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "checkpoints" / "final.pt"
    save_pretrained(pretrained.policy, train_architecture(pretrain_cfg), path)
    assert read_pretrained(path)["architecture"]["attention"] == "gaussian"  # loads with weights_only=True

    cfg = dict(env_id="PushCube-v1", algo=algo, method="gaze", seed=1, device="cpu", replay_buffer_size=64)
    fresh = rl_model(TrainConfig(**cfg), demo_set)
    loaded = rl_model(TrainConfig(**cfg, init_from=path), demo_set)
    obs = observations()
    want, _ = pretrained.predict(obs, deterministic=True)
    got, _ = loaded.predict(obs, deterministic=True)
    other, _ = fresh.predict(obs, deterministic=True)
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(other, want)
    if algo == "sac":  # target critics start equal to the loaded critics
        for a, b in zip(loaded.critic.parameters(), loaded.critic_target.parameters()):
            torch.testing.assert_close(a, b)


def test_init_from_names_every_architecture_difference(tmp_path):
    demo_set = synthetic_demo_set()
    pretrain_cfg = bc.internal_train_config(PretrainConfig(demos=tmp_path, method="gaze", device="cpu"), demo_set)
    path = tmp_path / "final.pt"
    save_pretrained(bc.build_policy_model(pretrain_cfg, demo_set, "cpu").policy, train_architecture(pretrain_cfg), path)
    check_init_from(path, TrainConfig(env_id="PushCube-v1", method="foveal"))  # same network as gaze: fine
    with pytest.raises(ValueError) as err:
        check_init_from(path, TrainConfig(env_id="PushCube-v1", method="baseline", image_size=128,
                                          control_mode="pd_ee_delta_pose"))
    for word in ("attention: pretrained 'gaussian', this run 'none'", "image_size", "control_mode"):
        assert word in str(err.value)
    with pytest.raises(ValueError, match="algo"):
        check_init_from(path, TrainConfig(env_id="PushCube-v1", algo="sac", method="gaze"))
    # extractor options change the layers: each one, alone, is a named mismatch
    for option, value in (("multi_level", True), ("prune_top_k", 4)):
        with pytest.raises(ValueError, match="extractor_options: pretrained ") as err:
            check_init_from(path, TrainConfig(env_id="PushCube-v1", method="gaze", **{option: value}))
        pretrained, this_run = str(err.value).split("extractor_options: pretrained ")[1].split(", this run ")[:2]
        assert f"'{option}': {value!r}" in this_run and f"'{option}': {value!r}" not in pretrained, err.value


def test_state_dict_mismatch_is_reported_by_key(tmp_path):
    from gaze_rl.imitation.checkpoint import load_state_into

    model = rl_model(TrainConfig(env_id="PushCube-v1", method="gaze", device="cpu"), synthetic_demo_set())
    state = model.policy.state_dict()
    state.pop("log_std")
    state["extra.weight"] = torch.zeros(1)
    state["action_net.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="missing: log_std; unexpected: extra.weight; shape mismatch: action_net.weight"):
        load_state_into(model.policy, state)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_pretrained(tmp_path / "nope.pt")
    (tmp_path / "model.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="final.pt"):
        read_pretrained(tmp_path / "model.zip")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gaze_rl pretrained policy"):
        read_pretrained(tmp_path / "other.pt")


def test_demos_file_round_trip_and_tensors(tmp_path):
    demo_set = synthetic_demo_set()
    write_demos(demo_set, tmp_path / "demos.h5")
    loaded = load_demos(tmp_path)
    assert len(loaded) == 2 and loaded.num_steps == 11 and loaded.segmentation_names[18] == "cube"
    np.testing.assert_array_equal(loaded.demos[1].rgb, demo_set.demos[1].rgb)
    np.testing.assert_array_equal(loaded.action_low, demo_set.action_low)
    cfg = PretrainConfig(demos=tmp_path, device="cpu")
    model = bc.build_policy_model(bc.internal_train_config(cfg, loaded), loaded, "cpu")
    oracle = bc.oracle_for(cfg, loaded)
    data = bc.demo_tensors(cfg, loaded, (4, 4), model, oracle, oracle, "cpu")
    assert data.rgb.shape == (11, 3, 64, 64) and data.actions.shape == (11, 8) and data.grid.shape == (11, 4, 4)
    torch.testing.assert_close(data.grid.sum(dim=(1, 2)), torch.ones(11))
    # saliency and coverage sit on the cube's cell (1, 1) and the hidden goal's projection, pixel (8, 8): cell (0, 0)
    assert set(data.grid[0].flatten().topk(2).indices.tolist()) == {0, 5}
    assert float(data.coverage[0, 1, 1]) == pytest.approx(16 / 256) and float(data.coverage[0, 0, 0]) > 0.1
    assert float(data.coverage[0].sum()) < 0.5
    loss, mse = bc.bc_loss(model, data.observations(torch.arange(4)), data.actions[:4], "nll")
    assert torch.isfinite(loss.detach()) and float(mse.detach()) > 0


@pytest.fixture
def demos_dir(tmp_path) -> Path:
    write_demos(synthetic_demo_set(), tmp_path / "demos.h5")
    (tmp_path / "lift").mkdir()
    write_demos(synthetic_demo_set("LiftPegUpright-v1"), tmp_path / "lift" / "demos.h5")
    np.savez(tmp_path / "short.npz", traj_0=np.ones((6, 64, 64)), traj_1=np.ones((3, 64, 64)))
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--env-id", "PickCube-v1"], "does not match the demonstrations' task PushCube-v1"),
    (["--method", "baseline", "--attention", "map"], "--method baseline has none"),
    (["--saliency.actors", "sphere"], "not in this task's scene"),
    (["--saliency.source", "heatmaps"], "needs --saliency.heatmaps"),
    (["--saliency.source", "heatmaps", "--saliency.heatmaps", "{root}/short.npz"], "has 3 frames"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--demos", "{root}/lift"], "no default task-relevant actors for LiftPegUpright-v1"),
    (["--demos", "{root}/nowhere"], "no demonstrations at"),
])
def test_pretrain_bad_input_fails_before_building(capsys, demos_dir, args, message):
    argv = ["pretrain", "--demos", str(demos_dir), "--run-dir", str(demos_dir / "run"),
            *[a.format(root=demos_dir) for a in args]]
    assert message in error_of(capsys, argv)
    assert not (demos_dir / "run").exists()


def write_maniskill_file(path: Path, with_json: bool = True, env_info: bool = True, actions: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        group = f.create_group("traj_0")
        if actions:
            group["actions"] = np.zeros((3, 8), np.float32)
    if with_json:
        meta = {"env_info": {"env_id": "PushCube-v1", "env_kwargs": {"control_mode": "pd_joint_pos"}} if env_info else {},
                "episodes": [{"episode_id": 0, "episode_seed": 3, "control_mode": "pd_joint_pos", "reset_kwargs": {}}]}
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_maniskill_trajectory_files(tmp_path):
    env_info, episodes = read_maniskill_trajectories(write_maniskill_file(tmp_path / "ok.h5"))
    assert env_info["env_id"] == "PushCube-v1" and episodes[0]["seed"] == 3 and episodes[0]["actions"].shape == (3, 8)
    with pytest.raises(ValueError, match="no missing.json beside it"):
        read_maniskill_trajectories(write_maniskill_file(tmp_path / "missing.h5", with_json=False))
    with pytest.raises(ValueError, match="env_info.env_id"):
        read_maniskill_trajectories(write_maniskill_file(tmp_path / "noinfo.h5", env_info=False))
    with pytest.raises(ValueError, match="traj_0/actions"):
        read_maniskill_trajectories(write_maniskill_file(tmp_path / "noactions.h5", actions=False))
    with pytest.raises(ValueError, match="gaze-rl demos --from-h5"):  # raw trajectories given to pretrain
        load_demos(tmp_path / "ok.h5")


@pytest.mark.parametrize("argv, message", [
    (["demos"], "pass --env-id"),
    (["demos", "--env-id", "PushT-v1"], "no motion-planning solution for PushT-v1"),
    (["demos", "--env-id", "PushCube-v1", "--num", "0"], "num must be >= 1"),
    (["demos", "--from-h5", "nope.h5"], "does not exist"),
    (["train", "--env-id", "PushCube-v1", "--init-from", "nope.pt"], "does not exist"),
])
def test_cli_bad_input(capsys, tmp_path, argv, message):
    assert message in error_of(capsys, argv)
