"""Learner cost of the gaze method: one PPO training iteration (SB3 `model.train()`), per method.

What it measures: the wall-clock seconds of `GazePPO.train()` right after a rollout, for
- `baseline`: GazePPO(contrastive=None, policy_kwargs=gaze_policy_kwargs("baseline")), plain NatureCNN;
- `foveal`:   GazePPO(contrastive=None, policy_kwargs=gaze_policy_kwargs("foveal")), Gaussian gaze
              trained by RL, no contrastive loss (separates the architecture's cost from the loss's);
- `gaze`:     GazePPO(contrastive=ContrastiveConfig(...)), which in `train()` also adds the rollout's
              feature maps to the feature buffer (`_add_rollout_to_buffer`) and runs one
              contrastive update (k-NN mining over the buffer + one gradient step on the gaze head).

All methods train on IDENTICAL rollouts: no simulator is involved. The models are built on a tiny
gymnasium Dict env (uint8 image + float state) that is never stepped; before each timed call the
rollout buffer is filled with the same synthetic images, states, actions, rewards and episode
starts (values and log-probs come from each model's own policy, as in a real rollout), then
`compute_returns_and_advantage` runs and `model._last_episode_starts` is set. numpy's global seed
is reset before each `train()`, so every method sees the same minibatch order. The methods are
interleaved (baseline, foveal, gaze, baseline, ...) so machine noise hits them alike.

For `gaze` the feature buffer is pre-filled to its capacity through `model.contrastive.add(...)`
with random feature maps and returns, so k-NN mining runs over a full buffer. The time inside
`train()` is split (by wrapping the instance's methods, CUDA-synchronised) into the buffer add,
the contrastive update (with the update's own `gaze/mining_ms`) and the rest (SB3's PPO update).

Presets: default = paper scale (128x128 images, NatureCNN, ManiSkill's PushT-v1 PPO settings:
256 envs x 100 steps, 8 epochs, 8 minibatches, 100k buffer); `--small` = 64x64, 2 envs x 100
steps, 20k buffer (for a CPU). `target_kl` is off by default so that every method does the same
number of gradient steps (the preset's 0.2 can stop an epoch early, which would make the timings
differ for reasons that have nothing to do with the method); `--keep-target-kl` keeps it.

    python benchmarks/learner_overhead.py --out results/speed/learner_overhead-h100.json
    python benchmarks/learner_overhead.py --small --out results/speed/learner_overhead-cpu2.json
"""

from __future__ import annotations

import argparse
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv

import gaze_rl.algos.ppo as ppo_module
from gaze_rl import ContrastiveConfig, GazePPO, gaze_policy_kwargs
from gaze_rl.configuration.presets import Preset, load_preset, sb3_algo_kwargs

from _common import median, print_table, sync, time_call, write_result

METHODS = ("baseline", "foveal", "gaze")


@dataclass
class Settings:
    image_size: int = 128
    num_envs: int = 256
    n_steps: int = 100
    buffer_size: int = 100_000
    state_dim: int = 21
    action_dim: int = 7
    repeats: int = 5
    warmup: int = 1
    keep_target_kl: bool = False
    device: str = "auto"
    seed: int = 0


class SpacesOnlyEnv(gym.Env):
    """A never-stepped env with PushT-like spaces: {rgb: uint8 (H, W, 3), state: float32 (D,)}, 7-D actions."""

    def __init__(self, image_size: int, state_dim: int, action_dim: int):
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        raise RuntimeError("SpacesOnlyEnv only provides spaces; the benchmark fills the rollout buffer itself")

    def step(self, action):
        raise RuntimeError("SpacesOnlyEnv only provides spaces")


@dataclass
class Rollout:
    """One synthetic rollout, shared by all methods (channel-first images, as SB3 stores them)."""

    observations: dict[str, np.ndarray]  # (T, N, ...)
    actions: np.ndarray  # (T, N, A)
    rewards: np.ndarray  # (T, N)
    episode_starts: np.ndarray  # (T, N)
    last_obs: dict[str, np.ndarray]  # (N, ...)
    last_dones: np.ndarray  # (N,)


def make_rollout(s: Settings, rng: np.random.Generator) -> Rollout:
    T, N, H = s.n_steps, s.num_envs, s.image_size
    # PushT episodes last 100 steps; each env is at its own phase of its episode.
    phase = rng.integers(0, 100, size=N)
    starts = ((np.arange(T)[:, None] + phase[None]) % 100 == 0).astype(np.float32)
    last_dones = ((T + phase) % 100 == 0)
    return Rollout(
        observations={
            "rgb": rng.integers(0, 256, size=(T, N, 3, H, H), dtype=np.uint8),
            "state": rng.standard_normal((T, N, s.state_dim), dtype=np.float32),
        },
        actions=np.clip(rng.standard_normal((T, N, s.action_dim), dtype=np.float32) * 0.6, -3, 3),
        rewards=rng.uniform(-0.1, 0.1, size=(T, N)).astype(np.float32),
        episode_starts=starts,
        last_obs={
            "rgb": rng.integers(0, 256, size=(N, 3, H, H), dtype=np.uint8),
            "state": rng.standard_normal((N, s.state_dim), dtype=np.float32),
        },
        last_dones=last_dones,
    )


def pusht_preset() -> Preset:
    """gaze_rl's PushT-v1 PPO preset. `load_preset` reads the package resource `gaze_rl.experiments`,
    which exists only in an installed gaze_rl (pyproject maps experiments/ there); from a plain
    checkout on PYTHONPATH (the GPU machine) read experiments/ppo.toml the same way."""
    try:
        return load_preset("ppo", "PushT-v1")
    except ModuleNotFoundError:
        tables = tomllib.loads((Path(__file__).resolve().parents[1] / "experiments" / "ppo.toml").read_text())
        default, task = tables["default"], tables.get("PushT-v1", {})
        return Preset(**{part: {**default.get(part, {}), **task.get(part, {})} for part in ("algo", "policy", "env")})


def build_model(method: str, s: Settings, env: DummyVecEnv) -> GazePPO:
    preset = pusht_preset()
    algo = sb3_algo_kwargs("ppo", {**preset.algo, "n_steps": s.n_steps}, s.num_envs)
    if not s.keep_target_kl:
        algo["target_kl"] = None
    policy_kwargs = {**preset.policy, **gaze_policy_kwargs(method, "nature")}
    contrastive = ContrastiveConfig(buffer_size=s.buffer_size) if method == "gaze" else None
    model = GazePPO("MultiInputPolicy", env, contrastive=contrastive, policy_kwargs=policy_kwargs,
                    seed=s.seed, device=s.device, verbose=0, **algo)
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


@torch.no_grad()
def prefill_feature_buffer(model: GazePPO, s: Settings, rng: np.random.Generator, chunk: int = 4096) -> float:
    """Fills the gaze model's feature buffer to capacity via `contrastive.add`; returns seconds."""
    learner = model.contrastive
    assert learner is not None
    shape = learner.extractor.map_shape
    gen = torch.Generator(device="cpu").manual_seed(s.seed)
    start = time.perf_counter()
    for lo in range(0, s.buffer_size, chunk):
        n = min(chunk, s.buffer_size - lo)
        maps = torch.rand((n, *shape), generator=gen)  # ReLU'd maps are >= 0
        returns = torch.from_numpy(rng.uniform(-1.0, 1.0, size=n).astype(np.float32))
        learner.add(maps.to(learner.device), returns)
    sync(learner.device)
    return time.perf_counter() - start


@torch.no_grad()
def policy_values_and_log_probs(model: GazePPO, observations: dict[str, np.ndarray], actions: np.ndarray,
                                batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """What the rollout would have stored: V(s) and log pi(a|s) of the model's current policy."""
    model.policy.set_training_mode(False)
    n = len(actions)
    values, log_probs = [], []
    for lo in range(0, n, batch):
        obs = {k: torch.as_tensor(v[lo:lo + batch], device=model.device) for k, v in observations.items()}
        act = torch.as_tensor(actions[lo:lo + batch], device=model.device)
        v, lp, _ = model.policy.evaluate_actions(obs, act)
        values.append(v.flatten().cpu().numpy())
        log_probs.append(lp.flatten().cpu().numpy())
    return np.concatenate(values), np.concatenate(log_probs)


def load_rollout(model: GazePPO, r: Rollout) -> None:
    """Writes the shared rollout into the model's rollout buffer as `collect_rollouts` would leave it."""
    buf = model.rollout_buffer
    T, N = r.rewards.shape
    buf.reset()
    # References, not copies: SB3's get() replaces the dict entries with flattened copies.
    buf.observations = dict(r.observations)
    buf.actions = r.actions.copy()
    buf.rewards = r.rewards.copy()
    buf.episode_starts = r.episode_starts.copy()
    flat_obs = {k: v.reshape(T * N, *v.shape[2:]) for k, v in r.observations.items()}
    values, log_probs = policy_values_and_log_probs(model, flat_obs, r.actions.reshape(T * N, -1))
    buf.values = values.reshape(T, N).astype(np.float32)
    buf.log_probs = log_probs.reshape(T, N).astype(np.float32)
    buf.pos, buf.full, buf.generator_ready = T, True, False
    with torch.no_grad():
        last = {k: torch.as_tensor(v, device=model.device) for k, v in r.last_obs.items()}
        last_values = model.policy.predict_values(last)
    buf.compute_returns_and_advantage(last_values=last_values, dones=r.last_dones)
    model._last_episode_starts = r.last_dones.copy()
    if model.contrastive is not None and hasattr(ppo_module, "RolloutRewards"):
        # Newer GazePPO takes the returns' rewards from a callback that learn() installs
        # (the env's rewards, before SB3's time-limit bootstrap); give it the rollout's.
        recorder = ppo_module.RolloutRewards()
        recorder.rewards = [row.copy() for row in r.rewards]
        model._rollout_rewards = recorder


def time_data_path(model: GazePPO, r: Rollout) -> float:
    """Seconds of SB3's data path alone in one train(): n_epochs passes of rollout_buffer.get(batch_size)
    (flatten copy, minibatch gather on the host, host->device copies), with no network work."""
    load_rollout(model, r)
    buf = model.rollout_buffer

    def passes() -> None:
        for _ in range(model.n_epochs):
            for _batch in buf.get(model.batch_size):
                pass

    return time_call(passes, model.device)[0]


class SplitTimer:
    """Wraps a gaze model's `_add_rollout_to_buffer` and `contrastive.update` to time them."""

    def __init__(self, model: GazePPO):
        self.add_s: float | None = None
        self.update_s: float | None = None
        self.metrics: dict[str, float] = {}
        add, update, device = model._add_rollout_to_buffer, model.contrastive.update, model.device

        def timed_add() -> None:
            self.add_s, _ = time_call(add, device)

        def timed_update() -> dict[str, float]:
            self.update_s, self.metrics = time_call(update, device)
            return self.metrics

        model._add_rollout_to_buffer = timed_add  # type: ignore[method-assign]
        model.contrastive.update = timed_update  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--small", action="store_true", help="CPU preset: 64x64, 2 envs x 100 steps, buffer 20k")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--num-envs", type=int, default=None)
    p.add_argument("--n-steps", type=int, default=None)
    p.add_argument("--buffer-size", type=int, default=None)
    p.add_argument("--state-dim", type=int, default=21, help="size of the state vector (PushT-v1 rgb+state: 21)")
    p.add_argument("--repeats", type=int, default=5, help="timed train() calls per method")
    p.add_argument("--warmup", type=int, default=1, help="untimed train() calls per method first")
    p.add_argument("--keep-target-kl", action="store_true", help="keep the preset's target_kl (early stopping)")
    p.add_argument("--data-path-samples", type=int, default=2,
                   help="after the repeats, time SB3's minibatch data path alone (baseline model) this many times")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    s = Settings(state_dim=a.state_dim, repeats=a.repeats, warmup=a.warmup, keep_target_kl=a.keep_target_kl,
                 device=a.device, seed=a.seed)
    if a.small:
        s.image_size, s.num_envs, s.n_steps, s.buffer_size = 64, 2, 100, 20_000
    for name in ("image_size", "num_envs", "n_steps", "buffer_size"):
        if getattr(a, name) is not None:
            setattr(s, name, getattr(a, name))

    rng = np.random.default_rng(s.seed)
    t0 = time.perf_counter()
    rollout = make_rollout(s, rng)
    env = DummyVecEnv([lambda: SpacesOnlyEnv(s.image_size, s.state_dim, s.action_dim) for _ in range(s.num_envs)])
    models = {m: build_model(m, s, env) for m in METHODS}
    gaze = models["gaze"]
    prefill_s = prefill_feature_buffer(gaze, s, rng)
    splitter = SplitTimer(gaze)
    setup_s = time.perf_counter() - t0
    device = str(gaze.device)
    algo_info = {k: getattr(gaze, k) for k in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "target_kl")}
    print(f"device {device}; rollout {s.n_steps} x {s.num_envs} of {s.image_size}px; PPO {algo_info}; "
          f"feature buffer {len(gaze.contrastive.buffer)} x {gaze.contrastive.extractor.map_shape} "
          f"(knn {type(gaze.contrastive.knn).__name__}); setup {setup_s:.1f}s (buffer prefill {prefill_s:.1f}s)")

    samples: dict[str, list[float]] = {m: [] for m in METHODS}
    split: dict[str, list[float]] = {"add_rollout_s": [], "contrastive_update_s": [], "mining_ms": [],
                                     "num_triplets": [], "ppo_rest_s": []}
    n_updates: dict[str, list[int]] = {m: [] for m in METHODS}
    for it in range(s.warmup + s.repeats):
        timed = it >= s.warmup
        for method, model in models.items():
            load_rollout(model, rollout)
            np.random.seed(1000 + it)  # same minibatch order for every method
            before = model._n_updates
            seconds, _ = time_call(model.train, model.device)
            n_updates[method].append(model._n_updates - before)
            if not timed:
                print(f"  warm-up {it + 1}/{s.warmup}: {method} {seconds:.3f}s")
                continue
            samples[method].append(seconds)
            if method == "gaze":
                split["add_rollout_s"].append(splitter.add_s)
                split["contrastive_update_s"].append(splitter.update_s)
                split["mining_ms"].append(splitter.metrics.get("gaze/mining_ms", float("nan")))
                split["num_triplets"].append(splitter.metrics.get("gaze/num_triplets", float("nan")))
                split["ppo_rest_s"].append(seconds - splitter.add_s - splitter.update_s)
        if timed:
            print(f"  repeat {it - s.warmup + 1}/{s.repeats}: " + ", ".join(f"{m} {samples[m][-1]:.3f}s" for m in METHODS))

    data_path = [time_data_path(models["baseline"], rollout) for _ in range(a.data_path_samples)]
    med = {m: median(samples[m]) for m in METHODS}
    # Ratios from the same repeat (side by side), then their median; also ratio of medians.
    paired = {f"{m}/baseline": [x / b for x, b in zip(samples[m], samples["baseline"])] for m in ("gaze", "foveal")}
    ratios = {k: median(v) for k, v in paired.items()}
    ratios["gaze/foveal"] = median([g / f for g, f in zip(samples["gaze"], samples["foveal"])])
    split_med = {k: median(v) for k, v in split.items()}
    transitions = s.n_steps * s.num_envs

    rows = [[m, med[m], transitions / med[m], ratios.get(f"{m}/baseline", 1.0)] for m in METHODS]
    print_table("seconds per PPO iteration (model.train(), median)", ["method", "s/iter", "samples/s", "vs baseline"], rows)
    print_table("gaze split (median)", ["part", "seconds"], [
        ["_add_rollout_to_buffer", split_med["add_rollout_s"]],
        ["contrastive update", split_med["contrastive_update_s"]],
        ["  of which mining (gaze/mining_ms / 1000)", split_med["mining_ms"] / 1000.0],
        ["SB3 PPO update (rest)", split_med["ppo_rest_s"]],
    ])
    if data_path:
        print(f"SB3 data path alone (baseline: {s.n_steps * s.num_envs} samples, {gaze.n_epochs} epochs of get(), "
              f"no compute): {median(data_path):.3f}s = {median(data_path) / med['baseline']:.0%} of a baseline iteration")
    verdict = "met" if ratios["gaze/baseline"] <= 1.15 else "NOT met"
    print(f"\ngaze/baseline = {ratios['gaze/baseline']:.3f} (target <= 1.15: {verdict}); "
          f"foveal/baseline = {ratios['foveal/baseline']:.3f}")

    write_result(a.out, "learner_overhead", {**asdict(s), "small": a.small, "device_used": device, "ppo": algo_info,
                                             "knn": type(gaze.contrastive.knn).__name__,
                                             "feature_map_shape": list(gaze.contrastive.extractor.map_shape),
                                             "transitions_per_iteration": transitions,
                                             "setup_s": setup_s, "buffer_prefill_s": prefill_s}, {
        "median_s_per_iteration": med,
        "ratios_same_repeat_median": ratios,
        "ratio_of_medians": {"gaze/baseline": med["gaze"] / med["baseline"],
                             "foveal/baseline": med["foveal"] / med["baseline"]},
        "gaze_split_median": split_med,
        "target_gaze_over_baseline_max": 1.15,
        "target_met": ratios["gaze/baseline"] <= 1.15,
        "sb3_data_path_s_median": median(data_path),
        "raw_sb3_data_path_s": data_path,
        "raw_s_per_iteration": samples,
        "raw_gaze_split": split,
        "epochs_run_per_call": n_updates,
    })


if __name__ == "__main__":
    main()
