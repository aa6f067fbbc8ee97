"""Per-task presets from experiments/*.toml and their translation into SB3 arguments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaze_rl.configuration.presets import MIN_MINIBATCH, load_preset, sb3_algo_kwargs


def test_pusht_ppo_preset_is_maniskills():
    preset = load_preset("ppo", "PushT-v1")
    assert preset.algo["gamma"] == 0.99 and preset.algo["n_steps"] == 100 and preset.algo["n_epochs"] == 8
    assert preset.env == {"control_mode": "pd_joint_delta_pos", "reward_scale": 0.1, "ignore_terminations": True}
    # ManiSkill's scale: 256 envs x 100 steps / 8 minibatches.
    assert sb3_algo_kwargs("ppo", preset.algo, 256)["batch_size"] == 3200


def test_default_ppo_preset_for_other_tasks():
    preset = load_preset("ppo", "PickCube-v1")
    assert preset.algo["gamma"] == 0.8 and preset.algo["gae_lambda"] == 0.9 and preset.algo["target_kl"] == 0.2
    assert preset.env["ignore_terminations"] is False


@given(n_steps=st.integers(1, 200), num_envs=st.integers(1, 64), minibatches=st.integers(1, 64))
def test_ppo_minibatch_divides_the_rollout_and_is_not_tiny(n_steps, num_envs, minibatches):
    rollout = n_steps * num_envs
    batch = sb3_algo_kwargs("ppo", {"n_steps": n_steps, "num_minibatches": minibatches}, num_envs)["batch_size"]
    assert rollout % batch == 0
    assert batch >= min(MIN_MINIBATCH, rollout) and batch >= rollout // minibatches


def test_sac_training_frequency_follows_maniskill():
    kwargs = sb3_algo_kwargs("sac", load_preset("sac", "PushT-v1").algo, 16)
    # every 64 env steps in total (4 vec steps of 16 envs), utd 0.25 -> 16 gradient steps
    assert kwargs["train_freq"] == 4 and kwargs["gradient_steps"] == 16
    assert "utd" not in kwargs and "training_freq" not in kwargs


def test_unknown_algo():
    with pytest.raises(ValueError, match="valid choices: ppo, sac"):
        load_preset("dqn", "PushT-v1")
