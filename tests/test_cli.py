"""The `gaze-rl` command end to end: real short training runs from pixels, eval, bad input."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gaze_rl.cli import main
from gaze_rl.configuration.commands import TrainConfig
from gaze_rl.runs.runlog import write_json

from conftest import error_of

RUN_FILES = ("config.json", "curve.csv", "checkpoints/final.zip")


def train(run_dir: Path, *args: str) -> None:
    main(["train", "--run-dir", str(run_dir), "--no-progress-bar", *args])


def tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    return events.Tags()


def curve_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "curve.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ppo_gaze_pusht_trains_and_evaluates(tmp_path, capsys):
    run = tmp_path / "ppo"
    # 6 episodes are too few for the default episode label with own-episode exclusion to find a
    # triplet (each anchor's neighbours then fall in one class): return-to-go without exclusion
    # exercises the triplet path and its metrics from the first rollout.
    train(run, "--env-id", "PushT-v1", "--algo", "ppo", "--method", "gaze", "--total-timesteps", "512",
          "--num-envs", "2", "--gaze-image-every", "200", "--contrastive.label", "to-go",
          "--contrastive.exclude-window", "0")
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    rows = curve_rows(run)
    # PushT episodes last 100 steps; 2 envs x 3 rollouts of 100 steps -> 6 episodes.
    assert len(rows) == 6 and all(r["episodic_length"] == "100" for r in rows)
    assert [int(r["global_step"]) for r in rows] == [200, 200, 400, 400, 600, 600]
    tags = tensorboard_tags(run)
    for tag in ("gaze/triplet_loss", "gaze/valid_fraction", "gaze/sigma_x", "gaze/mining_ms",
                "gaze/label_step_spearman", "gaze/same_episode_fraction", "gaze/label_std",
                "gaze/attention_on_target", "gaze/attention_on_target_chance", "charts/episodic_return",
                "charts/success_once", "losses/value_loss"):
        assert tag in tags["scalars"], tag
    assert "gaze/frames" in tags["images"]
    config = json.loads((run / "config.json").read_text())
    assert config["env"]["reward_scale"] == 0.1 and config["algo_kwargs"]["gamma"] == 0.99  # PushT preset

    main(["eval", "--checkpoint", str(run / "checkpoints/final.zip"), "--episodes", "1", "--video"])
    out = capsys.readouterr().out
    assert "success_once" in out and "return" in out
    result = json.loads((run / "eval/final__seed10000.json").read_text())
    assert result["episodes"] == 1 and result["per_episode"][0]["length"] == 100
    assert (run / "eval/final__seed10000.mp4").stat().st_size > 10_000
    # Evaluating again with the same seed would overwrite: refused, naming the fix.
    with pytest.raises(SystemExit) as refused:
        main(["eval", "--checkpoint", str(run / "checkpoints/final.zip"), "--episodes", "1"])
    assert refused.value.code not in (0, None)
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gaze", "baseline"])
def test_sac_pusht_trains(tmp_path, method):
    run = tmp_path / f"sac-{method}"
    train(run, "--env-id", "PushT-v1", "--algo", "sac", "--method", method, "--total-timesteps", "256",
          "--num-envs", "1", "--learning-starts", "64", "--batch-size", "32", "--replay-buffer-size", "1000",
          "--contrastive.buffer-size", "1000")
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    scalars = tensorboard_tags(run)["scalars"]
    assert "losses/critic_loss" in scalars
    assert ("gaze/num_triplets" in scalars) == (method == "gaze")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["patch", "foveal"])
def test_ppo_pokecube_trains_and_evaluates(tmp_path, method):
    run = tmp_path / f"poke-{method}"
    train(run, "--env-id", "PokeCube-v1", "--algo", "ppo", "--method", method, "--total-timesteps", "100",
          "--num-envs", "1")
    rows = curve_rows(run)
    assert len(rows) >= 1 and all(int(r["episodic_length"]) <= 50 for r in rows)
    main(["eval", "--checkpoint", str(run / "checkpoints/final.zip"), "--episodes", "1"])
    assert json.loads((run / "eval/final__seed10000.json").read_text())["per_episode"][0]["length"] == 50


@pytest.mark.parametrize("argv, message", [
    (["train", "--env-id", "PushT-v9"], "unknown env id 'PushT-v9'"),
    (["train", "--gaze.num-gaussians", "0"], "num_gaussians must be >= 1"),
    (["train", "--gaze.sigma-floor", "0"], "sigma_floor must be > 0"),
    (["train", "--contrastive.k", "200", "--contrastive.buffer-size", "100"], "k (200) must be smaller"),
    (["train", "--image-size", "8"], "image_size must be >= 16"),
    (["train", "--num-envs", "0"], "num_envs must be >= 1"),
    (["train", "--total-timesteps", "0"], "total_timesteps must be >= 1"),
    (["train", "--method", "magic"], "magic"),
    (["eval", "--checkpoint", "nope.zip"], "does not exist"),
])
def test_bad_input_gives_one_clear_line(capsys, tmp_path, argv, message):
    err = error_of(capsys, [*argv, *(["--run-dir", str(tmp_path / "r")] if argv[0] == "train" else [])])
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing started


def test_existing_run_dir_is_never_overwritten(capsys, tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    err = error_of(capsys, ["train", "--run-dir", str(run)])
    assert "already exists" in err and "--overwrite" in err
    assert (run / "notes.txt").read_text() == "precious"


def test_resume_needs_a_run_with_a_checkpoint(capsys, tmp_path):
    assert "--resume takes a run directory" in error_of(capsys, ["train", "--resume", str(tmp_path)])
    # A run without any checkpoint: nothing to resume from, said before any env starts.
    (tmp_path / "checkpoints").mkdir()
    write_json(tmp_path / "config.json", {"train": dataclasses.asdict(TrainConfig(run_dir=tmp_path))})
    assert "no checkpoint" in error_of(capsys, ["train", "--resume", str(tmp_path)])


def test_eval_needs_a_run_directory(capsys, tmp_path):
    stray = tmp_path / "model.zip"
    stray.write_bytes(b"PK")
    assert "config.json" in error_of(capsys, ["eval", "--checkpoint", str(stray)])


def test_eval_names_the_policy_file_for_a_training_state_file(tmp_path, capsys):
    from gaze_rl.cli import main

    state = tmp_path / "run" / "checkpoints" / "step_500.state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a policy")
    with pytest.raises(SystemExit) as refused:
        main(["eval", "--checkpoint", str(state)])
    assert refused.value.code == 2
    assert f"evaluate {state.with_name('step_500.zip')} instead" in capsys.readouterr().err
