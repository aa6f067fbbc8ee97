"""Command-line configurations (tyro dataclasses): one docstring per field becomes `--help`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gaze_rl.contrastive.learner import ContrastiveConfig
from gaze_rl.envs.factory import ObsMode, SimBackend


@dataclass
class GazeOptions:
    """Shape of the Gaussian gaze (methods foveal and gaze)."""

    num_gaussians: int = 1
    """Gaussians in the gaze mixture (1 = the paper; more attend to several places at once)."""
    sigma_floor: float = 0.15
    """Smallest sigma, in grid units (the feature map spans [-1, 1])."""
    sigma_init: float = 0.8
    """Sigma of the initial, centred gaze."""
    normalize: Literal["peak", "sum"] = "peak"
    """Scale of the map: 'peak' = max 1 (features keep their size at the fovea); 'sum' = sums to 1."""

    def as_kwargs(self) -> dict:
        return dict(num_gaussians=self.num_gaussians, sigma_floor=self.sigma_floor,
                    sigma_init=self.sigma_init, normalize=self.normalize)


@dataclass
class TrainConfig:
    """Train a PPO or SAC agent from pixels on a ManiSkill3 task."""

    env_id: str = "PushT-v1"
    """ManiSkill3 task id (tested: PushT-v1, PokeCube-v1, PushCube-v1, PickCube-v1)."""
    algo: Literal["ppo", "sac"] = "ppo"
    """RL algorithm; hyperparameters come from experiments/<algo>.toml for the task."""
    method: Literal["baseline", "patch", "foveal", "gaze"] = "gaze"
    """baseline: plain CNN; patch: per-cell softmax attention; foveal: Gaussian gaze trained by RL; gaze: Gaussian gaze trained by return-guided contrastive learning (the paper)."""
    seed: int = 0
    """Seed of the envs, the networks and the contrastive sampler."""
    total_timesteps: int = 5_000
    """Env steps to train for (summed over envs)."""
    num_envs: int = 2
    """Parallel envs (CPU: one process each)."""
    image_size: int = 64
    """Camera resolution in pixels (square)."""
    obs_mode: ObsMode = "rgb+state"
    """'rgb' or 'rgb+state' (pixels plus proprioception, as ManiSkill's ppo_rgb)."""
    sim_backend: SimBackend = "auto"
    """'auto' = physx_cuda with CUDA, else physx_cpu."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device of the networks."""
    backbone: Literal["auto", "nature", "plain"] = "auto"
    """Image backbone; auto = NatureCNN for PPO, PlainConv for SAC (ManiSkill's choices)."""
    run_dir: Path | None = None
    """Where the run is written; default runs/<env>__<algo>__<method>__s<seed>__<time>."""
    overwrite: bool = False
    """Delete an existing, non-empty run directory instead of refusing to start."""
    resume: Path | None = None
    """Continue this run directory from its newest checkpoint (all other options come from its config.json)."""
    checkpoint_every: int = 10_000
    """Save a crash-safe checkpoint every N env steps (0 = only at the end)."""
    gaze_image_every: int = 2_000
    """Log gaze pictures to TensorBoard every N env steps (0 = never)."""
    control_mode: str | None = None
    """ManiSkill controller; None = the preset's (pd_joint_delta_pos)."""
    reward_scale: float | None = None
    """Reward multiplier seen by the learner; None = the preset's."""
    learning_rate: float | None = None
    """Override the preset's learning rate."""
    n_steps: int | None = None
    """PPO: override steps per env per rollout."""
    batch_size: int | None = None
    """Override the minibatch size (PPO) / batch size (SAC)."""
    learning_starts: int | None = None
    """SAC: override env steps before learning starts."""
    replay_buffer_size: int | None = None
    """SAC: override the replay buffer capacity (transitions)."""
    gaze: GazeOptions = field(default_factory=GazeOptions)
    """Gaussian gaze options."""
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    """Return-guided contrastive loss options (method gaze)."""
    progress_bar: bool = True
    """Show a progress bar."""
    verbose: int = 0
    """1 prints SB3's tables to stdout."""


@dataclass
class EvalConfig:
    """Evaluate a checkpoint: success rates and returns over episodes, optionally a video."""

    checkpoint: Path
    """A .zip written by gaze-rl train (its run directory's config.json rebuilds the env)."""
    episodes: int = 10
    """Episodes to run."""
    seed: int = 10_000
    """Seed of the first evaluation episode (held out from training seeds by default)."""
    deterministic: bool = True
    """Use the policy's mean action instead of sampling."""
    video: bool = False
    """Write an mp4 of the episodes with the gaze drawn on each frame."""
    variant: Literal["none", "clutter", "lighting"] | None = None
    """Evaluate on a visual robustness variant of the task (None = the variant trained on)."""
    out_dir: Path | None = None
    """Where results go; default <run>/eval/."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device."""


@dataclass
class BenchConfig:
    """Run a grid of training runs {env} x {method} x {algo} x {seed} and aggregate the curves."""

    out: Path = Path("bench")
    """Output directory: runs/, logs/, curves.csv, summary.csv, summary.md, plots/."""
    profile: Literal["cpu", "gpu"] = "cpu"
    """Budget and env settings from experiments/bench.toml."""
    envs: tuple[str, ...] = ("PushT-v1", "PokeCube-v1")
    """Tasks."""
    methods: tuple[Literal["baseline", "patch", "foveal", "gaze"], ...] = ("baseline", "gaze")
    """Methods (baseline is the reference of the efficiency ratio)."""
    algos: tuple[Literal["ppo", "sac"], ...] = ("ppo",)
    """Algorithms."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds."""
    total_timesteps: int | None = None
    """Override the profile's training budget."""
    workers: int = 1
    """Runs at a time, as local processes (each uses num_envs env processes)."""
    ray_address: str | None = None
    """Run on an existing Ray cluster at this address instead ('auto' = the local one); needs gaze_rl[ray]."""
    aggregate_only: bool = False
    """Skip training; only aggregate the runs already in out/runs."""


@dataclass
class ReferenceConfig:
    """Re-run the CI reference curves (results/reference/) and report points that moved."""

    regenerate: bool = False
    """Rewrite the reference curves instead of checking them."""
