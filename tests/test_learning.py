"""Learning regression (`pytest -m learning`): short real training runs that must *learn*.

The reference curves (test_reference_curves.py) catch any change of a float; these catch a
build that still runs but no longer learns. Protocol: the CPU protocol of `gaze-rl bench
--profile cpu-learn` (results/protocol/): PushCube-v1 from 64 px + state, PPO, the end-effector
controller, 2 env processes, fast rendering, seed 0, cut to BUDGET env steps.

Calibration (seed 0, the 2-core machine; success_once over the last 100 of ~215 episodes):
baseline 0.37, gaze 0.21; the untrained policy's first 100 episodes: 0.07-0.09. THRESHOLD sits
~3 binomial standard deviations above the untrained level, so a build that does not learn
fails with > 99% probability, and below both learning runs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from gaze_rl.commands.train import train
from gaze_rl.config import TrainConfig

pytestmark = [pytest.mark.slow, pytest.mark.learning]

BUDGET = 10_000
"""Env steps per run (~2 min for the baseline on the 2-core CI machine)."""
LAST_EPISODES = 100
"""Success is measured over the run's last episodes (~4.5k env steps of <= 50-step episodes)."""
THRESHOLD = 0.16
"""success_once over the last episodes that a learning run must reach; untrained: ~0.08."""
MIN_RISE = 1.1
"""The gaze's attention-on-target at the end over the start (calibration: 0.035 -> 0.048, 1.37x;
with the contrastive optimizer step removed it stays at 0.035: 1.0016x)."""


def train_pushcube(run_dir: Path, method: str) -> Path:
    # attention-on-target only where it is asserted (its probe set costs an extra env)
    cfg = TrainConfig(env_id="PushCube-v1", algo="ppo", method=method, control_mode="pd_ee_delta_pos",
                      total_timesteps=BUDGET, seed=0, num_envs=2, run_dir=run_dir, checkpoint_every=0,
                      gaze_image_every=0, on_target_every=BUDGET // 2 if method == "gaze" else 0, progress_bar=False)
    return train(cfg)


def final_success(run_dir: Path) -> float:
    with (run_dir / "curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= LAST_EPISODES, f"only {len(rows)} episodes in {BUDGET} steps"
    return float(np.mean([float(r["success_once"]) for r in rows[-LAST_EPISODES:]]))


def attention_on_target(run_dir: Path) -> list[float]:
    with (run_dir / "on_target.csv").open() as f:
        return [float(r["attention_on_target"]) for r in csv.DictReader(f)]


def test_ppo_baseline_learns_pushcube(tmp_path):
    success = final_success(train_pushcube(tmp_path / "baseline", "baseline"))
    assert success >= THRESHOLD, f"PPO baseline: success {success:.2f} over the last {LAST_EPISODES} episodes " \
                                 f"after {BUDGET} steps, below {THRESHOLD} (untrained ~0.08): learning is broken"


def test_gaze_learns_pushcube_and_looks_at_the_task(tmp_path):
    run_dir = train_pushcube(tmp_path / "gaze", "gaze")
    success = final_success(run_dir)
    assert success >= THRESHOLD, f"gaze PPO: success {success:.2f} over the last {LAST_EPISODES} episodes " \
                                 f"after {BUDGET} steps, below {THRESHOLD} (untrained ~0.08): learning is broken"
    aot = attention_on_target(run_dir)
    assert len(aot) >= 2 and aot[-1] >= MIN_RISE * aot[0], \
        f"gaze attention-on-target did not rise by {MIN_RISE}x over training: {aot} (the gaze does not move to the task)"
