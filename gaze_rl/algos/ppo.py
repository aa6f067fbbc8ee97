"""GazePPO: SB3 PPO + the return-guided contrastive step after each rollout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.type_aliases import MaybeCallback

from gaze_rl.algos.contrastive_mixin import ContrastiveMixin
from gaze_rl.contrastive.returns import EpisodeBook, discounted_returns_to_go
from gaze_rl.nets.extractor import GazeExtractor


class RolloutRewards(BaseCallback):
    """Keeps each rollout's rewards as the envs returned them. SB3 adds gamma * V(terminal obs)
    to the stored reward of every time-limit-truncated step, which would leak a value estimate
    into the returns-to-go (and make them differ from GazeSAC's)."""

    def _on_rollout_start(self) -> None:
        self.rewards: list[np.ndarray] = []

    def _on_step(self) -> bool:
        self.rewards.append(np.array(self.locals["rewards"], dtype=np.float32))
        return True


class GazePPO(ContrastiveMixin, PPO):
    """PPO whose policy looks through a foveal gaze trained by return-guided contrastive learning.

    Same constructor, `learn`, `predict`, `save`, `load` and callbacks as SB3's PPO, plus:

    :param contrastive: ContrastiveConfig (or its fields as a dict); None turns the loss off,
        which with the default policy gives the paper's `foveal` ablation.
    :param backbone: image backbone of the default policy: "auto" = "nature" (ManiSkill's
        ppo_rgb NatureCNN) where the images leave it room (>= 44 px), else "plain".

    Works with SB3's "CnnPolicy" (Box images) and "MultiInputPolicy" (Dicts); the gaze extractor
    replaces SB3's default one unless policy_kwargs name another features_extractor_class.

    After each rollout the rollout's feature maps and their labels enter the feature buffer;
    after PPO's own update, `steps_per_update` contrastive steps train the gaze head.
    """

    default_backbone = "auto"

    def _extra_states(self) -> int:
        return self.n_steps * self.n_envs  # learn() may run up to one rollout past the total

    def _setup_model(self) -> None:
        super()._setup_model()
        self._episode_book = EpisodeBook(self.n_envs, self.return_discount) if self.contrastive else None
    # No _on_envs_reset: after learn() resets the envs SB3 marks every env's next observation as an
    # episode start, and the EpisodeBook opens new episodes there.

    def _gaze_extractor(self) -> GazeExtractor:
        return self.policy.features_extractor

    def learn(self, total_timesteps: int, callback: MaybeCallback = None, *args: Any, **kwargs: Any) -> GazePPO:
        # The contrastive labels need the env's own rewards per step (SB3's rollout buffer holds
        # them after its timeout bootstrap): a recorder goes first among the user's callbacks.
        if self.contrastive is not None:
            self._rollout_rewards = RolloutRewards()
            if callback is None:
                callback = []
            elif not isinstance(callback, list):
                callback = [callback if isinstance(callback, BaseCallback) else ConvertCallback(callback)]
            callback = [self._rollout_rewards, *callback]
        return super().learn(total_timesteps, callback, *args, **kwargs)

    def _add_rollout_to_buffer(self) -> None:
        buffer = self.rollout_buffer
        rewards = np.stack(self._rollout_rewards.rewards)
        # done after step t <=> step t+1 starts an episode; the last step's dones are SB3's
        # _last_episode_starts. Ended episodes (terminated or truncated) are labelled with the
        # rewards they collected; an episode still running at the end of the rollout is
        # completed with the value network's V(s_T) (gaze_rl.contrastive.returns).
        dones = np.concatenate([buffer.episode_starts[1:], self._last_episode_starts[None]], axis=0) > 0.5
        with torch.no_grad():
            last_obs, _ = self.policy.obs_to_tensor(self._last_obs)
            values = self.policy.predict_values(last_obs).cpu().numpy().reshape(-1)
        bootstrap = np.where(dones[-1], 0.0, values)
        to_go = discounted_returns_to_go(rewards, dones, self.return_discount, bootstrap)
        assert self._episode_book is not None  # built with the contrastive loss
        labels = self._episode_book.label_rollout(rewards, buffer.episode_starts > 0.5, to_go)
        observations = buffer.observations
        if isinstance(observations, dict):
            observations = {k: v.reshape(-1, *v.shape[2:]) for k, v in observations.items()}
        else:
            observations = observations.reshape(-1, *observations.shape[2:])
        self._add_labelled(self._feature_maps(observations), labels)

    def train(self) -> None:
        if self.contrastive is not None:
            self._add_rollout_to_buffer()
        super().train()
        self._maybe_contrastive_update()

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + self._contrastive_excluded() + ["_rollout_rewards", "_episode_book"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return state_dicts + self._contrastive_state_dicts(), variables
