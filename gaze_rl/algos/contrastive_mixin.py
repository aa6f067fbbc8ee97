"""What GazePPO and GazeSAC share: owning a ContrastiveLearner inside an SB3 algorithm.

SB3 has no hook for extra losses, so the algorithms subclass PPO / SAC and call into this
mixin. The learner's projection and optimizer are saved with the model (`save`/`load`);
the feature buffer and the FAISS index are rebuilt, never pickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.preprocessing import preprocess_obs

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.returns import StateLabels
from gaze_rl.nets.extractor import GazeExtractor, gaze_policy_kwargs


def resolve_contrastive(contrastive: ContrastiveConfig | dict[str, Any] | None) -> dict[str, Any] | None:
    """Validates the `contrastive` argument; returns it as a plain dict (saved as JSON)."""
    if contrastive is None:
        return None
    if isinstance(contrastive, dict):
        contrastive = ContrastiveConfig(**contrastive)
    if not isinstance(contrastive, ContrastiveConfig):
        raise TypeError(f"contrastive must be a ContrastiveConfig, a dict or None (got {type(contrastive).__name__})")
    return contrastive.to_dict()


def default_policy_kwargs(policy_kwargs: dict[str, Any] | None, contrastive: dict[str, Any] | None,
                          backbone: str) -> dict[str, Any]:
    """The gaze extractor unless the user chose another class. The user's extractor kwargs
    refine the gaze defaults rather than replace them; with the contrastive loss on, RL
    gradients stop at the gaze map unless `rl_trains_gaze`."""
    user = dict(policy_kwargs or {})
    defaults = gaze_policy_kwargs("gaze" if contrastive is not None else "foveal", backbone=backbone)
    kwargs = {**defaults, **user}
    if kwargs["features_extractor_class"] is not GazeExtractor:
        kwargs["features_extractor_kwargs"] = user.get("features_extractor_kwargs") or {}
        return kwargs
    extractor_kwargs = {**defaults["features_extractor_kwargs"], **(user.get("features_extractor_kwargs") or {})}
    if contrastive is not None:
        # The contrastive config decides who trains the gaze head.
        extractor_kwargs["detach_attention"] = not contrastive["rl_trains_gaze"]
    kwargs["features_extractor_kwargs"] = extractor_kwargs
    return kwargs


class ContrastiveMixin:
    """Adds `self.contrastive` (a ContrastiveLearner, or None) to an SB3 algorithm."""

    contrastive_kwargs: dict[str, Any] | None
    contrastive: ContrastiveLearner | None

    def _gaze_extractor(self) -> GazeExtractor:
        raise NotImplementedError

    def _setup_contrastive(self) -> None:
        self.contrastive = None
        self._iterations_since_update = 0
        if self.contrastive_kwargs is None:
            return
        extractor = self._gaze_extractor()
        if not isinstance(extractor, GazeExtractor):
            raise ValueError(
                "the contrastive loss needs gaze_rl's GazeExtractor with a Gaussian gaze; pass "
                "policy_kwargs=gaze_policy_kwargs('gaze') or contrastive=None"
            )
        config = ContrastiveConfig(**self.contrastive_kwargs)
        seed = 0 if self.seed is None else self.seed
        self.contrastive = ContrastiveLearner(extractor, config, seed=seed)

    @property
    def return_discount(self) -> float:
        discount = self.contrastive_kwargs.get("return_discount") if self.contrastive_kwargs else None
        return self.gamma if discount is None else discount

    @torch.no_grad()
    def _feature_maps(self, observations: dict[str, np.ndarray], batch_size: int = 1024) -> torch.Tensor:
        """Detached feature maps of raw (vec-env) observations, computed in batches."""
        extractor = self._gaze_extractor()
        n = len(next(iter(observations.values())))
        maps = []
        for start in range(0, n, batch_size):
            chunk = {k: torch.as_tensor(v[start:start + batch_size], device=self.device) for k, v in observations.items()}
            chunk = preprocess_obs(chunk, self.observation_space, normalize_images=True)
            maps.append(extractor.feature_map(chunk))
        return torch.cat(maps)

    def _add_labelled(self, feature_maps: torch.Tensor, labels: StateLabels) -> None:
        """Feature maps and their labels (one row per state) into the contrastive buffer."""
        self.contrastive.add(feature_maps, torch.as_tensor(labels.to_go), torch.as_tensor(labels.episode),
                             torch.as_tensor(labels.step), torch.as_tensor(labels.episode_return))

    def _maybe_contrastive_update(self) -> None:
        """Runs one contrastive update every `update_every` calls and logs its metrics."""
        if self.contrastive is None:
            return
        self._iterations_since_update += 1
        if self._iterations_since_update < self.contrastive.config.update_every:
            return
        self._iterations_since_update = 0
        for key, value in self.contrastive.update().items():
            self.logger.record(key, value)

    def _contrastive_excluded(self) -> list[str]:
        return ["contrastive"]

    def _contrastive_state_dicts(self) -> list[str]:
        return ["contrastive.projection", "contrastive.optimizer"] if self.contrastive_kwargs else []
