"""Many ManiSkill3 envs simulated in one process (GPU `physx_cuda`) as one SB3 VecEnv.

ManiSkill's batched envs speak torch tensors with a leading env dimension and reset finished
sub-envs themselves. This adapter turns that into SB3's VecEnv contract: numpy arrays,
`terminal_observation` and `TimeLimit.truncated` in the infos of finished envs, and the
episode summary (`episode` = {r, l}, `success_once`, `success_at_end`, `is_success`)
exactly once per episode. It also runs with `physx_cpu` and `num_envs=1`, which is how it is
tested on machines without CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn


def _to_numpy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class ManiSkillBatchedVecEnv(VecEnv):
    """SB3 VecEnv over one batched ManiSkill env (`gym.make(..., num_envs=N)`)."""

    def __init__(self, env: gym.Env, *, ignore_terminations: bool, reward_scale: float = 1.0):
        from mani_skill.vector.wrappers.gymnasium import ManiSkillVectorEnv

        self._env = ManiSkillVectorEnv(
            env, auto_reset=True, ignore_terminations=ignore_terminations, record_metrics=True
        )
        self.reward_scale = reward_scale
        super().__init__(
            self._env.num_envs,
            self._env.single_observation_space,
            self._env.single_action_space,
        )
        self._actions: torch.Tensor | None = None

    def reset(self) -> dict[str, np.ndarray]:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        # A batched env takes one seed per sub-env; SB3 seeds env i with seed + i.
        seeds = None if seed is None else [seed + i for i in range(self.num_envs)]
        obs, _ = self._env.reset(seed=seeds)
        self._reset_seeds()
        return _to_numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(actions, device=self._env.device, dtype=torch.float32)

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self._env.step(self._actions)
        dones = _to_numpy(torch.logical_or(terminated, truncated)).astype(bool).reshape(-1)
        terminated_np = _to_numpy(terminated).astype(bool).reshape(-1)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_obs = _to_numpy(info["final_observation"])
            episode = _to_numpy(info["final_info"]["episode"])
            for i in np.flatnonzero(dones):
                success_once = bool(episode.get("success_once", np.zeros(self.num_envs))[i])
                at_end = episode.get("success_at_end")
                if at_end is None:  # ManiSkill records it only when terminations are ignored
                    at_end = _to_numpy(info["final_info"].get("success", np.zeros(self.num_envs)))
                infos[i] = {
                    "terminal_observation": {k: v[i] for k, v in final_obs.items()},
                    "TimeLimit.truncated": not terminated_np[i],
                    "episode": {"r": float(episode["return"][i]), "l": int(episode["episode_len"][i])},
                    "success_once": success_once,
                    "success_at_end": bool(at_end[i]),
                    "is_success": success_once,
                }
        rewards = _to_numpy(reward).astype(np.float32).reshape(-1) * self.reward_scale
        return _to_numpy(obs), rewards, dones, infos

    def close(self) -> None:
        self._env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self._env.unwrapped, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self._env.unwrapped, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self._env.unwrapped, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = _to_numpy(self._env.unwrapped.render())
        return list(frames)
