"""Crash safety and determinism: kill -9 and resume, identical curves for identical seeds,
damaged checkpoints, RNG round trips."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gaze_rl.algos import GazePPO
from gaze_rl.cli import main
from gaze_rl.runs.checkpoints import latest_checkpoint, load_model, load_state, restore_rng_state, rng_state

DETERMINISTIC_COLUMNS = ("global_step", "episodic_return", "episodic_length", "success_once", "success_at_end")


def curve(run: Path) -> list[tuple[str, ...]]:
    with (run / "curve.csv").open() as f:
        return [tuple(row[c] for c in DETERMINISTIC_COLUMNS) for row in csv.DictReader(f)]


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == first


def test_damaged_checkpoints_give_clear_errors(tmp_path):
    state = tmp_path / "step_1.state.pt"
    state.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="damaged"):
        load_state(state)
    model = tmp_path / "step_1.zip"
    model.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="damaged"):
        load_model(GazePPO, model)


@pytest.mark.slow
def test_kill_and_resume_continues_the_same_run(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "gaze_rl.cli", "train", "--env-id", "PushT-v1", "--algo", "ppo",
               "--method", "gaze", "--num-envs", "1", "--total-timesteps", "500", "--checkpoint-every", "200",
               "--gaze-image-every", "0", "--no-progress-bar", "--run-dir", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / "step_200.state.pt").exists():
            assert process.poll() is None, "training died before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up
        process.wait()
    assert not (run / "checkpoints" / "final.zip").exists()
    assert latest_checkpoint(run) is not None

    main(["train", "--resume", str(run)])

    # PushT episodes last 100 steps: one row per 100 steps, none duplicated, none missing.
    assert [int(row[0]) for row in curve(run)] == [100, 200, 300, 400, 500]
    model = GazePPO.load(run / "checkpoints" / "final.zip")
    assert model.num_timesteps == 500
    assert model._n_updates == 5 * 8  # 5 PPO iterations x 8 epochs: the counter continued
    assert model.contrastive is not None


@pytest.mark.slow
def test_same_seed_same_curve(tmp_path):
    runs = []
    for name in ("a", "b"):
        runs.append(tmp_path / name)
        main(["train", "--env-id", "PushT-v1", "--algo", "ppo", "--method", "gaze", "--num-envs", "1",
              "--total-timesteps", "300", "--gaze-image-every", "0", "--no-progress-bar", "--run-dir", str(runs[-1])])
    assert curve(runs[0]) == curve(runs[1])
    assert len(curve(runs[0])) == 3


@pytest.mark.slow
def test_dead_env_worker_is_a_clear_error():
    from gaze_rl.envs import make_vec_env

    env = make_vec_env(env_id="PushT-v1", num_envs=2, seed=3)
    try:
        env.reset()
        env.venv.processes[1].kill()
        env.venv.processes[1].join()
        with pytest.raises(RuntimeError, match=r"PushT-v1 \(seed 3\) died"):
            for _ in range(3):
                env.step(np.zeros((2, *env.action_space.shape), dtype=np.float32))
    finally:
        for process in env.venv.processes:
            process.kill()
