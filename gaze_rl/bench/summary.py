"""The summary of a bench grid: `curves.csv` (every episode of every finished run), mean and 95%
interval plots per (env, algo) (with attention-on-target over training, and a bar chart of the
efficiency ratios), and `summary.csv` / `summary.md` with steps to the success threshold, area
under the success curve, final success and return, attention-on-target at the start and end, the
gaze's tracking of the target at the end (slope, R^2, distance in cells; Gaussian-gaze runs whose
on_target.csv has the columns), the sample-efficiency ratio vs baseline, each with a 95% bootstrap interval over seeds, wall-clock
and env-steps/s; and, for every arm of an (env, algo) that has a `baseline` arm, its difference from the baseline in final
success and success AUC (`<metric>_diff_vs_baseline`) with a 95% bootstrap interval (`..._ci`) and an exact permutation p over
seeds (`..._p`). The runs' curves come from `<out>/runs/<run>/` or, with `--curves-from`, from committed `<run>.csv` files.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gaze_rl.bench.curves import (
    CURVE_METRICS,
    SUCCESS_SCORES,
    band,
    bootstrap_ci,
    efficiency_ratio,
    final_level,
    normalised_auc,
    on_grid,
    seed_difference,
    steps_to_reach,
    success_scores,
)
from gaze_rl.bench.grid import RunSpec, is_finished, profile_settings
from gaze_rl.configuration.commands import BenchConfig
from gaze_rl.runs.runlog import read_curve
from gaze_rl.segmentation.tracking import TRACK_COLUMNS

CURVE_CSV_COLUMNS = ("method", "algo", "env", "seed", "step", "return", "success_once", "success_at_end", "wall_s")
GRID_POINTS = 20


def curve_file(cfg: BenchConfig, spec: RunSpec) -> Path | None:
    """The curve of a finished run: `<out>/runs/<run>/curve.csv`, or `<curves_from>/<run>.csv`; None if unfinished."""
    if cfg.curves_from is not None:
        path = cfg.curves_from / f"{spec.name}.csv"
        return path if path.is_file() else None
    run_dir = cfg.out / "runs" / spec.name
    return run_dir / "curve.csv" if is_finished(run_dir) else None


def on_target_file(cfg: BenchConfig, spec: RunSpec) -> Path:
    """Where a run's attention-on-target measurements are (the file may not exist)."""
    if cfg.curves_from is not None:
        return cfg.curves_from / f"{spec.name}.on_target.csv"
    return cfg.out / "runs" / spec.name / "on_target.csv"


def write_curves(cfg: BenchConfig, grid: list[RunSpec]) -> dict[RunSpec, dict[str, np.ndarray]]:
    """Collects the finished runs' curves into `<out>/curves.csv`."""
    files = {s: curve_file(cfg, s) for s in grid}
    curves = {s: read_curve(path) for s, path in files.items() if path is not None}
    cfg.out.mkdir(parents=True, exist_ok=True)
    with (cfg.out / "curves.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_CSV_COLUMNS)
        for s, c in curves.items():
            for i in range(len(c.get("global_step", []))):
                writer.writerow((s.method, s.algo, s.env, s.seed, int(c["global_step"][i]), c["episodic_return"][i],
                                 int(c["success_once"][i]), int(c["success_at_end"][i]), c["wall_time"][i]))
    return curves


def read_on_target(path: Path) -> dict[str, np.ndarray] | None:
    """A run's attention-on-target measurements (its on_target.csv), or None without any."""
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def _chance(on_target: list[dict[str, np.ndarray]]) -> float:
    """Attention-on-target of a uniform gaze, averaged over runs: each seed probes its own held-out
    frames, where the objects cover a different share of the image."""
    return float(np.mean([m["attention_on_target_chance"][0] for m in on_target]))


def _ci(bounds: tuple[float, float], digits: int = 3) -> str:
    return "[" + ", ".join("not reached" if np.isinf(b) else f"{b:.{digits}g}" for b in bounds) + "]"


def _round(steps: float | None) -> int | None:
    return None if steps is None else round(steps)


# Statistics of seed-stacked curves (seeds, grid points), for bootstrap_ci.
def _steps_to(grid: np.ndarray, level: float, curves: np.ndarray) -> float | None:
    return steps_to_reach(grid, np.nanmean(curves, axis=0), level)


def _auc(grid: np.ndarray, curves: np.ndarray) -> float:
    return normalised_auc(grid, np.nanmean(curves, axis=0))


def _ratio(grid: np.ndarray, baseline: np.ndarray, method: np.ndarray) -> float | None:
    return efficiency_ratio(grid, np.nanmean(baseline, axis=0), np.nanmean(method, axis=0))


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def differences_vs_baseline(grid: np.ndarray, success: list[np.ndarray], baseline: list[np.ndarray]) -> dict[str, Any]:
    """An arm's per-seed success curves against the baseline's on the same grid: per success score
    (final success, success AUC), `<score>_diff_vs_baseline` (the arm's mean over seeds minus the
    baseline's), `<score>_diff_vs_baseline_ci` (its 95% bootstrap interval) and
    `<score>_diff_vs_baseline_p` (exact two-sided permutation p over seeds)."""
    mine, base = [success_scores(grid, s) for s in success], [success_scores(grid, s) for s in baseline]
    out: dict[str, Any] = {}
    for score in SUCCESS_SCORES:
        diff = seed_difference([m[score] for m in mine], [b[score] for b in base])
        out[f"{score}_diff_vs_baseline"] = round(diff.mean, 3)
        out[f"{score}_diff_vs_baseline_ci"] = _ci((diff.low, diff.high))
        out[f"{score}_diff_vs_baseline_p"] = round(diff.p, 3)
    return out


def tracking_summary(on_target: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Gaze tracking at the end of training (the last measurement all runs have), mean over the
    seeds that measured it (NaN ones left out) with its 95% bootstrap interval: `<column>_end`
    and `<column>_end_ci` per tracking column. Empty when no run has the columns (runs without a
    Gaussian gaze, on_target.csv files written before tracking existed)."""
    tracked = [m for m in on_target if all(c in m for c in TRACK_COLUMNS)]
    if not tracked:
        return {}
    n = min(len(m[TRACK_COLUMNS[0]]) for m in tracked)
    out: dict[str, Any] = {}
    for column in TRACK_COLUMNS:
        end = [m[column][n - 1:n] for m in tracked]  # one (1,) array per seed
        mean = _nanmean(np.concatenate(end))
        out[f"{column}_end"] = round(mean, 3) if np.isfinite(mean) else None
        out[f"{column}_end_ci"] = _ci(bootstrap_ci([end], _nanmean)) if np.isfinite(mean) else None
    return out


def summarise(cfg: BenchConfig, curves: dict[RunSpec, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Per (env, algo, method): the summary metrics with 95% bootstrap intervals over seeds;
    writes summary.csv, summary.md and plots (curves with bands, attention-on-target, ratios)."""
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
        per_seed: dict[str, dict[str, list[np.ndarray]]] = {}
        on_target: dict[str, list[dict[str, np.ndarray]]] = {}
        for method in [m for m in cfg.methods if any(s.method == m for s in group)]:
            runs = {s: c for s, c in group.items() if s.method == method}
            per_seed[method] = {metric: [on_grid(c, metric, grid) for c in runs.values()] for metric in CURVE_METRICS}
            for metric in CURVE_METRICS:
                bands[metric][method] = band(per_seed[method][metric], grid)
            success = per_seed[method]["success_once"]
            mean_success = bands["success_once"][method].mean
            wall = np.mean([c["wall_time"][-1] for c in runs.values()])
            row: dict[str, Any] = {
                "env": env, "algo": algo, "method": method, "seeds": len(runs), "steps": int(last_step),
                "final_success_once": round(final_level(np.stack(success)), 3),
                "final_success_once_ci": _ci(bootstrap_ci([success], final_level)),
                f"steps_to_success_{threshold}": _round(steps_to_reach(grid, mean_success, threshold)),
                f"steps_to_success_{threshold}_ci": _ci(bootstrap_ci([success], partial(_steps_to, grid, threshold)), 4),
                "success_auc": round(normalised_auc(grid, mean_success), 3),
                "success_auc_ci": _ci(bootstrap_ci([success], partial(_auc, grid))),
                "final_return": round(float(bands["episodic_return"][method].mean[-1]), 3),
                "wall_s": round(float(wall), 1),
                "env_steps_per_s": round(float(np.mean([c["env_steps_per_s"][-1] for c in runs.values()])), 1),
            }
            found = [m for m in (read_on_target(on_target_file(cfg, s)) for s in runs) if m is not None]
            if found:
                on_target[method] = found
                n = min(len(m["attention_on_target"]) for m in found)
                aot = np.stack([m["attention_on_target"][:n] for m in found])
                row["attention_on_target_start"] = round(float(aot[:, 0].mean()), 4)
                row["attention_on_target_end"] = round(float(aot[:, -1].mean()), 4)
                row["attention_on_target_end_ci"] = _ci(bootstrap_ci([list(aot[:, -1:])], lambda x: float(x.mean())))
                row["attention_on_target_chance"] = round(_chance(found), 4)
                row.update(tracking_summary(found))
            rows.append(row)
        ratios: dict[str, tuple[float, tuple[float, float]]] = {}  # method -> (ratio, interval), for the chart
        if "baseline" in per_seed:
            base = per_seed["baseline"]["episodic_return"]
            for row in rows:
                if row["env"] != env or row["algo"] != algo:
                    continue
                mine = per_seed[row["method"]]["episodic_return"]
                ratio = efficiency_ratio(grid, bands["episodic_return"]["baseline"].mean,
                                         bands["episodic_return"][row["method"]].mean)
                bounds = bootstrap_ci([base, mine], partial(_ratio, grid))
                row["efficiency_ratio_return"] = None if ratio is None else round(ratio, 2)
                row["efficiency_ratio_return_ci"] = _ci(bounds)
                if ratio is not None:
                    ratios[row["method"]] = (ratio, bounds)
                if row["method"] != "baseline":
                    row.update(differences_vs_baseline(grid, per_seed[row["method"]]["success_once"],
                                                       per_seed["baseline"]["success_once"]))
        plot_group(plt, cfg.out / "plots" / f"{env}__{algo}.png", env, algo, bands, on_target)
        plot_ratios(plt, cfg.out / "plots" / f"{env}__{algo}__ratios.png", env, algo, ratios)
    write_summary(cfg.out, rows)
    return rows


def plot_group(plt: Any, path: Path, env: str, algo: str, bands: dict[str, dict[str, Any]],
               on_target: dict[str, list[dict[str, np.ndarray]]]) -> None:
    panels = len(CURVE_METRICS) + bool(on_target)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    for ax, metric in zip(axes, CURVE_METRICS):
        # A t-interval over few seeds can leave a rate's range; draw it only where the rate can be.
        low, high = (0.0, 1.0) if metric.startswith("success") else (-np.inf, np.inf)
        for method, b in bands[metric].items():
            ax.plot(b.steps, b.mean, label=f"{method} (n={b.seeds})")
            ax.fill_between(b.steps, np.clip(b.low, low, high), np.clip(b.high, low, high), alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_title(metric)
    if on_target:
        ax = axes[-1]
        for method, found in on_target.items():
            n = min(len(m["global_step"]) for m in found)
            b = band([m["attention_on_target"][:n] for m in found], found[0]["global_step"][:n])
            ax.plot(b.steps, b.mean, marker="o", label=method)
            ax.fill_between(b.steps, b.low, b.high, alpha=0.2)
        chance = _chance([m for found in on_target.values() for m in found])
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_xlabel("env steps")
        ax.set_title("attention on target")
    axes[0].legend()
    fig.suptitle(f"{env} {algo.upper()}: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ratios(plt: Any, path: Path, env: str, algo: str, ratios: dict[str, tuple[float, tuple[float, float]]]) -> None:
    """Bar chart of the sample-efficiency ratios vs baseline with their bootstrap intervals (an
    infinite bound, "not reached" in some resamples, gets no whisker)."""
    if not ratios:
        return
    fig, ax = plt.subplots(figsize=(1.2 * len(ratios) + 2, 3.6))
    values = [ratio for ratio, _ in ratios.values()]
    low = [max(ratio - lo, 0.0) if np.isfinite(lo) else 0.0 for ratio, (lo, _) in ratios.values()]
    high = [max(hi - ratio, 0.0) if np.isfinite(hi) else 0.0 for ratio, (_, hi) in ratios.values()]
    ax.bar(list(ratios), values, yerr=[low, high], capsize=4)
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set_ylabel("sample-efficiency ratio vs baseline")
    ax.set_title(f"{env} {algo.upper()} (> 1: fewer samples than baseline)")
    ax.tick_params(axis="x", rotation=30)
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
