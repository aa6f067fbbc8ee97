"""The return attached to each stored state: discounted return-to-go within its episode.

The paper attaches an episode-level return to each state (public reviews); return-to-go is
the natural per-state reading of that. PPO gets it from a finished rollout (the unfinished
tail is bootstrapped with SB3's own value-based return); SAC gets it when an episode ends,
from `EpisodeReturnTracker`.
"""

from __future__ import annotations

import numpy as np

Observation = np.ndarray | dict[str, np.ndarray]


def discounted_returns_to_go(
    rewards: np.ndarray, dones: np.ndarray, gamma: float, bootstrap: np.ndarray | None = None
) -> np.ndarray:
    """Return-to-go G_t = r_t + gamma * G_{t+1}, restarted after each done.

    :param rewards: (T, N) rewards, time first.
    :param dones: (T, N) True where the episode ended after step t.
    :param gamma: discount in [0, 1].
    :param bootstrap: (N,) value of G_T for envs whose last episode is unfinished (0 if None).
    """
    if rewards.shape != dones.shape:
        raise ValueError(f"rewards {rewards.shape} and dones {dones.shape} must have the same shape")
    returns = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[1], dtype=np.float32) if bootstrap is None else bootstrap.astype(np.float32)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running * (1.0 - dones[t].astype(np.float32))
        returns[t] = running
    return returns


class EpisodeReturnTracker:
    """Collects each env's observations and rewards until its episode ends, then hands back
    the episode with its return-to-go (the off-policy route: a replay buffer stores no returns)."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma = gamma
        self._obs: list[list[Observation]] = [[] for _ in range(num_envs)]
        self._rewards: list[list[float]] = [[] for _ in range(num_envs)]

    @property
    def pending(self) -> int:
        """States of the unfinished episodes."""
        return sum(len(obs) for obs in self._obs)

    def reset(self) -> None:
        """Drops the unfinished episodes (the envs were reset under them)."""
        for obs, rewards in zip(self._obs, self._rewards):
            obs.clear()
            rewards.clear()

    def record(
        self, obs: Observation, rewards: np.ndarray, dones: np.ndarray
    ) -> list[tuple[Observation, np.ndarray]]:
        """Adds one vec-env step (obs = the observations the actions were taken from: an array,
        or a dict of arrays, with the envs first).

        Returns the episodes that ended at this step, each as (stacked observations, returns).
        """
        finished = []
        for i, done in enumerate(dones):
            self._obs[i].append({k: v[i].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[i].copy())
            self._rewards[i].append(float(rewards[i]))
            if done:
                episode_rewards = np.asarray(self._rewards[i], dtype=np.float32)[:, None]
                episode_dones = np.zeros_like(episode_rewards, dtype=bool)
                returns = discounted_returns_to_go(episode_rewards, episode_dones, self.gamma)[:, 0]
                episode = self._obs[i]
                stacked = {k: np.stack([o[k] for o in episode]) for k in obs} if isinstance(obs, dict) else np.stack(episode)
                finished.append((stacked, returns))
                self._obs[i], self._rewards[i] = [], []
        return finished
