"""gaze_rl: teach visual RL agents where to look.

A foveal Gaussian gaze on the CNN's last feature map, trained by return-guided contrastive
learning ("Gaze on the Prize", arXiv 2510.08442), as drop-in SB3 PPO and SAC on ManiSkill3.

The names below are imported on first use (PEP 562), so that `gaze-rl --help` and other
light imports of the package do not load torch, SB3 or ManiSkill.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gaze_rl.algos import GazePPO, GazeSAC
    from gaze_rl.configuration.methods import METHOD_NAMES as METHODS
    from gaze_rl.contrastive.config import ContrastiveConfig
    from gaze_rl.envs.factory import make_vec_env
    from gaze_rl.envs.spec import EnvSpec
    from gaze_rl.nets.extractor import GazeExtractor, gaze_policy_kwargs

# public name -> (module, name there)
_WHERE = {
    "GazePPO": ("gaze_rl.algos", "GazePPO"),
    "GazeSAC": ("gaze_rl.algos", "GazeSAC"),
    "ContrastiveConfig": ("gaze_rl.contrastive.config", "ContrastiveConfig"),
    "EnvSpec": ("gaze_rl.envs.spec", "EnvSpec"),
    "make_vec_env": ("gaze_rl.envs.factory", "make_vec_env"),
    "METHODS": ("gaze_rl.configuration.methods", "METHOD_NAMES"),
    "GazeExtractor": ("gaze_rl.nets.extractor", "GazeExtractor"),
    "gaze_policy_kwargs": ("gaze_rl.nets.extractor", "gaze_policy_kwargs"),
}
__all__ = ["METHODS", "ContrastiveConfig", "EnvSpec", "GazeExtractor", "GazePPO", "GazeSAC",
           "gaze_policy_kwargs", "make_vec_env"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gaze_rl' has no attribute {name!r}")
    module, attribute = _WHERE[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
