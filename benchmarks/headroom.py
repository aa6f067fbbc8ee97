"""Where can looking help at all? The fovea's ceiling, the signal it keeps, and its cost (issue 22).

On real frames of a task (random actions from seeded resets, rendered at every image size from
the same simulator states), for every (backbone, image size):

- **attention-on-target ceiling** (fraction of a map's mass, summing to 1 over the feature
  grid, on the task objects' pixels; gaze_rl.segmentation.on_target): `chance` (uniform),
  `centred` (the initial gaze: mu 0, sigma 0.8), `oracle` (gaze_rl's OracleGaze: one Gaussian
  per object from the simulator), `best Gaussian` (the best single Gaussian per frame over a
  33x33 lattice of means and a range of sigmas above the floor) and `best map` (all mass on the
  frame's best-covered cell: no map can do better). For the union of the task's objects and
  for the first object (the cube) alone.
- **signal kept**: the target's feature signal is |F(frame) - F(frame with the target's pixels
  painted over by the surrounding colour)|, per channel and cell, through a randomly
  initialised backbone (the architecture's receptive fields, no training). For the oracle map A:
  `kept` = sum A |dF| / sum |dF| (multiplicative: what passes the map), and the target's share
  of the head input, sum w |dF| / sum w |F|, relative to no map (w = A, or 1 + A residual).
- **CPU cost**: per env step of one env process (fast rendering, CPU time incl. threads), and
  per env step of the learner at the CPU protocol (PPO: 8 minibatch steps of 50 and 100 batch-2
  inferences per 100 env steps), measured in this process.

    python benchmarks/headroom.py --frames 300 --out results/headroom/headroom-cpu2.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gaze_rl.envs.single import make_single_env
from gaze_rl.nets.attention import GazeParams, OracleGaze, gaze_map
from gaze_rl.nets.encoders import feature_map_shape, make_backbone
from gaze_rl.nets.extractor import GazeExtractor
from gaze_rl.segmentation.envs import make_segmented_env, segmentation_names
from gaze_rl.segmentation.targets import coverage_grid

from _common import median, print_table, write_result

CONFIGS = (("nature", 64), ("nature", 96), ("nature", 128), ("drq", 64))
LATTICE = np.linspace(-1.0, 1.0, 33)


def collect(env_id: str, size: int, frames: int, seed: int, control_mode: str) -> dict[str, np.ndarray]:
    """`frames` frames (uint8 HxWx3), per-object masks (K, H, W) and gaze targets (K, 4), from
    episodes of uniformly random actions reset every 50 steps (seeded: the same states at every size)."""
    env = make_segmented_env(env_id, image_size=size, control_mode=control_mode, gaze_targets=True,
                             ignore_terminations=True)
    names = segmentation_names(env)
    targets = env.get_wrapper_attr("targets")
    ids = [[i for i, n in names.items() if n == t] for t in targets]
    rng = np.random.default_rng(seed)
    rgb, masks, gaze = [], [], []
    try:
        for episode in range(int(np.ceil(frames / 50))):
            obs, _ = env.reset(seed=seed + episode)
            for _ in range(min(50, frames - len(rgb))):
                seg = env.get_wrapper_attr("frame").segmentation
                seg = seg[next(iter(seg))]
                rgb.append(obs["rgb"].copy())
                masks.append(np.stack([np.isin(seg, i) for i in ids]))
                gaze.append(obs["gaze_target"].copy())
                action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
                obs, *_ = env.step(action)
    finally:
        env.close()
    return {"rgb": np.stack(rgb), "masks": np.stack(masks), "gaze": np.stack(gaze), "targets": np.array(targets)}


def aot(maps: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """(M, h, w) maps (any scale) x (N, h, w) coverage -> (M, N) attention-on-target."""
    a = maps.reshape(len(maps), -1)
    a = a / a.sum(axis=1, keepdims=True)
    return a @ coverage.reshape(len(coverage), -1).T


def lattice_maps(h: int, w: int, floor: float) -> np.ndarray:
    """Single Gaussians on the lattice of means x sigmas from the floor up (peak 1)."""
    sigmas = [s for s in (floor, 0.1, 0.15, 0.25, 0.4, 0.6, 0.8) if s >= floor]
    mu = np.array([(x, y) for x in LATTICE for y in LATTICE], dtype=np.float32)
    maps = []
    for s in sorted(set(sigmas)):
        m = len(mu)
        params = GazeParams(mu=torch.from_numpy(mu)[:, None], sigma=torch.full((m, 1, 2), float(s)),
                            rho=torch.zeros(m, 1), mix=torch.ones(m, 1))
        maps.append(gaze_map(params, h, w).numpy())
    return np.concatenate(maps)


def ceilings(data: dict[str, np.ndarray], h: int, w: int) -> dict[str, dict[str, float]]:
    """Attention-on-target ceilings on an h x w grid, for the union of objects and the first alone."""
    out = {}
    centred = gaze_map(GazeParams(mu=torch.zeros(1, 1, 2), sigma=torch.full((1, 1, 2), 0.8),
                                  rho=torch.zeros(1, 1), mix=torch.ones(1, 1)), h, w).numpy()
    oracle = OracleGaze(1, h, w)
    for name, masks, gaze in (("union", data["masks"].any(axis=1), data["gaze"]),
                              (f"{data['targets'][0]} alone", data["masks"][:, 0], data["gaze"][:, :1])):
        coverage = coverage_grid(masks, h, w)
        chance = float(masks.mean())
        oracle_maps = oracle(torch.zeros(len(gaze), 1, h, w), torch.from_numpy(gaze)).weights.numpy()
        oracle_aot = np.einsum("nij,nij->n", oracle_maps / oracle_maps.sum(axis=(1, 2), keepdims=True), coverage)
        row = {"chance": chance, "centred": float(aot(centred, coverage).mean()),
               "oracle": float(oracle_aot.mean()), "best_map": float(coverage.reshape(len(coverage), -1).max(axis=1).mean())}
        for label, floor in (("best_gaussian_floor_0.15", 0.15), ("best_gaussian_half_cell", 1.0 / min(h, w))):
            row[label] = float(aot(lattice_maps(h, w, floor), coverage).max(axis=0).mean())
        out[name] = row
    return out


def painted_over(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame with the masked pixels replaced by the mean colour of a 3 px ring around them."""
    from scipy.ndimage import binary_dilation

    out = rgb.copy()
    if mask.any():
        ring = binary_dilation(mask, iterations=3) & ~mask
        out[mask] = rgb[ring].mean(axis=0) if ring.any() else rgb[~mask].mean(axis=0)
    return out


@torch.no_grad()
def signal_kept(data: dict[str, np.ndarray], backbone: str, size: int, seed: int) -> dict[str, dict[str, float]]:
    """Share of the target's feature signal the oracle map keeps, multiplicative and residual."""
    torch.manual_seed(seed)
    net = make_backbone(backbone, 3, size).eval()
    channels, h, w = feature_map_shape(net, 3, size, size)
    oracle = OracleGaze(channels, h, w)
    out = {}
    for name, which in (("union", slice(None)), (f"{data['targets'][0]} alone", slice(0, 1))):
        masks = data["masks"][:, which].any(axis=1)
        clean = torch.from_numpy(data["rgb"]).permute(0, 3, 1, 2).float() / 255
        painted = torch.from_numpy(np.stack([painted_over(f, m) for f, m in zip(data["rgb"], masks)]))
        features = net(clean)
        signal = (features - net(painted.permute(0, 3, 1, 2).float() / 255)).abs()
        a = oracle(features, torch.from_numpy(data["gaze"][:, which])).weights[:, None]
        base_share = signal.sum() / features.abs().sum()
        row = {"kept_multiplicative": float((a * signal).sum() / signal.sum()),
               "energy_passed_multiplicative": float((a * features.abs()).sum() / features.abs().sum())}
        for form, weight in (("multiplicative", a), ("residual", 1 + a)):
            row[f"share_lift_{form}"] = float((weight * signal).sum() / (weight * features.abs()).sum() / base_share)
        out[name] = row
    return out


def env_step_cost(env_id: str, size: int, control_mode: str, steps: int, seed: int) -> float:
    """Median ms of CPU (this process, renderer threads included) per env step, fast rendering."""
    env = make_single_env(env_id, image_size=size, include_state=True, control_mode=control_mode, reward_scale=1.0,
                          ignore_terminations=True)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)

    def step() -> None:
        *_, terminated, truncated, _ = env.step(rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32))
        if terminated or truncated:
            env.reset()

    for _ in range(20):  # warm-up: shaders, first frames
        step()
    samples = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(steps // 5):
            step()
        samples.append((time.process_time() - start) / (steps // 5) * 1e3)
    env.close()
    return median(samples)


def learner_cost(backbone: str, size: int, repeats: int = 3) -> float:
    """Median ms of learner CPU per env step at the CPU protocol (one thread): per 100 env steps,
    8 minibatch updates of 50 (4 epochs x 2) and 50 inferences of a batch of 2 (the rollout)."""
    torch.set_num_threads(1)
    space = spaces.Dict(rgb=spaces.Box(0, 255, (3, size, size), np.uint8), state=spaces.Box(-1, 1, (25,), np.float32))
    extractor = GazeExtractor(space, backbone=backbone, attention="gaussian")
    head = torch.nn.Linear(extractor.features_dim, 512)
    optimizer = torch.optim.Adam([*extractor.parameters(), *head.parameters()], 3e-4)
    batch = {"rgb": torch.rand(50, 3, size, size), "state": torch.rand(50, 25)}
    pair = {"rgb": torch.rand(2, 3, size, size), "state": torch.rand(2, 25)}
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(8):
            loss = head(extractor(batch)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            for _ in range(50):
                head(extractor(pair))
        samples.append((time.process_time() - start) / 100 * 1e3)
    return median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="PushCube-v1")
    parser.add_argument("--control-mode", default="pd_ee_delta_pos")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--cost-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    sizes = sorted({size for _, size in CONFIGS})
    data = {size: collect(args.env_id, size, args.frames, args.seed, args.control_mode) for size in sizes}
    env_cost = {size: env_step_cost(args.env_id, size, args.control_mode, args.cost_steps, args.seed) for size in sizes}
    results: list[dict[str, Any]] = []
    for backbone, size in CONFIGS:
        _, h, w = feature_map_shape(make_backbone(backbone, 3, size), 3, size, size)
        results.append({"backbone": backbone, "image_size": size, "grid": f"{h}x{w}",
                        "ceilings": ceilings(data[size], h, w), "signal": signal_kept(data[size], backbone, size, args.seed),
                        "env_ms_per_step": env_cost[size], "learner_ms_per_step": learner_cost(backbone, size)})
    today = results[0]["env_ms_per_step"] + results[0]["learner_ms_per_step"]
    for r in results:
        r["cost_vs_nature_64"] = (r["env_ms_per_step"] + r["learner_ms_per_step"]) / today
    for target in results[0]["ceilings"]:
        print_table(f"attention-on-target ceilings, {target}", ["backbone", "px", "grid", *results[0]["ceilings"][target]],
                    [[r["backbone"], r["image_size"], r["grid"], *r["ceilings"][target].values()] for r in results])
        print_table(f"signal kept by the oracle fovea, {target}", ["backbone", "px", *results[0]["signal"][target]],
                    [[r["backbone"], r["image_size"], *r["signal"][target].values()] for r in results])
    print_table("CPU cost (ms per env step)", ["backbone", "px", "env", "learner", "x nature-64"],
                [[r["backbone"], r["image_size"], r["env_ms_per_step"], r["learner_ms_per_step"], r["cost_vs_nature_64"]]
                 for r in results])
    write_result(args.out, "headroom", vars(args) | {"configs": CONFIGS}, results)


if __name__ == "__main__":
    main()
