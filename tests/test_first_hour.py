"""What a new user meets in the first hour of `gaze-rl train`: Ctrl-C, progress when stdout is
not a terminal, the end-of-run summary and plot, extending a finished run, pruning checkpoints,
damaged checkpoints, image sizes checked before any env starts, eval --overwrite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from gaze_rl import ContrastiveConfig, GazePPO
from gaze_rl.cli import main
from gaze_rl.commands.train import learn
from gaze_rl.configuration.commands import TrainConfig
from gaze_rl.errors import TrainingInterrupted
from gaze_rl.runs.checkpoints import latest_checkpoint, load_model, load_state

from conftest import error_of
from image_envs import ImageEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

ROLLOUT = 16


class PressCtrlC(gym.Wrapper):
    """Sends this process SIGINT (what Ctrl-C in a terminal does) at the given env steps."""

    def __init__(self, env: gym.Env, at: tuple[int, ...]):
        super().__init__(env)
        self.at, self.t = at, 0

    def step(self, action):
        self.t += 1
        if self.t in self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.env.step(action)


def model_on(env_fn) -> GazePPO:
    return GazePPO("CnnPolicy", DummyVecEnv([lambda: Monitor(env_fn())]), n_steps=ROLLOUT, batch_size=ROLLOUT, n_epochs=1,
                   contrastive=ContrastiveConfig(k=4, num_anchors=8, projection_dim=16, key_dim=32))


def run_cfg(tmp_path: Path, **kwargs) -> TrainConfig:
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    return TrainConfig(run_dir=tmp_path, gaze_image_every=0, progress_bar=False, **kwargs)


def test_ctrl_c_saves_at_the_next_rollout_start_and_stops(tmp_path):
    model = model_on(lambda: PressCtrlC(ImageEnv(), at=(24,)))  # in the middle of the 2nd rollout
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup / a background job
    with pytest.raises(TrainingInterrupted, match=r"step_32.zip \(taken at a rollout start\).*--resume"):
        learn(run_cfg(tmp_path, total_timesteps=160, checkpoint_every=1000), tmp_path, model.env, model)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    model_path, state_path = latest_checkpoint(tmp_path)
    assert model_path.name == "step_32.zip" and load_state(state_path)["num_timesteps"] == 32
    saved = GazePPO.load(model_path)
    assert saved.num_timesteps == 32 and saved._n_updates == 2  # both rollouts' updates, whole
    assert not (tmp_path / "checkpoints" / "final.zip").exists()


def test_second_ctrl_c_stops_at_once(tmp_path):
    model = model_on(lambda: PressCtrlC(ImageEnv(), at=(20, 21)))
    with pytest.raises(TrainingInterrupted, match="stopped at once.*without a new checkpoint"):
        learn(run_cfg(tmp_path, total_timesteps=160, checkpoint_every=16), tmp_path, model.env, model)
    assert latest_checkpoint(tmp_path)[0].name == "step_16.zip"


def test_end_of_run_checkpoint_summary_plot_and_pruning(tmp_path, capsys):
    model = model_on(ImageEnv)
    learn(run_cfg(tmp_path, total_timesteps=64, checkpoint_every=16, keep_checkpoints=2), tmp_path, model.env, model)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*.zip")) == ["step_48.zip", "step_64.zip"]
    assert (checkpoints / "final.zip").read_bytes() == (checkpoints / "step_64.zip").read_bytes()
    assert latest_checkpoint(tmp_path)[0].name == "step_64.zip"  # a finished run can be extended
    out = capsys.readouterr().out
    assert "Done: 64 steps" in out and "return" in out and "success" in out and "--total-timesteps 128" in out
    assert (tmp_path / "curve.png").stat().st_size > 5_000


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path):
    # Under pytest's capture stdout is not a terminal; every_s=0 prints at every step.
    from gaze_rl.runs.runlog import CurveLogger, ProgressReport

    model = model_on(ImageEnv)
    curve = CurveLogger(tmp_path / "curve.csv")
    report = ProgressReport(total=48, curve=curve, every_s=0.0)
    lines = []
    report.line = lambda original=report.line: lines.append(original()) or lines[-1]  # keep what it prints
    model.learn(32, callback=[curve, report])
    assert lines and lines[-1].startswith("step 32/48 (67%)") and "steps/s" in lines[-1]
    assert "return" in lines[-1]  # 8-step episodes have finished
    lines.clear()  # a resumed run counts on from its step, not from 0
    model.learn(16, callback=[curve, report], reset_num_timesteps=False)
    assert lines[0].startswith("step 33/48") and lines[-1].startswith("step 48/48 (100%)")


def test_damaged_checkpoint_is_the_projects_own_message(tmp_path):
    broken = tmp_path / "step_1.zip"
    broken.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="damaged.*not a complete zip file"):
        load_model(GazePPO, broken)


@pytest.mark.parametrize("size, method, expected", [
    (40, "gaze", "at least 44 px"), (32, "baseline", "at least 36 px"),
])
def test_image_size_too_small_for_the_backbone_is_refused_before_any_env(capsys, tmp_path, size, method, expected):
    err = error_of(capsys, ["train", "--image-size", str(size), "--method", method, "--run-dir", str(tmp_path / "r")])
    assert f"--image-size {size}" in err and expected in err and "backbone 'plain' (>= " in err
    assert not (tmp_path / "r").exists()


def test_resume_of_a_finished_run_says_how_to_extend(capsys, tmp_path):
    model = model_on(ImageEnv)
    cfg = run_cfg(tmp_path, total_timesteps=32)
    (tmp_path / "config.json").write_text(json.dumps({"train": {**cfg.__dict__, "gaze": cfg.gaze.__dict__,
                                                                "contrastive": cfg.contrastive.__dict__}},
                                                     default=str))
    learn(cfg, tmp_path, model.env, model)
    assert "--total-timesteps N (N > 32)" in error_of(capsys, ["train", "--resume", str(tmp_path)])
    assert "not beyond the checkpoint's step 32" in error_of(
        capsys, ["train", "--resume", str(tmp_path), "--total-timesteps", "20"])


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_run_is_clean_and_resumable(tmp_path):
    """The real thing: SIGINT to the whole process group (env workers included), as a terminal sends it."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "gaze_rl.cli", "train", "--env-id", "PushT-v1", "--num-envs", "2",
               "--total-timesteps", "2000", "--gaze-image-every", "0", "--run-dir", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (run / "curve.csv").exists() or len((run / "curve.csv").read_text().splitlines()) < 2:
            assert process.poll() is None and time.time() < deadline, "training did not get going"
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "taken at a rollout start" in err and "--resume" in err
    model_path, state_path = latest_checkpoint(run)
    assert load_state(state_path)["num_timesteps"] % 200 == 0  # PushT: 2 envs x 100-step rollouts
    main(["train", "--resume", str(run), "--total-timesteps", "600", "--no-progress-bar"])
    assert (run / "checkpoints" / "final.zip").is_file()
