"""The gaze's contrastive update cost over a training run, read from the runs' own TensorBoard logs:
median `gaze/update_ms` and `gaze/mining_ms` (wall ms per PPO rollout) per 5k-state band of
`gaze/buffer_size`, and that cost per env step of the rollout.

The learner mines over every stored state (exact k-NN of 128 anchors x 8 steps per update), so its
cost grows with the buffer; a short run (benchmarks/train_cost.py at 1k-3k steps) cannot see it.

    python benchmarks/gaze_update_cost.py bench/grid-pushcube/runs/*gaze*
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from _common import median, print_table

BAND = 5_000


def scalars(run: Path, tags: tuple[str, ...]) -> list[tuple[float, ...]]:
    """The tags' values at each logged step where all of them were logged."""
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    by_step = [{e.step: e.value for e in events.Scalars(tag)} for tag in tags]
    return [tuple(values[step] for values in by_step) for step in sorted(set.intersection(*(set(v) for v in by_step)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="gaze-rl train run directories of a gaze method")
    p.add_argument("--rollout-steps", type=int, default=100, help="env steps per PPO rollout (n_steps x num_envs)")
    a = p.parse_args()
    bands: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in a.runs:
        for size, update, mining in scalars(run, ("gaze/buffer_size", "gaze/update_ms", "gaze/mining_ms")):
            bands[int(size) // BAND]["update"].append(update)
            bands[int(size) // BAND]["mining"].append(mining)
    rows = [[f"{b * BAND // 1000}-{(b + 1) * BAND // 1000}k", len(v["update"]), median(v["update"]), median(v["mining"]),
             median(v["update"]) / a.rollout_steps] for b, v in sorted(bands.items())]
    print_table(f"gaze update per rollout, {len(a.runs)} runs (median wall ms)",
                ["buffer", "updates", "update ms", "of which mining ms", "update ms per env step"], rows)


if __name__ == "__main__":
    main()
