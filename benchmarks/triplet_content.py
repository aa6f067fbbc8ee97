"""Where does the triplet loss want the gaze? (issue 23) What the mined triplets differ in, on real frames.

The learned gaze of the `anchor` pilot moved *against* the cube (slope of mu on the cube's x
-0.5, results/signal/README.md). This asks the loss itself where it pulls. PushCube-v1 episodes
of the scripted noisy pusher (benchmarks/label_quality.py) go through a backbone, are labelled
as GazePPO labels them, and triplets are mined exactly as ContrastiveLearner.update mines them
(the same labels, split, k-NN keys, own-episode exclusion and rule). For each triplet, with one
uniform gaze map w shared by anchor, positive and negative (`triplet_gaze='anchor'`, projection
`none`: the loss on the attended maps themselves), the *pull* is -dL/dw, the cells where more
weight lowers the triplet hinge. We report, over the active triplets:

* per actor group (cube, goal, robot arm, the rest): the share of the positive pull on the
  group's cells of the anchor's frame, and that share over the group's share of the area (lift;
  1 = the loss pulls there no more than anywhere); and the *net* pull, the signed pull summed
  over the group's cells, averaged over triplets, over the mean total |pull|: what the gaze
  head sees in sum (per-triplet pulls that disagree cancel, as with shuffled labels);
* the slope and R^2 of the pull's centroid on the cube's centroid (cells, x and y): a loss that
  wants the gaze on the cube gives slope ~1;
* what the negatives differ in physically: mean |anchor - negative| - |anchor - positive| of the
  cube's and the tcp's world positions (m) and of the step index. The negative is the neighbour
  with the other label, so the physical quantity that separates the labels shows here.

Each setting runs twice: with the real labels and with labels shuffled between episodes (the
gaze-shuffled control): what the real labels add over mining alone is the difference, given per
backbone with a 95% bootstrap interval over the triplets.

Backbones: `random` (the DrQ-v2 encoder at its initialisation, seed 12345) and, per
`--checkpoint`, a trained run's encoder (its policy's features extractor).

    python benchmarks/triplet_content.py --episodes 24 --checkpoint RUN/checkpoints/final.zip \
        --out results/signal/triplet_content-cpu2.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gaze_rl.bench.curves import bootstrap_ci
from gaze_rl.contrastive.labels import shuffle_labels
from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.contrastive.losses import triplet_hinge
from gaze_rl.contrastive.mining import Triplets, mine_triplets, return_threshold, sample_anchors
from gaze_rl.contrastive.returns import buffer_labels
from gaze_rl.nets.extractor import GazeExtractor

from _common import print_table, write_result
from fixed_buffer import real_data
from label_quality import collect

PANDA_LINKS = [f"panda_link{i}" for i in range(8)] + ["panda_hand", "panda_leftfinger", "panda_rightfinger"]
MASK_GROUPS = {"cube": ["cube"], "goal": ["goal_region"], "robot": PANDA_LINKS}
SPACE = spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8))


def backbone_of(name: str) -> torch.nn.Module:
    """`random`: a DrQ-v2 encoder at initialisation; else a checkpoint's trained encoder."""
    if name == "random":
        torch.manual_seed(12345)
        return GazeExtractor(SPACE, backbone="drq", attention="gaussian").backbone
    from gaze_rl.algos.ppo import GazePPO
    from gaze_rl.runs.checkpoints import load_model

    return load_model(GazePPO, Path(name), device="cpu").policy.features_extractor.backbone.eval()


def mine(data: dict[str, Any], config: ContrastiveConfig, shuffled: bool, anchors: int, seed: int) -> Triplets:
    """Triplets as one contrastive step of ContrastiveLearner.update mines them."""
    extractor = GazeExtractor(SPACE, backbone="drq", attention="gaussian")  # only its keys' shape matters
    learner = ContrastiveLearner(extractor, config, seed=seed)
    learner.add(data["features"], data["to_go"], data["episodes"], data["steps"], data["episode_return"],
                data["success"])
    buffer = learner.buffer
    labels = buffer_labels(buffer, config.label)
    split = return_threshold(labels, config.quantile)
    generator = torch.Generator().manual_seed(seed)
    if shuffled:
        labels = shuffle_labels(labels, "episode", generator, buffer.episodes, buffer.steps)
    learner.knn.build(buffer.keys)
    picked = sample_anchors(len(labels), anchors, generator)
    _, neighbors = learner.knn.search(buffer.keys[picked], learner._search_k(buffer.episodes))
    return mine_triplets(neighbors, picked, labels, config.rule, split, config.quantile, buffer.episodes,
                         buffer.steps, config.exclude_window)


def pull(features: torch.Tensor, triplets: Triplets, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, h, w) -dL/dw of each triplet's hinge at a uniform gaze map shared by its three maps, and (T,) hinges."""
    weights = torch.ones(len(triplets), *features.shape[-2:], requires_grad=True)
    attended = [(features[index] * weights[:, None]).flatten(1)
                for index in (triplets.anchor, triplets.positive, triplets.negative)]
    hinge = triplet_hinge(*attended, margin)
    hinge.sum().backward()
    assert weights.grad is not None
    return -weights.grad, hinge.detach()


def centroid(maps: torch.Tensor) -> torch.Tensor:
    """(T, 2) mass-weighted (x, y) cell centroid of (T, h, w) non-negative maps."""
    h, w = maps.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    mass = maps.flatten(1).sum(1).clamp_min(1e-12)
    return torch.stack([(maps * xs).flatten(1).sum(1) / mass, (maps * ys).flatten(1).sum(1) / mass], dim=1)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its R^2 (NaN when x is constant)."""
    if len(x) < 3 or np.std(x) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return float(slope), float(1.0 - residual.var() / max(y.var(), 1e-12))


def analyse(data: dict[str, Any], triplets: Triplets, margin: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The summary row, and per active triplet each group's pull share and net pull (for the
    differences between label settings)."""
    features = data["features"].float()
    per_triplet: dict[str, np.ndarray] = {}
    grad, hinge = pull(features, triplets, margin)
    active = hinge > 0
    out: dict[str, Any] = {"triplets": len(triplets), "active": float(active.float().mean()) if len(triplets) else 0.0}
    if not bool(active.any()):
        return out, per_triplet
    anchor, positive, negative = (idx[active] for idx in (triplets.anchor, triplets.positive, triplets.negative))
    grad = grad[active]
    scale = grad.abs().flatten(1).sum(1).mean()
    pulled = grad.clamp_min(0)
    pulled = pulled / pulled.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
    cells = pulled.shape[-2] * pulled.shape[-1]
    covered = torch.zeros_like(pulled)
    for name in MASK_GROUPS:
        cover = data[f"coverage_{name}"][anchor].float()
        share, area = (pulled * cover).flatten(1).sum(1), cover.flatten(1).sum(1) / cells
        out[f"pull_{name}"], out[f"area_{name}"] = float(share.mean()), float(area.mean())
        out[f"lift_{name}"] = out[f"pull_{name}"] / max(out[f"area_{name}"], 1e-12)
        net = (grad * cover).flatten(1).sum(1) / scale
        out[f"net_{name}"] = float(net.mean())
        per_triplet[f"pull_{name}"], per_triplet[f"net_{name}"] = share.numpy(), net.numpy()
        covered = covered + cover
    rest = (1.0 - covered).clamp_min(0)
    out["pull_rest"], out["area_rest"] = float((pulled * rest).flatten(1).sum(1).mean()), float(rest.mean())
    net = (grad * rest).flatten(1).sum(1) / scale
    out["net_rest"] = float(net.mean())
    per_triplet["pull_rest"], per_triplet["net_rest"] = (pulled * rest).flatten(1).sum(1).numpy(), net.numpy()
    out["lift_rest"] = out["pull_rest"] / max(out["area_rest"], 1e-12)
    cube_cover = data["coverage_cube"][anchor].float()
    seen = cube_cover.flatten(1).sum(1) > 0
    signal, cube = centroid(pulled)[seen].numpy(), centroid(cube_cover)[seen].numpy()
    for axis, name in enumerate("xy"):
        out[f"slope_{name}"], out[f"r2_{name}"] = fit(cube[:, axis], signal[:, axis])
    for name in ("cube", "tcp"):
        pos = data[name]
        far = np.linalg.norm(pos[anchor] - pos[negative], axis=1) - np.linalg.norm(pos[anchor] - pos[positive], axis=1)
        out[f"{name}_neg_minus_pos_m"], per_triplet[f"{name}_neg_minus_pos_m"] = float(far.mean()), far
    steps = data["steps"].float()
    out["step_neg_minus_pos"] = float(((steps[anchor] - steps[negative]).abs()
                                       - (steps[anchor] - steps[positive]).abs()).mean())
    return out, per_triplet


DIFFERENCE_KEYS = ("pull_cube", "pull_goal", "pull_robot", "net_cube", "net_goal", "net_robot", "cube_neg_minus_pos_m")


def real_minus_shuffled(real: dict[str, np.ndarray], shuffled: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per key, mean(real) - mean(shuffled) over the active triplets with its 95% bootstrap
    interval (triplets resampled with replacement, each setting independently)."""
    out: dict[str, Any] = {}
    for key in DIFFERENCE_KEYS:
        if key in real and key in shuffled:
            a, b = real[key], shuffled[key]
            out[key] = float(a.mean() - b.mean())
            out[key + "_ci"] = bootstrap_ci([list(a), list(b)], lambda x, y: float(x.mean() - y.mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24, help="PushCube-v1 episodes of the scripted pusher")
    parser.add_argument("--checkpoint", type=str, nargs="*", default=[], help="trained runs' .zip (besides `random`)")
    parser.add_argument("--label", default="detrended", help="ContrastiveConfig.label")
    parser.add_argument("--discount", type=float, default=0.8, help="label discount (PushCube's PPO gamma)")
    parser.add_argument("--anchors", type=int, default=1024, help="anchors mined per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ContrastiveConfig(buffer_size=args.episodes * 50, label=args.label, projection="none",
                               triplet_gaze="anchor")
    recorded, _ = collect(args.episodes, args.seed, frames=True, mask_groups=MASK_GROUPS)
    rows, differences = [], []
    for backbone in ["random", *args.checkpoint]:
        data = real_data(args.episodes, args.discount, args.seed, backbone_of(backbone), MASK_GROUPS, recorded)
        values = {}
        for shuffled in (False, True):
            triplets = mine(data, config, shuffled, args.anchors, args.seed)
            summary, values[shuffled] = analyse(data, triplets, config.margin)
            row = {"backbone": backbone, "labels": "shuffled" if shuffled else "real", "states": len(data["to_go"]),
                   "success_rate": data["success_rate"], **summary}
            rows.append(row)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        differences.append({"backbone": backbone, **real_minus_shuffled(values[False], values[True])})
    print_table(f"where the triplet loss pulls a uniform anchor gaze ({args.label} labels, {args.episodes} episodes); "
                "pull = share of -dL/dw on the group's cells, lift = pull / area share",
                ["backbone", "labels", "active", "cube pull (lift)", "goal pull (lift)", "robot pull (lift)",
                 "rest pull (lift)", "net cube / goal / robot / rest", "slope x / y (R2)", "cube n-p m", "tcp n-p m",
                 "step n-p"],
                [[Path(r["backbone"]).parent.parent.name or r["backbone"], r["labels"], r["active"],
                  *(f"{r.get(f'pull_{g}', float('nan')):.3f} ({r.get(f'lift_{g}', float('nan')):.2f})"
                    for g in ("cube", "goal", "robot", "rest")),
                  " / ".join(f"{r.get(f'net_{g}', float('nan')):+.3f}" for g in ("cube", "goal", "robot", "rest")),
                  f"{r.get('slope_x', float('nan')):.2f} / {r.get('slope_y', float('nan')):.2f} "
                  f"({r.get('r2_x', float('nan')):.2f} / {r.get('r2_y', float('nan')):.2f})",
                  r.get("cube_neg_minus_pos_m", float("nan")), r.get("tcp_neg_minus_pos_m", float("nan")),
                  r.get("step_neg_minus_pos", float("nan"))] for r in rows])
    print_table("real - shuffled labels: difference of the per-triplet means [95% bootstrap CI over triplets]",
                ["backbone", *DIFFERENCE_KEYS],
                [[Path(d["backbone"]).parent.parent.name or d["backbone"],
                  *(f"{d[k]:+.4f} [{d[k + '_ci'][0]:+.4f}, {d[k + '_ci'][1]:+.4f}]" for k in DIFFERENCE_KEYS)]
                 for d in differences])
    write_result(args.out, "triplet_content", {k: v for k, v in vars(args).items() if k != "out"},
                 {"rows": rows, "real_minus_shuffled": differences})


if __name__ == "__main__":
    main()
