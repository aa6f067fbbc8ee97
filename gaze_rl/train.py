"""`gaze-rl train`: build the env, the agent and the run directory from a TrainConfig; learn."""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv

from gaze_rl.algos import GazePPO, GazeSAC
from gaze_rl.config import TrainConfig
from gaze_rl.envs.factory import EnvSpec, check_spec, make_vec_env
from gaze_rl.nets.attention import GaussianGaze
from gaze_rl.nets.extractor import gaze_policy_kwargs
from gaze_rl.presets import Preset, load_preset, sb3_algo_kwargs
from gaze_rl.runlog import CurveLogger, GazeImageLogger, make_logger, prepare_run_dir, write_json

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": GazePPO, "sac": GazeSAC}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return device


def env_spec_for(cfg: TrainConfig, preset: Preset) -> EnvSpec:
    """The preset's env settings, overridden by what the user gave on the command line."""
    env = dict(preset.env)
    if cfg.control_mode is not None:
        env["control_mode"] = cfg.control_mode
    if cfg.reward_scale is not None:
        env["reward_scale"] = cfg.reward_scale
    return EnvSpec(env_id=cfg.env_id, num_envs=cfg.num_envs, image_size=cfg.image_size,
                   obs_mode=cfg.obs_mode, sim_backend=cfg.sim_backend, **env)


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
    if cfg.algo == "ppo" and cfg.n_steps is not None and cfg.n_steps < 1:
        raise ValueError(f"n_steps must be >= 1 (got {cfg.n_steps})")
    if cfg.method in ("foveal", "gaze"):
        GaussianGaze(1, 2, 2, **cfg.gaze.as_kwargs())  # raises on bad gaze options
    resolve_device(cfg.device)
    check_spec(env_spec_for(cfg, load_preset(cfg.algo, cfg.env_id)))


def build_model(cfg: TrainConfig, env: VecEnv, preset: Preset, device: str) -> BaseAlgorithm:
    """GazePPO / GazeSAC for the method: the contrastive loss only for `gaze`."""
    backbone = cfg.backbone if cfg.backbone != "auto" else ("nature" if cfg.algo == "ppo" else "plain")
    attention_kwargs = cfg.gaze.as_kwargs() if cfg.method in ("foveal", "gaze") else {}
    policy_kwargs = {**preset.policy, **gaze_policy_kwargs(cfg.method, backbone, attention_kwargs)}
    contrastive = cfg.contrastive if cfg.method == "gaze" else None
    algo_class = ALGO_CLASSES[cfg.algo]
    return algo_class("MultiInputPolicy", env, contrastive=contrastive, policy_kwargs=policy_kwargs,
                      seed=cfg.seed, device=device, verbose=cfg.verbose, **algo_kwargs_for(cfg, preset))


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
    """Runs one training run and returns its directory."""
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
        model.set_logger(make_logger(run_dir, cfg.verbose))
        callbacks = [CurveLogger(run_dir / "curve.csv"), GazeImageLogger(cfg.gaze_image_every)]
        if cfg.checkpoint_every > 0:
            callbacks.append(CheckpointCallback(max(1, cfg.checkpoint_every // cfg.num_envs),
                                                str(run_dir / "checkpoints"), name_prefix="step"))
        try:
            model.learn(cfg.total_timesteps, callback=callbacks, progress_bar=cfg.progress_bar)
        except KeyboardInterrupt:
            model.save(run_dir / "checkpoints" / "interrupted.zip")
            print(f"\nInterrupted: saved {run_dir / 'checkpoints' / 'interrupted.zip'}")
            raise
        model.save(run_dir / "checkpoints" / "final.zip")
    finally:
        env.close()
    print(f"\nRun directory: {run_dir}\n"
          f"  learning curve: {run_dir / 'curve.csv'}\n"
          f"  checkpoint:     {run_dir / 'checkpoints' / 'final.zip'}\n"
          f"  TensorBoard:    tensorboard --logdir {run_dir / 'tb'}\n"
          f"  evaluate:       gaze-rl eval --checkpoint {run_dir / 'checkpoints' / 'final.zip'} --video")
    return run_dir
