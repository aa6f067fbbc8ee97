"""What the agent sees under `distract`: a strip of frames per strength.

Rows = strengths (0 = the normal task), columns = steps of a few episodes; every row runs the same
seeds and the same random actions, so the task (robot, object, goal) is the same down each column
and only the distractors differ. Frames are the policy's observations (`make_vec_env`, fast
rendering), upscaled with nearest-neighbour to TILE pixels so that single pixels stay visible.

    python results/distract/frames.py            # writes results/distract/frames-64px.png and frames-128px.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from gaze_rl import make_vec_env

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
TILE = 256  # pixels per frame in the picture


def strip(env_id: str, control_mode: str, image_size: int, strength: float, seeds: list[int], steps: list[int]) -> np.ndarray:
    """One row: for each seed, the frames at `steps` of that episode (random actions seeded by the seed)."""
    env = make_vec_env(env_id=env_id, num_envs=1, image_size=image_size, sim_backend="physx_cpu", control_mode=control_mode,
                       variant="distract", distract_strength=strength)
    try:
        frames = []
        for seed in seeds:
            env.seed(seed)
            obs = env.reset()
            rng = np.random.default_rng(seed)
            for step in range(max(steps) + 1):
                if step in steps:
                    frames.append(obs["rgb"][0, ..., :3])
                action = rng.uniform(env.action_space.low, env.action_space.high)[None].astype(np.float32)
                obs, *_ = env.step(action)
        scale = TILE // image_size
        return np.concatenate([frame.repeat(scale, 0).repeat(scale, 1) for frame in frames], axis=1)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="PushCube-v1")
    parser.add_argument("--control-mode", default="pd_ee_delta_pos", help="the cpu-fovea protocol's")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25], help="steps of each episode shown")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for size in args.image_sizes:
        rows = [strip(args.env_id, args.control_mode, size, s, args.seeds, args.steps) for s in STRENGTHS]
        path = args.out_dir / f"frames-{size}px.png"
        imageio.imwrite(path, np.concatenate(rows, axis=0))
        print(f"wrote {path}: rows = strengths {', '.join(f'{s:g}' for s in STRENGTHS)}; "
              f"columns = seeds {args.seeds} x steps {args.steps}")


if __name__ == "__main__":
    main()
