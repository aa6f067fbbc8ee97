"""Per-task hyperparameter presets from experiments/*.toml (ManiSkill3's baseline settings)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gaze_rl.errors import ConfigError

ALGOS = ("ppo", "sac")
MIN_MINIBATCH = 32


@dataclass
class Preset:
    """Resolved settings for one (algo, task): SB3 algorithm kwargs, policy kwargs, env fields."""

    algo: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)


def read_experiments_toml(name: str) -> dict[str, Any]:
    """A TOML file of experiments/: package data when installed, the checkout's folder when the
    package is only on PYTHONPATH (as on a machine without an install)."""
    try:
        text = resources.files("gaze_rl.experiments").joinpath(name).read_text()
    except ModuleNotFoundError:
        text = (Path(__file__).resolve().parents[2] / "experiments" / name).read_text()
    return tomllib.loads(text)


def load_preset(algo: str, env_id: str) -> Preset:
    """`[default]` of experiments/<algo>.toml, overridden by the task's own table if it has one."""
    if algo not in ALGOS:
        raise ConfigError(f"unknown algo {algo!r}; valid choices: {', '.join(ALGOS)}")
    tables = read_experiments_toml(f"{algo}.toml")
    default, task = tables["default"], tables.get(env_id, {})
    return Preset(**{part: {**default.get(part, {}), **task.get(part, {})} for part in ("algo", "policy", "env")})


def sb3_algo_kwargs(algo: str, preset_algo: dict[str, Any], num_envs: int) -> dict[str, Any]:
    """Turns ManiSkill-style settings into SB3 constructor arguments for `num_envs` envs."""
    kwargs = dict(preset_algo)
    if algo == "ppo":
        num_minibatches = kwargs.pop("num_minibatches", 1)
        rollout = kwargs["n_steps"] * num_envs
        # ManiSkill's minibatch count assumes hundreds of envs; with a few CPU envs it would give
        # minibatches of 1-3 samples (SB3 refuses 1), so keep at least MIN_MINIBATCH samples.
        target = max(rollout // num_minibatches, min(MIN_MINIBATCH, rollout))
        # The smallest divisor of the rollout at or above the target: no truncated minibatch.
        kwargs.setdefault("batch_size", next(b for b in range(target, rollout + 1) if rollout % b == 0))
    else:
        # ManiSkill: every `training_freq` env steps in total, `utd * training_freq` updates.
        training_freq, utd = kwargs.pop("training_freq", 64), kwargs.pop("utd", 0.25)
        kwargs.setdefault("train_freq", max(1, training_freq // num_envs))
        kwargs.setdefault("gradient_steps", max(1, round(utd * kwargs["train_freq"] * num_envs)))
    return kwargs
