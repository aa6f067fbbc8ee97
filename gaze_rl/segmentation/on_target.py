"""Attention-on-target: the fraction of the policy's attention mass that falls on the
task-relevant segmentation.

For one observation: `aot = sum_cells a_cell * coverage_cell`, with a the policy's attention
over feature-grid cells (summing to 1; `PolicyAttention`: the gaze / patch map, or the feature
softmax `energy_softmax` = `softmax_hw(sum_c |z_c| / beta)`, the baseline's energy map) and
coverage the fraction of each cell's pixels that belong to a task-relevant actor (a hidden goal
counts as a disc of radius sigma around its projection). Attention spread uniformly scores
`chance` = the fraction of the image covered by targets;
`lift` = aot / chance (1 = no better than uniform). With a 4x4 grid (64 px images) a cell is
16x16 px, so even attention on the right cell scores well below 1 for small objects: compare
methods by the same grid, and by lift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import Tensor

from gaze_rl.errors import ConfigError
from gaze_rl.nets.attention import GaussianGaze, GazeParams, NoAttention, OracleGaze
from gaze_rl.nets.extractor import GazeExtractor
from gaze_rl.segmentation.targets import TaskTargets, coverage_grid
from gaze_rl.segmentation.tracking import gaze_mean, policy_gaze_stats, tracking_stats

ATTENTION_MODES = ("auto", "map", "features")
_TINY = 1e-12


def energy_softmax(features: Tensor, beta: float) -> Tensor:
    """The attention of a policy without an attention map of its own (the baseline's): the softmax over
    cells of the feature energy, `softmax_hw(sum_c |z_c| / beta)`: (B, C, h, w) -> (B, h, w), each map
    sums to 1. Not gaze_rl.analysis.energy_share, each cell's linear share of a layer's energy."""
    energy = features.abs().sum(dim=1) / beta
    return torch.softmax(energy.flatten(1), dim=1).view_as(energy)


@dataclass
class PolicyAttention:
    """The policy's spatial attention for a batch of observations.

    :param grid: (B, h, w) attention over feature-grid cells, summing to 1.
    :param weights: (B, h, w) the attention module's own map (for pictures); None for "features".
    :param params: Gaussian gaze parameters (methods foveal / gaze), else None.
    """

    grid: Tensor
    weights: Tensor | None
    params: GazeParams | None


def has_attention_map(extractor: object) -> bool:
    """True when the policy's extractor has a spatial attention map of its own (patch, gaze)."""
    return isinstance(extractor, GazeExtractor) and not isinstance(extractor.attention, NoAttention)


def has_gaze_params(extractor: object) -> bool:
    """True when the policy's attention is a Gaussian gaze with a mean mu (methods foveal, gaze,
    gaze-shuffled, gaze-frozen; gaze-oracle, whose gaze the simulator places)."""
    return isinstance(extractor, GazeExtractor) and isinstance(extractor.attention, (GaussianGaze, OracleGaze))


def policy_attention(extractor: GazeExtractor, observations: dict[str, Tensor], mode: str, beta: float) -> PolicyAttention:
    """The policy's attention for preprocessed observations (`mode` "map" or "features")."""
    out = extractor.attend(observations)
    if mode == "map":
        weights = out.weights
        grid = weights / weights.flatten(1).sum(dim=1).clamp_min(_TINY)[:, None, None]
        return PolicyAttention(grid=grid, weights=weights, params=out.params)
    return PolicyAttention(grid=energy_softmax(out.features, beta),
                           weights=out.weights if has_attention_map(extractor) else None, params=out.params)



def attention_on_target(attention: np.ndarray | torch.Tensor, coverage: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-sample `sum a * coverage` for (B, h, w) attention (sum 1) and (B, h, w) coverage."""
    a = torch.as_tensor(attention, dtype=torch.float64)
    c = torch.as_tensor(coverage, dtype=torch.float64, device=a.device)
    return (a * c).flatten(1).sum(dim=1).cpu().numpy()


def policy_extractor(model: Any) -> Any:
    """The features extractor of an SB3 model's policy (PPO: policy's; SAC: the actor's)."""
    policy = model.policy if hasattr(model, "policy") else model
    extractor = getattr(policy, "features_extractor", None)
    if extractor is None and hasattr(policy, "actor"):
        extractor = policy.actor.features_extractor
    return extractor


def resolve_metric_mode(extractor: Any, mode: str) -> str:
    """"map" when the policy has an attention map (for "auto"), else "features"."""
    if mode not in ATTENTION_MODES:
        raise ConfigError(f"unknown attention mode {mode!r}; valid choices: {', '.join(ATTENTION_MODES)}")
    if not hasattr(extractor, "attend"):
        raise ConfigError(f"attention-on-target needs gaze_rl's GazeExtractor (got {type(extractor).__name__})")
    if mode == "auto":
        return "map" if has_attention_map(extractor) else "features"
    if mode == "map" and not has_attention_map(extractor):
        raise ConfigError("the baseline CNN has no attention map; use --attention features or auto")
    return mode


@torch.no_grad()
def policy_attention_on_target(model: Any, observations: dict[str, np.ndarray], masks: np.ndarray, mode: str,
                               beta: float = 50.0) -> np.ndarray:
    """Per-observation attention-on-target of an SB3 model's policy for raw vec-env observations
    and their (B, H, W) bool target masks; `mode` "map" or "features" (resolved)."""
    policy = model.policy
    obs_tensor, _ = policy.obs_to_tensor(observations)
    obs_tensor = preprocess_obs(obs_tensor, policy.observation_space, normalize_images=True)
    attention = policy_attention(policy_extractor(model), obs_tensor, mode, beta).grid
    return attention_on_target(attention, coverage_grid(masks, *attention.shape[-2:]))


@dataclass
class AttentionOnTargetMeter:
    """Accumulates attention-on-target over observations of a segmented env (gaze_rl.segmentation.envs).

    :param model: an SB3 model (GazePPO / GazeSAC / a pretrained policy's model).
    :param targets: finds the task-relevant pixels of each frame.
    :param mode: "auto", "map" or "features" (see objectives).
    :param beta: feature-softmax temperature for "features".
    """

    model: Any
    targets: TaskTargets
    mode: str = "auto"
    beta: float = 50.0
    values: list[float] = field(default_factory=list)
    chances: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.extractor = policy_extractor(self.model)
        self.mode = resolve_metric_mode(self.extractor, self.mode)

    def observe(self, observations: dict[str, np.ndarray], frames: list[Any]) -> np.ndarray:
        """Adds the attention-on-target of a batch of vec-env observations; `frames` are the
        envs' `frame` attributes (SegmentationTap) for those observations. Returns the values."""
        masks = np.stack([self.targets.frame_mask(frame) for frame in frames])
        values = policy_attention_on_target(self.model, observations, masks, self.mode, self.beta)
        self.values.extend(values.tolist())
        self.chances.extend(masks.mean(axis=(1, 2)).tolist())
        return values

    def summary(self) -> dict[str, Any]:
        """Mean attention-on-target, the uniform-attention chance level and their ratio."""
        if not self.values:
            return {}
        aot, chance = float(np.mean(self.values)), float(np.mean(self.chances))
        return {"attention_on_target": aot, "attention_on_target_chance": chance,
                "attention_on_target_lift": aot / chance if chance > 0 else float("nan"),
                "attention_mode": self.mode}


def segmented_eval_env(model: Any, spec: Any, actors: tuple[str, ...] | None = None, seed: int | None = None,
                       mode: str = "auto", beta: float = 50.0) -> tuple[Any, AttentionOnTargetMeter]:
    """`gaze-rl eval --attention-on-target`: the env of an EnvSpec (one CPU env, channel-first, the
    same observations as make_vec_env) with segmentation on the side, and a meter for `model`."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

    from gaze_rl.envs.task_objects import task_targets
    from gaze_rl.segmentation.envs import make_segmented_env, segmentation_names

    task_targets(spec.env_id, actors)  # raises before any env starts when the task has no defaults
    resolve_metric_mode(policy_extractor(model), mode)
    env = VecTransposeImage(DummyVecEnv([lambda: make_segmented_env(
        spec.env_id, image_size=spec.image_size, control_mode=spec.control_mode,
        include_state=spec.obs_mode == "rgb+state", ignore_terminations=spec.ignore_terminations,
        reward_scale=spec.reward_scale, env_kwargs={**spec.env_kwargs, **spec.variant_kwargs()}, variant=spec.variant,
        render_quality=getattr(spec, "render_quality", "auto"), privileged_state=getattr(spec, "privileged_state", False),
        gaze_targets=getattr(spec, "gaze_targets", False))]))
    try:
        base = env.get_attr("unwrapped")[0]
        targets = TaskTargets(spec.env_id, segmentation_names(base), list(base.scene.actors), actors=actors)
        meter = AttentionOnTargetMeter(model, targets, mode, beta)
    except BaseException:
        env.close()
        raise
    if seed is not None:
        env.seed(seed)
    return env, meter


@dataclass
class ProbeSet:
    """A fixed set of observations (as the policy sees them) with their task-relevant masks, so
    that attention-on-target measured during training compares the same frames over time.

    `targets` (n, 2): the image position (x, y) of the first task object (e.g. the cube) in each
    frame in grid units [-1, 1] (the centroid of its visible pixels, else its projected
    position; NaN where neither exists), for the gaze-tracking statistics; None: not recorded.
    """

    observations: dict[str, np.ndarray]  # (n, ...) each
    masks: np.ndarray  # (n, H, W) bool
    targets: np.ndarray | None = None  # (n, 2) grid units

    @property
    def chance(self) -> float:
        """Attention-on-target of uniform attention: the fraction of pixels on the targets."""
        return float(self.masks.mean())

    def measure(self, model: Any, mode: str = "auto", beta: float = 50.0) -> dict[str, float]:
        """Mean attention-on-target of `model`'s policy on the probe frames, its chance and lift."""
        mode = resolve_metric_mode(policy_extractor(model), mode)
        aot = float(policy_attention_on_target(model, self.observations, self.masks, mode, beta).mean())
        return {"attention_on_target": aot, "attention_on_target_chance": self.chance,
                "attention_on_target_lift": aot / self.chance if self.chance > 0 else float("nan")}

    @torch.no_grad()
    def track(self, model: Any) -> dict[str, float]:
        """Gaze tracking of `model`'s policy on the probe frames (gaze_rl.segmentation.tracking):
        slope and R^2 of the mixture-weighted gaze mean on the first object's position per axis,
        mean distance in cells (and that of the centred gaze), the gaze mean's spread over the
        frames and the mean sigma. Empty when the policy has no Gaussian gaze or the probe set
        holds no target positions."""
        extractor = policy_extractor(model)
        if self.targets is None or not has_gaze_params(extractor):
            return {}
        policy = model.policy
        obs_tensor, _ = policy.obs_to_tensor(self.observations)
        obs_tensor = preprocess_obs(obs_tensor, policy.observation_space, normalize_images=True)
        out = extractor.attend(obs_tensor)
        if out.params is None:
            return {}
        mu = gaze_mean(out.params.mu.cpu().numpy(), out.params.mix.cpu().numpy())
        return {**tracking_stats(mu, self.targets, tuple(out.weights.shape[-2:])),
                **policy_gaze_stats(mu, out.params.sigma.cpu().numpy())}


# Random-action steps (drawn from 0 .. this - 1) after each reset before an episode's first probe frame.
PROBE_WARMUP_STEPS = 8


def first_target_position(targets: TaskTargets, frame: Any) -> tuple[float, float]:
    """(x, y) in grid units [-1, 1] of the first task object of a SegmentationTap frame: the
    centroid of its visible pixels, else its projected position; (NaN, NaN) when neither exists."""
    camera = targets.camera or next(iter(frame.segmentation))
    segmentation = frame.segmentation[camera]
    height, width = segmentation.shape
    name = targets.resolver.targets[0]
    for found, x, y, _ in targets.resolver.centres(segmentation, frame.actor_positions, frame.intrinsic[camera],
                                                  frame.extrinsic[camera]):
        if found == name:
            return 2.0 * x / width - 1.0, 2.0 * y / height - 1.0
    return float("nan"), float("nan")


def collect_probe_set(model: Any, spec: Any, frames: int, seed: int, actors: tuple[str, ...] | None = None,
                      scenes: int | None = None) -> ProbeSet:
    """`frames` observations of the task of an EnvSpec under uniformly random actions, from a
    seeded segmented env (gaze_rl.segmentation.envs), with their target masks and the first
    task object's position.

    `scenes` None: consecutive frames of one env (an episode restarts at its time limit, so
    PushCube's 50 steps hold one object placement for up to 50 frames; the frames of earlier
    versions). `scenes` N: the frames are spread over N episodes (a reset, so new object
    placements, then 0 .. PROBE_WARMUP_STEPS - 1 random-action steps before the episode's first
    frame, then consecutive frames), which gaze tracking needs: the target must move across the
    frames.
    """
    if frames < 1:
        raise ConfigError(f"a probe set needs >= 1 frames (got {frames})")
    if scenes is not None and scenes < 1:
        raise ConfigError(f"a probe set needs >= 1 scenes (got {scenes})")
    per_scene = frames if scenes is None else -(-frames // scenes)
    env, meter = segmented_eval_env(model, spec, actors, seed=seed)
    rng = np.random.default_rng(seed)
    observations: list[dict[str, np.ndarray]] = []
    masks, targets = [], []
    try:
        space = env.action_space

        def random_step() -> Any:
            action = rng.uniform(space.low, space.high).astype(space.dtype)
            return env.step(action[None])[0]

        obs = env.reset()
        for i in range(frames):
            if scenes is not None and i % per_scene == 0:
                if i:
                    obs = env.reset()
                for _ in range(int(rng.integers(0, PROBE_WARMUP_STEPS))):
                    obs = random_step()
            frame = env.get_attr("frame")[0]
            observations.append({k: v[0].copy() for k, v in obs.items()})
            masks.append(meter.targets.frame_mask(frame))
            targets.append(first_target_position(meter.targets, frame))
            obs = random_step()
    finally:
        env.close()
    return ProbeSet({k: np.stack([o[k] for o in observations]) for k in observations[0]}, np.stack(masks),
                    np.asarray(targets, dtype=np.float64))
