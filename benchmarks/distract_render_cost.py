"""CPU cost per env step of the `distract` variant against the normal task, fast rendering (issue #25:
distractors may not double it).

One in-process env per configuration (`make_vec_env`, one env: DummyVecEnv, so every thread of the
step, lavapipe's included, is this process's), all built up front and stepped in turn with the
same seeded random actions: chunks of one whole episode each (the per-episode tinting, light
jitter and placement included), configurations interleaved A/B/A/B within every repeat. CPU time
is `time.process_time()` of this process plus `resource.getrusage(RUSAGE_CHILDREN)` (none here;
counted so that a forked renderer could not hide). Per configuration: the median CPU ms per env
step over repeats, and the median over repeats of its ratio to the normal task's chunk of the
same repeat. Prints a markdown table with the machine and `uptime` before and after.

    python benchmarks/distract_render_cost.py --out results/distract/render-cost-cpu2.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gaze_rl import make_vec_env
from gaze_rl.envs.variants import DistractCounts

from _common import git_info

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Config:
    """One env under test: the normal task (strength None) or distract at a strength."""

    def __init__(self, args: argparse.Namespace, strength: float | None):
        self.strength = strength
        variant = dict(variant="none") if strength is None else dict(variant="distract", distract_strength=strength)
        from mani_skill.utils.registration import REGISTERED_ENVS

        self.env = make_vec_env(env_id=args.env_id, num_envs=1, image_size=args.image_size, sim_backend="physx_cpu",
                                render_quality="fast", control_mode=args.control_mode, seed=args.seed, **variant)
        self.env.reset()
        self.rng = np.random.default_rng(args.seed)
        self.steps = args.steps or REGISTERED_ENVS[args.env_id].max_episode_steps
        self.cpu_ms: list[float] = []

    @property
    def name(self) -> str:
        return "normal" if self.strength is None else f"distract {self.strength:g}"

    def chunk(self) -> None:
        space = self.env.action_space
        actions = self.rng.uniform(space.low, space.high, (self.steps, 1, *space.shape)).astype(np.float32)
        start = cpu_seconds()
        for action in actions:
            self.env.step(action)
        self.cpu_ms.append(1e3 * (cpu_seconds() - start) / self.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="PushCube-v1")
    parser.add_argument("--image-size", type=int, default=64, help="the cpu-fovea protocol's (experiments/bench.toml)")
    parser.add_argument("--control-mode", default="pd_ee_delta_pos", help="the cpu-fovea protocol's")
    parser.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=None, help="env steps per chunk; default one episode (the time limit)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed chunks per configuration first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    load_before = uptime()
    configs = [Config(args, None)] + [Config(args, s) for s in args.strengths]
    for _ in range(args.warmup):
        for config in configs:
            config.chunk()
            config.cpu_ms.clear()
    for _ in range(args.repeats):
        for config in configs:  # A/B/A/B: every configuration once per repeat, in turn
            config.chunk()
    load_after = uptime()
    for config in configs:
        config.env.close()

    normal = np.array(configs[0].cpu_ms)
    lines = [
        f"# distract: fast-render CPU cost per env step ({args.env_id}, {args.image_size} px)",
        "",
        f"- command: `{Path(sys.executable).name} {' '.join(sys.argv)}`",
        f"- time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}; commit {git_info()['commit']} (+ the work tree's changes)",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        f"- `uptime` before: {load_before}",
        f"- `uptime` after: {load_after}",
        f"- {args.repeats} repeats x {configs[0].steps} env steps{' (one episode)' if args.steps is None else ''} "
        "per configuration, interleaved; "
        f"control mode {args.control_mode}, render quality fast, one in-process env "
        "(LP_NUM_THREADS=0: lavapipe rasterises in this thread)",
        "",
        "| variant | objects | moving | CPU ms / env step (median) | min - max | x normal (median of per-repeat ratios) |",
        "|---|---|---|---|---|---|",
    ]
    for config in configs:
        cpu = np.array(config.cpu_ms)
        counts = DistractCounts.at(config.strength) if config.strength is not None else DistractCounts(0, 0)
        lines.append(f"| {config.name} | {counts.objects} | {counts.moving} | {np.median(cpu):.2f} | "
                     f"{cpu.min():.2f} - {cpu.max():.2f} | {np.median(cpu / normal):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
