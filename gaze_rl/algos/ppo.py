"""GazePPO: SB3 PPO + the return-guided contrastive step after each rollout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO

from gaze_rl.algos.contrastive_mixin import ContrastiveMixin, default_policy_kwargs, resolve_contrastive
from gaze_rl.contrastive.learner import ContrastiveConfig
from gaze_rl.contrastive.returns import discounted_returns_to_go
from gaze_rl.nets.extractor import GazeExtractor


class GazePPO(ContrastiveMixin, PPO):
    """PPO whose policy looks through a foveal gaze trained by return-guided contrastive learning.

    Same constructor, `learn`, `predict`, `save`, `load` and callbacks as SB3's PPO, plus:

    :param contrastive: ContrastiveConfig (or its fields as a dict); None turns the loss off,
        which with the default policy gives the paper's `foveal` ablation.
    :param backbone: image backbone of the default policy ("nature" as in ManiSkill's ppo_rgb).

    After each rollout the rollout's feature maps and returns-to-go enter the feature buffer;
    after PPO's own update, one contrastive step trains the gaze head.
    """

    def __init__(self, policy: str | type = "MultiInputPolicy", env: Any = None, *,
                 contrastive: ContrastiveConfig | dict[str, Any] | None = ContrastiveConfig(),
                 backbone: str = "nature", policy_kwargs: dict[str, Any] | None = None,
                 _init_setup_model: bool = True, **kwargs: Any):
        self.contrastive_kwargs = resolve_contrastive(contrastive)
        policy_kwargs = default_policy_kwargs(policy_kwargs, self.contrastive_kwargs, backbone)
        super().__init__(policy, env, policy_kwargs=policy_kwargs, _init_setup_model=_init_setup_model, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_contrastive()

    def _gaze_extractor(self) -> GazeExtractor:
        return self.policy.features_extractor  # type: ignore[return-value]

    def _add_rollout_to_buffer(self) -> None:
        buffer = self.rollout_buffer
        # done after step t <=> step t+1 starts an episode; the last step's dones are SB3's
        # _last_episode_starts. Unfinished tails take SB3's value-bootstrapped return.
        dones = np.concatenate([buffer.episode_starts[1:], self._last_episode_starts[None]], axis=0) > 0.5
        bootstrap = np.where(dones[-1], 0.0, buffer.returns[-1] - buffer.rewards[-1])
        returns = discounted_returns_to_go(buffer.rewards, dones, self.return_discount, bootstrap / self.gamma
                                           if self.gamma > 0 else None)
        observations = {k: v.reshape(-1, *v.shape[2:]) for k, v in buffer.observations.items()}
        self.contrastive.add(self._feature_maps(observations), torch.as_tensor(returns.reshape(-1)))

    def train(self) -> None:
        if self.contrastive is not None:
            self._add_rollout_to_buffer()
        super().train()
        self._maybe_contrastive_update()

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + self._contrastive_excluded()

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return state_dicts + self._contrastive_state_dicts(), variables
