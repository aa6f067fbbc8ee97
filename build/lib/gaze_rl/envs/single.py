"""One ManiSkill3 task in one process, as a plain gymnasium env for SB3's vec envs.

This is the CPU route (`physx_cpu` simulates one env per process). The stack is
`gym.make -> FlattenRGBDObservationWrapper -> CPUGymWrapper -> EpisodeOutcome -> Monitor
-> ScaleReward`; ManiSkill's own `ManiSkillSB3VectorEnv` is not used because, with
gymnasium 1.4 + SB3 2.9, it loses the time limit and reports episode stats every step.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor

from gaze_rl.envs.variants import variant_env_id


class EpisodeOutcome(gym.Wrapper):
    """Reports a ManiSkill episode's success exactly once, on its last step.

    ManiSkill puts `info["success"]` on every step. At the step that ends an episode this
    wrapper adds `success_once` (success at any step), `success_at_end` (success on the last
    step) and `is_success` (= `success_once`; the key SB3 averages into `success_rate`).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._success_once = False

    def reset(self, **kwargs: Any):
        self._success_once = False
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info.get("success", False))
        self._success_once |= success
        if terminated or truncated:
            info["success_once"] = self._success_once
            info["success_at_end"] = success
            info["is_success"] = self._success_once
        return obs, reward, terminated, truncated, info


class ScaleReward(gym.RewardWrapper):
    """Multiplies the reward the learner sees (ManiSkill's `reward_scale`); applied after
    `Monitor`, so logged episode returns stay in the task's own units."""

    def __init__(self, env: gym.Env, scale: float):
        super().__init__(env)
        self.scale = scale

    def reward(self, reward: SupportsFloat) -> float:
        return float(reward) * self.scale


def make_single_env(
    env_id: str,
    *,
    image_size: int,
    include_state: bool,
    control_mode: str | None,
    reward_scale: float,
    ignore_terminations: bool,
    render_backend: str,
    env_kwargs: dict[str, Any] | None = None,
    variant: str = "none",
) -> gym.Env:
    """Builds one CPU-simulated ManiSkill env with Dict observations `{rgb, state}`."""
    # Imported here so that worker processes register the ManiSkill tasks themselves.
    import mani_skill.envs  # noqa: F401
    from mani_skill.utils.wrappers.flatten import FlattenRGBDObservationWrapper
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    env = gym.make(
        variant_env_id(env_id, variant),
        obs_mode="rgb",
        sim_backend="physx_cpu",
        render_backend=render_backend,
        render_mode="rgb_array",
        control_mode=control_mode,
        sensor_configs=dict(width=image_size, height=image_size),
        # Re-seed every episode from the env's seeded main RNG. Without this ManiSkill draws
        # unseeded episodes from the process's global torch RNG (shared with the policy in
        # DummyVecEnv) and runs are not reproducible after the first episode.
        enhanced_determinism=True,
        **(env_kwargs or {}),
    )
    env = FlattenRGBDObservationWrapper(env, rgb=True, depth=False, state=include_state)
    env = CPUGymWrapper(env, ignore_terminations=ignore_terminations, record_metrics=False)
    env = EpisodeOutcome(env)
    env = Monitor(env, info_keywords=("success_once", "success_at_end"))
    if reward_scale != 1.0:
        env = ScaleReward(env, reward_scale)
    return env
