"""Does the contrastive signal move the gaze to where the return is decided? (issue 12)

Synthetic part (torch only, no simulator): gaze_rl.contrastive.synthetic draws episodes whose
feature maps have a *deciding* cell (the episode's outcome, which alone sets the extra reward)
and a *clock* cell (the step index, which the return-to-go mostly measures). The states fill a
real ContrastiveLearner's buffer; after `--updates` contrastive updates we report the share of
the gaze map's mass on the deciding cell and on the clock cell (over all states), against its
initial value and the uniform chance 1/(h*w).

Grids (`--grid`):
- `rules`:  rule x label x own-episode exclusion, at one budget;
- `budget`: steps per update x anchors per step, and the spread weight, for one rule / label;
- `control`: the chosen configuration with true vs shuffled labels.

    python benchmarks/gaze_signal.py --grid rules --out results/signal/synthetic_rules.json
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.synthetic import cell_mass, synthetic_states
from gaze_rl.nets.extractor import GazeExtractor

from _common import print_table, write_result


def run_one(config: dict[str, Any], seed: int, updates: int, episodes: int = 128) -> dict[str, float]:
    """Fill a learner with one seed's synthetic episodes, run `updates` updates, measure the gaze."""
    torch.manual_seed(seed)
    data = synthetic_states(seed, num_episodes=episodes)
    space = spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8))  # NatureCNN at 64 px: a 64x4x4 map
    extractor = GazeExtractor(space, attention="gaussian")
    learner = ContrastiveLearner(extractor, ContrastiveConfig(buffer_size=len(data.to_go), **config), seed=seed)
    learner.add(data.features, data.to_go, data.episodes, data.steps, data.episode_return)
    attention = extractor.attention
    before = cell_mass(attention, data.features, data.deciding_cell)
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    valid = []
    for _ in range(updates):
        metrics = learner.update()
        valid.append(metrics.get("gaze/valid_fraction", 0.0))
    with torch.no_grad():
        sigma = attention.gaze_params(data.features).sigma.mean().item()
    return {
        "deciding_before": before,
        "deciding_after": cell_mass(attention, data.features, data.deciding_cell),
        "clock_after": cell_mass(attention, data.features, data.clock_cell),
        "sigma_after": sigma,
        "valid_fraction": float(np.mean(valid)),
        "same_episode_fraction": metrics.get("gaze/same_episode_fraction", float("nan")),
        "label_step_spearman": metrics.get("gaze/label_step_spearman", float("nan")),
        "seconds": time.perf_counter() - start,
    }


def grid(name: str, base: dict[str, Any]) -> list[dict[str, Any]]:
    if name == "rules":
        # every rule x label with the anchor's own episode excluded, and the class rule without
        # exclusion (the episode label alone then finds no negatives: neighbours are one episode)
        excluded = [{**base, "rule": r, "label": lab, "exclude_window": -1}
                    for r, lab in itertools.product(("class", "threshold", "relative"), ("to-go", "episode", "detrended"))]
        return excluded + [{**base, "rule": "class", "label": lab, "exclude_window": 0} for lab in ("to-go", "episode")]
    if name == "budget":
        budgets = [{**base, "steps_per_update": steps} for steps in (1, 8, 32)]
        return budgets + [{**base, "steps_per_update": 8, "num_anchors": 512}] + [
            {**base, "steps_per_update": 8, "spread_weight": w} for w in (0.0, 0.001)]
    if name == "control":
        return [{**base, "shuffle_labels": shuffle} for shuffle in (False, True)]
    raise ValueError(f"unknown grid {name!r}; choose rules, budget or control")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", choices=("rules", "budget", "control"), required=True)
    parser.add_argument("--updates", type=int, default=20, help="contrastive updates per run")
    parser.add_argument("--episodes", type=int, default=128, help="synthetic episodes (25 states each)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--base", default="", help="fixed config fields, e.g. 'rule=class,label=episode,steps_per_update=8'")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    base: dict[str, Any] = {}
    for item in filter(None, args.base.split(",")):
        key, value = item.split("=")
        field = ContrastiveConfig.__dataclass_fields__[key]
        textual = "str" in str(field.type) or "Literal" in str(field.type)
        base[key] = value if textual else type(getattr(ContrastiveConfig(), key))(value)
    rows = []
    for config in grid(args.grid, base):
        runs = [run_one(config, seed, args.updates, args.episodes) for seed in args.seeds]
        row = {"config": config, "runs": runs}
        for key in ("deciding_before", "deciding_after", "clock_after", "sigma_after", "valid_fraction",
                    "same_episode_fraction", "label_step_spearman", "seconds"):
            row[key] = float(np.mean([r[key] for r in runs]))
        row["deciding_after_min"] = float(min(r["deciding_after"] for r in runs))
        row["deciding_after_max"] = float(max(r["deciding_after"] for r in runs))
        rows.append(row)
        varied = {k: v for k, v in config.items() if k not in base}
        print(varied, {k: round(row[k], 3) for k in ("deciding_before", "deciding_after", "deciding_after_min",
                                                       "clock_after", "sigma_after", "valid_fraction")}, flush=True)
    _, height, width = synthetic_states(0, num_episodes=1).features.shape[1:]
    chance = 1.0 / (height * width)  # uniform mass per cell of the synthetic map
    table = [[", ".join(f"{k}={v}" for k, v in r["config"].items() if k not in base), r["deciding_before"],
              r["deciding_after"], r["deciding_after_min"], r["deciding_after_max"], r["clock_after"], r["sigma_after"],
              r["valid_fraction"], r["seconds"]] for r in rows]
    print_table(f"{args.grid}: mass share after {args.updates} updates, mean over seeds {args.seeds} "
                f"(chance {chance:.4f})",
                ["config", "decide@0", "decide@N", "min", "max", "clock@N", "sigma", "valid", "s/run"], table)
    write_result(args.out, f"gaze_signal_{args.grid}", {"grid": args.grid, "base": base, "updates": args.updates,
                                                        "episodes": args.episodes,
                                                        "states_per_episode": len(synthetic_states(0, num_episodes=1).to_go),
                                                        "seeds": args.seeds, "chance": chance}, rows)


if __name__ == "__main__":
    main()
