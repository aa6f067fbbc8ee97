"""Env throughput from pixels, render quality `fast` vs `full` side by side (gaze_rl.make_vec_env, random actions).

For each task and number of envs N (one CPU process per env, as in training: SubprocVecEnv for
N > 1, DummyVecEnv for N = 1), both vec envs (`render_quality="fast"` and `"full"`, `physx_cpu`,
obs_mode "rgb+state") are built at once, each in a process of its own (so `full` keeps stock
lavapipe threading: `fast` sets `LP_NUM_THREADS=0` process-wide), and timed in alternating chunks
of `--chunk` vec-steps, so that both see the same machine load. Per chunk it records wall-clock
env-steps/s and the CPU time per env step of every process that steps an env (that process for
N = 1, its env workers for N > 1, read from /proc; lavapipe's render threads included). CPU ms per step is
the load-independent figure on a shared machine; steps/s is what a run sees. Medians over
chunks; the ratio fast / full is the median of per-pair ratios. Episodes auto-reset as in
training. The load average before and after each configuration is recorded.

Quality `none` is the ceiling of any render option: the same task with no camera (obs_mode
"state"), timed alongside. What a step costs beyond it is the rendering, so each rendering row
also gets `render_cpu_ms_per_env_step` (its CPU ms minus `none`'s, per chunk) and
`render_speedup_cpu_vs_full` (full's rendering over its own).

    python benchmarks/env_throughput.py --out results/speed/env_throughput-cpu2.json
    python benchmarks/env_throughput.py --env-ids PushT-v1 --num-envs 1 --qualities full --out /tmp/x.json
    python benchmarks/env_throughput.py --env-ids PushT-v1 PokeCube-v1 --qualities fast full none
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from gaze_rl import EnvSpec, make_vec_env

from _common import median, print_table, write_result

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stepping_pids(env: VecEnv) -> list[int]:
    """The processes whose CPU time an env step costs: the workers of a SubprocVecEnv, else this one."""
    base = env
    while isinstance(base, VecEnvWrapper):
        base = base.venv
    if isinstance(base, SubprocVecEnv):
        return [p.pid for p in base.processes]
    return [os.getpid()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
    return total / CLOCK_TICKS


def make_camera_free_env(env_id: str) -> Any:
    """The task as `make_vec_env` builds it (same controller and time limit), with no camera."""
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    from gaze_rl.envs.single import make_maniskill_env

    spec = EnvSpec(env_id=env_id)
    env = make_maniskill_env(env_id, obs_mode="state", image_size=spec.image_size, control_mode=spec.control_mode,
                             render_quality="full")
    return CPUGymWrapper(env, ignore_terminations=spec.ignore_terminations, record_metrics=False)


def camera_free_vec_env(env_id: str, num_envs: int, seed: int) -> VecEnv:
    """Quality `none`: one env per process as `make_vec_env` does, rendering nothing."""
    env_fns = [lambda: make_camera_free_env(env_id) for _ in range(num_envs)]
    env = SubprocVecEnv(env_fns, start_method="forkserver") if num_envs > 1 else DummyVecEnv(env_fns)
    env.seed(seed)
    return env


class Timed:
    """One vec env under test, stepped with seeded random actions."""

    def __init__(self, env_id: str, num_envs: int, image_size: int, quality: str, seed: int):
        start = time.perf_counter()
        if quality == "none":
            self.env = camera_free_vec_env(env_id, num_envs, seed)
        else:
            self.env = make_vec_env(env_id=env_id, num_envs=num_envs, image_size=image_size, seed=seed,
                                    sim_backend="physx_cpu", render_quality=quality)
        obs = self.env.reset()
        self.obs_shapes = {k: list(v.shape) for k, v in obs.items()} if isinstance(obs, dict) else {"state": list(obs.shape)}
        self.create_s = time.perf_counter() - start
        self.pids = stepping_pids(self.env)
        self.rng = np.random.default_rng(seed)
        self.num_envs = num_envs
        self.rates: list[float] = []
        self.cpu_ms: list[float] = []

    def step(self, n: int) -> None:
        space = self.env.action_space
        for _ in range(n):
            self.env.step(self.rng.uniform(space.low, space.high, size=(self.num_envs, *space.shape)).astype(np.float32))

    def chunk(self, n: int) -> None:
        cpu0, t0 = cpu_seconds(self.pids), time.perf_counter()
        self.step(n)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds(self.pids) - cpu0
        self.rates.append(self.num_envs * n / seconds)
        self.cpu_ms.append(1e3 * cpu / (self.num_envs * n))


def serve(conn: Any, *args: Any) -> None:
    """A `Timed` in a process of its own, driven over a pipe: ("step", n) | ("chunk", n) | ("result",)."""
    torch.set_num_threads(1)  # the env's own torch ops are tiny; a second thread only spins
    run = Timed(*args)
    conn.send("ready")
    while True:
        command, *rest = conn.recv()
        if command == "result":
            run.env.close()
            conn.send({k: getattr(run, k) for k in ("obs_shapes", "create_s", "rates", "cpu_ms")})
            return
        getattr(run, command)(*rest)
        conn.send("done")


class Remote:
    """The parent's handle on a `serve` process."""

    def __init__(self, *args: Any):
        self.conn, child = mp.get_context("spawn").Pipe()
        # not a daemon: its vec env may start worker processes of its own (N > 1)
        self.process = mp.get_context("spawn").Process(target=serve, args=(child, *args))
        self.process.start()
        self.call()

    def call(self, *command: Any) -> Any:
        if command:
            self.conn.send(command)
        return self.conn.recv()


def measure(env_id: str, num_envs: int, image_size: int, qualities: list[str], warmup: int, chunks: int, chunk: int,
            seed: int) -> list[dict[str, Any]]:
    load_before = os.getloadavg()
    remotes = {q: Remote(env_id, num_envs, image_size, q, seed) for q in qualities}
    for remote in remotes.values():
        remote.call("step", warmup)
    for _ in range(chunks):
        for remote in remotes.values():  # alternate: both qualities see the same load
            remote.call("chunk", chunk)
    runs = {q: remote.call("result") for q, remote in remotes.items()}
    for remote in remotes.values():
        remote.process.join()
    load_after = os.getloadavg()
    rows = []
    for quality, run in runs.items():
        row = {
            "env_id": env_id, "num_envs": num_envs, "image_size": image_size, "render_quality": quality,
            "obs_shapes": run["obs_shapes"], "vec_env": "SubprocVecEnv" if num_envs > 1 else "DummyVecEnv",
            "render_backend": "gpu" if torch.cuda.is_available() else "cpu",
            "create_and_reset_s": run["create_s"], "median_env_steps_per_s": median(run["rates"]),
            "median_cpu_ms_per_env_step": median(run["cpu_ms"]), "load_average_before": load_before,
            "load_average_after": load_after, "timed_vec_steps": chunk * chunks,
            "raw_env_steps_per_s": run["rates"], "raw_cpu_ms_per_env_step": run["cpu_ms"],
        }
        if "full" in runs and quality != "full":
            full = runs["full"]
            row["speedup_cpu_vs_full"] = median([f / q for f, q in zip(full["cpu_ms"], run["cpu_ms"])])
            row["speedup_steps_per_s_vs_full"] = median([q / f for f, q in zip(full["rates"], run["rates"])])
        if "none" in runs and quality != "none":
            render_ms = [q - n for q, n in zip(run["cpu_ms"], runs["none"]["cpu_ms"])]
            row["render_cpu_ms_per_env_step"] = median(render_ms)
            if "full" in runs and quality != "full":
                full_render_ms = [f - n for f, n in zip(runs["full"]["cpu_ms"], runs["none"]["cpu_ms"])]
                row["render_speedup_cpu_vs_full"] = median([f / q for f, q in zip(full_render_ms, render_ms)])
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--env-ids", nargs="+", default=["PushT-v1", "PokeCube-v1", "PushCube-v1", "PickCube-v1"])
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--qualities", nargs="+", default=["fast", "full"], choices=["fast", "full", "none"],
                   help="none: the same task with no camera (the ceiling of any render option)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=10, help="untimed vec-steps after reset")
    p.add_argument("--chunks", type=int, default=6, help="timed chunks per quality (alternating)")
    p.add_argument("--chunk", type=int, default=25, help="vec-steps per timed chunk")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    rows: list[dict[str, Any]] = []
    for env_id in a.env_ids:
        for n in a.num_envs:
            rows += measure(env_id, n, a.image_size, a.qualities, a.warmup, a.chunks, a.chunk, a.seed)
            for r in rows[-len(a.qualities):]:
                print(f"  {env_id} N={n} {r['render_quality']}: {r['median_env_steps_per_s']:.1f} env-steps/s, "
                      f"{r['median_cpu_ms_per_env_step']:.1f} CPU ms/step", flush=True)
            write_result(a.out, "env_throughput", vars(a) | {"out": str(a.out), "partial": True}, rows)
    print_table(f"{a.image_size} px from pixels, physx_cpu (medians)",
                ["task", "N", "quality", "steps/s", "CPU ms/step", "x full (CPU)", "x full (steps/s)",
                 "render CPU ms", "render x full", "load"],
                [[r["env_id"], r["num_envs"], r["render_quality"], r["median_env_steps_per_s"],
                  r["median_cpu_ms_per_env_step"], r.get("speedup_cpu_vs_full", ""),
                  r.get("speedup_steps_per_s_vs_full", ""), r.get("render_cpu_ms_per_env_step", ""),
                  r.get("render_speedup_cpu_vs_full", ""), f"{r['load_average_before'][0]:.1f}"] for r in rows])
    write_result(a.out, "env_throughput", vars(a) | {"out": str(a.out), "partial": False}, rows)


if __name__ == "__main__":
    main()
