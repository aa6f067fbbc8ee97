"""Per-seed detail of a committed grid, from its curves folder (results/grid/*/curves/):
each arm's final success per seed (success_once over the episodes in the last 10% of the
budget) and its attention-on-target at every probe step, as the mean over seeds with a 95%
bootstrap interval. The bench's summary.md has the aggregate statistics; this prints what it
leaves out.

    python results/grid/per_seed.py results/grid/pushcube/curves > results/grid/pushcube/per_seed.md
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from gaze_rl.bench.curves import bootstrap_ci
from gaze_rl.bench.summary import read_on_target
from gaze_rl.runs.runlog import read_curve

RUN_NAME = re.compile(r"(?P<env>[^_]+)__(?P<algo>[^_]+)__(?P<method>.+)__s(?P<seed>\d+)\.csv$")
FINAL_FRACTION = 0.1


def final_success(curve: dict[str, np.ndarray]) -> float:
    steps = curve["global_step"]
    return float(curve["success_once"][steps > (1 - FINAL_FRACTION) * steps[-1]].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", type=Path, help="a grid's curves folder, e.g. results/grid/pushcube/curves")
    args = parser.parse_args()
    success: dict[str, dict[int, float]] = defaultdict(dict)
    on_target: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
    for path in sorted(args.curves.glob("*.csv")):
        match = RUN_NAME.match(path.name)
        if match is None:  # an .on_target.csv
            continue
        method, seed = match["method"], int(match["seed"])
        success[method][seed] = final_success(read_curve(path))
        probes = read_on_target(path.with_suffix(".on_target.csv"))
        if probes is not None:
            on_target[method].append(probes)

    arms = sorted(success, key=lambda m: ("+" in m, m))  # plain arms first, then those with an augmentation
    seeds = sorted({s for per_arm in success.values() for s in per_arm})
    print(f"Final success per seed (success_once over the episodes after {1 - FINAL_FRACTION:.0%} of the budget)\n")
    print("| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("| --- |" + " --- |" * (len(seeds) + 1))
    for method in arms:
        per_seed = success[method]
        cells = [f"{per_seed[s]:.2f}" if s in per_seed else "" for s in seeds]
        print(f"| {method} | " + " | ".join(cells) + f" | {np.mean(list(per_seed.values())):.2f} |")

    if not on_target:
        return
    n = min(len(p["global_step"]) for found in on_target.values() for p in found)
    steps = next(iter(on_target.values()))[0]["global_step"][:n]
    chance = np.mean([p["attention_on_target_chance"][0] for found in on_target.values() for p in found])
    print(f"\nAttention-on-target over training: mean over seeds [95% bootstrap CI] (chance {chance:.3f})\n")
    print("| arm | seeds | " + " | ".join(f"{int(s / 1000)}k" for s in steps) + " |")
    print("| --- | --- |" + " --- |" * n)
    for method in [m for m in arms if m in on_target]:
        found = on_target[method]
        values = np.stack([p["attention_on_target"][:n] for p in found])
        cells = []
        for i in range(n):
            low, high = bootstrap_ci([list(values[:, i:i + 1])], lambda x: float(x.mean()))
            cells.append(f"{values[:, i].mean():.3f} [{low:.3f}, {high:.3f}]")
        print(f"| {method} | {len(found)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
