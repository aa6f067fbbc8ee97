"""Training a bench grid: the checks before any run starts (Ray installed, the profiles), then every
unfinished run of the grid as a local process (`--workers` at a time, gaze_rl.bench.grid) or a Ray
task (gaze_rl.bench.cluster).
"""

from __future__ import annotations

import importlib.util
import sys

from gaze_rl.bench.grid import Progress, RunSpec, grid_of, is_finished, profile_settings, run_local
from gaze_rl.configuration.commands import BenchConfig
from gaze_rl.errors import ConfigError


def check_grid(cfg: BenchConfig) -> None:
    """What BenchConfig's own checks cannot see (Ray installed, the profiles), before any run starts."""
    if cfg.ray_address and importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray-address needs Ray, which is not installed: pip install 'gaze_rl[ray]'")
    for env in cfg.envs:
        for algo in cfg.algos:
            profile_settings(cfg.profile, env, algo)  # unknown profile: fail before training


def run_grid(cfg: BenchConfig) -> list[RunSpec]:
    """Trains every unfinished run of the grid; returns the grid."""
    grid = grid_of(cfg)
    (cfg.out / "logs").mkdir(parents=True, exist_ok=True)
    todo = [s for s in grid if not is_finished(cfg.out / "runs" / s.name)]
    print(f"bench: {len(grid)} runs, {len(grid) - len(todo)} already finished, {len(todo)} to train", flush=True)
    if todo:
        progress = Progress(len(todo))
        if cfg.ray_address:
            from gaze_rl.bench.cluster import run_ray

            run_ray(todo, cfg, progress)
        else:
            run_local(todo, cfg, progress)
        if progress.failed:
            print(f"bench: {len(progress.failed)} runs failed: {', '.join(progress.failed)}; "
                  f"logs in {cfg.out / 'logs'}", file=sys.stderr)
    return grid
