"""The build layer below the commands: what a TrainConfig builds, and the machine it builds on.

Every command (train, eval, analyze, pretrain, bench's runs) resolves its device, torch
threads, env spec, algorithm class and model here, so that no command imports another one
as a library and pretraining builds exactly the network that `gaze-rl train --init-from`
loads. Checks that need the machine, the task registry or a backbone raise ConfigError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from gaze_rl.algos import GazePPO, GazeSAC
from gaze_rl.configuration.commands import GazeOptions, TrainConfig
from gaze_rl.configuration.methods import method_spec
from gaze_rl.configuration.presets import Preset, load_preset, sb3_algo_kwargs
from gaze_rl.contrastive.config import ContrastiveConfig
from gaze_rl.envs.factory import check_spec
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.errors import ConfigError
from gaze_rl.imitation.checkpoint import architecture_mismatches, load_state_into, read_pretrained
from gaze_rl.nets.encoders import checked_map_shape, make_backbone
from gaze_rl.nets.extractor import gaze_policy_kwargs
from gaze_rl.nets.pruning import check_top_k
from gaze_rl.runtime import last_malloc_tuning

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": GazePPO, "sac": GazeSAC}
# TrainConfig fields that change the extractor's layers (DeepVision-VLA options).
_EXTRACTOR_OPTIONS = ("prune_top_k", "prune_source", "multi_level")


# --- the machine ---------------------------------------------------------------------------

def resolve_device(device: str) -> str:
    """'auto' = cuda when torch sees it, else cpu; 'cuda' without a CUDA device is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return device


def use_torch_threads(threads: int | None) -> None:
    """Sets torch's CPU thread count for this process (None keeps torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def machine_info() -> dict[str, Any]:
    """What a run's config.json records about the machine it ran on (and the allocator setting
    gaze_rl.runtime.tune_malloc applied to this process, if it ran)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "platform": platform.platform(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    tuning = last_malloc_tuning()
    if tuning is not None:
        info["malloc"] = dataclasses.asdict(tuning)
    return info


# --- what a TrainConfig builds ---------------------------------------------------------------

def backbone_for(cfg: TrainConfig) -> str:
    """The backbone a config builds: 'auto' = NatureCNN for PPO, PlainConv for SAC (ManiSkill's)."""
    return cfg.backbone if cfg.backbone != "auto" else ("nature" if cfg.algo == "ppo" else "plain")


def env_spec_for(cfg: TrainConfig, preset: Preset) -> EnvSpec:
    """The preset's env settings, overridden by what the user gave on the command line."""
    env = dict(preset.env)
    spec = method_spec(cfg.method)
    env.update(privileged_state=spec.privileged_state, gaze_targets=spec.gaze_targets)
    if cfg.control_mode is not None:
        env["control_mode"] = cfg.control_mode
    if cfg.reward_scale is not None:
        env["reward_scale"] = cfg.reward_scale
    if cfg.distract_strength is not None:
        env["distract_strength"] = cfg.distract_strength
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


def train_architecture(cfg: TrainConfig) -> dict[str, Any]:
    """What must match for pretrained weights to mean the same thing in RL (gaze_rl.imitation.checkpoint)."""
    preset = load_preset(cfg.algo, cfg.env_id)
    attention = method_spec(cfg.method).attention
    return {
        "algo": cfg.algo, "method": cfg.method, "attention": attention, "backbone": backbone_for(cfg),
        "gaze": cfg.gaze.as_kwargs() if attention == "gaussian" else {},
        **({"gaze_residual": True} if cfg.gaze.residual else {}),
        "image_size": cfg.image_size, "obs_mode": cfg.obs_mode,
        "control_mode": env_spec_for(cfg, preset).control_mode, "env_id": cfg.env_id,
        "policy_kwargs": dict(preset.policy),
        "extractor_options": {k: getattr(cfg, k) for k in _EXTRACTOR_OPTIONS},
    }


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuilds a TrainConfig saved with dataclasses.asdict (nested options included)."""
    data = dict(data)
    data["gaze"] = GazeOptions(**data["gaze"])
    data["contrastive"] = ContrastiveConfig(**data["contrastive"])
    data["run_dir"] = Path(data["run_dir"]) if data["run_dir"] else None
    data["resume"] = None
    return TrainConfig(**data)


def load_run_config(checkpoint: Path) -> dict[str, Any]:
    """The config.json of the run a checkpoint belongs to (<run>/checkpoints/<name>.zip)."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; pass a .zip from <run>/checkpoints/")
    if checkpoint.name.endswith(".state.pt"):  # the training state beside step_N.zip: counters and RNGs, no policy
        policy = checkpoint.with_name(checkpoint.name.removesuffix(".state.pt") + ".zip")
        raise ConfigError(f"{checkpoint} is a training-state file (step counter, RNG states, curve rows), not a "
                          f"policy; evaluate {policy} instead")
    if checkpoint.suffix == ".pt":  # gaze-rl pretrain's plain weights
        raise ConfigError(f"{checkpoint} holds plain pretrained weights; evaluate the .zip beside it "
                          f"({checkpoint.with_suffix('.zip')}) or fine-tune them with gaze-rl train --init-from")
    config_path = checkpoint.resolve().parent.parent / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no config.json next to the checkpoint's run directory ({config_path}); gaze-rl eval needs "
            "a checkpoint inside a run directory written by gaze-rl train"
        )
    return json.loads(config_path.read_text())


# --- checks before anything starts ---------------------------------------------------------

def check_image_size(cfg: TrainConfig) -> tuple[int, int]:
    """The (h, w) of the backbone's last map at --image-size; raises, naming the sizes that work,
    where the images are too small for the backbone (and its attention)."""
    backbone, size = backbone_for(cfg), cfg.image_size
    min_side = 1 if method_spec(cfg.method).attention == "none" else 2
    try:
        _, h, w = checked_map_shape(make_backbone(backbone, 3, size), backbone, 3, size, size, min_side)
    except ValueError as err:
        raise ConfigError(f"--image-size {size}: {err}") from None
    return h, w


def check_prune_top_k(cfg: TrainConfig) -> None:
    """Raises unless 1 <= prune_top_k <= the cells of the backbone's last map at this image size."""
    if cfg.prune_top_k is None:  # no pruning
        return
    height, width = check_image_size(cfg)
    try:
        check_top_k(cfg.prune_top_k, height, width)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_init_from(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Raises (naming every difference) unless the pretrained policy fits the TrainConfig; returns it."""
    data = read_pretrained(path)
    mismatches = architecture_mismatches(data["architecture"], train_architecture(cfg))
    if mismatches:
        raise ConfigError(
            f"--init-from {path} was pretrained with another architecture: " + "; ".join(mismatches)
            + ". Train with the pretrained settings (e.g. --algo/--method/--image-size/--control-mode as in its "
            "config.json) or pretrain again with this run's settings"
        )
    return data


def check_buildable(cfg: TrainConfig) -> None:
    """What TrainConfig's own checks cannot see: the device, the task, the backbone at this image
    size, pruning, a pretrained policy. Runs before any env process starts."""
    resolve_device(cfg.device)
    check_spec(env_spec_for(cfg, load_preset(cfg.algo, cfg.env_id)))
    check_image_size(cfg)
    if cfg.prune_top_k is not None:
        check_prune_top_k(cfg)
    if cfg.init_from is not None:
        check_init_from(cfg.init_from, cfg)


# --- the model -------------------------------------------------------------------------------

def build_model(cfg: TrainConfig, env: VecEnv, preset: Preset, device: str) -> BaseAlgorithm:
    """GazePPO / GazeSAC for the method: the contrastive loss only where the method table says so."""
    spec = method_spec(cfg.method)
    attention_kwargs = cfg.gaze.attention_kwargs(spec.attention, min(check_image_size(cfg)))
    options: dict[str, Any] = {} if cfg.prune_top_k is None and not cfg.multi_level else dict(
        prune_top_k=cfg.prune_top_k, prune_source=cfg.prune_source, multi_level=cfg.multi_level)
    if cfg.augment != "none":
        options["augment"] = cfg.augment
    policy_kwargs = {**preset.policy, **gaze_policy_kwargs(cfg.method, backbone_for(cfg), attention_kwargs, **options)}
    contrastive = None
    if spec.contrastive:
        contrastive = dataclasses.replace(cfg.contrastive, shuffle_labels=spec.shuffled_returns)
    # The backbone is the preset's choice (backbone_for), named in the extractor kwargs and here alike.
    model = ALGO_CLASSES[cfg.algo]("MultiInputPolicy", env, contrastive=contrastive, backbone=backbone_for(cfg),
                                   policy_kwargs=policy_kwargs,
                                   seed=cfg.seed, device=device, verbose=cfg.verbose, **algo_kwargs_for(cfg, preset))
    if cfg.init_from is not None:  # a policy pretrained by gaze-rl pretrain
        init_from_pretrained(model, cfg.init_from, cfg)
    return model


def init_from_pretrained(model: Any, path: Path, cfg: TrainConfig) -> None:
    """Loads a pretrained policy into a GazePPO / GazeSAC model built from `cfg`."""
    data = check_init_from(path, cfg)
    if data["architecture"].get("env_id") != cfg.env_id:
        print(f"note: {path} was pretrained on {data['architecture'].get('env_id')}, this run is {cfg.env_id}")
    load_state_into(model.policy, data["state_dict"], str(path))
    if hasattr(model, "critic_target") and hasattr(model, "critic"):
        # SAC: the target critics start equal to the (loaded) critics, as SB3 does at construction.
        model.critic_target.load_state_dict(model.critic.state_dict())
