"""CPU soak: a long gaze-PPO run from pixels, watching memory and numerics.

Trains with `gaze-rl train` in this process while a thread samples the resident memory of the
process tree (trainer + env workers) every few seconds. Reports steps, wall time, peak and
final RSS, the RSS slope over the second half of the run (bounded memory means ~0 once the
contrastive buffer is allocated), and how many non-finite values appeared: the NonFiniteGuard
callback stops a run on the first NaN/Inf parameter, and the contrastive learner counts
skipped non-finite updates.

    python benchmarks/soak.py --steps 20000 --out results/soak/soak-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--env-id", default="PushT-v1")
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/soak"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between memory samples")
    args = parser.parse_args()

    from gaze_rl.commands.train import train
    from gaze_rl.configuration.commands import TrainConfig
    from gaze_rl.runs.runlog import read_curve

    samples: list[tuple[float, int]] = []
    done = threading.Event()
    me = psutil.Process()
    start = time.perf_counter()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter() - start, tree_rss(me)))
            done.wait(args.every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    error = None
    try:
        train(TrainConfig(env_id=args.env_id, algo="ppo", method="gaze", num_envs=args.num_envs,
                          total_timesteps=args.steps, run_dir=args.run_dir, overwrite=True,
                          progress_bar=False, checkpoint_every=5_000))
    except FloatingPointError as err:
        error = str(err)
    finally:
        done.set()
        thread.join()
    wall = time.perf_counter() - start
    curve = read_curve(args.run_dir / "curve.csv")
    times = np.array([t for t, _ in samples])
    rss = np.array([r for _, r in samples], dtype=np.float64)
    half = times >= times[-1] / 2
    slope = float(np.polyfit(times[half], rss[half] / 2**20, 1)[0] * 60) if half.sum() > 2 else float("nan")
    returns = curve.get("episodic_return", np.array([]))
    result = {
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count(), "torch": torch.__version__},
        "steps": int(curve["global_step"][-1]) if len(returns) else 0,
        "episodes": int(len(returns)),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(float(rss.max()) / 2**20, 1),
        "final_rss_mib": round(float(rss[-1]) / 2**20, 1),
        "rss_slope_second_half_mib_per_min": round(slope, 2),
        "non_finite_returns": int((~np.isfinite(returns)).sum()),
        "non_finite_stop": error,
        "memory_samples_mib": [[round(t, 1), round(r / 2**20, 1)] for t, r in samples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print({k: v for k, v in result.items() if k != "memory_samples_mib"})


if __name__ == "__main__":
    main()
