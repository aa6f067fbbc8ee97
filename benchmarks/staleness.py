"""How stale do stored features get? Feature drift of one training run, by age (issue 23, item 4).

The contrastive loss trains the gaze on feature maps stored (detached) when their state was
collected, and mines neighbours with keys computed then. While RL trains the encoder, those maps
drift away from what the current encoder gives for the same frames. This benchmark measures the
drift on real policy frames, from a run's own checkpoints: for every pair of checkpoints
(older a, newer b), with age = b - a env steps,

- `cosine`: mean cosine of the feature maps the two encoders give for the same frame;
- `norm_ratio`: mean ||F_b|| / ||F_a||;
- `knn_overlap`: share of each anchor's k nearest neighbours (the learner's keys, among the
  frames) that the old keys and the new keys agree on, i.e. how much of the mining survives;
- `mu_shift_cells`: how far the *newest* gaze head's mean moves between the old and new maps
  of the same frame, in cells of the map: the error of training the gaze on the stored map.

Frames: `--frames` observations of the newest checkpoint's policy acting in the run's env.
A feature buffer of capacity W states (one per env step) holds features up to W env steps
old, so the table reads as "what a buffer of W states costs in freshness".

    python benchmarks/staleness.py RUN_DIR [--frames 1024] [--out results/signal/staleness-cpu2.json]
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecTransposeImage

from gaze_rl.build import ALGO_CLASSES, load_run_config
from gaze_rl.envs.factory import make_vec_env
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.runs.checkpoints import load_model

from _common import machine_tag, median, print_table, write_result


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(env step, path) of the run's step_<N>.zip checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in (run_dir / "checkpoints").glob("step_*.zip")
             if (m := re.fullmatch(r"step_(\d+)\.zip", p.name))]
    if len(found) < 2:
        raise SystemExit(f"{run_dir} has {len(found)} step checkpoints; train with --checkpoint-every so it has >= 2")
    return sorted(found)


def policy_frames(model: Any, run: dict[str, Any], frames: int, seed: int) -> np.ndarray:
    """`frames` observations of the model's (stochastic) policy in the run's env, as stored by the learner."""
    spec = EnvSpec(**{**run["env"], "num_envs": 1})
    env = VecTransposeImage(make_vec_env(spec, seed=seed))
    try:
        obs, kept = env.reset(), []
        while len(kept) < frames:
            kept.append(obs)
            action, _ = model.predict(obs, deterministic=False)
            obs, *_ = env.step(action)
    finally:
        env.close()
    if isinstance(kept[0], dict):
        return {k: np.concatenate([o[k] for o in kept]) for k in kept[0]}  # type: ignore[return-value]
    return np.concatenate(kept)


def knn_sets(keys: torch.Tensor, anchors: torch.Tensor, k: int) -> torch.Tensor:
    """(A, k) indices of each anchor's k nearest keys (cosine), the anchor itself excluded."""
    sims = keys[anchors] @ keys.T
    sims[torch.arange(len(anchors)), anchors] = -float("inf")
    return sims.topk(k, dim=1).indices


@torch.no_grad()
def drift(old: torch.Tensor, new: torch.Tensor, model: Any, anchors: torch.Tensor, k: int) -> dict[str, float]:
    """The four drift measures (module docstring) of one pair of feature-map sets (N, C, h, w)."""
    a, b = old.flatten(1).float(), new.flatten(1).float()
    learner = model.contrastive
    old_nn, new_nn = knn_sets(learner.keys(old), anchors, k), knn_sets(learner.keys(new), anchors, k)
    overlap = (old_nn[:, :, None] == new_nn[:, None, :]).any(-1).float().mean()
    attention = learner.extractor.attention
    side = old.shape[-1]
    mu_old, mu_new = attention(old.float()).params.mu, attention(new.float()).params.mu
    return {
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean()),
        "norm_ratio": float((b.norm(dim=1) / a.norm(dim=1).clamp_min(1e-8)).mean()),
        "knn_overlap": float(overlap),
        # mu spans [-1, 1] over `side` cells: one cell = 2 / side
        "mu_shift_cells": float((mu_new - mu_old).norm(dim=-1).mean() * side / 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--anchors", type=int, default=256)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    checkpoints = step_checkpoints(args.run_dir)
    run = load_run_config(checkpoints[-1][1])
    algo = ALGO_CLASSES[run["train"]["algo"]]
    models = {step: load_model(algo, path, device="cpu") for step, path in checkpoints}
    newest = models[checkpoints[-1][0]]
    if getattr(newest, "contrastive", None) is None:
        raise SystemExit(f"{args.run_dir} is not a gaze run (no contrastive learner): its features are not stored")
    obs = policy_frames(newest, run, args.frames, args.seed)
    maps = {step: model._feature_maps(obs) for step, model in models.items()}
    anchors = torch.randperm(args.frames, generator=torch.Generator().manual_seed(0))[: args.anchors]

    pairs = []
    for (sa, _), (sb, _) in itertools.combinations(checkpoints, 2):
        pairs.append({"old_step": sa, "new_step": sb, "age": sb - sa,
                      **drift(maps[sa], maps[sb], newest, anchors, args.k)})
    ages = sorted({p["age"] for p in pairs})
    measures = ("cosine", "norm_ratio", "knn_overlap", "mu_shift_cells")
    by_age = [{"age": age, "pairs": sum(p["age"] == age for p in pairs),
               **{m: median([p[m] for p in pairs if p["age"] == age]) for m in measures}} for age in ages]
    print_table(f"feature drift by age (median over checkpoint pairs), {args.run_dir.name}",
                ["age (env steps)", "pairs", *measures], [[r["age"], r["pairs"], *(r[m] for m in measures)] for r in by_age])
    write_result(args.out or Path("results/signal") / f"staleness-{machine_tag()}.json", "staleness",
                 {**vars(args), "run_dir": str(args.run_dir), "checkpoints": [s for s, _ in checkpoints],
                  "map_shape": list(maps[checkpoints[0][0]].shape[1:])},
                 {"by_age": by_age, "pairs": pairs})


if __name__ == "__main__":
    main()
