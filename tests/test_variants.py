"""Visual robustness variants: same task, different pixels."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from gaze_rl.envs import make_vec_env
from gaze_rl.envs.variants import DISTRACT_MAX_OBJECTS, DistractCounts, _clear_views, task_env_id
from gaze_rl.errors import ConfigError

from conftest import error_of


def first_steps(variant: str, steps: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    env = make_vec_env(env_id="PushT-v1", num_envs=1, seed=5, variant=variant)
    try:
        obs = env.reset()
        rewards = []
        for _ in range(steps):
            obs, reward, _, _ = env.step(np.full((1, *env.action_space.shape), 0.3, dtype=np.float32))
            rewards.append(reward[0])
        return obs["rgb"][0], obs["state"][0], np.array(rewards)
    finally:
        env.close()


@pytest.mark.slow
def test_variants_change_pixels_not_the_task():
    rgb, state, rewards = first_steps("none")
    for variant in ("clutter", "lighting"):
        v_rgb, v_state, v_rewards = first_steps(variant)
        np.testing.assert_array_equal(v_state, state)  # same initial state, same physics
        np.testing.assert_array_equal(v_rewards, rewards)
        changed = np.abs(v_rgb.astype(int) - rgb.astype(int)).max(axis=-1) > 10
        assert changed.mean() > 0.002, f"{variant} changed only {changed.mean():.4f} of the pixels"


def test_variant_ids_and_errors():
    assert task_env_id("PushT-v1", "none") == "PushT-v1"
    assert task_env_id("PushT-v1", "clutter") == "PushT-v1-clutter"
    assert task_env_id("PushT-v1", "clutter") == "PushT-v1-clutter"  # registering twice is fine
    with pytest.raises(ValueError, match="valid choices: none, clutter, lighting, distract"):
        task_env_id("PushT-v1", "fog")


# --------------------------------------------------------------------------------------------
# distract: per-episode colours, lights and (moving) visual-only objects
# --------------------------------------------------------------------------------------------

STEPS = 3
SEEDS = (5, 6, 5)  # episodes run one after another in one env: the last repeats the first


@cache
def distract_rollout(env_id: str, strength: float | None) -> list[dict]:
    """Per episode (one per seed of SEEDS, in one env): the frames, states, rewards, successes, target
    masks, segmentation names seen and the distractors' positions of a reset + STEPS random-action
    steps (the same actions whatever the variant). `strength` None = the normal task."""
    from gaze_rl.segmentation.envs import make_segmented_env, segmentation_names
    from gaze_rl.segmentation.targets import TaskTargets

    variant = "none" if strength is None else "distract"
    env = make_segmented_env(env_id, image_size=64, control_mode="pd_joint_delta_pos", render_quality="fast",
                             render_backend="cpu", variant=variant,
                             env_kwargs={} if strength is None else {"distract_strength": strength})
    try:
        base = env.unwrapped
        names = segmentation_names(base)
        targets = TaskTargets(env_id, names, list(base.scene.actors))
        episodes = []
        for seed in SEEDS:
            obs, _ = env.reset(seed=seed)
            rng = np.random.default_rng(seed)
            record: dict[str, list] = {key: [] for key in ("rgb", "state", "reward", "success", "mask", "seen", "xy")}
            for step in range(STEPS + 1):
                if step:
                    obs, reward, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
                    record["reward"].append(float(reward))
                    record["success"].append(bool(info["success"]))
                frame = env.get_wrapper_attr("frame")
                record["rgb"].append(obs["rgb"].copy())
                record["state"].append(obs["state"].copy())
                record["mask"].append(targets.frame_mask(frame))
                record["seen"].append({names[int(i)] for i in np.unique(next(iter(frame.segmentation.values())))
                                       if int(i) in names})
                record["xy"].append({d.actor.name: d.actor.pose.p[0, :2].numpy().copy()
                                     for d in getattr(base, "_distractors", [])})
            record["moving"] = [path.actor.name for path in getattr(base, "_moving", [])]
            episodes.append({key: np.array(value) if key in ("rgb", "state", "reward", "success", "mask") else value
                             for key, value in record.items()})
        return episodes
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["PushCube-v1", "PokeCube-v1", "PushT-v1"])
def test_distract_changes_pixels_not_the_task(env_id):
    for normal, distract in zip(distract_rollout(env_id, None), distract_rollout(env_id, 1.0)):
        # the task's randomisation, physics, reward and success are the normal task's, step by step
        np.testing.assert_array_equal(distract["state"], normal["state"])
        np.testing.assert_array_equal(distract["reward"], normal["reward"])
        np.testing.assert_array_equal(distract["success"], normal["success"])
        # segmentation marks the same target pixels: the distractors (in view) are never targets
        np.testing.assert_array_equal(distract["mask"], normal["mask"])
        assert any(name.startswith("distract_") for name in set().union(*distract["seen"])), "no distractor in view"
        changed = (np.abs(distract["rgb"].astype(int) - normal["rgb"].astype(int)).max(axis=-1) > 10).mean()
        assert changed > 0.2, f"distract changed only {changed:.3f} of the pixels"


@pytest.mark.slow
def test_distract_is_seeded_per_episode_and_its_moving_objects_move():
    first, other, again = distract_rollout("PushCube-v1", 1.0)
    np.testing.assert_array_equal(again["rgb"], first["rgb"])  # same seed: the same look, step by step
    assert (np.abs(other["rgb"][0].astype(int) - first["rgb"][0].astype(int)).max(axis=-1) > 10).mean() > 0.2
    assert len(first["moving"]) == DistractCounts.at(1.0).moving == DISTRACT_MAX_OBJECTS
    for t in range(STEPS):
        for name in first["moving"]:
            moved = np.linalg.norm(first["xy"][t + 1][name] - first["xy"][t][name])
            assert 1e-4 < moved < 0.03, f"{name} moved {moved:.4f} m in step {t}"  # every step, smoothly


@pytest.mark.slow
def test_distract_strength_zero_renders_the_normal_task():
    for normal, zero in zip(distract_rollout("PushCube-v1", None), distract_rollout("PushCube-v1", 0.0)):
        np.testing.assert_array_equal(zero["rgb"], normal["rgb"])
        assert zero["moving"] == [] and zero["xy"][0] == {}


def test_distract_counts_scale_with_strength():
    assert [DistractCounts.at(s) for s in (0.0, 0.25, 0.5, 1.0)] == [
        DistractCounts(0, 0), DistractCounts(2, 1), DistractCounts(4, 2), DistractCounts(8, 8)]


def test_clear_views_refuses_a_sphere_that_could_cover_or_touch_another():
    eye = np.zeros(3)
    target = [(np.array([0.0, 0.0, -1.0]), 0.1)]
    centres = np.array([[0.0, 0.0, -0.5],  # in front of the target: would cover it
                        [0.0, 0.0, -2.0],  # behind it: covered by it
                        [0.15, 0.0, -1.0],  # beside it, overlapping
                        [0.5, 0.0, -1.0]])  # well clear
    np.testing.assert_array_equal(_clear_views(eye, centres, 0.05, target), [False, False, False, True])


def test_distract_strength_is_validated_everywhere(capsys):
    from gaze_rl.bench.grid import RunSpec, train_args
    from gaze_rl.configuration.commands import BenchConfig, EvalConfig, TrainConfig
    from gaze_rl.envs.spec import EnvSpec

    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"distract strength must be in \[0, 1\].*--distract-strength"):
            TrainConfig(env_id="PushCube-v1", variant="distract", distract_strength=bad)
        with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
            make_vec_env(env_id="PushCube-v1", num_envs=1, variant="distract", distract_strength=bad)
    with pytest.raises(ConfigError, match="add --variant distract"):
        TrainConfig(env_id="PushCube-v1", distract_strength=0.5)
    with pytest.raises(ConfigError, match="add --variant distract"):
        EvalConfig(checkpoint=Path("run.zip"), variant="clutter", distract_strength=0.5)
    assert "must be in [0, 1]" in error_of(capsys, ["train", "--variant", "distract", "--distract-strength", "2"])
    # selectable wherever variants are: the bench passes it to each run, eval names results by it
    args = train_args(RunSpec("PushCube-v1", "ppo", "gaze", 0), BenchConfig(variant="distract", distract_strength=0.25))
    assert args[args.index("--variant") + 1] == "distract" and args[args.index("--distract-strength") + 1] == "0.25"
    assert EnvSpec(variant="distract", distract_strength=0.25).variant_label() == "distract-0.25"
    assert EnvSpec(variant="distract", distract_strength=0.25).variant_kwargs() == {"distract_strength": 0.25}
    assert EnvSpec(variant="clutter", distract_strength=0.25).variant_kwargs() == {}


def test_distract_class_refuses_bad_strength_and_unknown_tasks():
    import gymnasium as gym

    with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
        gym.make(task_env_id("PushCube-v1", "distract"), distract_strength=-1.0)
    with pytest.raises(ConfigError, match="needs the task's objects"):
        task_env_id("PlaceSphere-v1", "distract")
