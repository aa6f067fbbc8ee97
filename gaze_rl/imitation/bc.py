"""`gaze-rl pretrain`: behaviour cloning of demonstrations with an attention objective.

The network is the policy `gaze-rl train` builds (`train.build_model`: GazePPO's
MultiInputActorCriticPolicy or GazeSAC's actor, with the same GazeExtractor and the task's preset
policy kwargs), so its weights load into RL with `gaze-rl train --init-from RUN/checkpoints/final.pt`.

Per step: a batch of (observation, action) pairs from the demonstrations;
`loss = BC + lambda * objective`, where BC is the squared error of the policy's mean action
(`bc_loss="mse"`) or the negative log-likelihood of the demonstrated action under the policy's
Gaussian ("nll"; SAC: the tanh-squashed Gaussian) and the objective is gaze-KL, saliency-MSE or
none (gaze_rl.imitation.objectives). With method `gaze`, as in RL, the action loss stops at the
gaze map (`detach_attention`), so only the attention objective moves the gaze head; with
`foveal` both do.

Every `eval_every` steps (and at the end) the deterministic policy runs `eval_episodes`
held-out episodes (seeds eval_seed + i) in the RL env with segmentation on the side: success
rates, returns, attention-on-target. The run directory holds `config.json` (with `train` and
`env` entries, so `gaze-rl eval --checkpoint RUN/checkpoints/final.zip` works), `eval.csv`,
`summary.json`, `tb/` (losses/, eval/, attention/, and `attention/saliency_vs_attention`
pictures: each row shows a demonstration frame with the saliency target | with the policy's
attention) and `checkpoints/final.pt` (weights, for --init-from) + `final.zip` (SB3 model).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.logger import Image
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecTransposeImage

from gaze_rl.config import PretrainConfig, TrainConfig
from gaze_rl.contrastive.learner import ContrastiveConfig
from gaze_rl.imitation.checkpoint import save_pretrained, train_architecture
from gaze_rl.imitation.demos import DemoSet, load_demos
from gaze_rl.imitation.objectives import AttentionObjective
from gaze_rl.imitation.saliency import (
    HeatmapSaliency, OracleSaliency, SaliencySource, grid_distribution, temporal_aggregate,
)
from gaze_rl.segmentation.envs import make_segmented_env
from gaze_rl.segmentation.on_target import (
    AttentionOnTargetMeter, attention_on_target, policy_attention, policy_extractor, resolve_metric_mode,
)
from gaze_rl.segmentation.targets import TASK_TARGETS, coverage_grid
from gaze_rl.nets.attention import GaussianGaze
from gaze_rl.nets.extractor import METHOD_ATTENTION
from gaze_rl.visualize import overlay

EVAL_COLUMNS = ("step", "success_once", "success_at_end", "return_mean", "length_mean", "attention_on_target",
                "attention_on_target_chance", "attention_on_target_lift", "bc_loss", "objective_loss", "wall_time")
_LOG_EVERY = 50


class SpacesEnv(gym.Env):
    """An env that only has spaces: lets SB3 build the exact RL policy without starting ManiSkill."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def demo_spaces(demo_set: DemoSet) -> tuple[spaces.Dict, spaces.Box]:
    """The RL env's observation and action spaces, from the demonstrations."""
    demo = demo_set.demos[0]
    obs = {"rgb": spaces.Box(0, 255, demo.rgb.shape[1:], np.uint8)}
    if demo_set.include_state:
        obs["state"] = spaces.Box(-np.inf, np.inf, demo.state.shape[1:], np.float32)
    return spaces.Dict(obs), spaces.Box(demo_set.action_low, demo_set.action_high, dtype=np.float32)


def internal_train_config(cfg: PretrainConfig, demo_set: DemoSet) -> TrainConfig:
    """The TrainConfig whose policy is pretrained (what --init-from must match)."""
    return TrainConfig(
        env_id=demo_set.env_id, algo=cfg.algo, method=cfg.method, seed=cfg.seed, num_envs=1,
        image_size=demo_set.image_size, obs_mode="rgb+state" if demo_set.include_state else "rgb",
        device=cfg.device, backbone=cfg.backbone, control_mode=demo_set.control_mode, gaze=cfg.gaze,
        # Small buffers: the RL-only parts (replay buffer, contrastive buffer) are never used here.
        replay_buffer_size=64, learning_starts=0, contrastive=ContrastiveConfig(buffer_size=256),
        progress_bar=False,
    )


def build_policy_model(train_cfg: TrainConfig, demo_set: DemoSet, device: str):
    """GazePPO / GazeSAC built exactly as `gaze-rl train` builds it, on a spaces-only env."""
    from gaze_rl.presets import load_preset
    from gaze_rl.train import build_model

    observation_space, action_space = demo_spaces(demo_set)
    env = DummyVecEnv([lambda: SpacesEnv(observation_space, action_space)])
    return build_model(train_cfg, env, load_preset(train_cfg.algo, train_cfg.env_id), device)


def eval_horizon(cfg: PretrainConfig, demo_set: DemoSet) -> int:
    """Evaluation time limit: cfg.max_episode_steps, or 1.2 x the longest demonstration rounded up
    to 10 and at least the task's own limit (motion-planned demonstrations often exceed it)."""
    if cfg.max_episode_steps is not None:
        return cfg.max_episode_steps
    import mani_skill.envs  # noqa: F401  (registers the tasks)

    task_limit = gym.spec(demo_set.env_id).max_episode_steps or 0
    longest = max(len(d) for d in demo_set.demos)
    return max(task_limit, int(math.ceil(1.2 * longest / 10.0) * 10))


def saliency_source(cfg: PretrainConfig, demo_set: DemoSet) -> SaliencySource:
    opts = cfg.saliency
    if opts.source == "heatmaps":
        if opts.heatmaps is None:
            raise ValueError("--saliency.source heatmaps needs --saliency.heatmaps FILE (.npz or .h5)")
        return HeatmapSaliency(opts.heatmaps, demo_set)
    return oracle_for(cfg, demo_set)


def oracle_for(cfg: PretrainConfig, demo_set: DemoSet) -> OracleSaliency:
    opts = cfg.saliency
    return OracleSaliency(demo_set.env_id, demo_set.segmentation_names, list(demo_set.demos[0].actor_positions),
                          actors=opts.actors, shape=opts.shape, sigma=opts.sigma, camera=opts.camera)


@dataclasses.dataclass
class DemoTensors:
    """The demonstrations as training tensors (one row per (observation, action) pair)."""

    rgb: torch.Tensor          # (N, C, H, W) uint8, channel-first as SB3 feeds the policy
    state: torch.Tensor | None  # (N, D) float32
    actions: torch.Tensor      # (N, A) float32, in the policy's action units
    saliency: torch.Tensor     # (N, H, W) float32 image-resolution saliency S in [0, 1]
    grid: torch.Tensor         # (N, h, w) float32 saliency distribution g (sums to 1)
    coverage: torch.Tensor | None  # (N, h, w) float32 target coverage per cell (attention-on-target)

    def __len__(self) -> int:
        return len(self.actions)

    def observations(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        obs = {"rgb": self.rgb[idx]}
        if self.state is not None:
            obs["state"] = self.state[idx]
        return obs


def demo_tensors(cfg: PretrainConfig, demo_set: DemoSet, grid_shape: tuple[int, int], model: Any,
                 source: SaliencySource, oracle: OracleSaliency | None, device: str) -> DemoTensors:
    """Builds the training tensors: frames 0..T-1 of every demonstration with their actions and
    saliency targets (temporal aggregation over the episode, then the grid distribution)."""
    h, w = grid_shape
    rgb, state, actions, saliency, masks = [], [], [], [], []
    for i, demo in enumerate(demo_set.demos):
        steps = len(demo)
        maps = temporal_aggregate(source.maps(i, demo), cfg.saliency.alpha, cfg.saliency.window)
        rgb.append(demo.rgb[:steps])
        state.append(demo.state[:steps])
        actions.append(demo.actions)
        saliency.append(maps[:steps])
        if oracle is not None:
            masks.append(oracle.demo_target_masks(demo)[:steps])
    saliency_np = np.concatenate(saliency)
    action_np = np.concatenate(actions)
    if cfg.algo == "sac":  # SAC's actor works in [-1, 1]; predict() unscales
        action_np = model.policy.scale_action(action_np)
    tensor = lambda x, dtype=torch.float32: torch.as_tensor(x, dtype=dtype, device=device)  # noqa: E731
    return DemoTensors(
        rgb=tensor(np.concatenate(rgb).transpose(0, 3, 1, 2), torch.uint8),
        state=tensor(np.concatenate(state)) if demo_set.include_state else None,
        actions=tensor(action_np),
        saliency=tensor(saliency_np),
        grid=tensor(grid_distribution(saliency_np, h, w, cfg.saliency.eps)),
        coverage=tensor(coverage_grid(np.concatenate(masks), h, w)) if masks else None,
    )


def bc_loss(model: Any, observations: dict[str, torch.Tensor], actions: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, squared error of the deterministic action) for a batch of raw tensor observations."""
    policy = model.policy
    if hasattr(policy, "get_distribution"):  # PPO: Gaussian over unbounded actions
        dist = policy.get_distribution(observations)
        mean = dist.distribution.mean
        mse = F.mse_loss(mean, actions)
        return (mse if kind == "mse" else -dist.log_prob(actions).mean()), mse
    actor = policy.actor  # SAC: tanh-squashed Gaussian
    mean_actions, log_std, kwargs = actor.get_action_dist_params(observations)
    mse = F.mse_loss(torch.tanh(mean_actions), actions)
    if kind == "mse":
        return mse, mse
    dist = actor.action_dist.proba_distribution(mean_actions, log_std, **kwargs)
    return -dist.log_prob(actions.clamp(-1 + 1e-6, 1 - 1e-6)).mean(), mse


def make_eval_env(demo_set: DemoSet, horizon: int, variant: str = "none") -> VecEnv:
    """The RL env (channel-first, as the policy sees it) with segmentation on the side."""
    include_state = demo_set.include_state
    return VecTransposeImage(DummyVecEnv([lambda: make_segmented_env(
        demo_set.env_id, image_size=demo_set.image_size, control_mode=demo_set.control_mode,
        include_state=include_state, ignore_terminations=True, max_episode_steps=horizon, variant=variant)]))


def run_episodes(model: Any, env: VecEnv, episodes: int, seed: int,
                 meter: AttentionOnTargetMeter | None = None, deterministic: bool = True) -> dict[str, Any]:
    """Runs `episodes` episodes (episode i from reset(seed=seed + i)) of a one-env segmented VecEnv."""
    results = []
    for i in range(episodes):
        env.seed(seed + i)
        obs = env.reset()
        while True:
            if meter is not None:
                meter.observe(obs, env.get_attr("frame"))
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, _, dones, infos = env.step(action)
            if dones[0]:
                info = infos[0]
                results.append({"seed": seed + i, "return": float(info["episode"]["r"]),
                                 "length": int(info["episode"]["l"]), "success_once": bool(info["success_once"]),
                                 "success_at_end": bool(info["success_at_end"])})
                break
    summary = {
        "episodes": episodes,
        "success_once": float(np.mean([r["success_once"] for r in results])),
        "success_at_end": float(np.mean([r["success_at_end"] for r in results])),
        "return_mean": float(np.mean([r["return"] for r in results])),
        "length_mean": float(np.mean([r["length"] for r in results])),
        "per_episode": results,
    }
    if meter is not None:
        summary.update(meter.summary())
    return summary


def validate(cfg: PretrainConfig) -> DemoSet:
    """Checks the options and the demonstrations before anything is built; returns the demos."""
    positive = {"steps": cfg.steps, "batch_size": cfg.batch_size}
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1 (got {value})")
    if cfg.torch_threads is not None and cfg.torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1 (got {cfg.torch_threads})")
    for name in ("eval_every", "eval_episodes", "image_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0 (got {getattr(cfg, name)})")
    if cfg.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0 (got {cfg.learning_rate})")
    if cfg.max_episode_steps is not None and cfg.max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1 (got {cfg.max_episode_steps})")
    if METHOD_ATTENTION[cfg.method] == "gaussian":
        GaussianGaze(1, 2, 2, **cfg.gaze.as_kwargs())  # raises on bad gaze options
    if cfg.objective != "none" and cfg.attention == "map" and METHOD_ATTENTION[cfg.method] == "none":
        raise ValueError(
            f"--attention map needs a policy with an attention map, but --method {cfg.method} has none: use "
            "--method patch, foveal or gaze, or --attention features / auto"
        )
    demo_set = load_demos(cfg.demos)
    if cfg.env_id is not None and cfg.env_id != demo_set.env_id:
        raise ValueError(f"--env-id {cfg.env_id} does not match the demonstrations' task {demo_set.env_id} "
                         f"({demo_set.path}); drop --env-id or pass demonstrations of {cfg.env_id}")
    if cfg.objective != "none" and cfg.saliency.source == "oracle":
        oracle_for(cfg, demo_set)  # raises: task without default actors, unknown actor names
    if cfg.objective != "none" and cfg.saliency.source == "heatmaps":
        saliency_source(cfg, demo_set)  # raises on missing keys / shape or frame mismatch
    return demo_set


def default_run_dir(cfg: PretrainConfig, env_id: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"pretrain__{env_id}__{cfg.method}__{cfg.objective}__s{cfg.seed}__{stamp}"


def _picture(rgb: torch.Tensor, saliency: np.ndarray, attention, index: int) -> np.ndarray:
    """One row: the frame with the saliency target | with the policy's attention."""
    frame = rgb.permute(1, 2, 0).cpu().numpy()[..., :3]
    weights = attention.weights if attention.weights is not None else attention.grid
    params = attention.params
    left = overlay(frame, saliency, size=160)
    right = overlay(frame, weights[index].detach().cpu().numpy(),
                    None if params is None else params.mu[index].detach().cpu().numpy(),
                    None if params is None else params.sigma[index].detach().cpu().numpy(),
                    None if params is None else params.rho[index].detach().cpu().numpy(), size=160)
    gap = np.full((160, 4, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def pretrain(cfg: PretrainConfig) -> Path:
    """Runs one pretraining run; returns its directory."""
    from gaze_rl.envs.factory import EnvSpec
    from gaze_rl.runlog import make_logger, prepare_run_dir, write_json
    from gaze_rl.train import machine_info, resolve_device

    demo_set = validate(cfg)
    device = resolve_device(cfg.device)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    train_cfg = internal_train_config(cfg, demo_set)
    horizon = eval_horizon(cfg, demo_set)
    run_dir = prepare_run_dir(cfg.run_dir or default_run_dir(cfg, demo_set.env_id), cfg.overwrite)
    model = build_policy_model(train_cfg, demo_set, device)
    extractor = policy_extractor(model)
    objective = AttentionObjective(cfg.objective, extractor, cfg.weight, cfg.attention, cfg.beta)
    # Pictures and attention-on-target show the policy's own attention (its map if it has one),
    # the same for every objective, so that runs compare.
    metric_mode = resolve_metric_mode(extractor, "auto")
    architecture = train_architecture(train_cfg)
    spec = EnvSpec(env_id=demo_set.env_id, num_envs=1, image_size=demo_set.image_size, obs_mode=train_cfg.obs_mode,
                   sim_backend="physx_cpu", control_mode=demo_set.control_mode, ignore_terminations=True,
                   env_kwargs={"max_episode_steps": horizon})
    write_json(run_dir / "config.json", {
        "pretrain": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg), "env": dataclasses.asdict(spec),
        "architecture": architecture, "objective": {"name": objective.name, "weight": objective.weight,
                                                    "attention": objective.mode, "beta": objective.beta},
        "demos": {"path": str(demo_set.path), "num": len(demo_set), "steps": demo_set.num_steps,
                  "seeds": [d.seed for d in demo_set.demos]},
        "eval_horizon": horizon, "command": " ".join(sys.argv), "machine": machine_info(),
    })

    # Saliency targets (and target masks for attention-on-target when the task has defaults).
    oracle = None
    if cfg.saliency.actors or demo_set.env_id in TASK_TARGETS:
        oracle = oracle_for(cfg, demo_set)
    source = saliency_source(cfg, demo_set) if cfg.objective != "none" or oracle is not None else None
    if source is None:  # plain BC on a task without target actors: targets unused
        source = _ZeroSaliency()
    grid_shape = tuple(extractor.map_shape[1:])
    data = demo_tensors(cfg, demo_set, grid_shape, model, source, oracle, device)

    logger = make_logger(run_dir, verbose=0)
    optimizer = torch.optim.Adam(model.policy.parameters(), lr=cfg.learning_rate)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    picture_idx = torch.linspace(0, len(data) - 1, 4).long()
    env = make_eval_env(demo_set, horizon) if cfg.eval_episodes > 0 else None
    eval_rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    last_eval: dict[str, Any] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc=f"pretrain {demo_set.env_id} {cfg.objective}", disable=not cfg.progress_bar,
               dynamic_ncols=True)
    running = {"bc": 0.0, "mse": 0.0, "objective": 0.0, "n": 0}
    try:
        for step in range(1, cfg.steps + 1):
            model.policy.set_training_mode(True)
            idx = torch.randint(len(data), (cfg.batch_size,), generator=generator).to(device)
            observations = data.observations(idx)
            loss_bc, mse = bc_loss(model, observations, data.actions[idx], cfg.bc_loss)
            attention = None
            if objective.name != "none":
                pre = preprocess_obs(observations, model.policy.observation_space, normalize_images=True)
                attention = objective.attention(pre)
                target = data.grid[idx] if objective.target == "grid" else data.saliency[idx]
                loss_obj = objective.loss(attention, target)
            else:
                loss_obj = loss_bc.new_zeros(())
            loss = loss_bc + objective.weight * loss_obj
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running["bc"] += float(loss_bc.detach())
            running["mse"] += float(mse.detach())
            running["objective"] += float(loss_obj.detach())
            running["n"] += 1
            if step % _LOG_EVERY == 0 or step == cfg.steps:
                n = running["n"]
                logger.record("losses/bc", running["bc"] / n)
                logger.record("losses/bc_action_mse", running["mse"] / n)
                logger.record(f"losses/{objective.name if objective.name != 'none' else 'objective'}",
                              running["objective"] / n)
                with torch.no_grad():
                    pre = preprocess_obs(observations, model.policy.observation_space, normalize_images=True)
                    attention = policy_attention(extractor, pre, metric_mode, cfg.beta)
                    if data.coverage is not None:
                        logger.record("attention/on_target_train",
                                      float(np.mean(attention_on_target(attention.grid, data.coverage[idx]))))
                    if attention.params is not None:
                        logger.record("attention/sigma_mean", float(attention.params.sigma.mean()))
                        logger.record("attention/mu_abs_mean", float(attention.params.mu.abs().mean()))
                logger.record("charts/steps_per_s", step / (time.perf_counter() - start))
                bar.set_postfix(bc=f"{running['bc'] / n:.4f}", obj=f"{running['objective'] / n:.4f}")
                running = {"bc": 0.0, "mse": 0.0, "objective": 0.0, "n": 0}
            if cfg.image_every and (step % cfg.image_every == 0 or step == cfg.steps):
                with torch.no_grad():
                    pics = data.observations(picture_idx.to(device))
                    pre = preprocess_obs(pics, model.policy.observation_space, normalize_images=True)
                    shown = policy_attention(extractor, pre, metric_mode, cfg.beta)
                rows = [_picture(pics["rgb"][j], data.saliency[picture_idx[j]].cpu().numpy(), shown, j)
                        for j in range(len(picture_idx))]
                logger.record("attention/saliency_vs_attention", Image(np.concatenate(rows, axis=0), "HWC"),
                              exclude=("stdout", "log", "json", "csv"))
            if env is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                meter = AttentionOnTargetMeter(model, oracle.targets, metric_mode, cfg.beta) if oracle is not None else None
                last_eval = run_episodes(model, env, cfg.eval_episodes, cfg.eval_seed, meter)
                row = {"step": step, **{k: last_eval.get(k, float("nan")) for k in EVAL_COLUMNS[1:8]},
                       "bc_loss": float(loss_bc.detach()), "objective_loss": float(loss_obj.detach()),
                       "wall_time": round(time.perf_counter() - start, 1)}
                eval_rows.append(row)
                for key in ("success_once", "success_at_end", "return_mean", "length_mean", "attention_on_target",
                            "attention_on_target_lift"):
                    if key in last_eval:
                        logger.record(f"eval/{key}", last_eval[key])
                tqdm.write(f"step {step}: success_once {last_eval['success_once']:.2f} success_at_end "
                           f"{last_eval['success_at_end']:.2f} return {last_eval['return_mean']:.2f}"
                           + (f" attention-on-target {last_eval['attention_on_target']:.3f} (chance "
                              f"{last_eval['attention_on_target_chance']:.3f})" if "attention_on_target" in last_eval
                              else ""))
            if step % _LOG_EVERY == 0 or step == cfg.steps:
                logger.dump(step)
            bar.update(1)
    finally:
        bar.close()
        if env is not None:
            env.close()

    checkpoints = run_dir / "checkpoints"
    save_pretrained(model.policy, architecture, checkpoints / "final.pt")
    model.save(checkpoints / "final.zip")
    with (run_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        writer.writeheader()
        writer.writerows(eval_rows)
    write_json(run_dir / "summary.json", {
        "env_id": demo_set.env_id, "objective": objective.name, "weight": objective.weight, "method": cfg.method,
        "seed": cfg.seed, "demos": len(demo_set), "steps": cfg.steps, "eval_horizon": horizon,
        "final_eval": last_eval, "seconds": round(time.perf_counter() - start, 1),
    })
    print(f"\nRun directory: {run_dir}\n"
          f"  pretrained policy: {checkpoints / 'final.pt'}\n"
          f"  fine-tune:         gaze-rl train --init-from {checkpoints / 'final.pt'} --env-id {demo_set.env_id} "
          f"--algo {cfg.algo} --method {cfg.method} --image-size {demo_set.image_size} "
          f"--control-mode {demo_set.control_mode}\n"
          f"  evaluations:       {run_dir / 'eval.csv'}\n"
          f"  TensorBoard:       tensorboard --logdir {run_dir / 'tb'}\n"
          f"  evaluate:          gaze-rl eval --checkpoint {checkpoints / 'final.zip'} --attention-on-target")
    return run_dir


class _ZeroSaliency:
    """Saliency of plain BC on a task without target actors: all zeros (never used as a target)."""

    def maps(self, index: int, demo) -> np.ndarray:
        return np.zeros(demo.rgb.shape[:3], np.float32)
