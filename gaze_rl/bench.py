"""`gaze-rl bench`: a resumable grid of training runs and its learning-curve summary.

Each run is one `gaze-rl train` process whose results land in `<out>/runs/<env>__<algo>__<method>__s<seed>`;
a run whose final checkpoint exists is skipped, and an unfinished run started by an earlier bench
with the same arguments resumes from its newest checkpoint, so an interrupted bench continues
where it stopped. Runs go to local processes (`--workers` at a time) or to a Ray cluster
(gaze_rl.bench_ray). The summary: `curves.csv` (every episode of every run), mean and 95%
interval plots per (env, algo), and `summary.csv` / `summary.md` with steps to the success
threshold, area under the success curve, final success and return, the sample-efficiency ratio
vs baseline, wall-clock and env-steps/s.
"""

from __future__ import annotations

import csv
import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import product
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gaze_rl.checkpoints import latest_checkpoint
from gaze_rl.config import BenchConfig
from gaze_rl.curves import CURVE_METRICS, band, efficiency_ratio, normalised_auc, on_grid, read_curve, steps_to_reach
from gaze_rl.methods import split_arm
from gaze_rl.presets import read_experiments_toml

CURVE_CSV_COLUMNS = ("method", "algo", "env", "seed", "step", "return", "success_once", "success_at_end", "wall_s")
GRID_POINTS = 20
# Resolved before any fork: the child of a multithreaded process (a Ray worker) must not load libraries.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunSpec:
    env: str
    algo: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.env}__{self.algo}__{self.method}__s{self.seed}"


def profile_settings(profile: str, env: str, algo: str) -> dict[str, Any]:
    """The profile's settings for one (env, algo): profile, then algo table, then env table."""
    tables = read_experiments_toml("bench.toml")
    if profile not in tables:
        raise ValueError(f"unknown profile {profile!r}; valid choices: {', '.join(tables)}")
    base = tables[profile]
    scalars = {k: v for k, v in base.items() if not isinstance(v, dict)}
    return {**scalars, **base.get(algo, {}), **base.get(env, {})}


def grid_of(cfg: BenchConfig) -> list[RunSpec]:
    return [RunSpec(*combo) for combo in product(cfg.envs, cfg.algos, cfg.methods, cfg.seeds)]


def run_settings(spec: RunSpec, cfg: BenchConfig) -> dict[str, Any]:
    """The `gaze-rl train` options of one run: its profile's settings with the bench's overrides."""
    settings = profile_settings(cfg.profile, spec.env, spec.algo)
    settings.pop("threshold", None)
    if cfg.total_timesteps is not None:
        settings["total_timesteps"] = cfg.total_timesteps
    if cfg.num_envs is not None:
        settings["num_envs"] = cfg.num_envs
    return settings


def train_args(spec: RunSpec, cfg: BenchConfig) -> list[str]:
    """`gaze-rl` arguments of one run, without its directory (the machine that runs it picks that)."""
    method, augment = split_arm(spec.method)
    args = ["train", "--env-id", spec.env, "--algo", spec.algo, "--method", method, "--augment", augment,
            "--seed", str(spec.seed), "--overwrite", "--no-progress-bar"]  # --overwrite only ever replaces an unfinished run
    for key, value in run_settings(spec, cfg).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def cli_command(args: list[str], run_dir: Path | None = None) -> list[str]:
    # sys.executable of the machine that runs the command (on a cluster: the worker's Python).
    return [sys.executable, "-m", "gaze_rl.cli", *args, *(["--run-dir", str(run_dir)] if run_dir else [])]


BENCH_ARGS_FILE = "bench_args.json"  # the arguments a run was started with, to resume it only unchanged


def train_command(spec: RunSpec, cfg: BenchConfig, run_dir: Path) -> list[str]:
    """The command that trains one run: a resume from its newest checkpoint (to this bench's budget)
    when an earlier bench left it unfinished with the same arguments, else a fresh start (replacing
    any unfinished run)."""
    args = train_args(spec, cfg)
    started_with = run_dir / BENCH_ARGS_FILE
    if (latest_checkpoint(run_dir) is not None and started_with.is_file()
            and _without_budget(json.loads(started_with.read_text())) == _without_budget(args)):
        total = run_settings(spec, cfg)["total_timesteps"]
        return cli_command(["train", "--resume", str(run_dir), "--total-timesteps", str(total), "--no-progress-bar"])
    return cli_command(args, run_dir)


def _without_budget(args: list[str]) -> list[str]:
    """Train arguments less `--total-timesteps N`: a resumed run may be extended to a larger budget."""
    i = args.index("--total-timesteps") if "--total-timesteps" in args else len(args)
    return args[:i] + args[i + 2:]


def record_args(args: list[str], run_dir: Path, process: subprocess.Popen) -> None:
    """Writes a fresh run's arguments beside it once training has (re)created the directory
    (its new config.json), so that a later bench can resume it."""
    started, config = time.time(), run_dir / "config.json"
    while process.poll() is None:
        if config.is_file() and config.stat().st_mtime >= started - 1:
            (run_dir / BENCH_ARGS_FILE).write_text(json.dumps(args))
            return
        time.sleep(1)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "final.zip").is_file()


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_process(command: list[str], log: Path, torch_threads: int,
                on_start: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Runs one training process with its output in `log` (appended: a resumed run keeps its
    history); returns its exit code (< 0: killed by that signal). `on_start(process)` runs while
    it trains. The process dies with its parent, so a killed Ray worker leaves no orphan training
    behind on its node."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch_threads)}  # torch's thread count
    with log.open("a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=_die_with_parent)
        if on_start is not None:
            on_start(process)
        return process.wait()


def failure_note(code: int, log: Path) -> str:
    return f"exit code {code}; log: {log}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """The grid's progress on the head: one line per event with runs done / running / failed and
    an ETA (mean duration of the runs done so far, over the most runs seen running at once)."""

    def __init__(self, total: int):
        self.total = total
        self.running: dict[str, float] = {}  # run name -> start time
        self.durations: list[float] = []
        self.failed: list[str] = []
        self.slots = 1  # most runs seen running at once: the grid's parallelism
        self._lock = threading.Lock()  # local runs report from their threads

    def start(self, name: str, where: str = "") -> None:
        with self._lock:
            self.running[name] = time.monotonic()
            self.slots = max(self.slots, len(self.running))
            self._say(f"{name} started{where}")

    def finish(self, name: str, ok: bool, note: str = "") -> None:
        with self._lock:
            started = self.running.pop(name, None)
            if ok and started is not None:
                self.durations.append(time.monotonic() - started)
            elif not ok:
                self.failed.append(name)
            self._say(f"{name} {'done' if ok else 'FAILED'}{f' ({note})' if note else ''}")

    def requeue(self, name: str, note: str) -> None:
        """A run that lost its worker and will run again."""
        with self._lock:
            self.running.pop(name, None)
            self._say(f"{name} lost ({note})")

    def report(self) -> None:
        with self._lock:
            self._say("still going")

    def eta(self) -> str:
        if not self.durations:
            return "after the first run"
        mean, now = float(np.mean(self.durations)), time.monotonic()
        queued = self.total - len(self.durations) - len(self.failed) - len(self.running)
        left = queued * mean + sum(max(mean - (now - t), 0.0) for t in self.running.values())
        return _duration(left / self.slots)

    def _say(self, event: str) -> None:
        print(f"bench: {event} | {len(self.durations)}/{self.total} done, {len(self.running)} running, "
              f"{len(self.failed)} failed, ETA {self.eta()}", flush=True)


def run_local(specs: list[RunSpec], cfg: BenchConfig, progress: Progress) -> None:
    """Trains the runs as local processes, `cfg.workers` at a time, each logging to its own file."""

    def run_one(spec: RunSpec) -> None:
        log = cfg.out / "logs" / f"{spec.name}.log"
        run_dir = cfg.out / "runs" / spec.name
        command = train_command(spec, cfg, run_dir)
        resumed = "--resume" in command
        progress.start(spec.name, " (resumed)" if resumed else "")
        code = run_process(command, log, cfg.torch_threads,
                           on_start=None if resumed else partial(record_args, train_args(spec, cfg), run_dir))
        progress.finish(spec.name, code == 0, "" if code == 0 else failure_note(code, log))

    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        list(pool.map(run_one, specs))


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
        bands = {metric: {} for metric in CURVE_METRICS}
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
    """Checks the options before any run starts."""
    for name in ("workers", "torch_threads", "num_envs", "total_timesteps"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1 (got {value})")
    if cfg.ray_address and cfg.workers != 1:
        raise ValueError("--workers is for local runs; on Ray the cluster's free resources decide how many run at once")
    if (cfg.ray_num_cpus is not None or cfg.ray_num_gpus is not None) and not cfg.ray_address:
        raise ValueError("--ray-num-cpus and --ray-num-gpus only apply with --ray-address")
    if cfg.ray_num_cpus is not None and cfg.ray_num_cpus <= 0:
        raise ValueError(f"ray-num-cpus must be > 0 (got {cfg.ray_num_cpus})")
    if cfg.ray_num_gpus is not None and cfg.ray_num_gpus < 0:
        raise ValueError(f"ray-num-gpus must be >= 0 (got {cfg.ray_num_gpus})")
    if cfg.ray_max_retries < 0:
        raise ValueError(f"ray-max-retries must be >= 0 (got {cfg.ray_max_retries})")
    if cfg.ray_address and importlib.util.find_spec("ray") is None:
        raise ValueError("--ray-address needs Ray, which is not installed: pip install 'gaze_rl[ray]'")
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
