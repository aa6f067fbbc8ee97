"""Visual robustness variants: same task, different pixels."""

from __future__ import annotations

import numpy as np
import pytest

from gaze_rl.envs import make_vec_env
from gaze_rl.envs.variants import task_env_id


def first_steps(variant: str, steps: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    env = make_vec_env(env_id="PushT-v1", num_envs=1, seed=5, variant=variant)
    try:
        obs = env.reset()
        rewards = []
        for _ in range(steps):
            obs, reward, _, _ = env.step(np.full((1, *env.action_space.shape), 0.3, dtype=np.float32))
            rewards.append(reward[0])
        return obs["rgb"][0], obs["state"][0], np.array(rewards)
    finally:
        env.close()


@pytest.mark.slow
def test_variants_change_pixels_not_the_task():
    rgb, state, rewards = first_steps("none")
    for variant in ("clutter", "lighting"):
        v_rgb, v_state, v_rewards = first_steps(variant)
        np.testing.assert_array_equal(v_state, state)  # same initial state, same physics
        np.testing.assert_array_equal(v_rewards, rewards)
        changed = np.abs(v_rgb.astype(int) - rgb.astype(int)).max(axis=-1) > 10
        assert changed.mean() > 0.002, f"{variant} changed only {changed.mean():.4f} of the pixels"


def test_variant_ids_and_errors():
    assert task_env_id("PushT-v1", "none") == "PushT-v1"
    assert task_env_id("PushT-v1", "clutter") == "PushT-v1-clutter"
    assert task_env_id("PushT-v1", "clutter") == "PushT-v1-clutter"  # registering twice is fine
    with pytest.raises(ValueError, match="valid choices: none, clutter, lighting"):
        task_env_id("PushT-v1", "fog")
