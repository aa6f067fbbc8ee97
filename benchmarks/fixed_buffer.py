"""Does the triplet loss go through the gaze? (issue 23) One fixed buffer, four ways to compare.

The triplet loss compares a projection of the attended features. With a trained projection
the loss can fall without the gaze moving: the projection alone can separate the triplets.
Here a ContrastiveLearner's buffer holds one fixed set of states, and `--updates` contrastive
updates run for each arm (same seed, same initial gaze head and, where there is one, the same
initial projection):

* `projection-only`: the projection is trained, the gaze head is not (the optimizer holds
  only the projection): how far the loss falls with no help from the gaze;
* `trained`: the method as it is (`projection='trained'`: gaze head + projection trained);
* `frozen`: a fixed random projection (`projection='frozen'`): only the gaze can lower the loss;
* `none`: the loss on the attended feature map itself, flattened (`projection='none'`).

With `--controls`, every arm runs again with the labels shuffled between episodes (the
gaze-shuffled control, `shuffle_labels=True`): a gaze that moves there moves for no reason the
labels give.

Per arm: the triplet loss and the share of active triplets (hinge > 0) in the first and the
last update, how much the gaze map moves per update (mean |A_u - A_(u-1)| / mean A over the
buffer's states, first update and mean over updates), and where the gaze ends up: on synthetic
maps its mass on the cell that decides the return (gaze_rl.contrastive.synthetic.cell_mass;
chance 1/16), on real frames its attention-on-target (the share of the normalised gaze map on
the cells the cube and goal cover, gaze_rl.segmentation; chance = the share of target pixels).

Data (`--data`): `synthetic` = gaze_rl.contrastive.synthetic (one cell decides the return);
`real` = 64 px PushCube-v1 frames of a scripted noisy pusher (benchmarks/label_quality.py)
through a random (untrained) NatureCNN, labelled as GazePPO would label them (episode label,
`--real-discount`, PushCube's gamma 0.8 by default).

    python benchmarks/fixed_buffer.py --updates 30 --seeds 0 1 2 --out results/signal/fixed_buffer-cpu2.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.synthetic import cell_mass, synthetic_states
from gaze_rl.nets.extractor import GazeExtractor

from _common import print_table, write_result

ARMS = {"projection-only": "trained", "trained": "trained", "frozen": "frozen", "none": "none"}
SPACE = spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8))  # NatureCNN at 64 px: a 64x4x4 map


def synthetic_data(seed: int, episodes: int) -> dict[str, Any]:
    data = synthetic_states(seed, num_episodes=episodes)
    return {"features": data.features, "to_go": data.to_go, "episodes": data.episodes, "steps": data.steps,
            "episode_return": data.episode_return, "success": data.outcome.float(), "deciding_cell": data.deciding_cell,
            "clock_cell": data.clock_cell}


def real_data(episodes: int, discount: float, seed: int = 0, backbone: torch.nn.Module | None = None,
              mask_groups: dict[str, Sequence[str]] | None = None,
              recorded: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """PushCube-v1 frames of the scripted pusher through `backbone` (None = a random NatureCNN,
    seed 12345, not a learner's seed), with the labels GazePPO stores, the target cells' coverage,
    the tcp's and cube's positions, and per name of `mask_groups` its actors' coverage
    (`coverage_<name>`). `recorded`: episodes label_quality.collect returned already (with
    frames and these mask groups), instead of collecting `episodes` new ones."""
    from gaze_rl.contrastive.returns import episode_labels
    from gaze_rl.segmentation.targets import coverage_grid

    from label_quality import collect

    if recorded is None:
        recorded, _ = collect(episodes, seed, frames=True, mask_groups=mask_groups)
    if backbone is None:
        torch.manual_seed(12345)
        backbone = GazeExtractor(SPACE, attention="gaussian").backbone
    frames = np.concatenate([ep["rgb"] for ep in recorded])
    with torch.no_grad():
        images = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0  # as SB3 preprocesses uint8
        features = torch.cat([backbone(chunk) for chunk in images.split(256)])
    labels = [episode_labels(np.asarray(ep["rewards"]), discount, i, ep["success"]) for i, ep in enumerate(recorded)]

    def cat(name: str) -> torch.Tensor:
        return torch.as_tensor(np.concatenate([getattr(lab, name) for lab in labels]))

    def coverage(key: str) -> torch.Tensor:
        return torch.as_tensor(coverage_grid(np.concatenate([ep[key] for ep in recorded]), *features.shape[-2:]))

    masks = np.concatenate([ep["masks"] for ep in recorded])
    return {"features": features, "to_go": cat("to_go"), "episodes": cat("episode"), "steps": cat("step"),
            "episode_return": cat("episode_return"), "success": cat("success"), "deciding_cell": None,
            "clock_cell": None, "success_rate": float(np.mean([ep["success"] for ep in recorded])),
            "coverage": coverage("masks"), "chance": float(masks.mean()),
            "tcp": np.concatenate([ep["tcp"] for ep in recorded]), "cube": np.concatenate([ep["cube"] for ep in recorded]),
            **{f"coverage_{name}": coverage(f"mask_{name}") for name in mask_groups or {}}}


@torch.no_grad()
def on_target(attention: torch.nn.Module, features: torch.Tensor, coverage: torch.Tensor | None) -> float:
    """Mean share of the gaze map on the target cells (NaN without target masks)."""
    if coverage is None:
        return float("nan")
    weights = attention(features).weights
    grid = weights / weights.flatten(1).sum(dim=1)[:, None, None]
    return float((grid * coverage).flatten(1).sum(dim=1).mean())


def run_arm(arm: str, data: dict[str, Any], seed: int, updates: int, config: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(seed)  # the same gaze head (and projection, where one is drawn) in every arm
    extractor = GazeExtractor(SPACE, attention="gaussian")
    cfg = ContrastiveConfig(buffer_size=len(data["to_go"]), projection=ARMS[arm], **config)
    learner = ContrastiveLearner(extractor, cfg, seed=seed)
    if arm == "projection-only":
        learner.optimizer = torch.optim.Adam(learner.projection.parameters(), lr=cfg.learning_rate)
    learner.add(data["features"], data["to_go"], data["episodes"], data["steps"], data["episode_return"],
                data["success"])
    attention = extractor.attention
    features = data["features"]
    with torch.no_grad():
        weights = attention(features).weights
    mass0 = cell_mass(attention, features, data["deciding_cell"]) if data["deciding_cell"] else float("nan")
    target0 = on_target(attention, features, data.get("coverage"))
    losses, active, moves = [], [], []
    start = time.perf_counter()
    for _ in range(updates):
        metrics = learner.update()
        losses.append(metrics.get("gaze/triplet_loss", float("nan")))
        active.append(metrics.get("gaze/active_fraction", float("nan")))
        with torch.no_grad():
            new = attention(features).weights
        moves.append(float((new - weights).abs().mean() / weights.mean()))
        weights = new
    out = {
        "loss_first": losses[0], "loss_last": losses[-1], "active_first": active[0], "active_last": active[-1],
        "move_first": moves[0], "move_mean": float(np.mean(moves)), "deciding_before": mass0,
        "deciding_after": cell_mass(attention, features, data["deciding_cell"]) if data["deciding_cell"] else float("nan"),
        "clock_after": cell_mass(attention, features, data["clock_cell"]) if data["clock_cell"] else float("nan"),
        "target_before": target0, "target_after": on_target(attention, features, data.get("coverage")),
        "valid_fraction": metrics.get("gaze/valid_fraction", float("nan")),
        "seconds": time.perf_counter() - start, "losses": losses, "active": active, "moves": moves,
    }
    with torch.no_grad():
        params = attention.gaze_params(features)
    out["mu_abs"] = float(params.mu.abs().mean())
    out["sigma"] = float(params.sigma.mean())
    return out


KEYS = ("loss_first", "loss_last", "active_first", "active_last", "move_first", "move_mean", "deciding_before",
        "deciding_after", "clock_after", "target_before", "target_after", "mu_abs", "sigma", "valid_fraction",
        "seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", choices=("synthetic", "real"), default=["synthetic", "real"])
    parser.add_argument("--updates", type=int, default=30, help="contrastive updates per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=128, help="synthetic episodes (25 states each)")
    parser.add_argument("--real-episodes", type=int, default=24, help="PushCube-v1 episodes (<= 50 steps each)")
    parser.add_argument("--real-discount", type=float, default=0.8, help="label discount of the real frames")
    parser.add_argument("--real-label", default="episode", help="label of the real frames (e.g. success)")
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    parser.add_argument("--controls", action="store_true", help="also run each arm with shuffled labels")
    parser.add_argument("--triplet-gaze", choices=("own", "anchor"), default="own",
                        help="ContrastiveConfig.triplet_gaze: each map its own gaze, or the anchor's on all three")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows: list[dict[str, Any]] = []
    for kind in args.data:
        config: dict[str, Any] = {"triplet_gaze": args.triplet_gaze}
        if kind == "real":
            config["label"] = args.real_label
        real = real_data(args.real_episodes, args.real_discount) if kind == "real" else None
        variants = [(arm, False) for arm in args.arms] + [(arm, True) for arm in args.arms if args.controls]
        for arm, shuffled in variants:
            runs = []
            arm_config = {**config, "shuffle_labels": True} if shuffled else config
            for seed in args.seeds:
                data = real if real is not None else synthetic_data(seed, args.episodes)
                runs.append(run_arm(arm, data, seed, args.updates, arm_config))
            name = f"{arm}+shuffled" if shuffled else arm
            row: dict[str, Any] = {"data": kind, "arm": name, "config": arm_config, "runs": runs,
                                   **{key: float(np.mean([r[key] for r in runs])) for key in KEYS}}
            if real is not None:
                row["states"], row["success_rate"], row["target_chance"] = (len(real["to_go"]), real["success_rate"],
                                                                            real["chance"])
            rows.append(row)
            print(kind, name, {k: round(row[k], 4) for k in KEYS}, flush=True)
    chance = next((r["target_chance"] for r in rows if "target_chance" in r), float("nan"))
    print_table(f"fixed buffer: {args.updates} updates, mean over seeds {args.seeds}; move = mean|dA| / mean A per "
                "update; target = gaze mass on the synthetic deciding cell (chance 0.0625) / on the real frames' "
                f"cube and goal (chance {chance:.4f})",
                ["data", "arm", "loss 1st", "loss last", "active 1st", "active last", "move 1st", "move mean",
                 "target@0", "target@N", "clock@N", "|mu|", "sigma"],
                [[r["data"], r["arm"], r["loss_first"], r["loss_last"], r["active_first"], r["active_last"],
                  r["move_first"], r["move_mean"],
                  r["deciding_before"] if r["data"] == "synthetic" else r["target_before"],
                  r["deciding_after"] if r["data"] == "synthetic" else r["target_after"], r["clock_after"],
                  r["mu_abs"], r["sigma"]] for r in rows])
    write_result(args.out, "fixed_buffer", {k: v for k, v in vars(args).items() if k != "out"}, rows)


if __name__ == "__main__":
    main()
