"""The imitation pipeline for real (slow): ManiSkill3 motion-planned demonstrations of PushCube-v1,
rendered with segmentation; pretraining with gaze-KL; eval with attention-on-target; RL from it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gaze_rl.cli import main
from gaze_rl.envs.task_objects import project_points
from gaze_rl.imitation.demos import load_demos

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("imitation") / "demos"
    main(["demos", "--env-id", "PushCube-v1", "--num", "2", "--out", str(out), "--no-progress-bar"])
    return out


def test_demos_are_successful_and_rendered_with_segmentation(demos):
    meta = json.loads((demos / "meta.json").read_text())
    assert meta["written"] == 2 and meta["control_mode"] == "pd_joint_delta_pos"
    assert (demos / "raw" / "motionplanning.h5").is_file()  # ManiSkill's own trajectory format
    with h5py.File(demos / "demos.h5", "r") as f:
        assert f["traj_0/obs/rgb"].shape[1:] == (64, 64, 3) and f["traj_0/segmentation/base_camera"].dtype == np.int16
    demo_set = load_demos(demos)
    for demo in demo_set.demos:
        assert demo.success[-1] and len(demo.rgb) == len(demo.actions) + 1 == len(demo.segmentation["base_camera"])
        assert np.all(np.abs(demo.actions) <= 1.0)


def test_demo_observations_are_the_rl_envs(demos):
    """Replaying a demonstration's actions in gaze_rl's RL env gives the recorded observations, bit for bit."""
    from gaze_rl.envs.factory import make_vec_env

    demo = load_demos(demos).demos[0]
    env = make_vec_env(env_id="PushCube-v1", num_envs=1, image_size=64, control_mode="pd_joint_delta_pos",
                       ignore_terminations=True, env_kwargs={"max_episode_steps": 500})
    try:
        env.seed(demo.seed)
        obs = env.reset()
        np.testing.assert_array_equal(obs["rgb"][0], demo.rgb[0])
        for t, action in enumerate(demo.actions):
            obs, _, _, _ = env.step(action[None])
            np.testing.assert_array_equal(obs["rgb"][0], demo.rgb[t + 1])
            np.testing.assert_array_equal(obs["state"][0], demo.state[t + 1])
    finally:
        env.close()


def test_cube_projection_matches_its_segmentation_centroid(demos):
    demo_set = load_demos(demos)
    cube_id = next(i for i, name in demo_set.segmentation_names.items() if name == "cube")
    errors = []
    for demo in demo_set.demos:
        for t in range(0, len(demo.rgb), 5):
            rows, cols = np.nonzero(demo.segmentation["base_camera"][t] == cube_id)
            if len(rows) < 4:  # hidden behind the gripper
                continue
            centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
            projected = project_points(demo.actor_positions["cube"][t], demo.intrinsic["base_camera"][t],
                                       demo.extrinsic["base_camera"][t])
            errors.append(np.linalg.norm(centroid - projected))
    assert len(errors) >= 10 and max(errors) < 1.5, errors


def test_h5_conversion_reproduces_the_generated_demos(demos, tmp_path):
    main(["demos", "--from-h5", str(demos / "raw" / "motionplanning.h5"), "--num", "1", "--out", str(tmp_path / "c"),
          "--no-progress-bar"])
    converted, generated = load_demos(tmp_path / "c").demos[0], load_demos(demos).demos[0]
    np.testing.assert_array_equal(converted.rgb, generated.rgb)
    np.testing.assert_array_equal(converted.actions, generated.actions)


def test_pretrain_eval_and_init_from(demos, tmp_path, capsys):
    run = tmp_path / "run"
    main(["pretrain", "--env-id", "PushCube-v1", "--demos", str(demos), "--objective", "gaze-kl", "--run-dir", str(run),
          "--steps", "20", "--batch-size", "32", "--eval-every", "0", "--eval-episodes", "1", "--image-every", "10",
          "--max-episode-steps", "20", "--no-progress-bar"])
    for name in ("config.json", "eval.csv", "summary.json", "checkpoints/final.pt", "checkpoints/final.zip"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())["final_eval"]
    assert summary["episodes"] == 1 and summary["per_episode"][0]["length"] == 20
    assert summary["attention_mode"] == "map" and 0.0 < summary["attention_on_target_chance"] < 0.5  # the cube is in view
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()
    for tag in ("losses/bc", "losses/gaze-kl", "attention/on_target_train", "eval/success_once",
                "eval/attention_on_target"):
        assert tag in events.Tags()["scalars"], tag
    assert "attention/saliency_vs_attention" in events.Tags()["images"]

    # gaze-rl eval on the pretrained model: same env, seeds and horizon -> the same numbers; with
    # segmentation on the side the episodes (the auto-reset second one too) are those of the plain env
    main(["eval", "--checkpoint", str(run / "checkpoints/final.zip"), "--episodes", "2", "--attention-on-target"])
    result = json.loads((run / "eval" / "final__seed10000.json").read_text())
    assert result["per_episode"][0]["return"] == pytest.approx(summary["per_episode"][0]["return"])
    main(["eval", "--checkpoint", str(run / "checkpoints/final.zip"), "--episodes", "2", "--out-dir", str(tmp_path / "e")])
    plain = json.loads((tmp_path / "e" / "final__seed10000.json").read_text())
    assert [e["return"] for e in plain["per_episode"]] == [e["return"] for e in result["per_episode"]]
    assert "attention_on_target" not in plain and result["attention_on_target_chance"] > 0.0
    # pretraining's final eval measured its one episode as gaze-rl eval measures the same episode:
    # the same frames, target pixels and attention map give the same attention-on-target
    main(["eval", "--checkpoint", str(run / "checkpoints/final.zip"), "--episodes", "1", "--attention-on-target",
          "--out-dir", str(tmp_path / "one")])
    one = json.loads((tmp_path / "one" / "final__seed10000.json").read_text())
    assert one["per_episode"][0]["return"] == pytest.approx(summary["per_episode"][0]["return"])
    for key in ("attention_on_target", "attention_on_target_chance", "attention_on_target_lift"):
        assert one[key] == pytest.approx(summary[key], rel=1e-6), key

    capsys.readouterr()
    main(["train", "--init-from", str(run / "checkpoints/final.pt"), "--env-id", "PushCube-v1", "--method", "gaze",
          "--total-timesteps", "50", "--num-envs", "1", "--checkpoint-every", "0", "--run-dir", str(tmp_path / "rl"),
          "--no-progress-bar"])
    assert (tmp_path / "rl" / "checkpoints" / "final.zip").is_file()
    config = json.loads((tmp_path / "rl" / "config.json").read_text())
    assert config["train"]["init_from"] == str(run / "checkpoints/final.pt")
