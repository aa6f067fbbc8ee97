"""Curve arithmetic and the bench summary on hand-made curve files (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gaze_rl.bench import grid as bench_grid
from gaze_rl.bench.curves import band, bootstrap_ci, efficiency_ratio, normalised_auc, on_grid, steps_to_reach
from gaze_rl.bench.grid import BENCH_ARGS_FILE, RunSpec, grid_of, train_args, train_command
from gaze_rl.bench.train import run_grid
from gaze_rl.commands.bench import bench
from gaze_rl.configuration.commands import BenchConfig
from gaze_rl.errors import ConfigError
from gaze_rl.runs.checkpoints import latest_checkpoint
from gaze_rl.runs.runlog import CURVE_COLUMNS


def write_run(root: Path, spec: RunSpec, steps, returns, success) -> None:
    run = root / "runs" / spec.name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "final.zip").write_bytes(b"")
    with (run / "curve.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_COLUMNS)
        for i, (s, r, ok) in enumerate(zip(steps, returns, success)):
            writer.writerow((s, r, 100, ok, ok, 30.0, 0.1 * (i + 1)))


def test_on_grid_averages_episodes_per_interval_and_carries_forward():
    curve = {"global_step": np.array([10, 10, 30, 50.0]), "episodic_return": np.array([1, 3, 5, 7.0])}
    np.testing.assert_allclose(on_grid(curve, "episodic_return", np.array([5, 20, 40, 60.0])),
                               [np.nan, 2.0, 5.0, 7.0])


def test_band_is_a_t_interval():
    b = band([np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 9.0])], np.array([1.0, 2.0]))
    np.testing.assert_allclose(b.mean, [3.0, 5.0])
    half = stats.t.ppf(0.975, 2) * np.array([2.0, np.std([2, 4, 9], ddof=1)]) / np.sqrt(3)
    np.testing.assert_allclose(b.high - b.mean, half)
    single = band([np.array([1.0, 2.0])], np.array([1.0, 2.0]))
    np.testing.assert_allclose(single.low, single.high)


def test_steps_auc_and_efficiency_ratio():
    steps = np.array([100, 200, 300, 400.0])
    baseline = np.array([0.0, 0.1, 0.2, 0.4])
    method = np.array([0.1, 0.4, 0.6, 0.8])
    assert steps_to_reach(steps, method, 0.5) == 300.0
    assert steps_to_reach(steps, baseline, 0.5) is None
    assert normalised_auc(steps, np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(1.0)
    # Baseline reaches its final level 0.4 at 400 steps, the method at 200: twice as efficient.
    assert efficiency_ratio(steps, baseline, method) == pytest.approx(2.0)
    assert efficiency_ratio(steps, method, baseline) is None


def test_bootstrap_ci_resamples_seeds_per_group():
    seeds = [np.array([1.0]), np.array([2.0]), np.array([3.0])]
    # the mean of 3 draws from {1, 2, 3} is 1 (or 3) with probability 1/27 > 2.5%: the interval is [1, 3]
    assert bootstrap_ci([seeds], lambda x: float(x.mean()), resamples=4000) == (1.0, 3.0)
    assert bootstrap_ci([seeds * 10], lambda x: float(x.mean()))[1] < 2.6  # 30 seeds: a narrower interval
    assert bootstrap_ci([[np.array([2.0])] * 3], lambda x: float(x.mean())) == (2.0, 2.0)
    # a statistic that is None (never reached) counts as +inf
    assert bootstrap_ci([seeds], lambda x: None if x.mean() > 2.5 else 1.0)[1] == np.inf
    # groups are resampled independently: a ratio of two constant groups is constant
    assert bootstrap_ci([[np.array([4.0])] * 3, [np.array([2.0])] * 2], lambda a, b: float(a.mean() / b.mean())) == (2.0, 2.0)


def test_summary_plots_and_curves_csv(tmp_path):
    cfg = BenchConfig(out=tmp_path, envs=("PushT-v1",), methods=("baseline", "gaze"), seeds=(0, 1),
                      aggregate_only=True)
    steps = [100, 200, 300, 400]
    for seed in (0, 1):
        write_run(tmp_path, RunSpec("PushT-v1", "ppo", "baseline", seed), steps, [1, 2, 3, 4], [0, 0, 0, 1])
        write_run(tmp_path, RunSpec("PushT-v1", "ppo", "gaze", seed), steps, [2, 4, 5, 6], [0, 1, 1, 1])
        with (tmp_path / "runs" / RunSpec("PushT-v1", "ppo", "gaze", seed).name / "on_target.csv").open("w") as f:
            f.write("global_step,attention_on_target,attention_on_target_chance,attention_on_target_lift\n"
                    f"0,0.05,{0.04 + 0.02 * seed},1.25\n200,{0.1 + 0.1 * seed},{0.04 + 0.02 * seed},3.0\n")
    rows = bench(cfg)
    by_method = {r["method"]: r for r in rows}
    assert by_method["gaze"]["final_success_once"] == 1.0
    assert by_method["gaze"]["efficiency_ratio_return"] == pytest.approx(2.0)
    assert by_method["gaze"]["efficiency_ratio_return_ci"] == "[2, 2]"  # identical seeds: no spread
    assert by_method["baseline"]["efficiency_ratio_return"] == pytest.approx(1.0)
    assert by_method["gaze"]["steps_to_success_0.5_ci"] == "[200, 200]"
    assert by_method["baseline"]["steps_to_success_0.5_ci"] == "[400, 400]"
    # attention-on-target from the runs' on_target.csv: start, end and the end's interval
    assert by_method["gaze"]["attention_on_target_start"] == pytest.approx(0.05)
    assert by_method["gaze"]["attention_on_target_end"] == pytest.approx(0.15)
    assert by_method["gaze"]["attention_on_target_end_ci"] == "[0.1, 0.2]"
    assert by_method["gaze"]["attention_on_target_chance"] == pytest.approx(0.05)  # each seed probes its own frames
    assert "attention_on_target_end" not in by_method["baseline"]  # no measurements: no column
    assert (tmp_path / "plots" / "PushT-v1__ppo.png").stat().st_size > 5_000
    assert (tmp_path / "plots" / "PushT-v1__ppo__ratios.png").stat().st_size > 5_000
    assert "gaze" in (tmp_path / "summary.md").read_text()
    with (tmp_path / "curves.csv").open() as f:
        combined = list(csv.DictReader(f))
    assert len(combined) == 16
    assert set(combined[0]) == {"method", "algo", "env", "seed", "step", "return", "success_once",
                                "success_at_end", "wall_s"}


def test_curves_from_a_committed_folder_give_the_same_summary(tmp_path):
    """A grid whose checkpoints are gone re-aggregates from its committed curves (results/grid/*/curves)."""
    runs, committed = tmp_path / "bench", tmp_path / "curves"
    committed.mkdir()
    cfg = BenchConfig(out=runs, envs=("PushT-v1",), methods=("baseline", "gaze"), seeds=(0, 1), aggregate_only=True)
    for seed in (0, 1):
        for method, success in (("baseline", [0, 0, 1, 1]), ("gaze", [0, seed, 1, 1])):
            spec = RunSpec("PushT-v1", "ppo", method, seed)
            write_run(runs, spec, [100, 200, 300, 400], [1, 2, 3, 4 + seed], success)
            (committed / f"{spec.name}.csv").write_text((runs / "runs" / spec.name / "curve.csv").read_text())
    on_target = "global_step,attention_on_target,attention_on_target_chance,attention_on_target_lift\n0,0.05,0.04,1.2\n"
    (runs / "runs" / RunSpec("PushT-v1", "ppo", "gaze", 0).name / "on_target.csv").write_text(on_target)
    (committed / f"{RunSpec('PushT-v1', 'ppo', 'gaze', 0).name}.on_target.csv").write_text(on_target)
    from_runs = bench(cfg)
    from_committed = bench(BenchConfig(out=tmp_path / "summary", envs=cfg.envs, methods=cfg.methods, seeds=cfg.seeds,
                                       curves_from=committed))
    assert from_committed == from_runs
    assert from_committed[1]["success_auc_diff_vs_baseline_ci"]  # the comparison with the baseline too
    assert from_committed[1]["attention_on_target_start"] == pytest.approx(0.05)
    assert (tmp_path / "summary" / "plots" / "PushT-v1__ppo.png").is_file()
    assert not (tmp_path / "summary" / "runs").exists()  # nothing was trained
    # a seed without a committed curve is left out, as an unfinished run is
    (committed / f"{RunSpec('PushT-v1', 'ppo', 'baseline', 1).name}.csv").unlink()
    rows = bench(BenchConfig(out=tmp_path / "summary", envs=cfg.envs, methods=cfg.methods, seeds=cfg.seeds,
                             curves_from=committed))
    assert [r["seeds"] for r in rows] == [1, 2]


def test_summary_tests_each_arm_against_the_baseline(tmp_path):
    """Per arm, its difference from the baseline in final success and success AUC, with a 95%
    bootstrap interval and an exact permutation p over seeds: an arm better on every seed gets a
    positive difference whose interval excludes 0 and the smallest p 5 vs 5 seeds allow; an arm
    with the baseline's very curves gets 0, an interval around 0 and p 1; the baseline itself gets none."""
    seeds, steps = range(5), [100 * (i + 1) for i in range(100)]
    cfg = BenchConfig(out=tmp_path, envs=("PushT-v1",), methods=("baseline", "gaze", "foveal"), seeds=tuple(seeds),
                      aggregate_only=True)
    rng = np.random.default_rng(0)
    for seed in seeds:
        base = (rng.random(100) < 0.2).astype(int)  # ~20% success on every seed, ~90% for gaze
        for method, success in (("baseline", base), ("gaze", (rng.random(100) < 0.9).astype(int)), ("foveal", base)):
            write_run(tmp_path, RunSpec("PushT-v1", "ppo", method, seed), steps, success, success)
    by_method = {r["method"]: r for r in bench(cfg)}
    smallest_p = round(2 / math.comb(10, 5), 3)  # the two splits as extreme as gaze above baseline on every seed
    for score in ("final_success_once", "success_auc"):
        better, same = by_method["gaze"], by_method["foveal"]
        assert better[f"{score}_diff_vs_baseline"] == pytest.approx(better[score] - by_method["baseline"][score], abs=0.002)
        assert better[f"{score}_diff_vs_baseline"] > 0.5
        low, high = map(float, better[f"{score}_diff_vs_baseline_ci"].strip("[]").split(", "))
        assert 0 < low < better[f"{score}_diff_vs_baseline"] < high
        assert better[f"{score}_diff_vs_baseline_p"] == smallest_p
        assert same[f"{score}_diff_vs_baseline"] == 0
        low, high = map(float, same[f"{score}_diff_vs_baseline_ci"].strip("[]").split(", "))
        assert low < 0 < high  # each arm's seeds resampled on their own: the interval has width
        assert same[f"{score}_diff_vs_baseline_p"] == 1.0
        assert f"{score}_diff_vs_baseline" not in by_method["baseline"]
    header = (tmp_path / "summary.md").read_text().splitlines()[0]
    assert "final_success_once_diff_vs_baseline_p" in header and "success_auc_diff_vs_baseline_ci" in header
    with (tmp_path / "summary.csv").open() as f:
        assert {r["method"]: r["success_auc_diff_vs_baseline_p"] for r in csv.DictReader(f)} == {
            "baseline": "", "gaze": str(smallest_p), "foveal": "1.0"}


def test_curves_from_must_be_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        BenchConfig(curves_from=tmp_path / "missing")


def test_train_command_uses_profile_and_resumes_only_unfinished(tmp_path, monkeypatch):
    cfg = BenchConfig(out=tmp_path, profile="cpu", total_timesteps=2048)
    command = train_command(RunSpec("PokeCube-v1", "sac", "gaze", 1), cfg, tmp_path / "r")
    joined = " ".join(command)
    assert "--total-timesteps 2048" in joined and "--num-envs 2" in joined and "--learning-starts 1000" in joined
    assert "--threshold" not in joined

    # A grid a stopped bench left behind: seed 0 finished, seed 1 stopped at a checkpoint with this
    # bench's arguments, seed 2 stopped with other arguments, seed 3 stopped before its first checkpoint.
    grid = BenchConfig(out=tmp_path / "bench", envs=("PushCube-v1",), methods=("baseline",), seeds=(0, 1, 2, 3),
                       profile="cpu", total_timesteps=2048)
    spec = {seed: RunSpec("PushCube-v1", "ppo", "baseline", seed) for seed in range(4)}
    run_dir = {seed: grid.out / "runs" / s.name for seed, s in spec.items()}
    for seed in (0, 1, 2):
        (run_dir[seed] / "checkpoints").mkdir(parents=True)
        for name in ("step_500.zip", "step_500.state.pt", "step_1000.zip", "step_1000.state.pt"):
            (run_dir[seed] / "checkpoints" / name).touch()
    (run_dir[0] / "checkpoints" / "final.zip").touch()
    (run_dir[3] / "checkpoints").mkdir(parents=True)
    for seed in (0, 1, 3):
        (run_dir[seed] / BENCH_ARGS_FILE).write_text(json.dumps(train_args(spec[seed], grid)))
    other = BenchConfig(out=grid.out, profile="cpu", total_timesteps=2048, num_envs=1)
    (run_dir[2] / BENCH_ARGS_FILE).write_text(json.dumps(train_args(spec[2], other)))
    assert latest_checkpoint(run_dir[1])[0].name == "step_1000.zip"  # what a resume continues from

    started: dict[int, tuple[list[str], bool]] = {}  # seed -> (command, whether bench_args.json gets written)

    def fake_process(command, log, torch_threads, on_start=None):  # the real process would train
        seed = next(s for s, d in run_dir.items() if str(d) in command)
        started[seed] = (command, on_start is not None)
        return 0

    monkeypatch.setattr(bench_grid, "run_process", fake_process)
    assert run_grid(grid) == list(spec.values())
    assert sorted(started) == [1, 2, 3]  # the finished run is not trained again
    resume, records = started[1]
    assert resume[resume.index("--resume") + 1] == str(run_dir[1]) and "--run-dir" not in resume
    assert resume[resume.index("--total-timesteps") + 1] == "2048" and not records  # its bench_args.json stays
    for seed in (2, 3):  # a fresh start in the run's directory, with its arguments recorded for a later resume
        command, records = started[seed]
        assert "--resume" not in command and records, seed
        assert command[command.index("--run-dir") + 1] == str(run_dir[seed]) and "--overwrite" in command
        assert command[command.index("gaze_rl.cli") + 1:-2] == train_args(spec[seed], grid)


def test_unfinished_run_resumes_only_with_the_same_arguments(tmp_path):
    cfg = BenchConfig(out=tmp_path, profile="cpu", total_timesteps=2048)
    spec, run_dir = RunSpec("PushCube-v1", "ppo", "baseline", 0), tmp_path / "r"
    assert "--resume" not in train_command(spec, cfg, run_dir)  # nothing there yet
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in ("step_1000.zip", "step_1000.state.pt"):
        (run_dir / "checkpoints" / name).touch()
    assert "--resume" not in train_command(spec, cfg, run_dir)  # no record of its arguments
    (run_dir / BENCH_ARGS_FILE).write_text(json.dumps(train_args(spec, cfg)))
    command = train_command(spec, cfg, run_dir)
    assert command[command.index("--resume") + 1] == str(run_dir) and "--total-timesteps" in command
    assert "--run-dir" not in command  # the run's own config.json says where it lives
    longer = BenchConfig(out=tmp_path, profile="cpu", total_timesteps=4096)
    command = train_command(spec, longer, run_dir)  # a larger budget extends the run
    assert "--resume" in command and command[command.index("--total-timesteps") + 1] == "4096"
    other = BenchConfig(out=tmp_path, profile="cpu", total_timesteps=2048, num_envs=1)
    assert "--resume" not in train_command(spec, other, run_dir)  # other settings: start again


def test_grid_runs_seed_major_so_a_stopped_grid_holds_whole_comparisons(tmp_path):
    cfg = BenchConfig(out=tmp_path, envs=["PushCube-v1"], methods=["baseline", "gaze"], seeds=[0, 1])
    assert [(s.seed, s.method) for s in grid_of(cfg)] == [(0, "baseline"), (0, "gaze"), (1, "baseline"), (1, "gaze")]


def test_unknown_profile_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        bench(BenchConfig(out=tmp_path, profile="tpu"))  # type: ignore[arg-type]


def test_bench_variant_trains_every_run_on_it():
    """--variant reaches each run's train command (and so its bench_args, which a resume must match)."""
    spec = RunSpec("PushCube-v1", "ppo", "gaze", 0)
    args = train_args(spec, BenchConfig(variant="clutter"))
    assert args[args.index("--variant") + 1] == "clutter"
    assert "--variant" not in train_args(spec, BenchConfig())
