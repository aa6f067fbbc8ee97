"""GazeSAC: SB3 SAC + returns completed at episode end (or bootstrapped after a bounded part of a
long episode) + the contrastive step after training, every `sac_update_interval` env steps."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import SAC

from gaze_rl.algos.contrastive_mixin import ContrastiveMixin
from gaze_rl.contrastive.config import ContrastiveConfig
from gaze_rl.contrastive.returns import EpisodeReturnTracker, Observation
from gaze_rl.nets.extractor import GazeExtractor


class GazeSAC(ContrastiveMixin, SAC):
    """SAC with a foveal gaze trained by return-guided contrastive learning.

    Same API as SB3's SAC, plus `contrastive` (None = off) and `backbone`: "auto" (the default)
    builds the encoder SB3's SAC would (NatureCNN) wherever the image fits it and ManiSkill's
    PlainConv only where it must (printed at verbose >= 1); `gaze-rl train`'s ManiSkill presets
    ask for "plain", as ManiSkill's sac_rgbd has it. Actor and critics share one encoder and one gaze head
    (`share_features_extractor=True`). Note SB3's convention for a shared encoder: the actor
    loss trains it and the critics see it detached, the opposite of ManiSkill's sac_rgbd
    (critic-trained encoder, detached actor).

    SB3's replay buffer stores no returns, so each episode's states are held (with their
    rewards) and enter the feature buffer with their return-to-go when the episode ends. An
    episode that reaches `contrastive.sac_update_interval` held states hands them over before
    it ends, their return-to-go completed with the critics' estimate of the next state (the
    smaller of the twin Q(s, mu(s)), mu = the actor's deterministic action), as GazePPO
    completes its rollout tails with V(s_T); the episode goes on under the same id. So at most
    `sac_update_interval` states per env wait in memory however long the episodes, and
    episodes shorter than that are labelled exactly, as before.

    Every `sac_update_interval` env steps (summed over envs) count one training iteration; a
    contrastive update runs after the next SAC train() once `update_every` iterations have
    passed (at most one per train() call), not after every train() call.
    """

    _network_names = ("actor's", "critics'")

    def _setup_model(self) -> None:
        super()._setup_model()
        self._return_tracker = EpisodeReturnTracker(self.n_envs, self.return_discount) if self.contrastive else None
        self._steps_since_iteration = 0  # env steps since the last training iteration was counted

    def _states_per_iteration(self, config: ContrastiveConfig) -> int:
        return config.sac_update_interval  # env steps (summed over envs) per training iteration

    def _extra_states(self) -> int:
        return self._return_tracker.pending if self._return_tracker is not None else 0  # episodes in flight

    def _on_envs_reset(self) -> None:
        if self._return_tracker is not None:  # the episodes it was collecting were cut off
            self._return_tracker.reset()

    def _gaze_extractor(self) -> GazeExtractor:
        return self.actor.features_extractor

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:
        if self._return_tracker is not None:
            assert self.contrastive is not None
            interval = self.contrastive.config.sac_update_interval
            for observations, labels in self._return_tracker.record(self._last_obs, reward, dones, infos):
                self._add_labelled(self._feature_maps(observations), labels)
            self._flush_long_episodes(new_obs, interval)
            self._steps_since_iteration += self.n_envs
            iterations, self._steps_since_iteration = divmod(self._steps_since_iteration, interval)
            self._iterations_since_update += iterations
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _flush_long_episodes(self, next_obs: Observation, limit: int) -> None:
        """The held states of every running episode that holds `limit` of them into the feature
        buffer, bootstrapped with the critics' value of its env's `next_obs` (the observation
        after the last recorded step)."""
        assert self._return_tracker is not None
        envs = self._return_tracker.holding(limit)
        if envs:
            for observations, labels in self._return_tracker.flush(self._state_values(next_obs), envs):
                self._add_labelled(self._feature_maps(observations), labels)

    @torch.no_grad()
    def _state_values(self, observations: Observation) -> np.ndarray:
        """(N,) min over the twin critics of Q(s, mu(s)), mu = the actor's deterministic action."""
        obs, _ = self.policy.obs_to_tensor(observations)
        actions = self.actor(obs, deterministic=True)
        q_values = torch.cat(self.critic(obs, actions), dim=1)
        return q_values.min(dim=1).values.cpu().numpy().astype(np.float32)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        super().train(gradient_steps, batch_size)
        self._run_due_update()

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + self._contrastive_excluded() + ["_return_tracker"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return state_dicts + self._contrastive_state_dicts(), variables
