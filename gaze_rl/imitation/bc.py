"""Behaviour cloning with an attention objective: the pieces `gaze-rl pretrain` (gaze_rl.commands.pretrain) runs.

The network is the policy `gaze-rl train` builds (`gaze_rl.build.build_model`, on a spaces-only
env), so its weights load into RL with `gaze-rl train --init-from RUN/checkpoints/final.pt`.

Per step: a batch of (observation, action) pairs from the demonstrations;
`loss = BC + lambda * objective`, where BC is the squared error of the policy's mean action
(`bc_loss="mse"`) or the negative log-likelihood of the demonstrated action under the policy's
Gaussian ("nll"; SAC: the tanh-squashed Gaussian) and the objective is gaze-KL, saliency-MSE or
none (gaze_rl.imitation.objectives). With method `gaze`, as in RL, the action loss stops at the
gaze map (`detach_attention`), so only the attention objective moves the gaze head; with
`foveal` both do. The evaluation runs held-out episodes in the RL env with segmentation on the
side (`evaluate_in_env`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecTransposeImage

from gaze_rl.build import build_model
from gaze_rl.configuration.commands import PretrainConfig, TrainConfig
from gaze_rl.configuration.presets import load_preset
from gaze_rl.contrastive.config import ContrastiveConfig
from gaze_rl.errors import ConfigError
from gaze_rl.imitation.demos import DemoSet
from gaze_rl.imitation.saliency import (
    HeatmapSaliency,
    OracleSaliency,
    SaliencySource,
    grid_distribution,
    temporal_aggregate,
)
from gaze_rl.runs.episodes import episode_stats, run_episodes
from gaze_rl.runs.visualize import overlay
from gaze_rl.segmentation.envs import make_segmented_env
from gaze_rl.segmentation.on_target import (
    AttentionOnTargetMeter,
)
from gaze_rl.segmentation.targets import coverage_grid

EVAL_COLUMNS = ("step", "success_once", "success_at_end", "return_mean", "length_mean", "attention_on_target",
                "attention_on_target_chance", "attention_on_target_lift", "bc_loss", "objective_loss", "wall_time")
LOG_EVERY = 50


class SpacesEnv(gym.Env):
    """An env that only has spaces: lets SB3 build the exact RL policy without starting ManiSkill."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def demo_spaces(demo_set: DemoSet) -> tuple[spaces.Dict, spaces.Box]:
    """The RL env's observation and action spaces, from the demonstrations."""
    demo = demo_set.demos[0]
    obs = {"rgb": spaces.Box(0, 255, demo.rgb.shape[1:], np.uint8)}
    if demo_set.include_state:
        obs["state"] = spaces.Box(-np.inf, np.inf, demo.state.shape[1:], np.float32)
    return spaces.Dict(obs), spaces.Box(demo_set.action_low, demo_set.action_high, dtype=np.float32)


def internal_train_config(cfg: PretrainConfig, demo_set: DemoSet) -> TrainConfig:
    """The TrainConfig whose policy is pretrained (what --init-from must match)."""
    return TrainConfig(
        env_id=demo_set.env_id, algo=cfg.algo, method=cfg.method, seed=cfg.seed, num_envs=1,
        image_size=demo_set.image_size, obs_mode="rgb+state" if demo_set.include_state else "rgb",
        device=cfg.device, backbone=cfg.backbone, control_mode=demo_set.control_mode, gaze=cfg.gaze,
        # Small buffers: the RL-only parts (replay buffer, contrastive buffer) are never used here.
        replay_buffer_size=64, learning_starts=0, contrastive=ContrastiveConfig(buffer_size=256),
        progress_bar=False,
    )


def build_policy_model(train_cfg: TrainConfig, demo_set: DemoSet, device: str):
    """GazePPO / GazeSAC built exactly as `gaze-rl train` builds it, on a spaces-only env."""
    observation_space, action_space = demo_spaces(demo_set)
    env = DummyVecEnv([lambda: SpacesEnv(observation_space, action_space)])
    return build_model(train_cfg, env, load_preset(train_cfg.algo, train_cfg.env_id), device)


def eval_horizon(cfg: PretrainConfig, demo_set: DemoSet) -> int:
    """Evaluation time limit: cfg.max_episode_steps, or 1.2 x the longest demonstration rounded up
    to 10 and at least the task's own limit (motion-planned demonstrations often exceed it)."""
    if cfg.max_episode_steps is not None:
        return cfg.max_episode_steps
    import mani_skill.envs  # noqa: F401  (registers the tasks)

    task_limit = gym.spec(demo_set.env_id).max_episode_steps or 0
    longest = max(len(d) for d in demo_set.demos)
    return max(task_limit, int(math.ceil(1.2 * longest / 10.0) * 10))


def saliency_source(cfg: PretrainConfig, demo_set: DemoSet) -> SaliencySource:
    opts = cfg.saliency
    if opts.source == "heatmaps":
        if opts.heatmaps is None:
            raise ConfigError("--saliency.source heatmaps needs --saliency.heatmaps FILE (.npz or .h5)")
        return HeatmapSaliency(opts.heatmaps, demo_set)
    return oracle_for(cfg, demo_set)


def oracle_for(cfg: PretrainConfig, demo_set: DemoSet) -> OracleSaliency:
    opts = cfg.saliency
    return OracleSaliency(demo_set.env_id, demo_set.segmentation_names, list(demo_set.demos[0].actor_positions),
                          actors=opts.actors, shape=opts.shape, sigma=opts.sigma, camera=opts.camera)


@dataclasses.dataclass
class DemoTensors:
    """The demonstrations as training tensors (one row per (observation, action) pair)."""

    rgb: torch.Tensor          # (N, C, H, W) uint8, channel-first as SB3 feeds the policy
    state: torch.Tensor | None  # (N, D) float32
    actions: torch.Tensor      # (N, A) float32, in the policy's action units
    saliency: torch.Tensor     # (N, H, W) float32 image-resolution saliency S in [0, 1]
    grid: torch.Tensor         # (N, h, w) float32 saliency distribution g (sums to 1)
    coverage: torch.Tensor | None  # (N, h, w) float32 target coverage per cell (attention-on-target)

    def __len__(self) -> int:
        return len(self.actions)

    def observations(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        obs = {"rgb": self.rgb[idx]}
        if self.state is not None:
            obs["state"] = self.state[idx]
        return obs


def demo_tensors(cfg: PretrainConfig, demo_set: DemoSet, grid_shape: tuple[int, int], model: Any,
                 source: SaliencySource, oracle: OracleSaliency | None, device: str) -> DemoTensors:
    """Builds the training tensors: frames 0..T-1 of every demonstration with their actions and
    saliency targets (temporal aggregation over the episode, then the grid distribution)."""
    h, w = grid_shape
    rgb, state, actions, saliency, masks = [], [], [], [], []
    for i, demo in enumerate(demo_set.demos):
        steps = len(demo)
        maps = temporal_aggregate(source.maps(i, demo), cfg.saliency.alpha, cfg.saliency.window)
        rgb.append(demo.rgb[:steps])
        state.append(demo.state[:steps])
        actions.append(demo.actions)
        saliency.append(maps[:steps])
        if oracle is not None:
            masks.append(oracle.demo_target_masks(demo)[:steps])
    saliency_np = np.concatenate(saliency)
    action_np = np.concatenate(actions)
    if cfg.algo == "sac":  # SAC's actor works in [-1, 1]; predict() unscales
        action_np = model.policy.scale_action(action_np)
    tensor = lambda x, dtype=torch.float32: torch.as_tensor(x, dtype=dtype, device=device)  # noqa: E731
    return DemoTensors(
        rgb=tensor(np.concatenate(rgb).transpose(0, 3, 1, 2), torch.uint8),
        state=tensor(np.concatenate(state)) if demo_set.include_state else None,
        actions=tensor(action_np),
        saliency=tensor(saliency_np),
        grid=tensor(grid_distribution(saliency_np, h, w, cfg.saliency.eps)),
        coverage=tensor(coverage_grid(np.concatenate(masks), h, w)) if masks else None,
    )


def bc_loss(model: Any, observations: dict[str, torch.Tensor], actions: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, squared error of the deterministic action) for a batch of raw tensor observations."""
    policy = model.policy
    if hasattr(policy, "get_distribution"):  # PPO: Gaussian over unbounded actions
        dist = policy.get_distribution(observations)
        mean = dist.distribution.mean
        mse = F.mse_loss(mean, actions)
        return (mse if kind == "mse" else -dist.log_prob(actions).mean()), mse
    actor = policy.actor  # SAC: tanh-squashed Gaussian
    mean_actions, log_std, kwargs = actor.get_action_dist_params(observations)
    mse = F.mse_loss(torch.tanh(mean_actions), actions)
    if kind == "mse":
        return mse, mse
    dist = actor.action_dist.proba_distribution(mean_actions, log_std, **kwargs)
    return -dist.log_prob(actions.clamp(-1 + 1e-6, 1 - 1e-6)).mean(), mse


def make_eval_env(demo_set: DemoSet, horizon: int, variant: str = "none") -> VecEnv:
    """The RL env (channel-first, as the policy sees it) with segmentation on the side."""
    include_state = demo_set.include_state
    return VecTransposeImage(DummyVecEnv([lambda: make_segmented_env(
        demo_set.env_id, image_size=demo_set.image_size, control_mode=demo_set.control_mode,
        include_state=include_state, ignore_terminations=True, max_episode_steps=horizon, variant=variant)]))


def evaluate_in_env(model: Any, env: VecEnv, episodes: int, seed: int,
                    meter: AttentionOnTargetMeter | None = None) -> dict[str, Any]:
    """Pretraining's evaluation: `episodes` deterministic episodes (episode i from reset(seed=seed + i))
    of a one-env segmented VecEnv; success rates, mean return and length, attention-on-target."""
    def observe(obs: Any, _step: int) -> None:
        if meter is not None:
            meter.observe(obs, env.get_attr("frame"))

    records = run_episodes(model, env, episodes, first_seed=seed, observe=observe)
    stats = episode_stats(records)
    summary = {"episodes": episodes,
               **{key: stats[key] for key in ("success_once", "success_at_end", "return_mean", "length_mean")},
               "per_episode": records}
    if meter is not None:
        summary.update(meter.summary())
    return summary


def picture_row(rgb: torch.Tensor, saliency: np.ndarray, attention, index: int) -> np.ndarray:
    """One row: the frame with the saliency target | with the policy's attention."""
    frame = rgb.permute(1, 2, 0).cpu().numpy()[..., :3]
    weights = attention.weights if attention.weights is not None else attention.grid
    params = attention.params
    left = overlay(frame, saliency, size=160)
    right = overlay(frame, weights[index].detach().cpu().numpy(),
                    None if params is None else params.mu[index].detach().cpu().numpy(),
                    None if params is None else params.sigma[index].detach().cpu().numpy(),
                    None if params is None else params.rho[index].detach().cpu().numpy(), size=160)
    gap = np.full((160, 4, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


class ZeroSaliency:
    """Saliency of plain BC on a task without target actors: all zeros (never used as a target)."""

    def maps(self, index: int, demo) -> np.ndarray:
        return np.zeros(demo.rgb.shape[:3], np.float32)
