"""One ManiSkill3 task in one process, as a plain gymnasium env for SB3's vec envs.

This is the CPU route (`physx_cpu` simulates one env per process). The stack is
`gym.make -> FlattenRGBDObservationWrapper -> CPUGymWrapper -> EpisodeOutcome -> Monitor
-> ScaleReward`; ManiSkill's own `ManiSkillSB3VectorEnv` is not used because, with
gymnasium 1.4 + SB3 2.9, it loses the time limit and reports episode stats every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, SupportsFloat

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor

from gaze_rl.envs.fast_render import fast_shader_config, resolve_render_quality, use_minimal_picture_formats
from gaze_rl.envs.task_objects import GazeTargetObservation
from gaze_rl.envs.variants import task_env_id


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


def default_render_backend() -> str:
    """SAPIEN's render backend for CPU physics: the GPU when torch sees CUDA, else lavapipe ('cpu')."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def make_maniskill_env(
    env_id: str,
    *,
    obs_mode: str,
    image_size: int,
    control_mode: str | None,
    render_quality: str = "auto",
    render_backend: str | None = None,
    variant: str = "none",
    env_kwargs: dict[str, Any] | None = None,
    privileged_state: bool = False,
) -> gym.Env:
    """`gym.make` of one CPU-simulated ManiSkill3 task, as every gaze_rl env stack builds it
    (RL, recording demonstrations, attention-on-target): the raw env, no wrappers.
    `privileged_state` adds ManiSkill's `state_dict` observations (the task objects' poses
    under `extra`), which the flattening wrapper appends to the state vector."""
    # Imported here so that worker processes register the ManiSkill tasks themselves.
    import mani_skill.envs  # noqa: F401

    render_backend = render_backend or default_render_backend()
    quality = resolve_render_quality(render_quality, render_backend)
    sensor_configs: dict[str, Any] = dict(width=image_size, height=image_size)
    if quality == "fast":
        # lavapipe's rasteriser threads cost more than they give for small frames on few cores;
        # must be set before this process creates its Vulkan device (a user's value wins).
        os.environ.setdefault("LP_NUM_THREADS", "0")
        use_minimal_picture_formats()
        sensor_configs["shader_config"] = fast_shader_config()
    return gym.make(
        task_env_id(env_id, variant, quality),
        obs_mode=obs_mode + ("+state_dict" if privileged_state else ""),
        sim_backend="physx_cpu",
        render_backend=render_backend,
        render_mode="rgb_array",
        control_mode=control_mode,
        sensor_configs=sensor_configs,
        # Re-seed every episode from the env's seeded main RNG. Without this ManiSkill draws
        # unseeded episodes from the process's global torch RNG (shared with the policy in
        # DummyVecEnv) and runs are not reproducible after the first episode.
        enhanced_determinism=True,
        **(env_kwargs or {}),
    )


def wrap_for_sb3(
    env: gym.Env,
    env_id: str,
    *,
    include_state: bool,
    ignore_terminations: bool,
    reward_scale: float = 1.0,
    monitor: bool = True,
    gaze_targets: bool = False,
) -> gym.Env:
    """The wrappers every gaze_rl CPU env stack puts on a raw ManiSkill env (RL, segmented):
    `FlattenRGBDObservationWrapper -> CPUGymWrapper [-> GazeTargetObservation] [-> EpisodeOutcome
    -> Monitor] [-> ScaleReward]`, giving Dict observations `{rgb, state[, gaze_target]}`.
    `monitor=False` leaves out the episode bookkeeping, as recording demonstrations does."""
    from mani_skill.utils.wrappers.flatten import FlattenRGBDObservationWrapper
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    env = FlattenRGBDObservationWrapper(env, rgb=True, depth=False, state=include_state)
    env = CPUGymWrapper(env, ignore_terminations=ignore_terminations, record_metrics=False)
    if gaze_targets:
        env = GazeTargetObservation(env, env_id)
    if monitor:
        env = EpisodeOutcome(env)
        env = Monitor(env, info_keywords=("success_once", "success_at_end"))
    if reward_scale != 1.0:
        env = ScaleReward(env, reward_scale)
    return env


def make_single_env(
    env_id: str,
    *,
    image_size: int,
    control_mode: str | None,
    include_state: bool = True,
    ignore_terminations: bool = True,
    reward_scale: float = 1.0,
    monitor: bool = True,
    max_episode_steps: int | None = None,
    render_quality: str = "auto",
    render_backend: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    variant: str = "none",
    privileged_state: bool = False,
    gaze_targets: bool = False,
    segmentation_tap: Callable[[gym.Env], gym.Env] | None = None,
) -> gym.Env:
    """Builds one CPU-simulated ManiSkill env with Dict observations `{rgb, state[, gaze_target]}`:
    the one CPU stack of gaze_rl, `make_maniskill_env` under `wrap_for_sb3` (`privileged_state`,
    `gaze_targets`, `variant`, `render_quality`: gaze_rl.envs.spec.EnvSpec).

    `monitor=False` leaves out the episode bookkeeping (EpisodeOutcome, Monitor), as recording
    demonstrations does; `max_episode_steps` overrides the task's time limit (None keeps it).
    `segmentation_tap` (gaze_rl.segmentation.envs.make_segmented_env) wraps the raw env, which then
    renders segmentation too, below the flattening wrapper: the observations stay those of RL."""
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    obs_mode = "rgb" if segmentation_tap is None else "rgb+segmentation"
    env = make_maniskill_env(env_id, obs_mode=obs_mode, image_size=image_size, control_mode=control_mode,
                             render_quality=render_quality, render_backend=render_backend, variant=variant,
                             env_kwargs=kwargs, privileged_state=privileged_state)
    if segmentation_tap is not None:
        env = segmentation_tap(env)
    return wrap_for_sb3(env, env_id, include_state=include_state, ignore_terminations=ignore_terminations,
                        reward_scale=reward_scale, monitor=monitor, gaze_targets=gaze_targets)
