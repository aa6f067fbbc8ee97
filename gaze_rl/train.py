"""`gaze-rl train`: build the env, the agent and the run directory from a TrainConfig; learn."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from gaze_rl.algos import GazePPO, GazeSAC
from gaze_rl.checkpoints import AtomicCheckpoint, atomic_save_model, latest_checkpoint, load_model, load_state, restore_rng_state
from gaze_rl.config import GazeOptions, TrainConfig
from gaze_rl.contrastive.learner import ContrastiveConfig
from gaze_rl.envs.factory import EnvSpec, check_spec, make_vec_env
from gaze_rl.methods import method_spec
from gaze_rl.nets.attention import GaussianGaze
from gaze_rl.nets.encoders import feature_map_shape, make_backbone
from gaze_rl.nets.extractor import gaze_policy_kwargs
from gaze_rl.nets.pruning import check_top_k
from gaze_rl.presets import Preset, load_preset, sb3_algo_kwargs
from gaze_rl.runlog import (
    AttentionOnTargetProbe, CurveLogger, GazeImageLogger, NonFiniteGuard, make_logger, prepare_run_dir, truncate_curve, write_json,
)
from gaze_rl.segmentation.on_target import collect_probe_set
from gaze_rl.segmentation.targets import TASK_TARGETS

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": GazePPO, "sac": GazeSAC}


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
                   obs_mode=cfg.obs_mode, sim_backend=cfg.sim_backend, variant=cfg.variant, **env)


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
    if cfg.total_timesteps < 1:
        raise ValueError(f"total_timesteps must be >= 1 (got {cfg.total_timesteps})")
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
    if cfg.prune_top_k is not None:
        check_prune_top_k(cfg)
    if cfg.init_from is not None:
        from gaze_rl.imitation.checkpoint import check_init_from

        check_init_from(cfg.init_from, cfg)  # raises naming every architecture difference


def check_prune_top_k(cfg: TrainConfig) -> None:
    """Raises unless 1 <= prune_top_k <= the cells of the backbone's last map at this image size."""
    backbone = backbone_for(cfg)
    try:
        _, h, w = feature_map_shape(make_backbone(backbone, 3, cfg.image_size), 3, cfg.image_size, cfg.image_size)
    except RuntimeError:
        raise ValueError(f"images of {cfg.image_size} px are too small for the {backbone!r} backbone; "
                         "use --image-size 64 or more") from None
    check_top_k(cfg.prune_top_k, h, w)


def build_model(cfg: TrainConfig, env: VecEnv, preset: Preset, device: str) -> BaseAlgorithm:
    """GazePPO / GazeSAC for the method: the contrastive loss only where the method table says so."""
    spec = method_spec(cfg.method)
    backbone = backbone_for(cfg)
    attention_kwargs = cfg.gaze.as_kwargs() if spec.attention == "gaussian" else {}
    deepvision = {} if cfg.prune_top_k is None and not cfg.multi_level else dict(
        prune_top_k=cfg.prune_top_k, prune_source=cfg.prune_source, multi_level=cfg.multi_level)
    policy_kwargs = {**preset.policy, **gaze_policy_kwargs(cfg.method, backbone, attention_kwargs, **deepvision)}
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


def train(cfg: TrainConfig) -> Path:
    """Runs one training run (or resumes one, with `cfg.resume`) and returns its directory."""
    if cfg.resume is not None:
        return resume(cfg.resume)
    validate(cfg)
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg.run_dir or default_run_dir(cfg), cfg.overwrite)
    preset = load_preset(cfg.algo, cfg.env_id)
    spec = env_spec_for(cfg, preset)
    write_json(run_dir / "config.json", {
        "train": dataclasses.asdict(cfg), "env": dataclasses.asdict(spec),
        "algo_kwargs": algo_kwargs_for(cfg, preset), "policy": preset.policy,
        "command": " ".join(sys.argv), "machine": machine_info(),
    })
    env = make_vec_env(spec, seed=cfg.seed)
    try:
        model = build_model(cfg, env, preset, device)
    except BaseException:
        env.close()
        raise
    return learn(cfg, run_dir, env, model, spec)


def resume(run_dir: Path) -> Path:
    """Continues a run from its newest checkpoint: same config, step counter, optimizers and RNG
    states; the curve keeps only the episodes the checkpoint had seen. Envs restart from a
    reset (seeded by the checkpoint's step), so the episodes in flight at the kill are dropped."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; --resume takes a run directory written by gaze-rl train")
    saved = json.loads(config_path.read_text())
    cfg = train_config_from_dict(saved["train"])
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"no checkpoint with a state file in {run_dir / 'checkpoints'} to resume from; "
                                "runs save one every --checkpoint-every steps")
    model_path, state_path = found
    state = load_state(state_path)
    if (run_dir / "curve.csv").exists():
        truncate_curve(run_dir / "curve.csv", state["curve_rows"])
    spec = EnvSpec(**saved["env"])
    env = make_vec_env(spec, seed=cfg.seed + state["num_timesteps"])
    try:
        model = load_model(ALGO_CLASSES[cfg.algo], model_path, env=env, device=resolve_device(cfg.device))
    except BaseException:
        env.close()
        raise
    restore_rng_state(state)  # SB3's load re-seeds from the run's seed; continue the saved streams
    print(f"Resuming {run_dir} from step {state['num_timesteps']} ({model_path.name})")
    return learn(cfg, run_dir, env, model, spec)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuilds a TrainConfig saved with dataclasses.asdict (nested options included)."""
    data = dict(data)
    data["gaze"] = GazeOptions(**data["gaze"])
    data["contrastive"] = ContrastiveConfig(**data["contrastive"])
    data["run_dir"] = Path(data["run_dir"]) if data["run_dir"] else None
    data["resume"] = None
    return TrainConfig(**data)


def on_target_probe(cfg: TrainConfig, spec: EnvSpec, model: BaseAlgorithm) -> AttentionOnTargetProbe | None:
    """The attention-on-target callback, or None when it is off or the task has no default targets."""
    if cfg.on_target_every <= 0:
        return None
    if cfg.env_id not in TASK_TARGETS:
        print(f"attention-on-target: no default target actors for {cfg.env_id}; not logged")
        return None
    # a seed of its own: the probe frames never depend on the training envs' streams
    probe = collect_probe_set(model, spec, cfg.on_target_frames, seed=10_000_000 + cfg.seed)
    return AttentionOnTargetProbe(probe, cfg.on_target_every)


def learn(cfg: TrainConfig, run_dir: Path, env: VecEnv, model: BaseAlgorithm, spec: EnvSpec) -> Path:
    """Trains `model` up to cfg.total_timesteps, logging into run_dir; saves checkpoints."""
    checkpoints = run_dir / "checkpoints"
    try:
        model.set_logger(make_logger(run_dir, cfg.verbose))
        curve = CurveLogger(run_dir / "curve.csv")
        checkpoint = AtomicCheckpoint(checkpoints, cfg.checkpoint_every or cfg.total_timesteps,
                                      lambda: curve.rows_written)
        callbacks = [curve, GazeImageLogger(cfg.gaze_image_every), NonFiniteGuard(), checkpoint]
        probe = on_target_probe(cfg, spec, model)
        if probe is not None:
            callbacks.append(probe)
        remaining = cfg.total_timesteps - model.num_timesteps
        try:
            # log_interval=1: PPO logs every iteration, SAC every episode.
            model.learn(remaining, callback=callbacks, log_interval=1,
                        reset_num_timesteps=model.num_timesteps == 0, progress_bar=cfg.progress_bar)
        except KeyboardInterrupt:
            path = checkpoint.save(model.num_timesteps)
            print(f"\nInterrupted at step {model.num_timesteps}: saved {path}; continue with "
                  f"gaze-rl train --resume {run_dir}")
            raise
        atomic_save_model(model, checkpoints / "final.zip")
    finally:
        env.close()
    print(f"\nRun directory: {run_dir}\n"
          f"  learning curve: {run_dir / 'curve.csv'}\n"
          f"  checkpoint:     {checkpoints / 'final.zip'}\n"
          f"  TensorBoard:    tensorboard --logdir {run_dir / 'tb'}\n"
          f"  evaluate:       gaze-rl eval --checkpoint {checkpoints / 'final.zip'} --video")
    return run_dir
