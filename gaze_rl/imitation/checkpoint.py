"""Pretrained policies: what `gaze-rl pretrain` saves and `gaze-rl train --init-from` loads.

A checkpoint is one `torch.save` file of plain data (loadable with `weights_only=True`, so
loading runs no pickled code): `{"format", "architecture", "state_dict"}`. The state dict is the
SB3 policy's (`MultiInputActorCriticPolicy` for PPO, SAC's policy with actor, critics and target
critics), built exactly as `gaze-rl train` builds it (`gaze_rl.build.build_model`). The architecture
records what must match (`gaze_rl.build.train_architecture`) for the weights to mean the same thing in RL: algorithm, attention kind,
backbone, gaze options, image size, observation mode, control mode, the preset's policy kwargs and
the extractor options (pruning, multi-level features; pretraining uses their defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gaze_rl.errors import ConfigError

FORMAT = "gaze_rl.pretrained_policy/1"
# Fields whose mismatch makes the weights unusable (or mean something else, e.g. actions).
MUST_MATCH = ("algo", "attention", "backbone", "gaze", "image_size", "obs_mode", "control_mode", "policy_kwargs",
              "extractor_options")


def save_pretrained(policy: torch.nn.Module, architecture: dict[str, Any], path: Path) -> None:
    """Writes a policy's weights and architecture (plain data, see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    torch.save({"format": FORMAT, "architecture": architecture, "state_dict": state}, path)


def read_pretrained(path: Path) -> dict[str, Any]:
    """Loads a checkpoint written by save_pretrained (weights only, no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained policy {path} does not exist; pass RUN/checkpoints/final.pt of a "
                                "`gaze-rl pretrain` run")
    if path.suffix == ".zip":
        raise ConfigError(f"{path} is an SB3 model archive; --init-from takes the .pt file that `gaze-rl pretrain` "
                         "writes beside it (RUN/checkpoints/final.pt)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one that needs pickled code
        raise ConfigError(f"{path} is not a gaze_rl pretrained policy ({type(err).__name__}: {err}); pass "
                         "RUN/checkpoints/final.pt of a `gaze-rl pretrain` run") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a gaze_rl pretrained policy (format {FORMAT}); pass "
                         "RUN/checkpoints/final.pt of a `gaze-rl pretrain` run")
    return data


def architecture_mismatches(pretrained: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences in MUST_MATCH fields (empty when compatible)."""
    return [f"{key}: pretrained {pretrained.get(key)!r}, this run {wanted.get(key)!r}"
            for key in MUST_MATCH if pretrained.get(key) != wanted.get(key)]


def load_state_into(policy: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Loads weights into a policy; raises naming missing, unexpected and mis-shaped keys."""
    own = policy.state_dict()
    missing = sorted(own.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - own.keys())
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(own.keys() & state_dict.keys()) if state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise ConfigError(f"the policy in {source} does not fit this model: {'; '.join(parts)}")
    policy.load_state_dict(state_dict, strict=True)
