"""Env throughput from pixels: env-steps/s of gaze_rl.make_vec_env("PushT-v1") with random actions.

For each number of envs N (one CPU process per env: SubprocVecEnv for N > 1, in-process
DummyVecEnv for N = 1) and image size, it builds the vec env with `sim_backend="physx_cpu"`
(physx_cuda cannot fetch its PhysX GPU library in this workplace) and obs_mode "rgb+state";
make_vec_env renders on the GPU when torch sees CUDA (render_backend "gpu"), else on the CPU
(lavapipe). After `--warmup` vec-steps it times `--steps` vec-steps in chunks of `--chunk` and
reports the median over chunks of N * chunk / seconds (episodes auto-reset every 100 steps, so
resets are included as in training). Env creation time is reported apart. The actions are
sampled once per step on the host; the policy is not involved.

    python benchmarks/env_throughput.py --num-envs 1 2 --out results/speed/env_throughput-cpu2.json
    python benchmarks/env_throughput.py --num-envs 1 4 16 --out results/speed/env_throughput-h100.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import median, print_table, write_result
from gaze_rl import make_vec_env


def measure(env_id: str, num_envs: int, image_size: int, warmup: int, steps: int, chunk: int, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = make_vec_env(env_id=env_id, num_envs=num_envs, image_size=image_size, seed=seed, sim_backend="physx_cpu")
    try:
        obs = env.reset()
        create_s = time.perf_counter() - t0
        rng = np.random.default_rng(seed)
        low, high = env.action_space.low, env.action_space.high

        def step() -> None:
            env.step(rng.uniform(low, high, size=(num_envs, *env.action_space.shape)).astype(np.float32))

        for _ in range(warmup):
            step()
        rates, chunk_s = [], []
        for _ in range(max(1, steps // chunk)):
            start = time.perf_counter()
            for _ in range(chunk):
                step()
            seconds = time.perf_counter() - start
            chunk_s.append(seconds)
            rates.append(num_envs * chunk / seconds)
    finally:
        env.close()
    return {
        "env_id": env_id, "num_envs": num_envs, "image_size": image_size,
        "obs_shapes": {k: list(v.shape) for k, v in obs.items()},
        "render_backend": "gpu" if torch.cuda.is_available() else "cpu",
        "vec_env": "SubprocVecEnv" if num_envs > 1 else "DummyVecEnv",
        "create_and_reset_s": create_s, "median_env_steps_per_s": median(rates),
        "median_env_steps_per_s_per_env": median(rates) / num_envs,
        "timed_vec_steps": chunk * len(rates), "raw_chunk_s": chunk_s, "raw_env_steps_per_s": rates,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--env-id", default="PushT-v1")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--image-sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--warmup", type=int, default=20, help="untimed vec-steps after reset")
    p.add_argument("--steps", type=int, default=300, help="timed vec-steps per configuration")
    p.add_argument("--chunk", type=int, default=25, help="vec-steps per timed sample")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    rows = []
    for size in a.image_sizes:
        for n in a.num_envs:
            r = measure(a.env_id, n, size, a.warmup, a.steps, a.chunk, a.seed)
            rows.append(r)
            print(f"  N={n} {size}px: {r['median_env_steps_per_s']:.1f} env-steps/s "
                  f"(created in {r['create_and_reset_s']:.1f}s)", flush=True)
            write_result(a.out, "env_throughput", vars(a) | {"out": str(a.out), "partial": True}, rows)
    print_table(f"{a.env_id} from pixels, physx_cpu, render {rows[0]['render_backend']} (median env-steps/s)",
                ["px", "N envs", "steps/s", "per env", "create s"],
                [[r["image_size"], r["num_envs"], r["median_env_steps_per_s"], r["median_env_steps_per_s_per_env"],
                  r["create_and_reset_s"]] for r in rows])
    write_result(a.out, "env_throughput", vars(a) | {"out": str(a.out), "partial": False}, rows)


if __name__ == "__main__":
    main()
