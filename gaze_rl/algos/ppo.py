"""GazePPO: SB3 PPO + the return-guided contrastive step after each rollout."""

from __future__ import annotations

import copy
from collections.abc import Generator
from typing import Any, TypeAlias

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, MaybeCallback, RolloutBufferSamples

from gaze_rl.algos.contrastive_mixin import ContrastiveMixin
from gaze_rl.contrastive.config import ContrastiveConfig
from gaze_rl.contrastive.returns import EpisodeBook, discounted_returns_to_go, step_successes
from gaze_rl.nets.augment import RandomShift, augmentation_paused
from gaze_rl.nets.extractor import GazeExtractor

Samples: TypeAlias = RolloutBufferSamples | DictRolloutBufferSamples


class RolloutRewards(BaseCallback):
    """Keeps each rollout's rewards as the envs returned them. SB3 adds gamma * V(terminal obs)
    to the stored reward of every time-limit-truncated step, which would leak a value estimate
    into the returns-to-go (and make them differ from GazeSAC's). Also keeps the success flag
    each env reported where an episode ended (NaN elsewhere), for the `success` label."""

    def _on_rollout_start(self) -> None:
        self.rewards: list[np.ndarray] = []
        self.successes: list[np.ndarray] = []

    def _on_step(self) -> bool:
        self.rewards.append(np.array(self.locals["rewards"], dtype=np.float32))
        self.successes.append(step_successes(self.locals["infos"], np.asarray(self.locals["dones"])))
        return True


class GazePPO(ContrastiveMixin, PPO):
    """PPO whose policy looks through a foveal gaze trained by return-guided contrastive learning.

    Same constructor, `learn`, `predict`, `save`, `load` and callbacks as SB3's PPO, plus:

    :param contrastive: ContrastiveConfig (or its fields as a dict); None turns the loss off,
        which with the default policy gives the paper's `foveal` ablation.
    :param backbone: image backbone of the default policy: "auto" = "nature" (SB3's CnnPolicy
        encoder, ManiSkill's ppo_rgb NatureCNN) where the images leave it room (>= 44 px), else
        "plain" (printed at verbose >= 1).

    Works with SB3's "CnnPolicy" (Box images) and "MultiInputPolicy" (Dicts); the gaze extractor
    replaces SB3's default one unless policy_kwargs name another features_extractor_class.

    After each rollout the rollout's feature maps and their labels enter the feature buffer;
    after PPO's own update, `steps_per_update` contrastive steps train the gaze head.

    With a random-shift augmentation (extractor `augment="shift"`) the update is DrAC-consistent
    (Raileanu et al. 2021): the rollout's old log-probs and values come from unshifted frames,
    so shifting only the new policy's input would make the augmentation itself move PPO's ratio,
    its clipping and its approx-KL early stop. Instead each minibatch of each epoch is shifted
    once (a fresh draw per image), and its old log-probs and values are recomputed on those same
    shifted frames by a frozen copy of the policy as it was when `train()` began, so that the
    ratio is pi_new(a|aug(s)) / pi_old(a|aug(s)); the extractor does not shift again meanwhile.
    Cost: one no-grad forward per minibatch and one policy copy per `train()`. Advantages and
    returns stay the rollout's. Without augmentation PPO's update is SB3's, unchanged.
    """

    def _states_per_iteration(self, config: ContrastiveConfig) -> int:
        return self.n_steps * self.n_envs  # one rollout

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
        # success: known for the episodes that ended in this rollout; a tail's is NaN until its
        # episode ends in a later rollout, when every state of it still held gets the flag.
        labels = self._episode_book.label_rollout(rewards, buffer.episode_starts > 0.5, to_go, dones,
                                                  np.stack(self._rollout_rewards.successes))
        observations = buffer.observations
        if isinstance(observations, dict):
            observations = {k: v.reshape(-1, *v.shape[2:]) for k, v in observations.items()}
        else:
            observations = observations.reshape(-1, *observations.shape[2:])
        self._add_labelled(self._feature_maps(observations), labels)

    def train(self) -> None:
        if self.contrastive is not None:
            self._add_rollout_to_buffer()
        shift = self._random_shift()
        if shift is None:
            super().train()
        else:
            self._train_on_shifted_minibatches(shift)
        self._maybe_contrastive_update()

    def _random_shift(self) -> RandomShift | None:
        """The extractor's random shift, or None when the policy does not augment."""
        extractor = self.policy.features_extractor
        if isinstance(extractor, GazeExtractor) and isinstance(extractor.augment, RandomShift):
            return extractor.augment
        return None

    def _train_on_shifted_minibatches(self, shift: RandomShift) -> None:
        """SB3's PPO update on minibatches shifted once each, with old log-probs and values of the
        shifted frames (see the class docstring): `rollout_buffer.get` is wrapped for the update."""
        buffer = self.rollout_buffer
        rollout_get = buffer.get
        with augmentation_paused(self.policy):
            snapshot = copy.deepcopy(self.policy, memo=self._snapshot_memo())  # its shifts paused too

            def shifted_get(batch_size: int | None = None) -> Generator[Samples, None, None]:
                snapshot.set_training_mode(self.policy.training)  # the update's mode (set by train())
                for samples in rollout_get(batch_size):
                    yield self._shifted_samples(samples, shift, snapshot)

            buffer.__dict__["get"] = shifted_get  # shadows the method for this update only
            try:
                super().train()
            finally:
                del buffer.__dict__["get"]

    def _snapshot_memo(self) -> dict[int, Any]:
        """What the policy's frozen copy shares instead of copying: no optimizer (nor its Adam
        moments), and a shallow copy of the action distribution, whose cached last distribution
        holds tensors of the previous update's graph (deepcopy refuses those); the copy's
        `evaluate_actions` replaces them before any use."""
        memo: dict[int, Any] = {}
        if hasattr(self.policy, "optimizer"):
            memo[id(self.policy.optimizer)] = None
        if hasattr(self.policy, "action_dist"):
            memo[id(self.policy.action_dist)] = copy.copy(self.policy.action_dist)
        return memo

    def _shifted_samples(self, samples: Samples, shift: RandomShift, old_policy: ActorCriticPolicy) -> Samples:
        """The minibatch with its attended image shifted (one draw per image) and the old policy's
        values and log-probs of the shifted observations; actions, advantages, returns unchanged.
        The buffer holds raw frames ([0, 255] floats for uint8 images): the shift copies whole
        pixels, so it is exact before SB3's scaling."""
        observations = samples.observations
        image_key = self._gaze_extractor().image_key
        if isinstance(observations, dict):
            assert image_key is not None
            observations = {**observations, image_key: shift.shift(observations[image_key])}
        else:
            observations = shift.shift(observations)
        actions = samples.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()  # as PPO.train evaluates them
        with torch.no_grad():
            values, log_prob, _ = old_policy.evaluate_actions(observations, actions)
        return samples._replace(observations=observations, old_values=values.flatten(), old_log_prob=log_prob)

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + self._contrastive_excluded() + ["_rollout_rewards", "_episode_book"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return state_dicts + self._contrastive_state_dicts(), variables
