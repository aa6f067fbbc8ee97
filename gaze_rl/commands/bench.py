"""`gaze-rl bench`: a resumable grid of training runs and its learning-curve summary.

Each run is one `gaze-rl train` process whose results land in `<out>/runs/<env>__<algo>__<method>__s<seed>`;
a run whose final checkpoint exists is skipped, and an unfinished run started by an earlier bench
with the same arguments resumes from its newest checkpoint, so an interrupted bench continues
where it stopped; `--curves-from` summarises committed curves instead (a grid whose checkpoints
are gone). Runs go to local processes (`--workers` at a time) or to a Ray cluster
(gaze_rl.bench.train); the summary (`curves.csv`, `summary.csv` / `summary.md`, plots):
gaze_rl.bench.summary.
"""

from __future__ import annotations

from typing import Any

from gaze_rl.bench.grid import grid_of
from gaze_rl.bench.summary import summarise, write_curves
from gaze_rl.bench.train import check_grid, run_grid
from gaze_rl.configuration.commands import BenchConfig


def bench(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Trains (unless aggregate_only or curves_from) and summarises the grid."""
    check_grid(cfg)
    grid = grid_of(cfg)
    if not cfg.aggregate_only and cfg.curves_from is None:
        run_grid(cfg)
    return summarise(cfg, write_curves(cfg, grid))
