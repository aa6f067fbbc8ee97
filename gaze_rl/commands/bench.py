"""`gaze-rl bench`: a resumable grid of training runs and its learning-curve summary.

Each run is one `gaze-rl train` process whose results land in `<out>/runs/<env>__<algo>__<method>__s<seed>`;
a run whose final checkpoint exists is skipped, and an unfinished run started by an earlier bench
with the same arguments resumes from its newest checkpoint, so an interrupted bench continues
where it stopped. Runs go to local processes (`--workers` at a time) or to a Ray cluster
(gaze_rl.bench_runs, gaze_rl.bench_ray). The summary: `curves.csv` (every episode of every run), mean and 95%
interval plots per (env, algo), and `summary.csv` / `summary.md` with steps to the success
threshold, area under the success curve, final success and return, the sample-efficiency ratio
vs baseline, wall-clock and env-steps/s.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gaze_rl.bench_runs import Progress, RunSpec, grid_of, is_finished, profile_settings, run_local
from gaze_rl.config import BenchConfig
from gaze_rl.curves import CURVE_METRICS, band, efficiency_ratio, normalised_auc, on_grid, read_curve, steps_to_reach
from gaze_rl.errors import ConfigError

CURVE_CSV_COLUMNS = ("method", "algo", "env", "seed", "step", "return", "success_once", "success_at_end", "wall_s")
GRID_POINTS = 20


def run_grid(cfg: BenchConfig) -> list[RunSpec]:
    """Trains every unfinished run of the grid; returns the grid."""
    grid = grid_of(cfg)
    (cfg.out / "logs").mkdir(parents=True, exist_ok=True)
    todo = [s for s in grid if not is_finished(cfg.out / "runs" / s.name)]
    print(f"bench: {len(grid)} runs, {len(grid) - len(todo)} already finished, {len(todo)} to train", flush=True)
    if todo:
        progress = Progress(len(todo))
        if cfg.ray_address:
            from gaze_rl.bench_ray import run_ray

            run_ray(todo, cfg, progress)
        else:
            run_local(todo, cfg, progress)
        if progress.failed:
            print(f"bench: {len(progress.failed)} runs failed: {', '.join(progress.failed)}; "
                  f"logs in {cfg.out / 'logs'}", file=sys.stderr)
    return grid


def write_curves(cfg: BenchConfig, grid: list[RunSpec]) -> dict[RunSpec, dict[str, np.ndarray]]:
    """Collects the finished runs' curves into `<out>/curves.csv`."""
    curves = {s: read_curve(cfg.out / "runs" / s.name / "curve.csv") for s in grid
              if is_finished(cfg.out / "runs" / s.name)}
    with (cfg.out / "curves.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_CSV_COLUMNS)
        for s, c in curves.items():
            for i in range(len(c.get("global_step", []))):
                writer.writerow((s.method, s.algo, s.env, s.seed, int(c["global_step"][i]), c["episodic_return"][i],
                                 int(c["success_once"][i]), int(c["success_at_end"][i]), c["wall_time"][i]))
    return curves


def summarise(cfg: BenchConfig, curves: dict[RunSpec, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Per (env, algo, method): the summary metrics; writes summary.csv, summary.md and plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[dict[str, Any]] = []
    (cfg.out / "plots").mkdir(exist_ok=True)
    for env, algo in sorted({(s.env, s.algo) for s in curves}):
        group = {s: c for s, c in curves.items() if s.env == env and s.algo == algo and c}
        if not group:
            continue
        last_step = min(c["global_step"][-1] for c in group.values())
        grid = np.linspace(last_step / GRID_POINTS, last_step, GRID_POINTS)
        threshold = profile_settings(cfg.profile, env, algo).get("threshold", 0.5)
        bands: dict[str, dict[str, Any]] = {metric: {} for metric in CURVE_METRICS}
        for method in [m for m in cfg.methods if any(s.method == m for s in group)]:
            runs = {s: c for s, c in group.items() if s.method == method}
            for metric in CURVE_METRICS:
                bands[metric][method] = band([on_grid(c, metric, grid) for c in runs.values()], grid)
            success = bands["success_once"][method].mean
            wall = np.mean([c["wall_time"][-1] for c in runs.values()])
            rows.append({
                "env": env, "algo": algo, "method": method, "seeds": len(runs), "steps": int(last_step),
                "final_success_once": round(float(success[-1]), 3),
                "final_return": round(float(bands["episodic_return"][method].mean[-1]), 3),
                f"steps_to_success_{threshold}": steps_to_reach(grid, success, threshold),
                "success_auc": round(normalised_auc(grid, success), 3),
                "wall_s": round(float(wall), 1),
                "env_steps_per_s": round(float(np.mean([c["env_steps_per_s"][-1] for c in runs.values()])), 1),
            })
        baseline = bands["episodic_return"].get("baseline")
        for row in rows:
            if row["env"] == env and row["algo"] == algo and baseline is not None:
                ratio = efficiency_ratio(grid, baseline.mean, bands["episodic_return"][row["method"]].mean)
                row["efficiency_ratio_return"] = None if ratio is None else round(ratio, 2)
        plot_group(plt, cfg.out / "plots" / f"{env}__{algo}.png", env, algo, bands)
    write_summary(cfg.out, rows)
    return rows


def plot_group(plt: Any, path: Path, env: str, algo: str, bands: dict[str, dict[str, Any]]) -> None:
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(5 * len(CURVE_METRICS), 3.6))
    for ax, metric in zip(axes, CURVE_METRICS):
        for method, b in bands[metric].items():
            ax.plot(b.steps, b.mean, label=f"{method} (n={b.seeds})")
            ax.fill_between(b.steps, b.low, b.high, alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_title(metric)
    axes[0].legend()
    fig.suptitle(f"{env} {algo.upper()}: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def validate(cfg: BenchConfig) -> None:
    """What BenchConfig's own checks cannot see (Ray installed, the profiles), before any run starts."""
    if cfg.ray_address and importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray-address needs Ray, which is not installed: pip install 'gaze_rl[ray]'")
    for env in cfg.envs:
        for algo in cfg.algos:
            profile_settings(cfg.profile, env, algo)  # unknown profile: fail before training


def bench(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Trains (unless aggregate_only) and summarises the grid."""
    validate(cfg)
    grid = grid_of(cfg)
    if not cfg.aggregate_only:
        run_grid(cfg)
    return summarise(cfg, write_curves(cfg, grid))
