"""Differences between arms of committed grids, each with its 95% bootstrap interval and an exact
permutation p over seeds: what the headroom pilot's verdict rests on.

An arm is `LABEL=FOLDER:METHOD` (a grid's curves folder, as results/grid/*/curves/ holds them,
and the method part of its run names); the first arm is the reference every other is compared
with. Per seed: final success = mean success_once over the last 10% of the step grid, AUC = the
area under the success curve over the step range, and each difference with its interval and p
(gaze_rl.bench.curves: success_scores, seed_difference, which `gaze-rl bench` writes as its
`*_diff_vs_baseline*` columns too); per-arm means carry 95% bootstrap intervals over seeds.
The step grid here is 60 points up to --last-step (the committed differences.md tables); the
bench's is 20 points up to its shortest run, so its columns differ a little (PushCube gaze's
final-success difference: -0.129, p 0.056 in the bench's summary; -0.123, p 0.06 here).

    python results/compare.py \
        "baseline 64=results/grid/pushcube/curves:baseline" \
        "privileged 64=results/headroom/pilot-64/curves:privileged" > results/headroom/pilot-64.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from gaze_rl.bench.curves import SUCCESS_SCORES, bootstrap_ci, on_grid, seed_difference, success_scores
from gaze_rl.runs.runlog import read_curve

GRID_POINTS = 60
RUN_NAME = re.compile(r"(?P<env>[^_]+)__(?P<algo>[^_]+)__(?P<method>.+)__s(?P<seed>\d+)\.csv$")


def per_seed(folder: Path, method: str, last_step: float) -> dict[int, dict[str, float]]:
    """Final success and success AUC of each seed's run of `method` in `folder`."""
    grid = np.linspace(last_step / GRID_POINTS, last_step, GRID_POINTS)
    out = {}
    for path in sorted(folder.glob("*.csv")):
        match = RUN_NAME.match(path.name)
        if match is None or match["method"] != method:
            continue
        out[int(match["seed"])] = success_scores(grid, on_grid(read_curve(path), "success_once", grid))
    return out


def fmt(x: float) -> str:
    return f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arms", nargs="+", help="LABEL=FOLDER:METHOD; the first is the reference")
    parser.add_argument("--last-step", type=float, default=30_000, help="the protocol's budget (env steps)")
    args = parser.parse_args()
    arms = []
    for spec in args.arms:
        label, _, where = spec.partition("=")
        folder, _, method = where.rpartition(":")
        seeds = per_seed(Path(folder), method, args.last_step)
        if not seeds:
            raise SystemExit(f"no runs of {method!r} in {folder}")
        arms.append((label, seeds))
    print("| arm | seeds | final success [95% CI] | success AUC [95% CI] | final - ref [95% CI], p | AUC - ref [95% CI], p |")
    print("| --- | --- | --- | --- | --- | --- |")
    ref_label, ref = arms[0]
    for label, seeds in arms:
        cells = [label, ", ".join(map(str, sorted(seeds)))]
        for metric in SUCCESS_SCORES:
            values = [s[metric] for s in seeds.values()]
            low, high = bootstrap_ci([[np.float64(v) for v in values]], lambda x: float(x.mean()))
            cells.append(f"{np.mean(values):.3f} [{low:.3f}, {high:.3f}]")
        for metric in SUCCESS_SCORES:
            if label == ref_label:
                cells.append("reference")
                continue
            diff = seed_difference([s[metric] for s in seeds.values()], [s[metric] for s in ref.values()])
            cells.append(f"{fmt(diff.mean)} [{fmt(diff.low)}, {fmt(diff.high)}], p {diff.p:.2f}")
        print("| " + " | ".join(cells) + " |")
    print(f"\nReference: {ref_label}. Per seed (final / AUC):")
    final, auc = SUCCESS_SCORES
    for label, seeds in arms:
        print(f"- {label}: " + "; ".join(f"s{k} {v[final]:.2f} / {v[auc]:.2f}" for k, v in sorted(seeds.items())))


if __name__ == "__main__":
    main()
