"""rl_zoo3 integration: experiments/zoo.py trains plain PPO with the gaze network and GazePPO
(via `python -m gaze_rl.zoo`) on Atari Pong, SB3's standard image env (a short run each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3 import PPO

from gaze_rl import GazeExtractor, GazePPO

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--env", "PongNoFrameskip-v4", "-conf", str(REPO / "experiments" / "zoo.py"), "-n", "128",
         "--hyperparams", "n_envs:1", "n_steps:64", "batch_size:32", "--eval-freq", "-1",
         "--gym-packages", "ale_py", "--seed", "0"]


def zoo(tmp_path: Path, *command: str) -> Path:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", *command, *SHORT, "-f", str(tmp_path)], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=600)
    (model,) = tmp_path.glob("*/PongNoFrameskip-v4_1/PongNoFrameskip-v4.zip")
    return model


@pytest.mark.slow
def test_rl_zoo3_plain_ppo_with_the_gaze_network(tmp_path):
    model = PPO.load(zoo(tmp_path, "rl_zoo3.train", "--algo", "ppo"))
    assert type(model) is PPO and model.num_timesteps == 128
    extractor = model.policy.features_extractor
    assert isinstance(extractor, GazeExtractor) and extractor.has_gaze
    assert model.observation_space.shape == (4, 84, 84)  # AtariWrapper + 4 stacked frames, channel-first


@pytest.mark.slow
def test_rl_zoo3_gaze_ppo(tmp_path):
    model = GazePPO.load(zoo(tmp_path, "gaze_rl.zoo", "--algo", "gaze_ppo"))
    assert model.num_timesteps == 128 and model.contrastive is not None
