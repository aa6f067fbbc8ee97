"""Tests for gaze_rl.envs: ManiSkill3 tasks from pixels as SB3 VecEnvs.

Every test that creates a ManiSkill env is marked slow (CPU rendering: ~8 s to create an env,
~20-35 steps/s). Envs are shared through module-scoped fixtures and each expensive rollout is
run once and inspected by several tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnvWrapper

from gaze_rl.envs import (
    OBS_MODES,
    SIM_BACKENDS,
    TESTED_ENV_IDS,
    EnvSpec,
    EpisodeOutcome,
    ManiSkillBatchedVecEnv,
    ScaleReward,
    check_env_id,
    make_vec_env,
    resolve_sim_backend,
)

SEED = 123
EPISODE_KEYS = ("episode", "success_once", "success_at_end", "is_success")


@dataclass
class Rollout:
    """Everything one fixed-seed, fixed-action run of a vec env produced."""

    first_obs: dict[str, np.ndarray]
    actions: np.ndarray  # (T, N, A)
    rewards: np.ndarray  # (T, N)
    dones: np.ndarray  # (T, N)
    infos: list[list[dict]]  # [T][N]
    obs: list[dict[str, np.ndarray]] = field(default_factory=list)  # obs returned by step t


def run(env, steps: int, seed: int = SEED, action_seed: int = 0) -> Rollout:
    env.seed(seed)
    first = env.reset()
    rng = np.random.default_rng(action_seed)
    shape = (steps, env.num_envs, *env.action_space.shape)
    actions = rng.uniform(env.action_space.low, env.action_space.high, size=shape).astype(np.float32)
    out = Rollout({k: v.copy() for k, v in first.items()}, actions, np.zeros(shape[:2], np.float32),
                  np.zeros(shape[:2], bool), [])
    for t in range(steps):
        obs, rewards, dones, infos = env.step(actions[t])
        out.rewards[t], out.dones[t] = rewards, dones
        out.infos.append(infos)
        out.obs.append({k: v.copy() for k, v in obs.items()})
    return out


def check_episode_contract(roll: Rollout, length: int, reward_scale: float = 1.0, state: bool = True) -> None:
    """Done exactly every `length` steps; the episode summary and terminal observation exactly at
    the done steps; `episode.r` = sum of the unscaled rewards; the obs after done is a reset one."""
    steps, n = roll.dones.shape
    ends = [t for t in range(steps) if (t + 1) % length == 0]
    for i in range(n):
        assert list(np.flatnonzero(roll.dones[:, i])) == ends, f"env {i}: dones at wrong steps"
        for t in range(steps):
            info = roll.infos[t][i]
            if t in ends:
                for key in EPISODE_KEYS + ("terminal_observation",):
                    assert key in info, f"env {i} step {t}: {key} missing at episode end"
                assert bool(info["TimeLimit.truncated"]), "the time limit is a truncation, not a termination"
                assert info["episode"]["l"] == length
                start = t + 1 - length
                learner_sum = float(roll.rewards[start:t + 1, i].astype(np.float64).sum())
                np.testing.assert_allclose(info["episode"]["r"], learner_sum / reward_scale, rtol=1e-4, atol=1e-4)
                assert isinstance(info["success_once"], (bool, np.bool_))
                assert isinstance(info["success_at_end"], (bool, np.bool_))
                assert info["is_success"] == info["success_once"]
                assert not (info["success_at_end"] and not info["success_once"])
                term = info["terminal_observation"]
                assert set(term) == ({"rgb", "state"} if state else {"rgb"})
                assert term["rgb"].shape == roll.first_obs["rgb"].shape[1:] and term["rgb"].dtype == np.uint8
                # the obs returned with done=True is the next episode's first one, not the terminal one
                assert not np.array_equal(term["rgb"], roll.obs[t]["rgb"][i])
            else:
                present = [key for key in EPISODE_KEYS + ("terminal_observation",) if key in info]
                assert not present, f"env {i} step {t}: {present} reported before the episode ended"
                assert not info.get("TimeLimit.truncated", False)


def check_spaces(env, image_size: int, action_dim: int, state: bool = True) -> None:
    space = env.observation_space
    assert isinstance(space, spaces.Dict)
    assert set(space.spaces) == ({"rgb", "state"} if state else {"rgb"})
    assert space["rgb"].shape == (image_size, image_size, 3) and space["rgb"].dtype == np.uint8
    if state:
        assert len(space["state"].shape) == 1 and space["state"].dtype == np.float32
    assert isinstance(env.action_space, spaces.Box) and env.action_space.shape == (action_dim,)
    assert env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)


def check_obs(obs, env, n: int) -> None:
    assert set(obs) == set(env.observation_space.spaces)
    for key, sub in env.observation_space.spaces.items():
        assert obs[key].shape == (n, *sub.shape), key
        assert obs[key].dtype == sub.dtype, key
        assert np.isfinite(obs[key]).all()
    assert obs["rgb"].std() > 0  # a rendered image, not a blank frame


# --------------------------------------------------------------------------------------------
# The wrappers on their own (fast): a scripted env with ManiSkill's per-step info["success"]
# --------------------------------------------------------------------------------------------


class ScriptedSuccess(gym.Env):
    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, success: list[bool], reward: float = 2.0):
        self.success, self.reward = success, reward

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        success = self.success[self.t]
        self.t += 1
        truncated = self.t == len(self.success)
        return np.zeros(1, np.float32), self.reward, False, truncated, {"success": success}


@pytest.mark.parametrize(
    "success, once, at_end",
    [
        ([False, True, False, False], True, False),
        ([False, False, False, True], True, True),
        ([False, False, False, False], False, False),
        ([True, True, True, True], True, True),
    ],
)
def test_episode_outcome_reported_once(success, once, at_end):
    env = EpisodeOutcome(ScriptedSuccess(success))
    for _ in range(2):  # the same outcome again after reset()
        env.reset()
        for t in range(len(success)):
            _, _, _, truncated, info = env.step(np.zeros(1, np.float32))
            keys = {"success_once", "success_at_end", "is_success"} & set(info)
            if t < len(success) - 1:
                assert not keys and not truncated
            else:
                assert truncated
                assert (info["success_once"], info["success_at_end"], info["is_success"]) == (once, at_end, once)
    # a successful episode followed by a failed one: success_once is reset by reset()
    env = EpisodeOutcome(ScriptedSuccess([True, False]))
    env.reset()
    env.step(np.zeros(1, np.float32))
    env.step(np.zeros(1, np.float32))
    env.unwrapped.success = [False, False]
    env.reset()
    env.step(np.zeros(1, np.float32))
    info = env.step(np.zeros(1, np.float32))[-1]
    assert info["success_once"] is False and info["is_success"] is False


def test_scale_reward():
    env = ScaleReward(ScriptedSuccess([False, False], reward=2.0), 0.1)
    env.reset()
    _, reward, *_ = env.step(np.zeros(1, np.float32))
    assert reward == pytest.approx(0.2)


# --------------------------------------------------------------------------------------------
# Bad inputs: rejected before any env (or process) is created
# --------------------------------------------------------------------------------------------


def test_unknown_env_id_suggests_close_match():
    with pytest.raises(ValueError, match=r"unknown env id 'PushT-v9'.*Did you mean PushT-v1") as err:
        make_vec_env(env_id="PushT-v9", num_envs=1)
    assert "PokeCube-v1" in str(err.value)  # the tested ids are listed


def test_unknown_env_id_lists_choices():
    with pytest.raises(ValueError, match="unknown env id 'NoSuchTask'") as err:
        check_env_id("NoSuchTask")
    message = str(err.value)
    assert "Did you mean" not in message
    for env_id in TESTED_ENV_IDS:
        assert env_id in message
    assert "registered ManiSkill3 ids are listed by" in message and len(message) < 400


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(sim_backend="gpu"), r"unknown sim_backend 'gpu'; valid choices: auto, physx_cpu, physx_cuda"),
        (dict(obs_mode="depth"), r"unknown obs_mode 'depth'; valid choices: rgb, rgb\+state"),
        (dict(num_envs=0), r"num_envs must be >= 1 \(got 0\)"),
        (dict(num_envs=-2), r"num_envs must be >= 1 \(got -2\)"),
        (dict(image_size=8), r"image_size must be >= 16"),
    ],
)
def test_bad_spec_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_vec_env(**{"env_id": "PushT-v1", **overrides})


def test_resolve_sim_backend():
    assert set(SIM_BACKENDS) == {"auto", "physx_cpu", "physx_cuda"} and set(OBS_MODES) == {"rgb", "rgb+state"}
    assert resolve_sim_backend("physx_cpu") == "physx_cpu"
    assert resolve_sim_backend("physx_cuda") == "physx_cuda"
    assert resolve_sim_backend("auto") == ("physx_cuda" if torch.cuda.is_available() else "physx_cpu")
    with pytest.raises(ValueError, match="unknown sim_backend 'cpu'"):
        resolve_sim_backend("cpu")


def test_spec_overrides():
    # overrides replace spec fields; an unknown field is a TypeError, not silently ignored
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env(EnvSpec(env_id="PushT-v1", num_envs=2), num_envs=0)
    with pytest.raises(TypeError):
        make_vec_env(EnvSpec(), num_env=1)


# --------------------------------------------------------------------------------------------
# PushT-v1: in-process (DummyVecEnv), reward_scale 0.1
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pusht():
    env = make_vec_env(env_id="PushT-v1", num_envs=1, image_size=64, reward_scale=0.1)
    yield env
    env.close()


@pytest.fixture(scope="module")
def pusht_rollout(pusht):
    return run(pusht, 200)  # two episodes


@pytest.mark.slow
def test_pusht_spaces(pusht):
    assert isinstance(pusht, DummyVecEnv) and pusht.num_envs == 1
    check_spaces(pusht, 64, 7)
    check_obs(pusht.reset(), pusht, 1)


@pytest.mark.slow
def test_pusht_episode_contract(pusht, pusht_rollout):
    check_obs(pusht_rollout.first_obs, pusht, 1)
    check_episode_contract(pusht_rollout, length=100, reward_scale=0.1)
    # the learner sees scaled rewards (float32) and the task's dense reward is not constant
    assert pusht_rollout.rewards.dtype == np.float32
    assert np.ptp(pusht_rollout.rewards) > 0


@pytest.mark.slow
def test_pusht_seeding(pusht, pusht_rollout):
    pusht.seed(SEED)
    again = pusht.reset()
    np.testing.assert_array_equal(again["rgb"], pusht_rollout.first_obs["rgb"])
    np.testing.assert_array_equal(again["state"], pusht_rollout.first_obs["state"])
    pusht.seed(SEED + 1)
    other = pusht.reset()
    assert not np.array_equal(other["rgb"], pusht_rollout.first_obs["rgb"])
    assert not np.array_equal(other["state"], pusht_rollout.first_obs["state"])


@pytest.mark.slow
def test_pusht_rgb_only_unscaled_replay(pusht_rollout):
    """A second env (obs_mode rgb, reward_scale 1) replaying the same seed and actions: same frames,
    no state key, and rewards exactly 10x the scaled ones the learner saw."""
    env = make_vec_env(env_id="PushT-v1", num_envs=1, image_size=64, obs_mode="rgb")
    try:
        check_spaces(env, 64, 7, state=False)
        roll = run(env, 100)
    finally:
        env.close()
    assert set(roll.first_obs) == {"rgb"}
    np.testing.assert_array_equal(roll.first_obs["rgb"], pusht_rollout.first_obs["rgb"])
    np.testing.assert_allclose(pusht_rollout.rewards[:100], 0.1 * roll.rewards, rtol=1e-5, atol=1e-7)
    check_episode_contract(roll, length=100, state=False)
    unscaled_sum = float(roll.rewards[:, 0].astype(np.float64).sum())
    assert pusht_rollout.infos[99][0]["episode"]["r"] == pytest.approx(unscaled_sum, abs=1e-4)
    assert roll.infos[99][0]["episode"]["r"] == pytest.approx(unscaled_sum, abs=1e-4)


# --------------------------------------------------------------------------------------------
# PokeCube-v1: 50 steps with ignore_terminations
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pokecube_contract():
    env = make_vec_env(env_id="PokeCube-v1", num_envs=1, image_size=64, ignore_terminations=True)
    try:
        check_spaces(env, 64, 8)
        roll = run(env, 100)  # two episodes
        check_obs(roll.first_obs, env, 1)
        check_episode_contract(roll, length=50)
        env.seed(SEED)
        np.testing.assert_array_equal(env.reset()["rgb"], roll.first_obs["rgb"])
        env.seed(SEED + 7)
        assert not np.array_equal(env.reset()["rgb"], roll.first_obs["rgb"])
    finally:
        env.close()


# --------------------------------------------------------------------------------------------
# Two worker processes (SubprocVecEnv, forkserver)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pusht_two_processes(pusht_rollout):
    env = make_vec_env(env_id="PushT-v1", num_envs=2, image_size=64, reward_scale=0.1, seed=SEED)
    try:
        base = env
        while isinstance(base, VecEnvWrapper):  # make_vec_env may wrap the workers (e.g. WorkerGuard)
            base = base.venv
        assert isinstance(base, SubprocVecEnv) and env.num_envs == 2
        check_spaces(env, 64, 7)
        roll = run(env, 100)
    finally:
        env.close()
    check_obs(roll.first_obs, env, 2)
    # worker 0 is seeded with SEED (same first frame as the in-process env), worker 1 with SEED + 1
    np.testing.assert_array_equal(roll.first_obs["rgb"][0], pusht_rollout.first_obs["rgb"][0])
    assert not np.array_equal(roll.first_obs["rgb"][1], roll.first_obs["rgb"][0])
    check_episode_contract(roll, length=100, reward_scale=0.1)


# --------------------------------------------------------------------------------------------
# ManiSkillBatchedVecEnv (the physx_cuda adapter) on physx_cpu with one env
# --------------------------------------------------------------------------------------------


def make_batched(env_id: str = "PushT-v1", reward_scale: float = 0.1) -> ManiSkillBatchedVecEnv:
    from mani_skill.utils.wrappers.flatten import FlattenRGBDObservationWrapper

    from gaze_rl.envs.single import make_maniskill_env

    # Built and rendered as the CPU route builds it (fast rendering here), so that frames compare.
    env = make_maniskill_env(env_id, obs_mode="rgb", image_size=64, control_mode="pd_joint_delta_pos",
                             render_quality="fast", render_backend="cpu")
    env = FlattenRGBDObservationWrapper(env, rgb=True, depth=False, state=True)
    return ManiSkillBatchedVecEnv(env, ignore_terminations=True, reward_scale=reward_scale)


@pytest.mark.slow
def test_batched_vec_env_contract(pusht_rollout):
    env = make_batched()
    try:
        assert env.num_envs == 1
        check_spaces(env, 64, 7)
        roll = run(env, 200)
        check_obs(roll.first_obs, env, 1)
        for t in range(200):
            check_obs(roll.obs[t], env, 1)
        assert roll.rewards.dtype == np.float32 and np.ptp(roll.rewards) > 0
        check_episode_contract(roll, length=100, reward_scale=0.1)
        env.seed(SEED)
        np.testing.assert_array_equal(env.reset()["rgb"], roll.first_obs["rgb"])
        # same seed and actions as the CPU route (CPUGymWrapper in a DummyVecEnv): same first episode
        # (the auto-reset episodes after it start from differently advanced RNGs)
        np.testing.assert_array_equal(roll.first_obs["rgb"], pusht_rollout.first_obs["rgb"])
        np.testing.assert_allclose(roll.rewards[:100], pusht_rollout.rewards[:100], rtol=1e-5, atol=1e-7)
    finally:
        env.close()


# --------------------------------------------------------------------------------------------
# Smoke tests of the other tested tasks
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["PushCube-v1", "PickCube-v1"])
def test_smoke(env_id):
    env = make_vec_env(env_id=env_id, num_envs=1, image_size=64, seed=0)
    try:
        check_spaces(env, 64, env.action_space.shape[0])
        assert env.action_space.shape == (8,)  # panda, pd_joint_delta_pos: 7 joints + gripper
        check_obs(env.reset(), env, 1)
        obs, rewards, dones, infos = env.step(np.zeros((1, 8), np.float32))
        check_obs(obs, env, 1)
        assert rewards.shape == (1,) and np.isfinite(rewards).all()
        assert dones.shape == (1,) and not dones[0]
        assert not any(key in infos[0] for key in EPISODE_KEYS)
    finally:
        env.close()
