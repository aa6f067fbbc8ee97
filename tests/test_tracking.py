"""Gaze tracking (gaze_rl.segmentation.tracking): the statistics by hand, the probe's measurement
on a policy, the on_target.csv columns, the bench summary (old files without the columns
included), and real short runs: the oracle gaze tracks the cube, the baseline writes no
tracking columns (by choice: its on_target.csv keeps exactly the old columns).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import DummyVecEnv

from gaze_rl.runs.runlog import ON_TARGET_COLUMNS, AttentionOnTargetProbe
from gaze_rl.segmentation.tracking import POLICY_GAZE_COLUMNS, TRACK_COLUMNS, gaze_mean, tracking_stats

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "grid" / "pushcube" / "curves"


# --- the statistics ----------------------------------------------------------------------------

def test_linear_gaze_has_its_slope_and_r2_one():
    rng = np.random.default_rng(0)
    target = rng.uniform(-0.8, 0.8, (50, 2))
    mu = np.stack([0.6 * target[:, 0] + 0.1, -0.3 * target[:, 1] - 0.2], axis=1)
    stats = tracking_stats(mu, target, 4)
    assert stats["track_slope_x"] == pytest.approx(0.6) and stats["track_slope_y"] == pytest.approx(-0.3)
    assert stats["track_r2_x"] == pytest.approx(1.0) and stats["track_r2_y"] == pytest.approx(1.0)
    # a perfect tracker: slope 1, R^2 1, distance 0
    perfect = tracking_stats(target, target, 4)
    assert perfect["track_slope_x"] == pytest.approx(1.0) and perfect["track_dist_cells"] == pytest.approx(0.0)


def test_noisy_gaze_keeps_its_slope_and_loses_r2():
    rng = np.random.default_rng(1)
    target = rng.uniform(-0.8, 0.8, (4000, 2))
    mu = 0.5 * target + rng.normal(0, 0.2, target.shape)
    stats = tracking_stats(mu, target, 4)
    # var(0.5 t) = 0.25 * 0.64 / 3 ~ 0.0533, noise 0.04: R^2 = 0.0533 / 0.0933 ~ 0.57
    assert stats["track_slope_x"] == pytest.approx(0.5, abs=0.03)
    assert stats["track_r2_x"] == pytest.approx(0.571, abs=0.04)


def test_constant_gaze_has_slope_zero():
    target = np.array([[-0.5, 0.2], [0.1, 0.4], [0.7, -0.6]])
    stats = tracking_stats(np.tile([0.25, -0.25], (3, 1)), target, 4)
    assert stats["track_slope_x"] == 0.0 and stats["track_slope_y"] == 0.0
    assert stats["track_r2_x"] == 0.0 and stats["track_r2_y"] == 0.0
    # a gaze that barely moves, but in step with the target: slope ~0 while R^2 is 1
    tiny = tracking_stats(np.array([0.25, -0.25]) + 1e-4 * target, target, 4)
    assert tiny["track_slope_x"] == pytest.approx(1e-4) and tiny["track_r2_x"] == pytest.approx(1.0)


def test_distance_in_cells_by_hand():
    # 4x4 grid: one cell = 0.5 units. Offsets (0.3, 0.4) -> 0.5 units = 1 cell; (0, -1) -> 2 cells.
    mu = np.array([[0.3, 0.4], [0.0, -0.5]])
    target = np.array([[0.0, 0.0], [0.0, 0.5]])
    stats = tracking_stats(mu, target, 4)
    assert stats["track_dist_cells"] == pytest.approx(1.5)
    # centred gaze: |target| in cells = 0 and 1 cell
    assert stats["track_dist_cells_centred"] == pytest.approx(0.5)
    # a 25x25 grid: one cell = 0.08 units
    assert tracking_stats(mu, target, 25)["track_dist_cells"] == pytest.approx((0.5 + 1.0) / 0.08 / 2)
    # a (height, width) = (2, 8) grid: x counts 4 cells per unit, y 1
    assert tracking_stats(mu[:1], target[:1], (2, 8))["track_dist_cells"] == pytest.approx(np.hypot(1.2, 0.4))


def test_centred_gaze_distance_is_mean_target_norm_in_cells():
    rng = np.random.default_rng(2)
    target = rng.uniform(-1, 1, (30, 2))
    stats = tracking_stats(np.zeros_like(target), target, 8)
    expected = float(np.linalg.norm(target, axis=1).mean()) * 8 / 2
    assert stats["track_dist_cells"] == pytest.approx(expected)
    assert stats["track_dist_cells_centred"] == pytest.approx(expected)


def test_lost_targets_are_left_out_and_a_still_target_gives_nan():
    target = np.array([[-0.5, 0.2], [np.nan, np.nan], [0.5, 0.4]])
    mu = np.array([[-0.25, 0.0], [0.9, 0.9], [0.25, 0.0]])
    stats = tracking_stats(mu, target, 4)
    assert stats["track_slope_x"] == pytest.approx(0.5)
    assert stats["track_dist_cells"] == pytest.approx(np.mean([np.hypot(0.5, 0.4), np.hypot(0.5, 0.8)]))
    still = tracking_stats(mu[[0, 2]], np.array([[0.1, 0.2], [0.1, 0.2]]), 4)
    assert np.isnan(still["track_slope_x"]) and np.isnan(still["track_r2_y"])
    assert all(np.isnan(v) for v in tracking_stats(mu[1:2], target[1:2], 4).values())


def test_gaze_mean_weights_the_components():
    mu = np.array([[[0.0, 0.0], [1.0, -1.0]]])
    assert gaze_mean(mu, np.array([[0.75, 0.25]])) == pytest.approx(np.array([[0.25, -0.25]]))


# --- the probe on a policy ---------------------------------------------------------------------

IMG = 64


class SquareEnv(gym.Env):
    """A bright square at a random place on a grey frame; the state is noise."""

    def __init__(self):
        self.observation_space = spaces.Dict({"rgb": spaces.Box(0, 255, (IMG, IMG, 3), np.uint8),
                                              "state": spaces.Box(-np.inf, np.inf, (3,), np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self):
        rgb = np.full((IMG, IMG, 3), 60, np.uint8)
        x, y = self.np_random.integers(0, IMG - 12, 2)
        rgb[y:y + 12, x:x + 12] = 220
        return {"rgb": rgb, "state": self.np_random.normal(size=3).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 0.0, False, False, {}


def probe_model(method: str):
    from gaze_rl import GazePPO, gaze_policy_kwargs

    env = DummyVecEnv([SquareEnv])
    env.seed(0)
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, contrastive=None, seed=0,
                    policy_kwargs=gaze_policy_kwargs(method, image_features=32, state_features=16))
    frames = [env.reset() for _ in range(6)]
    obs = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    return model, obs


def test_probe_track_regresses_the_policy_gaze_on_the_targets():
    from gaze_rl.segmentation.on_target import ProbeSet, policy_extractor

    model, obs = probe_model("foveal")
    targets = np.random.default_rng(3).uniform(-0.8, 0.8, (6, 2))
    result = ProbeSet(obs, np.zeros((6, IMG, IMG), bool), targets).track(model)
    assert set(result) == {*TRACK_COLUMNS, *POLICY_GAZE_COLUMNS}
    with torch.no_grad():
        tensor = preprocess_obs(model.policy.obs_to_tensor(obs)[0], model.observation_space, normalize_images=True)
        out = policy_extractor(model).attend(tensor)
    mu = gaze_mean(out.params.mu.numpy(), out.params.mix.numpy())
    expected = tracking_stats(mu, targets, tuple(out.weights.shape[-2:]))
    assert {c: result[c] for c in TRACK_COLUMNS} == pytest.approx(expected)
    assert result["track_slope_x"] != 0.0  # a fresh foveal head moves its gaze with the image
    assert result["policy_mu_x_std"] == pytest.approx(float(mu[:, 0].std()))
    assert result["policy_sigma_mean"] == pytest.approx(float(out.params.sigma.mean()))
    # no target positions: nothing to track
    assert ProbeSet(obs, np.zeros((6, IMG, IMG), bool)).track(model) == {}


def test_probe_track_is_empty_without_a_gaussian_gaze():
    from gaze_rl.segmentation.on_target import ProbeSet

    for method in ("baseline", "patch"):
        model, obs = probe_model(method)
        assert ProbeSet(obs, np.zeros((6, IMG, IMG), bool), np.zeros((6, 2))).track(model) == {}


class FakeProbe:
    def __init__(self, values):
        self.values = values

    def measure(self, model):
        return dict(self.values)

    def track(self, model):
        return dict(self.values)


def write_rows(path: Path, tracking: FakeProbe | None, steps=(0, 100)) -> list[dict[str, str]]:
    aot = FakeProbe({"attention_on_target": 0.1, "attention_on_target_chance": 0.05, "attention_on_target_lift": 2.0})
    callback = AttentionOnTargetProbe(aot, 100, path, tracking=tracking)
    callback.model = None
    for step in steps:
        callback.num_timesteps = step
        callback._append(callback.probe.measure(None) | ({} if tracking is None else tracking.track(None)))
    with path.open() as f:
        return list(csv.DictReader(f))


def test_on_target_csv_columns(tmp_path):
    track = FakeProbe({**dict.fromkeys(TRACK_COLUMNS, 0.5), **dict.fromkeys(POLICY_GAZE_COLUMNS, 0.25)})
    rows = write_rows(tmp_path / "gaze.csv", track)
    assert list(rows[0]) == [*ON_TARGET_COLUMNS, *TRACK_COLUMNS, *POLICY_GAZE_COLUMNS]
    assert [r["global_step"] for r in rows] == ["0", "100"] and rows[1]["track_slope_x"] == "0.5"
    # no gaze: exactly the old columns
    assert list(write_rows(tmp_path / "baseline.csv", None)[0]) == list(ON_TARGET_COLUMNS)
    # a resumed run appends under its file's own header
    rows = write_rows(tmp_path / "gaze.csv", track, steps=(200,))
    assert len(rows) == 3 and rows[2]["track_dist_cells"] == "0.5"


# --- the bench ---------------------------------------------------------------------------------

def test_bench_summarises_old_and_new_on_target_files(tmp_path):
    from gaze_rl.bench.grid import RunSpec
    from gaze_rl.commands.bench import bench
    from gaze_rl.configuration.commands import BenchConfig

    curves = tmp_path / "curves"
    curves.mkdir()
    for seed in (0, 1):
        for method in ("gaze", "foveal"):
            name = RunSpec("PushCube-v1", "ppo", method, seed).name
            shutil.copy(COMMITTED / f"{name}.csv", curves / f"{name}.csv")
            shutil.copy(COMMITTED / f"{name}.on_target.csv", curves / f"{name}.on_target.csv")
        # foveal: the committed file with tracking columns added (as a run of this version writes it)
        name = RunSpec("PushCube-v1", "ppo", "foveal", seed).name
        with (curves / f"{name}.on_target.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert "track_slope_x" not in rows[0]  # committed files predate tracking
        with (curves / f"{name}.on_target.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, [*rows[0], *TRACK_COLUMNS])
            writer.writeheader()
            for i, row in enumerate(rows):
                last = i == len(rows) - 1
                writer.writerow(row | {c: 0.0 for c in TRACK_COLUMNS} | (
                    {"track_slope_x": 0.2 + 0.2 * seed, "track_r2_x": 0.5, "track_slope_y": "nan" if seed else 0.1,
                     "track_dist_cells": 1.0 + seed, "track_dist_cells_centred": 2.0} if last else {}))
    rows = bench(BenchConfig(out=tmp_path / "out", envs=("PushCube-v1",), methods=("gaze", "foveal"), seeds=(0, 1),
                             curves_from=curves))
    by_method = {r["method"]: r for r in rows}
    gaze, foveal = by_method["gaze"], by_method["foveal"]
    assert gaze["attention_on_target_end"] > 0  # old files are still read
    assert not any(key.startswith("track_") for key in gaze)  # ... and give no tracking columns
    assert foveal["track_slope_x_end"] == pytest.approx(0.3) and foveal["track_slope_x_end_ci"] == "[0.2, 0.4]"
    assert foveal["track_r2_x_end"] == pytest.approx(0.5) and foveal["track_r2_x_end_ci"] == "[0.5, 0.5]"
    assert foveal["track_slope_y_end"] == pytest.approx(0.1)  # a NaN seed (target did not move) is left out
    assert foveal["track_dist_cells_end"] == pytest.approx(1.5)
    assert foveal["track_dist_cells_centred_end"] == pytest.approx(2.0)
    assert "track_dist_cells_end" in (tmp_path / "out" / "summary.md").read_text()


# --- real runs ---------------------------------------------------------------------------------

def train(run_dir: Path, method: str) -> list[dict[str, str]]:
    from gaze_rl.cli import main

    main(["train", "--run-dir", str(run_dir), "--no-progress-bar", "--env-id", "PushCube-v1", "--control-mode",
          "pd_ee_delta_pos", "--method", method, "--total-timesteps", "200", "--num-envs", "1",
          "--on-target-every", "100", "--on-target-frames", "8"])
    with (run_dir / "on_target.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_oracle_gaze_tracks_the_cube(tmp_path):
    """The oracle's gaze is the mixture mean of its cube and goal foveae; PushCube's goal sits at a
    fixed offset from the cube, so the mean moves with the cube (slope ~1) half the cube-goal
    distance away (< 1 cell of NatureCNN's 4x4 grid). Measured (2 CPU cores): slope 1.05 / 1.33
    (x / y: the nearer goal's image offset grows with y), R^2 0.99 / 0.99, 0.37 cells (centred
    gaze 0.40: on PushCube the cube stays near the image centre, so on a 4x4 grid distance
    hardly separates tracking from a central vignette; slope and R^2 do)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = train(tmp_path / "oracle", "gaze-oracle")
    assert list(rows[0]) == [*ON_TARGET_COLUMNS, *TRACK_COLUMNS, *POLICY_GAZE_COLUMNS]
    assert [r["global_step"] for r in rows] == ["0", "100", "200"]
    for row in rows:
        print({c: row[c] for c in (*TRACK_COLUMNS, *POLICY_GAZE_COLUMNS)})
        for axis in "xy":
            assert float(row[f"track_slope_{axis}"]) > 0.8 and float(row[f"track_r2_{axis}"]) > 0.8
        assert float(row["track_dist_cells"]) < 1.0
        assert float(row["policy_mu_x_std"]) > 0 and float(row["policy_mu_y_std"]) > 0
    assert rows[0]["track_slope_x"] == rows[-1]["track_slope_x"]  # nothing learns the oracle's gaze
    events = EventAccumulator(str(tmp_path / "oracle" / "tb"))
    events.Reload()
    for name in (*TRACK_COLUMNS, *POLICY_GAZE_COLUMNS):
        assert f"gaze/{name}" in events.Tags()["scalars"], name


@pytest.mark.slow
def test_baseline_run_writes_no_tracking_columns(tmp_path):
    rows = train(tmp_path / "baseline", "baseline")
    assert list(rows[0]) == list(ON_TARGET_COLUMNS)
    assert len(rows) == 3
