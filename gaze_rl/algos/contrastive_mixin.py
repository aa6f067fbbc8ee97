"""What GazePPO and GazeSAC share: owning a ContrastiveLearner inside an SB3 algorithm.

SB3 has no hook for extra losses, so the algorithms subclass PPO / SAC and call into this
mixin. The learner's projection and optimizer are saved with the model (`save`/`load`);
the feature buffer and the FAISS index are rebuilt, never pickled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.returns import StateLabels
from gaze_rl.errors import ConfigError
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
    """The policy kwargs the network is built with: the gaze extractor unless the user chose
    another class. The user's extractor kwargs refine the gaze defaults rather than replace
    them; the policy's `normalize_images=False` tells the extractor its images are floats; with
    the contrastive loss on, RL gradients stop at the gaze map unless `rl_trains_gaze`.

    The algorithms keep (and save) the user's own policy_kwargs and call this in _setup_model,
    so that `load(path, policy_kwargs=<what the constructor got>)` matches, as in SB3."""
    user = dict(policy_kwargs or {})
    defaults = gaze_policy_kwargs("gaze" if contrastive is not None else "foveal", backbone=backbone)
    kwargs = {**defaults, **user}
    if kwargs["features_extractor_class"] is not GazeExtractor:
        kwargs["features_extractor_kwargs"] = user.get("features_extractor_kwargs") or {}
        return kwargs
    extractor_kwargs = {**defaults["features_extractor_kwargs"], **(user.get("features_extractor_kwargs") or {})}
    extractor_kwargs.setdefault("normalized_image", not user.get("normalize_images", True))
    if contrastive is not None:
        # The contrastive config decides who trains the gaze head.
        detach = not contrastive["rl_trains_gaze"]
        asked = (user.get("features_extractor_kwargs") or {}).get("detach_attention")
        if asked is not None and asked != detach:
            raise ConfigError(
                f"features_extractor_kwargs detach_attention={asked} conflicts with the contrastive config "
                f"(rl_trains_gaze={contrastive['rl_trains_gaze']}); with the contrastive loss on, set "
                "contrastive rl_trains_gaze instead (True: RL gradients also train the gaze)")
        extractor_kwargs["detach_attention"] = detach
    kwargs["features_extractor_kwargs"] = extractor_kwargs
    return kwargs


def check_shared_extractor(algo: str, networks: tuple[str, str], kwargs: dict[str, Any],
                           contrastive: dict[str, Any] | None) -> None:
    """Refuses share_features_extractor=False with the contrastive loss when RL gradients stop
    at the gaze map: the loss trains the gaze head of the first network only, so the second
    network's own gaze head would never move. With `rl_trains_gaze` RL trains both heads (the
    loss the first one too), which works. `networks`: the two names as possessives ("actor's",
    "critics'")."""
    if contrastive is None or kwargs.get("share_features_extractor", True) or contrastive["rl_trains_gaze"]:
        return
    first, second = networks
    raise ValueError(
        f"{algo} with share_features_extractor=False and the contrastive loss: the loss trains the {first} gaze "
        f"head only and RL gradients stop at the gaze map, so the {second} own gaze head would never be "
        "trained. Drop share_features_extractor=False from policy_kwargs (one gaze head for both), pass "
        "contrastive=ContrastiveConfig(rl_trains_gaze=True) (RL trains both gaze heads, the loss the "
        f"{first} too), or contrastive=None (the foveal ablation)")


def has_image(space: spaces.Space) -> bool:
    """Whether the space is, or a Dict space holds, an image as SB3 sees one (any 3-D Box
    counts: with normalize_images=False SB3 takes float images too)."""
    if isinstance(space, spaces.Dict):
        return any(has_image(s) for s in space.spaces.values())
    return is_image_space(space, normalized_image=True)


def no_image_message(algo: str, space: spaces.Space) -> str:
    """Why an observation space without an image is refused, and what to do instead."""
    boxes = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    flat = [s for s in boxes if isinstance(s, spaces.Box) and len(s.shape) == 2]
    hint = ""
    if flat:
        h, w = flat[0].shape
        hint = (f"; a 2-D Box {flat[0].shape} becomes an image with a channel axis, e.g. "
                f"gymnasium.wrappers.ReshapeObservation(env, ({h}, {w}, 1))")
    return (f"{algo}'s gaze looks at images, but the observation space has none ({space}; an image is a Box of "
            f"3 dimensions, (C, H, W) or (H, W, C), alone or in a Dict); use plain SB3 (PPO, SAC) for it{hint}")


# Progress-remaining values at which the learning-rate schedule's peak is looked for (1 -> 0).
SCHEDULE_GRID = np.linspace(1.0, 0.0, 201)


def schedule_peak(schedule: Callable[[float], float]) -> float:
    """The largest value an SB3 schedule takes over a run, estimated on SCHEDULE_GRID (201
    progress values from 1 to 0, ends included); 0.0 when it is never positive. Values it
    cannot give (an error, NaN) are left out."""
    values = []
    for progress in SCHEDULE_GRID:
        try:
            value = float(schedule(float(progress)))
        except (ArithmeticError, ValueError):
            continue
        if math.isfinite(value):
            values.append(value)
    return max([0.0, *values])


# The loss is on by default; the config is turned into a plain dict at once, so it is never shared.
_DEFAULT_CONTRASTIVE = ContrastiveConfig()


class ContrastiveMixin:
    """Adds `self.contrastive` (a ContrastiveLearner, or None) to an SB3 algorithm."""

    contrastive_kwargs: dict[str, Any] | None
    contrastive: ContrastiveLearner | None
    backbone: str
    _gaze_lr_peak: float  # the learning-rate schedule's peak (schedule_peak), set with the learner
    # The backbone when `backbone` is not given: "auto" = SB3's NatureCNN where the image fits it,
    # PlainConv where it must (gaze_rl.nets.encoders.backbone_choice); `gaze-rl train` names its own.
    default_backbone = "auto"
    _network_names = ("policy's", "value network's")  # whose features extractor (in messages)
    _exporting = False  # save_sb3 in progress: leave out what plain SB3 cannot load

    def __init__(self, policy: str | type = "MultiInputPolicy", env: Any = None, *args: Any,
                 contrastive: ContrastiveConfig | dict[str, Any] | None = _DEFAULT_CONTRASTIVE,
                 backbone: str | None = None, **kwargs: Any):
        self.contrastive_kwargs = resolve_contrastive(contrastive)
        self.backbone = self.default_backbone if backbone is None else backbone
        super().__init__(policy, env, *args, **kwargs)  # type: ignore[call-arg]  # SB3's positional arguments after env too
        self._report_backbone()

    def _report_backbone(self) -> None:
        """At verbose >= 1, prints the image encoder the gaze extractor built and why, as SB3
        prints its device: once, at construction (load() builds the networks later, silently)."""
        extractor = self._gaze_extractor() if getattr(self, "policy", None) is not None else None
        if self.verbose >= 1 and isinstance(extractor, GazeExtractor):
            print(f"Image encoder: {type(extractor.backbone).__name__} ({extractor.backbone_reason})")

    def _gaze_extractor(self) -> GazeExtractor:
        raise NotImplementedError

    def _network_policy_kwargs(self) -> dict[str, Any]:
        """The policy kwargs the networks are built with (see default_policy_kwargs). Both
        algorithms share one features extractor (one gaze head) between their networks by
        default; an unshared one is refused with the contrastive loss unless RL also trains the
        gaze (see check_shared_extractor)."""
        kwargs = default_policy_kwargs(self.policy_kwargs, self.contrastive_kwargs, self.backbone)
        kwargs.setdefault("share_features_extractor", True)
        check_shared_extractor(type(self).__name__, self._network_names, kwargs, self.contrastive_kwargs)
        return kwargs

    def _setup_model(self) -> None:
        # SB3 builds the policy from self.policy_kwargs; build it from the merged kwargs but keep
        # (and save) the user's, so that load() with the constructor's kwargs works.
        user = self.policy_kwargs
        self.policy_kwargs = self._network_policy_kwargs()
        if self.policy_kwargs["features_extractor_class"] is GazeExtractor and not has_image(self.observation_space):
            raise ValueError(no_image_message(type(self).__name__, self.observation_space))
        try:
            super()._setup_model()  # type: ignore[misc]
        finally:
            self.policy_kwargs = user
        self._setup_contrastive()

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        last_obs = self._last_obs
        total_timesteps, callback = super()._setup_learn(total_timesteps, *args, **kwargs)  # type: ignore[misc]
        if self.contrastive is not None:
            # Size the feature buffer to the run (at most buffer_size): a short run does not
            # allocate the full 100k states.
            self.contrastive.reserve(total_timesteps - self.num_timesteps + self._extra_states())
        if self._last_obs is not last_obs:
            self._on_envs_reset()
        return total_timesteps, callback

    def _states_per_iteration(self, config: ContrastiveConfig) -> int:
        """States the feature buffer gains per training iteration (GazePPO: a rollout)."""
        raise NotImplementedError

    def _extra_states(self) -> int:
        """States that may enter the feature buffer besides one per env step to come."""
        return 0

    def _on_envs_reset(self) -> None:
        """learn() reset the envs: whatever was kept of the episodes in flight is stale."""

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
        self.contrastive = ContrastiveLearner(extractor, config, seed=seed,
                                              states_per_update=self._states_per_iteration(config) * config.update_every)
        self._gaze_lr_peak = schedule_peak(self.lr_schedule)  # the schedule is set by now

    @property
    def return_discount(self) -> float:
        discount = self.contrastive_kwargs.get("return_discount") if self.contrastive_kwargs else None
        return self.gamma if discount is None else discount

    @torch.no_grad()
    def _feature_maps(self, observations: np.ndarray | dict[str, np.ndarray], batch_size: int = 1024) -> torch.Tensor:
        """Detached feature maps of raw (vec-env) observations, computed in batches and
        preprocessed as the policy preprocesses them (its normalize_images included)."""
        extractor = self._gaze_extractor()
        image = extractor.image(observations)  # only the attended image is needed
        maps = []
        for start in range(0, len(image), batch_size):
            chunk = torch.as_tensor(image[start:start + batch_size], device=self.device)
            chunk = preprocess_obs(chunk, extractor.image(self.observation_space),
                                   normalize_images=self.policy.normalize_images)
            maps.append(extractor.backbone(chunk))
        return torch.cat(maps)

    def _gaze_learning_rate(self) -> float:
        """The gaze optimizer follows the shape of SB3's learning-rate schedule relative to its
        peak: its rate is `contrastive.learning_rate * lr(progress) / max_p lr(p)` (the peak is
        taken over the run, see schedule_peak), clipped to [0, contrastive.learning_rate]. A
        constant schedule gives the configured rate, a linear decay the configured rate times
        the progress remaining, a warm-up rises to the configured rate where the schedule peaks,
        a rising schedule reaches it at the end; a learning rate of 0 everywhere freezes the gaze
        head too."""
        assert self.contrastive is not None
        if self._gaze_lr_peak <= 0.0:
            return 0.0
        ratio = float(self.lr_schedule(self._current_progress_remaining)) / self._gaze_lr_peak
        return self.contrastive.config.learning_rate * min(1.0, max(0.0, ratio))

    def _add_labelled(self, feature_maps: torch.Tensor, labels: StateLabels) -> None:
        """Feature maps and their labels (one row per state) into the contrastive buffer; the
        episodes that ended with them get their success flag on every state the buffer holds
        (states of earlier rollouts included)."""
        assert self.contrastive is not None
        self.contrastive.add(feature_maps, torch.as_tensor(labels.to_go), torch.as_tensor(labels.episode),
                             torch.as_tensor(labels.step), torch.as_tensor(labels.episode_return),
                             torch.as_tensor(labels.success))
        ended, flags = labels.ended
        if len(ended):
            self.contrastive.buffer.set_episode_success(torch.as_tensor(ended), torch.as_tensor(flags))

    def _maybe_contrastive_update(self) -> None:
        """Counts one training iteration (a PPO rollout) and runs the update that is due, if any."""
        if self.contrastive is None:
            return
        self._iterations_since_update += 1
        self._run_due_update()

    def _run_due_update(self) -> None:
        """Runs one contrastive update once `update_every` training iterations have been
        counted since the last one, and logs its metrics."""
        if self.contrastive is None or self._iterations_since_update < self.contrastive.config.update_every:
            return
        self._iterations_since_update = 0
        lr = self._gaze_learning_rate()
        for group in self.contrastive.optimizer.param_groups:
            group["lr"] = lr
        self.logger.record("gaze/learning_rate", lr)
        for key, value in self.contrastive.update().items():
            self.logger.record(key, value)

    def save_sb3(self, path: str | Path) -> None:
        """Saves the model so that plain SB3 loads it (`PPO.load(path)` / `SAC.load(path)`): the
        networks as built (gaze_rl must be importable, the extractor is its class), without the
        contrastive projection and optimizer, which plain SB3 has no place for."""
        user, self.policy_kwargs = self.policy_kwargs, self._network_policy_kwargs()
        self._exporting = True
        try:
            self.save(path)
        finally:
            self.policy_kwargs, self._exporting = user, False

    def _contrastive_excluded(self) -> list[str]:
        return ["contrastive", "_exporting", "_gaze_lr_peak"]

    def _contrastive_state_dicts(self) -> list[str]:
        return ["contrastive.projection", "contrastive.optimizer"] if self.contrastive_kwargs and not self._exporting else []
