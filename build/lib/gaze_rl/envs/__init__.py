"""ManiSkill3 tasks from pixels as SB3 VecEnvs (CPU: one process per env; GPU: one batched sim)."""

from gaze_rl.envs.batched import ManiSkillBatchedVecEnv
from gaze_rl.envs.factory import (
    OBS_MODES,
    SIM_BACKENDS,
    TESTED_ENV_IDS,
    EnvSpec,
    check_env_id,
    make_vec_env,
    resolve_sim_backend,
)
from gaze_rl.envs.single import EpisodeOutcome, ScaleReward, make_single_env

__all__ = [
    "OBS_MODES", "SIM_BACKENDS", "TESTED_ENV_IDS", "EnvSpec", "EpisodeOutcome",
    "ManiSkillBatchedVecEnv", "ScaleReward", "check_env_id", "make_single_env",
    "make_vec_env", "resolve_sim_backend",
]
