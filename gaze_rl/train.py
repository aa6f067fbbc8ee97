"""`gaze-rl train`: build the env, the agent and the run directory from a TrainConfig; learn."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from gaze_rl.algos import GazePPO, GazeSAC
from gaze_rl.checkpoints import AtomicCheckpoint, latest_checkpoint, load_model, load_state, restore_rng_state
from gaze_rl.config import GazeOptions, TrainConfig
from gaze_rl.contrastive.learner import ContrastiveConfig
from gaze_rl.envs.factory import EnvSpec, check_spec, make_vec_env
from gaze_rl.methods import method_spec
from gaze_rl.nets.attention import GaussianGaze
from gaze_rl.nets.encoders import checked_map_shape, make_backbone
from gaze_rl.nets.extractor import gaze_policy_kwargs
from gaze_rl.nets.pruning import check_top_k
from gaze_rl.presets import Preset, load_preset, sb3_algo_kwargs
from gaze_rl.runlog import (
    AttentionOnTargetProbe, CurveLogger, GazeImageLogger, NonFiniteGuard, ProgressReport, make_logger, plot_curve,
    prepare_run_dir, truncate_after_step, truncate_curve, write_json,
)
from gaze_rl.segmentation.on_target import collect_probe_set
from gaze_rl.segmentation.targets import TASK_TARGETS

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": GazePPO, "sac": GazeSAC}
DEFAULT_TOTAL_TIMESTEPS = 5_000


class TrainingInterrupted(Exception):
    """Ctrl-C ended a run; its message says what was saved and how to continue."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return device


def backbone_for(cfg: TrainConfig) -> str:
    """The backbone a config builds: 'auto' = NatureCNN for PPO, PlainConv for SAC (ManiSkill's)."""
    return cfg.backbone if cfg.backbone != "auto" else ("nature" if cfg.algo == "ppo" else "plain")


def env_spec_for(cfg: TrainConfig, preset: Preset) -> EnvSpec:
    """The preset's env settings, overridden by what the user gave on the command line."""
    env = dict(preset.env)
    if cfg.control_mode is not None:
        env["control_mode"] = cfg.control_mode
    if cfg.reward_scale is not None:
        env["reward_scale"] = cfg.reward_scale
    return EnvSpec(env_id=cfg.env_id, num_envs=cfg.num_envs, image_size=cfg.image_size,
                   obs_mode=cfg.obs_mode, sim_backend=cfg.sim_backend, variant=cfg.variant,
                   render_quality=cfg.render_quality, **env)


def algo_kwargs_for(cfg: TrainConfig, preset: Preset) -> dict[str, Any]:
    """SB3 constructor arguments: preset, then command-line overrides."""
    overrides = {"learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size}
    if cfg.algo == "ppo":
        overrides["n_steps"] = cfg.n_steps
    else:
        overrides.update(learning_starts=cfg.learning_starts, buffer_size=cfg.replay_buffer_size)
    preset_algo = {**preset.algo, **{k: v for k, v in overrides.items() if v is not None}}
    return sb3_algo_kwargs(cfg.algo, preset_algo, cfg.num_envs)


def validate(cfg: TrainConfig) -> None:
    """Checks everything that can be checked before any env process starts."""
    if cfg.total_timesteps is not None and cfg.total_timesteps < 1:
        raise ValueError(f"total_timesteps must be >= 1 (got {cfg.total_timesteps})")
    if cfg.keep_checkpoints < 0:
        raise ValueError(f"keep_checkpoints must be >= 0 (got {cfg.keep_checkpoints})")
    if cfg.torch_threads is not None and cfg.torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, or None for torch's default (got {cfg.torch_threads})")
    if cfg.on_target_every < 0 or cfg.on_target_frames < 1:
        raise ValueError(f"on_target_every must be >= 0 and on_target_frames >= 1 (got {cfg.on_target_every}, "
                         f"{cfg.on_target_frames})")
    if cfg.algo == "ppo" and cfg.n_steps is not None and cfg.n_steps < 1:
        raise ValueError(f"n_steps must be >= 1 (got {cfg.n_steps})")
    if cfg.contrastive.shuffle_labels and not method_spec(cfg.method).shuffled_returns:
        raise ValueError("--contrastive.shuffle-labels is the gaze-shuffled control; use --method gaze-shuffled "
                         "(so that the run is named after it)")
    if method_spec(cfg.method).attention == "gaussian":
        GaussianGaze(1, 2, 2, **cfg.gaze.as_kwargs())  # raises on bad gaze options
    resolve_device(cfg.device)
    check_spec(env_spec_for(cfg, load_preset(cfg.algo, cfg.env_id)))
    check_image_size(cfg)
    if cfg.prune_top_k is not None:
        check_prune_top_k(cfg)
    if cfg.init_from is not None:
        from gaze_rl.imitation.checkpoint import check_init_from

        check_init_from(cfg.init_from, cfg)  # raises naming every architecture difference


def check_image_size(cfg: TrainConfig) -> tuple[int, int]:
    """The (h, w) of the backbone's last map at --image-size; raises, naming the sizes that work,
    where the images are too small for the backbone (and its attention)."""
    backbone, size = backbone_for(cfg), cfg.image_size
    min_side = 1 if cfg.method == "baseline" else 2
    try:
        _, h, w = checked_map_shape(make_backbone(backbone, 3, size), backbone, 3, size, size, min_side)
    except ValueError as err:
        raise ValueError(f"--image-size {size}: {err}") from None
    return h, w


def check_prune_top_k(cfg: TrainConfig) -> None:
    """Raises unless 1 <= prune_top_k <= the cells of the backbone's last map at this image size."""
    check_top_k(cfg.prune_top_k, *check_image_size(cfg))


def build_model(cfg: TrainConfig, env: VecEnv, preset: Preset, device: str) -> BaseAlgorithm:
    """GazePPO / GazeSAC for the method: the contrastive loss only where the method table says so."""
    spec = method_spec(cfg.method)
    backbone = backbone_for(cfg)
    attention_kwargs = cfg.gaze.as_kwargs() if spec.attention == "gaussian" else {}
    options = {} if cfg.prune_top_k is None and not cfg.multi_level else dict(
        prune_top_k=cfg.prune_top_k, prune_source=cfg.prune_source, multi_level=cfg.multi_level)
    if cfg.augment != "none":
        options["augment"] = cfg.augment
    policy_kwargs = {**preset.policy, **gaze_policy_kwargs(cfg.method, backbone, attention_kwargs, **options)}
    contrastive = None
    if spec.contrastive:
        contrastive = dataclasses.replace(cfg.contrastive, shuffle_labels=spec.shuffled_returns)
    algo_class = ALGO_CLASSES[cfg.algo]
    model = algo_class("MultiInputPolicy", env, contrastive=contrastive, policy_kwargs=policy_kwargs,
                       seed=cfg.seed, device=device, verbose=cfg.verbose, **algo_kwargs_for(cfg, preset))
    if cfg.init_from is not None:  # a policy pretrained by gaze-rl pretrain
        from gaze_rl.imitation.checkpoint import init_from_pretrained

        init_from_pretrained(model, cfg.init_from, cfg)
    return model


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id}__{cfg.algo}__{cfg.method}__s{cfg.seed}__{stamp}"


def machine_info() -> dict[str, Any]:
    import os

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def use_torch_threads(threads: int | None) -> None:
    """Sets torch's CPU thread count for this process (None keeps torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def train(cfg: TrainConfig) -> Path:
    """Runs one training run (or resumes one, with `cfg.resume`) and returns its directory."""
    if cfg.resume is not None:
        return resume(cfg.resume, cfg.total_timesteps)
    if cfg.total_timesteps is None:
        cfg = dataclasses.replace(cfg, total_timesteps=DEFAULT_TOTAL_TIMESTEPS)
    validate(cfg)
    use_torch_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg.run_dir or default_run_dir(cfg), cfg.overwrite)
    preset = load_preset(cfg.algo, cfg.env_id)
    spec = env_spec_for(cfg, preset)
    write_json(run_dir / "config.json", {
        "train": dataclasses.asdict(cfg), "env": dataclasses.asdict(spec),
        "algo_kwargs": algo_kwargs_for(cfg, preset), "policy": preset.policy,
        "command": " ".join(sys.argv), "machine": machine_info(),
    })
    try:
        env = make_vec_env(spec, seed=cfg.seed)
        try:
            model = build_model(cfg, env, preset, device)
        except BaseException:
            env.close()
            raise
    except BaseException:
        shutil.rmtree(run_dir)  # nothing was trained: leave no directory that blocks --run-dir
        raise
    return learn(cfg, run_dir, env, model, spec)


def resume(run_dir: Path, total_timesteps: int | None = None) -> Path:
    """Continues a run from its newest checkpoint: same config, step counter, optimizers and RNG
    states; the curve keeps only the episodes the checkpoint had seen. Envs restart from a
    reset (seeded by the checkpoint's step), so the episodes in flight at the kill are dropped.
    `total_timesteps` extends the run (a finished one too) to that many steps."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; --resume takes a run directory written by gaze-rl train")
    saved = json.loads(config_path.read_text())
    cfg = train_config_from_dict(saved["train"])
    use_torch_threads(cfg.torch_threads)
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"no checkpoint with a state file in {run_dir / 'checkpoints'} to resume from; "
                                "runs save one every --checkpoint-every steps and at their end")
    model_path, state_path = found
    state = load_state(state_path)
    if total_timesteps is not None:
        if total_timesteps <= state["num_timesteps"]:
            raise ValueError(f"--total-timesteps {total_timesteps} is not beyond the checkpoint's step "
                             f"{state['num_timesteps']}; pass a larger total to extend the run")
        cfg = dataclasses.replace(cfg, total_timesteps=total_timesteps)
        saved["train"]["total_timesteps"] = total_timesteps  # a later --resume continues to it
        write_json(config_path, saved)
    elif state["num_timesteps"] >= cfg.total_timesteps:
        raise ValueError(f"{run_dir} finished at step {state['num_timesteps']}; extend it with "
                         f"gaze-rl train --resume {run_dir} --total-timesteps N (N > {state['num_timesteps']})")
    if (run_dir / "curve.csv").exists():
        truncate_curve(run_dir / "curve.csv", state["curve_rows"])
    if (run_dir / "on_target.csv").exists():
        truncate_after_step(run_dir / "on_target.csv", state["num_timesteps"])
    spec = EnvSpec(**saved["env"])
    env = make_vec_env(spec, seed=cfg.seed + state["num_timesteps"])
    try:
        model = load_model(ALGO_CLASSES[cfg.algo], model_path, env=env, device=resolve_device(cfg.device))
    except BaseException:
        env.close()
        raise
    restore_rng_state(state)  # SB3's load re-seeds from the run's seed; continue the saved streams
    print(f"Resuming {run_dir} from step {state['num_timesteps']} ({model_path.name}) to {cfg.total_timesteps}")
    return learn(cfg, run_dir, env, model, spec)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuilds a TrainConfig saved with dataclasses.asdict (nested options included)."""
    data = dict(data)
    data["gaze"] = GazeOptions(**data["gaze"])
    data["contrastive"] = ContrastiveConfig(**data["contrastive"])
    data["run_dir"] = Path(data["run_dir"]) if data["run_dir"] else None
    data["resume"] = None
    return TrainConfig(**data)


@contextlib.contextmanager
def ctrl_c_stops_at_rollout_start(checkpoint: AtomicCheckpoint) -> Iterator[None]:
    """The first Ctrl-C asks the checkpoint callback to save at the next rollout start and end
    the run there (no half-applied update in the checkpoint); a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def on_ctrl_c(signum: int, frame: Any) -> None:
        if checkpoint.stop_requested:
            raise KeyboardInterrupt
        checkpoint.request_stop()
        print("\nCtrl-C: stopping at the next rollout start with a checkpoint "
              "(Ctrl-C again to stop at once, without one)", flush=True)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def on_target_probe(cfg: TrainConfig, spec: EnvSpec, model: BaseAlgorithm, run_dir: Path) -> AttentionOnTargetProbe | None:
    """The attention-on-target callback, or None when it is off or the task has no default targets."""
    if cfg.on_target_every <= 0:
        return None
    if cfg.env_id not in TASK_TARGETS:
        print(f"attention-on-target: no default target actors for {cfg.env_id}; not logged")
        return None
    # a seed of its own: the probe frames never depend on the training envs' streams
    probe = collect_probe_set(model, spec, cfg.on_target_frames, seed=10_000_000 + cfg.seed)
    return AttentionOnTargetProbe(probe, cfg.on_target_every, run_dir / "on_target.csv")


def learn(cfg: TrainConfig, run_dir: Path, env: VecEnv, model: BaseAlgorithm, spec: EnvSpec | None = None) -> Path:
    """Trains `model` up to cfg.total_timesteps, logging into run_dir; saves checkpoints, the
    final model, a learning-curve plot and a summary. Raises TrainingInterrupted on Ctrl-C.
    `spec` (the EnvSpec `env` was built from) enables the attention-on-target probe."""
    checkpoints = run_dir / "checkpoints"
    try:
        model.set_logger(make_logger(run_dir, cfg.verbose))
        curve = CurveLogger(run_dir / "curve.csv")
        checkpoint = AtomicCheckpoint(checkpoints, cfg.checkpoint_every or cfg.total_timesteps,
                                      lambda: curve.rows_written, keep=cfg.keep_checkpoints)
        progress = ProgressReport(cfg.total_timesteps, curve) if cfg.progress_bar else None
        probe = on_target_probe(cfg, spec, model, run_dir) if spec is not None else None
        callbacks = [curve, GazeImageLogger(cfg.gaze_image_every), NonFiniteGuard(), checkpoint,
                     *([progress] if progress else []), *([probe] if probe else [])]
        remaining = cfg.total_timesteps - model.num_timesteps
        started = time.perf_counter()
        try:
            with ctrl_c_stops_at_rollout_start(checkpoint):
                # log_interval=1: PPO logs every iteration, SAC every episode.
                model.learn(remaining, callback=callbacks, log_interval=1,
                            reset_num_timesteps=model.num_timesteps == 0)
        except KeyboardInterrupt:
            if progress is not None:
                progress.close()  # else tqdm complains at interpreter exit
            found = latest_checkpoint(run_dir)
            raise TrainingInterrupted(
                f"stopped at once at step {model.num_timesteps}, without a new checkpoint; "
                + (f"gaze-rl train --resume {run_dir} continues from {found[0].name}" if found
                   else "no checkpoint to resume from")) from None
        if checkpoint.stopped_at is not None:
            raise TrainingInterrupted(f"saved {checkpoint.stopped_at} (taken at a rollout start); continue with "
                                      f"gaze-rl train --resume {run_dir}")
        # The end is a rollout start too: a resumable checkpoint, final.zip its twin.
        last = checkpoint.save(model.num_timesteps)
        link_or_copy(last, checkpoints / "final.zip")
    finally:
        env.close()
    plot = plot_curve(run_dir / "curve.csv", run_dir / "curve.png")
    print(f"\nDone: {model.num_timesteps} steps in {(time.perf_counter() - started) / 60:.1f} min; "
          f"{curve.recent_summary()}\n"
          f"Run directory: {run_dir}\n"
          f"  learning curve: {run_dir / 'curve.csv'}" + (f" (plot: {plot})" if plot else "") + "\n"
          f"  checkpoint:     {checkpoints / 'final.zip'}\n"
          f"  TensorBoard:    tensorboard --logdir {run_dir / 'tb'}\n"
          f"  evaluate:       gaze-rl eval --checkpoint {checkpoints / 'final.zip'} --video\n"
          f"  train longer:   gaze-rl train --resume {run_dir} --total-timesteps {2 * model.num_timesteps}")
    return run_dir


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes the same file as `source` (a hard link: no second 12 MB), atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
