"""Does the gaze update's cost stay flat as the feature buffer fills? (issue 24, item 1)

CPU time (this process, one torch thread) of one `ContrastiveLearner.update()` (labels, index,
8 steps of mining + re-attention + Adam) against the number of stored states, with the update
mining the whole buffer (`mining_pool 0`, the behaviour before issue 24) and a bounded pool
(the default `mining_pool`). The buffer holds episodes of 50 steps (PushCube-v1's length) with
episode ids, steps and episode returns, so the defaults' own-episode exclusion and `episode`
label run as in training; maps and keys are random (the cost does not depend on their values).
Configurations are interleaved (A/B/A/B at every size) and each figure is the median of
`--repeats` updates after one warm-up. Per env step = per update / the states a cpu-learn
rollout adds (2 envs x 50 steps = 100).

    python benchmarks/update_cost.py --out results/speed/update_cost-cpu2.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.nets.extractor import GazeExtractor

from _common import machine_tag, median, print_table, write_result

STATES_PER_ROLLOUT = 100  # cpu-learn: 2 envs x n_steps 50
EPISODE_LENGTH = 50


def filled_learner(backbone: str, states: int, pool: int, seed: int = 0) -> ContrastiveLearner:
    """A learner whose buffer holds `states` random states in episodes of EPISODE_LENGTH."""
    torch.manual_seed(seed)
    space = spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8))
    extractor = GazeExtractor(space, attention="gaussian", backbone=backbone)
    learner = ContrastiveLearner(extractor, ContrastiveConfig(buffer_size=states, mining_pool=pool), seed=seed)
    ids = torch.arange(states)
    episodes, steps = ids // EPISODE_LENGTH, ids % EPISODE_LENGTH
    episode_returns = torch.rand(int(episodes.max()) + 1)[episodes]
    chunk = 4096
    for start in range(0, states, chunk):
        part = slice(start, min(start + chunk, states))
        n = part.stop - part.start
        keys = torch.nn.functional.normalize(torch.randn(n, learner.key_dim), dim=1)
        learner.buffer.add(torch.rand(n, *extractor.map_shape), keys, torch.rand(n), episodes[part], steps[part],
                           episode_returns[part])
    return learner


def cpu_seconds(learner: ContrastiveLearner) -> float:
    start = time.process_time()
    learner.update()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["nature", "drq"])
    parser.add_argument("--states", nargs="+", type=int, default=[3_000, 10_000, 30_000, 100_000])
    parser.add_argument("--max-drq-states", type=int, default=30_000, help="drq maps are 40 KB each")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    default_pool = ContrastiveConfig().mining_pool
    pools = {"whole buffer (mining_pool 0)": 0, f"pool {default_pool} (default)": default_pool}

    results = []
    for backbone in args.backbones:
        for states in args.states:
            if backbone == "drq" and states > args.max_drq_states:
                continue
            learners = {name: filled_learner(backbone, states, pool) for name, pool in pools.items()}
            samples: dict[str, list[float]] = {name: [] for name in pools}
            for learner in learners.values():  # warm-up
                cpu_seconds(learner)
            for _ in range(args.repeats):
                for name, learner in learners.items():  # interleaved
                    samples[name].append(cpu_seconds(learner))
            for name, values in samples.items():
                results.append({"backbone": backbone, "states": states, "mining": name,
                                "update_cpu_ms": 1000 * median(values),
                                "per_env_step_cpu_ms": 1000 * median(values) / STATES_PER_ROLLOUT,
                                "samples_s": values})
            del learners
    for row in results:
        base = next(r for r in results if r["backbone"] == row["backbone"] and r["mining"] == row["mining"]
                    and r["states"] == min(args.states))
        row["vs_smallest"] = row["update_cpu_ms"] / base["update_cpu_ms"]
    print_table("gaze update CPU time (median, one thread)", ["backbone", "states", "mining", "update ms",
                                                              "per env step ms", f"x at {min(args.states)}"],
                [[r["backbone"], r["states"], r["mining"], r["update_cpu_ms"], r["per_env_step_cpu_ms"],
                  r["vs_smallest"]] for r in results])
    write_result(args.out or Path("results/speed") / f"update_cost-{machine_tag()}.json", "update_cost",
                 {**vars(args), "out": str(args.out), "states_per_rollout": STATES_PER_ROLLOUT}, results)


if __name__ == "__main__":
    main()
