"""Command-line configurations (tyro dataclasses): one docstring per field becomes `--help`.

Each config checks its own fields in `check()` (gaze_rl.validation.Validated: on construction,
and by the CLI after parsing) and raises gaze_rl.errors.ConfigError;
what needs the machine, the task registry or files (env ids, image sizes of a backbone,
checkpoints) is checked by the command before anything starts. Only light modules are
imported here, so that the CLI parses without loading torch, SB3 or ManiSkill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gaze_rl.configuration.methods import BenchArm, MethodName, method_spec
from gaze_rl.contrastive.config import ContrastiveConfig
from gaze_rl.envs.spec import ObsMode, RenderQuality, SimBackend, Variant, check_distract_strength
from gaze_rl.errors import ConfigError
from gaze_rl.nets.gaze_shape import check_gaze_shape
from gaze_rl.validation import Validated, at_least


def check_distract_option(strength: float | None, variant: str | None) -> None:
    """--distract-strength: in [0, 1], and only with --variant distract (or, for eval, no --variant: the trained one)."""
    if strength is None:
        return
    check_distract_strength(strength)
    if variant not in ("distract", None):
        raise ConfigError(f"--distract-strength is the strength of variant distract; add --variant distract "
                          f"(got --variant {variant}) or drop --distract-strength")


@dataclass
class GazeOptions(Validated):
    """Shape of the gaze map (methods foveal, gaze and its controls; residual and sigma floor also gaze-oracle)."""

    num_gaussians: int = 1
    """Gaussians in the gaze mixture (1 = the paper; more attend to several places at once)."""
    sigma_floor: float = 0.15
    """Smallest sigma, in grid units (the feature map spans [-1, 1])."""
    sigma_floor_cells: float | None = None
    """Smallest sigma in cells of the feature grid instead (0.5 = half a cell: 0.25 on a 4x4 map, 0.04 on 25x25), so the floor scales with the grid; None = --gaze.sigma-floor (the oracle gaze: half a cell)."""
    sigma_init: float = 0.8
    """Sigma of the initial, centred gaze."""
    normalize: Literal["peak", "sum"] = "peak"
    """Scale of the map: 'peak' = max 1 (features keep their size at the fovea); 'sum' = sums to 1."""
    residual: bool = False
    """Re-weight the features by 1 + map instead of the map: the fovea adds emphasis and the periphery is kept (the paper: map only)."""

    def check(self) -> None:
        check_gaze_shape(self.num_gaussians, self.sigma_floor, self.sigma_init, normalize=self.normalize)
        if self.sigma_floor_cells is not None and self.sigma_floor_cells <= 0:
            raise ConfigError(f"--gaze.sigma-floor-cells must be > 0 (got {self.sigma_floor_cells}); e.g. 0.5 = half a cell")

    def as_kwargs(self) -> dict:
        return dict(num_gaussians=self.num_gaussians, sigma_floor=self.sigma_floor,
                    sigma_init=self.sigma_init, normalize=self.normalize)

    def floor_on(self, grid_side: int) -> float | None:
        """The sigma floor on a feature grid of `grid_side` cells (the smaller side); None = the module's default."""
        return None if self.sigma_floor_cells is None else 2.0 * self.sigma_floor_cells / grid_side

    def attention_kwargs(self, kind: str, grid_side: int) -> dict:
        """Keyword arguments of the attention module of `kind` on a grid of `grid_side` cells."""
        floor = self.floor_on(grid_side)
        if kind == "gaussian":
            kwargs = self.as_kwargs()
            if floor is not None:
                kwargs["sigma_floor"] = floor
                check_gaze_shape(self.num_gaussians, floor, self.sigma_init, normalize=self.normalize)
            return {**kwargs, "residual": self.residual}
        if kind == "oracle":
            return {"sigma_floor": floor, "normalize": self.normalize, "residual": self.residual}
        if kind == "patch":
            return {"residual": self.residual}
        return {}


@dataclass
class TrainConfig(Validated):
    """Train a PPO or SAC agent from pixels on a ManiSkill3 task."""

    env_id: str = "PushT-v1"
    """ManiSkill3 task id (tested: PushT-v1, PokeCube-v1, PushCube-v1, PickCube-v1)."""
    algo: Literal["ppo", "sac"] = "ppo"
    """RL algorithm; hyperparameters come from experiments/<algo>.toml for the task."""
    method: MethodName = "gaze"
    """baseline: plain CNN; patch: per-cell softmax attention; foveal: Gaussian gaze trained by RL; gaze: Gaussian gaze trained by return-guided contrastive learning (the paper); controls gaze-shuffled (return labels permuted) and gaze-frozen (gaze fixed at its initial vignette). The table: gaze_rl/configuration/methods.py."""
    seed: int = 0
    """Seed of the envs, the networks and the contrastive sampler."""
    total_timesteps: int | None = None
    """Env steps to train for (summed over envs); None = 5000. With --resume: extend the run to this many steps."""
    num_envs: int = 2
    """Parallel envs (CPU: one process each)."""
    image_size: int = 64
    """Camera resolution in pixels (square)."""
    obs_mode: ObsMode = "rgb+state"
    """'rgb' or 'rgb+state' (pixels plus proprioception, as ManiSkill's ppo_rgb)."""
    sim_backend: SimBackend = "auto"
    """'auto' = physx_cuda with CUDA, else physx_cpu."""
    variant: Variant = "none"
    """Train on a visual variant of the task: 'clutter' (random visual distractors), 'lighting' (random lights) or 'distract' (per-episode colours, lights, look-alike and moving objects; see --distract-strength)."""
    distract_strength: float | None = None
    """Strength of --variant distract in [0, 1] (0 = the normal task's frames, 1 = 8 distractors, all moving, fully random colours); None = the default, gaze_rl.envs.spec.DISTRACT_STRENGTH (provisional until calibrated)."""
    render_quality: RenderQuality = "auto"
    """'fast': level-of-detail meshes + a cheap vertex shader (~4-6x less CPU per step, real frames); 'full': stock ManiSkill; 'auto': fast on the CPU renderer, full on a GPU."""
    augment: Literal["none", "shift"] = "none"
    """Image augmentation of the RL update, for every method: 'shift' = DrQ/RAD random shift (pad 4 px, random crop back); the policy still acts on the true frame."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device of the networks."""
    torch_threads: int | None = 1
    """CPU threads of torch in the trainer (1: these small networks on batches of a few images run several times faster than with 2 threads beside the env processes on a 2-core CPU); None = torch's default."""
    backbone: Literal["auto", "nature", "plain", "drq"] = "auto"
    """Image backbone; auto = NatureCNN for PPO, PlainConv for SAC (ManiSkill's choices); drq = DrQ-v2's encoder (a 25x25 map at 64 px, room for a fovea)."""
    run_dir: Path | None = None
    """Where the run is written; default runs/<env>__<algo>__<method>__s<seed>__<time>."""
    overwrite: bool = False
    """Delete an existing, non-empty run directory instead of refusing to start."""
    resume: Path | None = None
    """Continue this run directory from its newest checkpoint (all other options come from its config.json)."""
    init_from: Path | None = None
    """Start the policy from a pretrained one (RUN/checkpoints/final.pt of gaze-rl pretrain); its algo, method's attention, backbone, image size, obs and control mode must match."""
    checkpoint_every: int = 10_000
    """Save a crash-safe checkpoint every N env steps (0 = only at the end); the run's end and Ctrl-C save one too."""
    keep_checkpoints: int = 0
    """Keep only the newest N step checkpoints (0 = all); final.zip is always kept."""
    gaze_image_every: int = 2_000
    """Log gaze pictures to TensorBoard every N env steps (0 = never)."""
    on_target_every: int = 5_000
    """Log the policy's attention-on-target (TensorBoard gaze/attention_on_target, with its chance level) on a fixed probe set of frames at the start and every N env steps (0 = never; tasks with default target actors only)."""
    on_target_frames: int = 32
    """Frames in the attention-on-target probe set (random actions, a segmented copy of the env)."""
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
    prune_top_k: int | None = None
    """Keep only the K highest-ranked cells of the last feature map for the policy head (DeepVision-VLA's pruning); None = all cells."""
    prune_source: Literal["attention", "shallow"] = "attention"
    """Ranking of --prune-top-k: the gaze / patch map (baseline: shallow), or the first conv layer's activation energy."""
    multi_level: bool = False
    """Fuse every conv layer, pooled to the last grid and attended, into the policy head's input (DeepVision-VLA's multi-level features)."""
    progress_bar: bool = True
    """Show progress: a bar on a terminal, else a line every 30 s (step, return, success, speed, time left)."""
    verbose: int = 0
    """1 prints SB3's tables to stdout."""

    def check(self) -> None:
        check_distract_option(self.distract_strength, self.variant)
        at_least(1, total_timesteps=self.total_timesteps, torch_threads=self.torch_threads,
                 on_target_frames=self.on_target_frames,
                 n_steps=self.n_steps if self.algo == "ppo" else None)
        at_least(0, keep_checkpoints=self.keep_checkpoints, on_target_every=self.on_target_every)
        spec = method_spec(self.method)
        if spec.gaze_targets and self.augment != "none":
            raise ConfigError("--method gaze-oracle places its gaze from the simulator's view of the true frame; a "
                              "shifted frame would move the objects away from it: use --augment none with the oracle")
        if self.contrastive.shuffle_labels and not spec.shuffled_returns:
            raise ConfigError("--contrastive.shuffle-labels is the gaze-shuffled control; use --method gaze-shuffled "
                              "(so that the run is named after it)")


@dataclass
class EvalConfig(Validated):
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
    variant: Variant | None = None
    """Evaluate on a visual robustness variant of the task (None = the variant trained on)."""
    distract_strength: float | None = None
    """Strength of the distract variant in [0, 1], when evaluating on it (None = the strength trained on, else the default)."""
    attention_on_target: bool = False
    """Also measure the fraction of the policy's attention on the task-relevant actors (renders segmentation)."""
    target_actors: tuple[str, ...] | None = None
    """Task-relevant actors for --attention-on-target; None = the task's defaults (gaze_rl.segmentation.targets)."""
    out_dir: Path | None = None
    """Where results go; default <run>/eval/."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device."""
    torch_threads: int | None = 1
    """CPU threads of torch (1, as in training: a batch of one image runs several times slower with 2 threads beside the renderer's on a 2-core CPU); None = torch's default."""
    overwrite: bool = False
    """Replace results of an earlier evaluation with the same checkpoint, seed and variant."""

    def check(self) -> None:
        at_least(1, episodes=self.episodes, torch_threads=self.torch_threads)
        check_distract_option(self.distract_strength, self.variant)


@dataclass
class AnalyzeConfig(Validated):
    """Layer-wise grounding analysis of a checkpoint (DeepVision-VLA): per conv layer, the attention-on-target of its activation energy and the action's sensitivity to zeroing the task-relevant region there."""

    checkpoint: Path
    """A .zip written by gaze-rl train (its run directory's config.json rebuilds the env)."""
    episodes: int = 2
    """Episodes of the deterministic policy whose observations are analysed."""
    seed: int = 10_000
    """Seed of the first episode (held out from training seeds by default)."""
    every: int = 1
    """Analyse every N-th step of the episodes (1 = every step)."""
    target_actors: tuple[str, ...] | None = None
    """Task-relevant actors; None = the task's defaults (gaze_rl.segmentation.targets)."""
    cover_threshold: float = 0.5
    """A layer's cell is in the task-relevant region when targets cover at least this fraction of it."""
    control_draws: int = 4
    """Random regions of equal area drawn per frame and layer for the control."""
    compare: tuple[Path, ...] = ()
    """Analysis JSONs of other policies to draw in the same plot (e.g. baseline next to gaze)."""
    label: str | None = None
    """Name of this policy in the plot; None = <method>, plus its pruning / multi-level options."""
    out_dir: Path | None = None
    """Where results go; default <run>/analysis/."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device."""

    def check(self) -> None:
        at_least(1, episodes=self.episodes, every=self.every, control_draws=self.control_draws)
        if not 0.0 < self.cover_threshold <= 1.0:
            raise ConfigError(f"cover_threshold must be in (0, 1] (got {self.cover_threshold})")


@dataclass
class BenchConfig(Validated):
    """Run a grid of training runs {env} x {method} x {algo} x {seed} and aggregate the curves."""

    out: Path = Path("bench")
    """Output directory: runs/, logs/, curves.csv, summary.csv, summary.md, plots/."""
    profile: Literal["cpu", "cpu-learn", "cpu-fovea", "gpu"] = "cpu"
    """Budget and env settings from experiments/bench.toml ('cpu-learn': the CPU protocol where the baseline learns, results/protocol/; 'cpu-fovea': the same with DrQ-v2's 25x25 map, a fovea with room, results/headroom/)."""
    envs: tuple[str, ...] = ("PushT-v1", "PokeCube-v1")
    """Tasks."""
    methods: tuple[BenchArm, ...] = ("baseline", "gaze")
    """Methods, each optionally with an image augmentation ("gaze+shift" = --method gaze --augment shift); baseline is the reference of the efficiency ratio."""
    algos: tuple[Literal["ppo", "sac"], ...] = ("ppo",)
    """Algorithms."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds."""
    total_timesteps: int | None = None
    """Override the profile's training budget."""
    num_envs: int | None = None
    """Override the profile's envs per run (CPU: one process each)."""
    variant: Variant = "none"
    """Train every run on this visual variant of its task ('clutter': random distractor cubes; 'lighting': random lights; 'distract': see --distract-strength); use its own --out."""
    distract_strength: float | None = None
    """Strength of --variant distract in [0, 1] for every run; None = the default (gaze_rl.envs.spec.DISTRACT_STRENGTH)."""
    torch_threads: int = 1
    """CPU threads of each run's torch: the same on every machine and runner, so a run's curve does not depend on where it ran (1 is also the fastest for these small networks on a busy CPU)."""
    workers: int = 1
    """Runs at a time, as local processes (each uses num_envs env processes)."""
    ray_address: str | None = None
    """Run on a Ray cluster at this address instead ('auto' = the one this machine belongs to); needs gaze_rl[ray]. Results come back to --out through Ray: no shared filesystem needed."""
    ray_num_cpus: float | None = None
    """CPUs Ray reserves for each run; None = its env processes + 1 for the learner (physx_cuda: 1)."""
    ray_num_gpus: float | None = None
    """GPUs Ray reserves for each run; None = 1 with the profile's physx_cuda simulation, else 0."""
    ray_max_retries: int = 2
    """Times a run is restarted after its Ray worker or node died (or its process was killed)."""
    aggregate_only: bool = False
    """Skip training; only aggregate the runs already in out/runs."""
    curves_from: Path | None = None
    """Aggregate the curves in this folder instead of out/runs (skips training): `<run>.csv` and `<run>.on_target.csv` per run, as results/grid/*/curves/ holds them, so a committed grid re-aggregates without its checkpoints; the summary and plots go to --out."""

    def check(self) -> None:
        check_distract_option(self.distract_strength, self.variant)
        for name in ("workers", "torch_threads", "num_envs", "total_timesteps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1 (got {value})")
        if self.ray_address and self.workers != 1:
            raise ConfigError("--workers is for local runs; on Ray the cluster's free resources decide how many run "
                              "at once")
        if (self.ray_num_cpus is not None or self.ray_num_gpus is not None) and not self.ray_address:
            raise ConfigError("--ray-num-cpus and --ray-num-gpus only apply with --ray-address")
        if self.ray_num_cpus is not None and self.ray_num_cpus <= 0:
            raise ConfigError(f"ray-num-cpus must be > 0 (got {self.ray_num_cpus})")
        if self.ray_num_gpus is not None and self.ray_num_gpus < 0:
            raise ConfigError(f"ray-num-gpus must be >= 0 (got {self.ray_num_gpus})")
        if self.ray_max_retries < 0:
            raise ConfigError(f"ray-max-retries must be >= 0 (got {self.ray_max_retries})")
        if self.curves_from is not None and not self.curves_from.is_dir():
            raise ConfigError(f"--curves-from {self.curves_from} is not a folder: give one holding <run>.csv curves, "
                              "e.g. results/grid/pushcube/curves")


@dataclass
class ReferenceConfig(Validated):
    """Re-run the CI reference curves (results/reference/) and report points that moved."""

    regenerate: bool = False
    """Rewrite the reference curves instead of checking them."""


@dataclass
class DemosConfig(Validated):
    """Generate demonstrations with ManiSkill3's motion planners (or convert a ManiSkill trajectory file), rendered with rgb, state and segmentation."""

    env_id: str | None = None
    """Task (one with a ManiSkill motion-planning solution: PushCube-v1, PickCube-v1, StackCube-v1, PullCube-v1, ...); with --from-h5, taken from the file."""
    num: int | None = None
    """Successful demonstrations to write; None = 10 when generating, every episode with --from-h5."""
    out: Path | None = None
    """Output directory (demos.h5, meta.json, raw/); default demos/<env>__<size>px__<control mode>."""
    from_h5: Path | None = None
    """Convert this ManiSkill trajectory .h5 (with its .json beside it) instead of generating."""
    image_size: int = 64
    """Camera resolution in pixels (square); must match the RL runs that use the demonstrations."""
    control_mode: str = "pd_joint_delta_pos"
    """Control mode the actions are converted to (the RL preset's); 'source' keeps the demonstrations' own."""
    include_state: bool = True
    """Record the flattened state vector beside the images (obs mode rgb+state)."""
    seed: int = 0
    """First env seed tried; seeds whose plan fails are skipped (and counted)."""
    max_attempts: int | None = None
    """Seeds tried at most; None = 2 * num + 10."""
    overwrite: bool = False
    """Replace an existing, non-empty output directory."""
    progress_bar: bool = True
    """Show a progress bar."""

    def check(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16 pixels (got {self.image_size}); 64 or 128 are usual")
        at_least(1, num=self.num)
        if self.from_h5 is None and self.env_id is None:
            raise ConfigError("pass --env-id (the task to generate demonstrations for) or --from-h5 FILE.h5")


@dataclass
class SaliencyOptions(Validated):
    """Where the demonstrator looked: the targets of the attention objectives."""

    source: Literal["oracle", "heatmaps"] = "oracle"
    """'oracle': the task-relevant actors from segmentation; 'heatmaps': your own per-frame maps (--saliency.heatmaps)."""
    actors: tuple[str, ...] | None = None
    """Task-relevant actors (segmentation / scene names); None = the task's defaults."""
    shape: Literal["gaussian", "mask"] = "gaussian"
    """Oracle maps: a Gaussian blob at each actor's centre (AutoFocus-IL) or its blurred mask."""
    sigma: float = 0.06
    """Blob sigma / mask blur as a fraction of the image side."""
    camera: str | None = None
    """Camera the saliency comes from; None = the first."""
    heatmaps: Path | None = None
    """An .npz or .h5 with one (frames, H, W) array per demonstration named traj_<i> (source heatmaps)."""
    alpha: float = 0.7
    """Temporal aggregation S_t = sum_k alpha^k S_(t-k) (AutoFocus-IL: 0.7; 0 = per frame)."""
    window: int | None = None
    """Frames summed by the temporal aggregation; None = the episode so far."""
    eps: float = 0.01
    """Smoothing of the grid distribution g: (g + eps / cells) / (1 + eps), so no cell is 0."""


@dataclass
class PretrainConfig(Validated):
    """Behaviour cloning from demonstrations with a gaze-KL or saliency-MSE attention objective; the policy is the one gaze-rl train builds."""

    demos: Path
    """Demonstrations written by gaze-rl demos (the directory or its demos.h5)."""
    env_id: str | None = None
    """Task; None = the demonstrations' (given, it must match them)."""
    objective: Literal["none", "gaze-kl", "saliency-mse"] = "gaze-kl"
    """none: plain BC; gaze-kl: lambda KL(g || a) (gaze-regularised VLAs); saliency-mse: lambda MSE(g(z), S) (AutoFocus-IL)."""
    weight: float | None = None
    """lambda; None = the published default (gaze-kl 0.01, saliency-mse 10)."""
    attention: Literal["auto", "map", "features"] = "auto"
    """Policy attention the objective compares: map (gaze / patch map), features (softmax of sum_c |z_c| / beta), auto (gaze-kl: map if any; saliency-mse: features)."""
    beta: float = 50.0
    """Temperature of the feature softmax (AutoFocus-IL: 50)."""
    bc_loss: Literal["mse", "nll"] = "mse"
    """mse: squared error of the mean action; nll: negative log-likelihood of the policy's Gaussian."""
    algo: Literal["ppo", "sac"] = "ppo"
    """Whose policy is pretrained (the RL algorithm that will fine-tune it)."""
    method: MethodName = "gaze"
    """Policy architecture, as in gaze-rl train (gaze: the action loss stops at the gaze map, so only the objective moves the gaze)."""
    backbone: Literal["auto", "nature", "plain", "drq"] = "auto"
    """Image backbone; auto = NatureCNN for PPO, PlainConv for SAC; drq = DrQ-v2's encoder."""
    gaze: GazeOptions = field(default_factory=GazeOptions)
    """Gaussian gaze options (methods foveal and gaze)."""
    saliency: SaliencyOptions = field(default_factory=SaliencyOptions)
    """Saliency targets."""
    steps: int = 2_000
    """Gradient steps."""
    batch_size: int = 128
    """(observation, action) pairs per step."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    eval_every: int = 500
    """Evaluate in the env every N steps (and at the end; 0 = only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (0 = no env evaluation)."""
    eval_seed: int = 10_000
    """Seed of the first evaluation episode (episode i uses eval_seed + i; demonstrations use small seeds)."""
    max_episode_steps: int | None = None
    """Evaluation horizon; None = 1.2 x the longest demonstration, rounded up to 10, at least the task's limit."""
    image_every: int = 500
    """Log saliency | attention pictures to TensorBoard every N steps (0 = never)."""
    seed: int = 0
    """Seed of the network initialisation and the batch sampling."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device."""
    torch_threads: int | None = 1
    """CPU threads of torch (1 is ~10x faster than 2 for these small networks on a shared 2-core CPU); None = torch's default."""
    run_dir: Path | None = None
    """Where the run is written; default runs/pretrain__<env>__<method>__<objective>__s<seed>__<time>."""
    overwrite: bool = False
    """Delete an existing, non-empty run directory instead of refusing to start."""
    progress_bar: bool = True
    """Show a progress bar."""

    def check(self) -> None:
        at_least(1, steps=self.steps, batch_size=self.batch_size, torch_threads=self.torch_threads,
                 max_episode_steps=self.max_episode_steps)
        at_least(0, eval_every=self.eval_every, eval_episodes=self.eval_episodes, image_every=self.image_every)
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.objective != "none" and self.attention == "map" and method_spec(self.method).attention == "none":
            raise ConfigError(
                f"--attention map needs a policy with an attention map, but --method {self.method} has none: use "
                "--method patch, foveal or gaze, or --attention features / auto"
            )
