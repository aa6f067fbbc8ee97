"""ManiSkill3 tasks from pixels as SB3 VecEnvs (CPU: one process per env; GPU: one batched sim).

Names are imported on first use (PEP 562), so that `import gaze_rl.envs.spec` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ManiSkillBatchedVecEnv": "gaze_rl.envs.batched",
    "OBS_MODES": "gaze_rl.envs.spec", "SIM_BACKENDS": "gaze_rl.envs.spec", "TESTED_ENV_IDS": "gaze_rl.envs.spec",
    "EnvSpec": "gaze_rl.envs.spec",
    "check_env_id": "gaze_rl.envs.factory", "make_vec_env": "gaze_rl.envs.factory",
    "resolve_sim_backend": "gaze_rl.envs.factory",
    "EpisodeOutcome": "gaze_rl.envs.single", "ScaleReward": "gaze_rl.envs.single",
    "make_single_env": "gaze_rl.envs.single",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gaze_rl.envs' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return __all__
