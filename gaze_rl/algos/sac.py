"""GazeSAC: SB3 SAC + returns completed at episode end + the contrastive step after training."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import SAC

from gaze_rl.algos.contrastive_mixin import ContrastiveMixin
from gaze_rl.contrastive.returns import EpisodeReturnTracker
from gaze_rl.nets.extractor import GazeExtractor


class GazeSAC(ContrastiveMixin, SAC):
    """SAC with a foveal gaze trained by return-guided contrastive learning.

    Same API as SB3's SAC, plus `contrastive` (None = off) and `backbone` ("plain" as in
    ManiSkill's sac_rgbd). Actor and critics share one encoder and one gaze head
    (`share_features_extractor=True`). Note SB3's convention for a shared encoder: the actor
    loss trains it and the critics see it detached, the opposite of ManiSkill's sac_rgbd
    (critic-trained encoder, detached actor). SB3's replay buffer stores no returns, so each
    episode's states enter the feature buffer with their return-to-go when the episode ends.
    """

    default_backbone = "plain"

    def _network_policy_kwargs(self) -> dict[str, Any]:
        kwargs = super()._network_policy_kwargs()
        if not kwargs.setdefault("share_features_extractor", True) and self.contrastive_kwargs:
            raise ValueError(
                "GazeSAC's contrastive loss trains one gaze head shared by actor and critics; "
                "drop share_features_extractor=False from policy_kwargs or pass contrastive=None"
            )
        return kwargs

    def _setup_model(self) -> None:
        super()._setup_model()
        self._return_tracker = EpisodeReturnTracker(self.n_envs, self.return_discount) if self.contrastive else None

    def _extra_states(self) -> int:
        return self._return_tracker.pending if self._return_tracker is not None else 0  # episodes in flight

    def _on_envs_reset(self) -> None:
        if self._return_tracker is not None:  # the episodes it was collecting were cut off
            self._return_tracker.reset()

    def _gaze_extractor(self) -> GazeExtractor:
        return self.actor.features_extractor

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:
        if self._return_tracker is not None:
            for observations, labels in self._return_tracker.record(self._last_obs, reward, dones, infos):
                self._add_labelled(self._feature_maps(observations), labels)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        super().train(gradient_steps, batch_size)
        self._maybe_contrastive_update()

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + self._contrastive_excluded() + ["_return_tracker"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return state_dicts + self._contrastive_state_dicts(), variables
