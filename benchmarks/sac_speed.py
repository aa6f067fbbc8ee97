"""SAC on a CPU and Gaze* as drop-ins, against SB3's own classes, side by side (issue 24).

Two tables; every configuration runs in a process of its own (gaze_rl's allocator setting,
gaze_rl.runtime.tune_malloc, must come before the big allocations, and a process that had it
cannot drop it), one torch thread, and the configurations of a round run back to back, so
ratios are taken per round (side by side) and then the median over rounds.

1. One SAC gradient step (`train(gradient_steps=1)` on a replay buffer filled with random
   actions): SB3's `SAC("CnnPolicy")` against GazeSAC with the contrastive loss off (the
   foveal gaze) and on, at batch 512 and 128, with and without the allocator setting; and with
   the allocator, GazeSAC with the loss off and its encoder in the contiguous layout instead
   of channels-last ("gaze-off-nchw", gaze_rl.nets.encoders.ChannelsLastConv). CPU seconds of
   the process (time.process_time), its kernel seconds and minor page faults
   (resource.getrusage) per step: the median over `--grad-steps` steps after a warm-up one.
2. Learning: CPU ms per env step and env-steps/s (wall) of `learn()` after a warm-up, PPO and
   SAC, SB3's class against Gaze* with the gaze off (`contrastive=None`: the foveal ablation)
   and on (the default ContrastiveConfig), all with the allocator setting. SB3's defaults
   except: SAC buffer_size 10k (SB3's 1M would not fit), learning_starts 100, 128 warm-up and
   128 measured steps (one GazeSAC contrastive update, every 128 env steps, falls inside);
   PPO n_steps 512, one warm-up rollout and two measured ones.

   With `--before`, SAC also runs as GazeSAC ran before issues 24 and 27 ("gaze-before":
   PlainConv, a contrastive update after every train() call, no allocator setting), so one
   run gives before and after side by side.

Env (`--env`): SB3's FakeImageEnv (random frames) with continuous actions, 50-step episodes and
a reward that depends on the frame, so that returns differ and the contrastive loss finds
triplets, at 64 x 64 RGB (`fake64`) or 84 x 84 x 4 (`fake84x4`, Atari's frame-stack shape); or
gym-pusht's PushT from 96 px pixels (`pusht`, `pip install gym-pusht`). On a machine shared
with other jobs CPU time is the figure to compare; the load average before and after is
printed with the tables.

    python benchmarks/sac_speed.py --markdown results/speed/sac-dropin-cpu2.md
    python benchmarks/sac_speed.py --rounds 1 --grad-steps 2 --batches 128 --skip-learning
    python benchmarks/sac_speed.py --env fake84x4 --skip-grad --algos sac --before --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine_info, median, write_result

GAZE_ARMS = ("gaze-off", "gaze-on")


ENVS = {"fake64": "FakeImageEnv 64x64x3", "fake84x4": "FakeImageEnv 84x84x4", "pusht": "gym-pusht pixels 96x96x3"}


def make_env(name: str = "fake64") -> Any:
    """A DummyVecEnv of one env of ENVS: SB3's FakeImageEnv (continuous actions) whose reward is
    the brightness of the frame's left half, in 50-step episodes, at 64 px RGB or 84 px with 4
    channels (Atari's frame-stack shape); or gym-pusht's PushT from 96 px pixels
    (`pip install gym-pusht`; its own reward and 300-step episodes)."""
    from stable_baselines3.common.envs import FakeImageEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    if name == "pusht":
        import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
        import gymnasium as gym

        return DummyVecEnv([lambda: gym.make("gym_pusht/PushT-v0", obs_type="pixels")])
    size, channels = {"fake64": (64, 3), "fake84x4": (84, 4)}[name]

    class RewardedImageEnv(FakeImageEnv):
        def __init__(self) -> None:
            super().__init__(screen_height=size, screen_width=size, n_channels=channels, discrete=False)
            self.ep_length = 50

        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
            obs, _, terminated, truncated, info = super().step(action)
            return obs, float(obs[:, : size // 2].mean()) / 255.0 - 0.5, terminated, truncated, info

    return DummyVecEnv([RewardedImageEnv])


def make_model(algo: str, arm: str, backbone: str | None, env: str = "fake64", **kwargs: Any) -> Any:
    """SB3's class ("sb3") or the Gaze* class with the contrastive loss off / on, on make_env(env);
    "gaze-before": GazeSAC as it ran before issues 24 and 27 (ManiSkill's PlainConv encoder, a
    contrastive update after every train() call; the worker also leaves the allocator alone)."""
    from stable_baselines3 import PPO, SAC

    from gaze_rl import GazePPO, GazeSAC

    vec_env = make_env(env)
    if arm.endswith("-nchw"):  # the encoder as it ran before channels-last
        from torch import nn

        from gaze_rl.nets.encoders import ChannelsLastConv

        ChannelsLastConv.forward = nn.Sequential.forward  # type: ignore[method-assign]
    if arm == "sb3":
        return {"ppo": PPO, "sac": SAC}[algo]("CnnPolicy", vec_env, seed=0, **kwargs)
    gaze = {"ppo": GazePPO, "sac": GazeSAC}[algo]
    extra: dict[str, Any] = {"contrastive": None}  # gaze-off, gaze-off-nchw
    if arm == "gaze-on":
        extra = {}
    elif arm == "gaze-before":
        from gaze_rl.contrastive.config import ContrastiveConfig

        extra, backbone = {"contrastive": ContrastiveConfig(sac_update_interval=1)}, "plain"
    return gaze("CnnPolicy", vec_env, seed=0, backbone=backbone, **extra, **kwargs)


def gradient_step_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-step CPU, kernel seconds and page faults of SAC.train(gradient_steps=1)."""
    batch = cfg["batch"]
    model = make_model("sac", cfg["arm"], cfg["backbone"], cfg.get("env", "fake64"), buffer_size=max(1024, batch),
                       batch_size=batch, learning_starts=10**9)
    model.learn(max(1024, batch))  # random actions fill the replay buffer; no training yet
    samples = []
    for _ in range(cfg["steps"] + 1):  # the first step (lazy initialisation) is left out
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        model.train(gradient_steps=1, batch_size=batch)
        cpu, after = time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF)
        samples.append({"cpu_s": cpu, "kernel_s": after.ru_stime - before.ru_stime,
                        "page_faults": after.ru_minflt - before.ru_minflt})
    return {"samples": samples[1:], "encoder": encoder_of(model)}


def learning_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """CPU and wall seconds of learn() over the measured steps, after the warm-up."""
    if cfg["algo"] == "sac":
        kwargs: dict[str, Any] = dict(buffer_size=10_000, learning_starts=100)
        warm_up, steps = 128, 128
    else:
        kwargs, warm_up, steps = dict(n_steps=512), 512, 1024
    model = make_model(cfg["algo"], cfg["arm"], cfg["backbone"], cfg.get("env", "fake64"), **kwargs)
    model.learn(warm_up)
    gaze_on = cfg["arm"] in ("gaze-on", "gaze-before")
    updates = model.contrastive.num_updates if gaze_on else 0
    cpu, wall = time.process_time(), time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if gaze_on:
        updates = model.contrastive.num_updates - updates
    return {"steps": steps, "cpu_s": cpu, "wall_s": wall, "contrastive_updates": updates,
            "encoder": encoder_of(model)}


def encoder_of(model: Any) -> str:
    """The class name of the model's image encoder: a GazeExtractor's backbone, or SB3's extractor."""
    extractor = model.actor.features_extractor if hasattr(model, "actor") else model.policy.features_extractor
    return type(getattr(extractor, "backbone", extractor)).__name__


def worker(cfg: dict[str, Any]) -> None:
    """One configuration in this process: the allocator first, then the measurement; prints JSON."""
    import torch

    from gaze_rl.runtime import tune_malloc

    malloc = tune_malloc().applied if cfg.get("malloc", True) else {}
    torch.set_num_threads(1)
    result = gradient_step_worker(cfg) if cfg["kind"] == "grad" else learning_worker(cfg)
    print(json.dumps({**cfg, **result, "malloc_applied": malloc}))


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs worker(cfg) in a fresh Python process and returns its JSON."""
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cfg} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)])


def gradient_table(rounds: list[list[dict[str, Any]]]) -> str:
    """Rows per (arm, batch, allocator): medians over rounds of each round's per-step median;
    ratios per round (against SB3's SAC with the same batch and allocator; without / with the
    allocator for the same arm and batch; contiguous / channels-last), then their median."""
    def key(r: dict[str, Any]) -> tuple[str, int, bool]:
        return r["arm"], r["batch"], r["malloc"]

    per_round = [{key(r): {m: median([s[m] for s in r["samples"]]) for m in ("cpu_s", "kernel_s", "page_faults")}
                  for r in results} for results in rounds]
    encoders = {key(r): r["encoder"] for r in rounds[0]}
    rows = []
    for k in per_round[0]:
        arm, batch, malloc = k
        rows.append([arm, encoders[k], batch, "on" if malloc else "off",
                     median([p[k]["cpu_s"] for p in per_round]), median([p[k]["kernel_s"] for p in per_round]),
                     round(median([p[k]["page_faults"] for p in per_round])),
                     median([p[k]["cpu_s"] / p[("sb3", batch, malloc)]["cpu_s"] for p in per_round]),
                     median([p[(arm, batch, False)]["cpu_s"] / p[(arm, batch, True)]["cpu_s"] for p in per_round])
                     if malloc and (arm, batch, False) in per_round[0] else "",
                     median([p[k]["cpu_s"] / p[("gaze-off", batch, True)]["cpu_s"] for p in per_round])
                     if arm == "gaze-off-nchw" else ""])
    return markdown_table(["arm", "encoder", "batch", "allocator", "CPU s / step", "kernel s / step",
                           "page faults / step", "CPU x SB3 SAC", "allocator speed-up", "CPU x channels-last"], rows)


def learning_table(rounds: list[list[dict[str, Any]]]) -> str:
    """Rows per (algo, arm): CPU ms per env step and env-steps/s (medians over rounds), and
    per-round ratios against SB3's class of the same algorithm."""
    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["algo"], r["arm"]

    per_round = [{key(r): r for r in results} for results in rounds]
    rows = []
    for k, first in per_round[0].items():
        algo, arm = k
        cpu = [1e3 * p[k]["cpu_s"] / p[k]["steps"] for p in per_round]
        rate = [p[k]["steps"] / p[k]["wall_s"] for p in per_round]
        rows.append([algo, arm, first["encoder"], median(cpu), median(rate),
                     median([p[k]["cpu_s"] / p[(algo, "sb3")]["cpu_s"] for p in per_round]),
                     median([p[k]["wall_s"] / p[(algo, "sb3")]["wall_s"] for p in per_round]),
                     first["contrastive_updates"]])
    return markdown_table(["algo", "arm", "encoder", "CPU ms / env step", "env-steps/s (wall)", "CPU x SB3",
                           "wall x SB3", "gaze steps (round 1)"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one configuration (JSON)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file with every sample (default results/speed/sac_speed-<machine>.json)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables (with machine and load) here")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--grad-steps", type=int, default=3, help="measured gradient steps per configuration")
    p.add_argument("--batches", type=int, nargs="+", default=[512, 128])
    p.add_argument("--backbone", default=None, help="Gaze* backbone (default: the class's, 'auto')")
    p.add_argument("--skip-learning", action="store_true", help="gradient steps only")
    p.add_argument("--skip-grad", action="store_true", help="learning only")
    p.add_argument("--env", choices=tuple(ENVS), default="fake64", help="the env of every configuration")
    p.add_argument("--algos", nargs="+", choices=("sac", "ppo"), default=["sac", "ppo"], help="learning table's algorithms")
    p.add_argument("--before", action="store_true",
                   help="learning table: also SAC's 'gaze-before' arm (the defaults before issues 24 and 27)")
    p.add_argument("--note", default="", help="a line about the machine's state (e.g. other jobs running)")
    a = p.parse_args()
    if a.worker is not None:
        worker(json.loads(a.worker))
        return

    load_before = os.getloadavg()
    grad_configs = [] if a.skip_grad else [
        dict(kind="grad", arm=arm, batch=batch, malloc=malloc, steps=a.grad_steps, backbone=a.backbone, env=a.env)
        for batch in a.batches for malloc in (False, True)
        for arm in ("sb3", *GAZE_ARMS, *(["gaze-off-nchw"] if malloc else []))]
    learn_configs = [] if a.skip_learning else [
        dict(kind="learn", algo=algo, arm=arm, backbone=a.backbone, env=a.env, malloc=arm != "gaze-before")
        for algo in a.algos for arm in ("sb3", *GAZE_ARMS, *(["gaze-before"] if a.before and algo == "sac" else []))]
    grad_rounds: list[list[dict[str, Any]]] = []
    learn_rounds: list[list[dict[str, Any]]] = []
    started = time.perf_counter()
    for r in range(a.rounds):
        for configs, rounds in ((grad_configs, grad_rounds), (learn_configs, learn_rounds)):
            if not configs:
                continue
            rounds.append([])
            for cfg in configs if r % 2 == 0 else configs[::-1]:
                result = run_config(cfg)
                if cfg.get("malloc", True) and not result["malloc_applied"]:
                    print(f"  note: the allocator setting was not applied in {cfg} (the user's own, or not glibc)")
                rounds[-1].append(result)
                print(f"  round {r} {json.dumps(cfg)} done ({time.perf_counter() - started:.0f} s)", flush=True)
    load_after = os.getloadavg()

    machine = machine_info()
    lines = [f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}, torch "
             f"{machine['torch']} (1 thread per process). Load average (1, 5, 15 min) before "
             f"{', '.join(f'{x:.2f}' for x in load_before)}, after {', '.join(f'{x:.2f}' for x in load_after)}; "
             f"{a.rounds} round(s), {time.perf_counter() - started:.0f} s in all." + (f" {a.note}" if a.note else "")]
    if grad_rounds:
        lines += ["", f"## One SAC gradient step, {ENVS[a.env]} (medians; {a.grad_steps} steps per configuration)",
                  "", gradient_table(grad_rounds)]
    if learn_rounds:
        lines += ["", f"## Learning, {ENVS[a.env]}, allocator setting on except gaze-before (PPO: 1024 env steps, "
                  "SAC: 128)", "", learning_table(learn_rounds)]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.markdown is not None:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(text)
        print(f"wrote {a.markdown}")
    settings = {k: v for k, v in vars(a).items() if k != "worker"} | {"out": str(a.out), "markdown": str(a.markdown)}
    write_result(a.out, "sac_speed", settings, {"gradient_steps": grad_rounds, "learning": learn_rounds},
                 load_before=load_before, load_after=load_after)


if __name__ == "__main__":
    main()
