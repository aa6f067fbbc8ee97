"""`gaze-rl pretrain`: behaviour cloning of demonstrations with an attention objective.

The network is the policy `gaze-rl train` builds (`gaze_rl.build.build_model`: GazePPO's
MultiInputActorCriticPolicy or GazeSAC's actor, with the same GazeExtractor and the task's preset
policy kwargs), so its weights load into RL with `gaze-rl train --init-from RUN/checkpoints/final.pt`.
The loss, the demonstration tensors and the evaluation env: gaze_rl.imitation.bc.

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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import Image, Logger
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from gaze_rl.build import machine_info, resolve_device, train_architecture, use_torch_threads
from gaze_rl.configuration.commands import PretrainConfig, TrainConfig
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.envs.task_objects import TASK_TARGETS
from gaze_rl.errors import ConfigError
from gaze_rl.imitation.bc import (
    EVAL_COLUMNS,
    LOG_EVERY,
    DemoTensors,
    ZeroSaliency,
    bc_loss,
    build_policy_model,
    demo_tensors,
    eval_horizon,
    evaluate_in_env,
    internal_train_config,
    make_eval_env,
    oracle_for,
    picture_row,
    saliency_source,
)
from gaze_rl.imitation.checkpoint import save_pretrained
from gaze_rl.imitation.demos import DemoSet, load_demos
from gaze_rl.imitation.objectives import AttentionObjective
from gaze_rl.imitation.saliency import OracleSaliency
from gaze_rl.runs.runlog import make_logger, prepare_run_dir, write_json
from gaze_rl.segmentation.on_target import (
    AttentionOnTargetMeter,
    attention_on_target,
    policy_attention,
    policy_extractor,
    resolve_metric_mode,
)


def load_checked_demos(cfg: PretrainConfig) -> DemoSet:
    """What PretrainConfig's own checks cannot see (the demonstrations, their task's actors, heatmaps),
    before anything is built; returns the demos."""
    demo_set = load_demos(cfg.demos)
    if cfg.env_id is not None and cfg.env_id != demo_set.env_id:
        raise ConfigError(f"--env-id {cfg.env_id} does not match the demonstrations' task {demo_set.env_id} "
                         f"({demo_set.path}); drop --env-id or pass demonstrations of {cfg.env_id}")
    if cfg.objective != "none" and cfg.saliency.source == "oracle":
        oracle_for(cfg, demo_set)  # raises: task without default actors, unknown actor names
    if cfg.objective != "none" and cfg.saliency.source == "heatmaps":
        saliency_source(cfg, demo_set)  # raises on missing keys / shape or frame mismatch
    return demo_set


def default_run_dir(cfg: PretrainConfig, env_id: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"pretrain__{env_id}__{cfg.method}__{cfg.objective}__s{cfg.seed}__{stamp}"


@dataclasses.dataclass
class Pretraining:
    """What one pretraining run is built from (set_up): the steps of the loop read it."""

    cfg: PretrainConfig
    demo_set: DemoSet
    device: str
    run_dir: Path
    horizon: int
    """Evaluation episodes' length (gaze_rl.imitation.bc.eval_horizon)."""
    model: Any
    extractor: Any
    objective: AttentionObjective
    metric_mode: str
    """What pictures and attention-on-target show: the policy's own attention (its map if it has
    one), the same for every objective, so that runs compare."""
    architecture: dict[str, Any]
    data: DemoTensors
    oracle: OracleSaliency | None
    """Target masks of the task's actors, for attention-on-target; None without them."""


@dataclasses.dataclass
class StepLosses:
    """One gradient step: its losses and the batch it saw."""

    bc: torch.Tensor
    mse: torch.Tensor
    objective: torch.Tensor
    idx: torch.Tensor
    observations: dict[str, torch.Tensor]


@dataclasses.dataclass
class RunningLosses:
    """Sums of the step losses since the last log line."""

    bc: float = 0.0
    mse: float = 0.0
    objective: float = 0.0
    n: int = 0

    def add(self, losses: StepLosses) -> None:
        self.bc += float(losses.bc.detach())
        self.mse += float(losses.mse.detach())
        self.objective += float(losses.objective.detach())
        self.n += 1


@dataclasses.dataclass
class Outcome:
    """What the loop leaves: one eval.csv row per evaluation, the last evaluation, its start time."""

    eval_rows: list[dict[str, Any]]
    last_eval: dict[str, Any]
    start: float
    """time.perf_counter() when the loop started."""


def pretrain(cfg: PretrainConfig) -> Path:
    """Runs one pretraining run; returns its directory."""
    run = set_up(cfg, load_checked_demos(cfg))
    outcome = fit(run)
    write_results(run, outcome)
    print_next_steps(run)
    return run.run_dir


def set_up(cfg: PretrainConfig, demo_set: DemoSet) -> Pretraining:
    """Device and torch threads, the run directory (with its config.json), the policy gaze-rl train
    builds, the attention objective and the demonstrations as training tensors."""
    device = resolve_device(cfg.device)
    use_torch_threads(cfg.torch_threads)
    train_cfg = internal_train_config(cfg, demo_set)
    horizon = eval_horizon(cfg, demo_set)
    run_dir = prepare_run_dir(cfg.run_dir or default_run_dir(cfg, demo_set.env_id), cfg.overwrite)
    model = build_policy_model(train_cfg, demo_set, device)
    extractor = policy_extractor(model)
    objective = AttentionObjective(cfg.objective, extractor, cfg.weight, cfg.attention, cfg.beta)
    metric_mode = resolve_metric_mode(extractor, "auto")
    architecture = train_architecture(train_cfg)
    write_run_config(cfg, train_cfg, demo_set, objective, architecture, horizon, run_dir)
    data, oracle = training_data(cfg, demo_set, model, extractor, device)
    return Pretraining(cfg, demo_set, device, run_dir, horizon, model, extractor, objective, metric_mode, architecture,
                       data, oracle)


def write_run_config(cfg: PretrainConfig, train_cfg: TrainConfig, demo_set: DemoSet, objective: AttentionObjective,
                     architecture: dict[str, Any], horizon: int, run_dir: Path) -> None:
    """The run's config.json: the pretrain config, the train config and env spec that `gaze-rl eval`
    rebuilds the policy and its env from, the objective, the demonstrations and the machine."""
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


def training_data(cfg: PretrainConfig, demo_set: DemoSet, model: Any, extractor: Any,
                  device: str) -> tuple[DemoTensors, OracleSaliency | None]:
    """The demonstrations as tensors with their saliency targets, and the oracle of the task's
    actors (target masks for attention-on-target) when the task has default actors or they are given."""
    oracle = None
    if cfg.saliency.actors or demo_set.env_id in TASK_TARGETS:
        oracle = oracle_for(cfg, demo_set)
    source = saliency_source(cfg, demo_set) if cfg.objective != "none" or oracle is not None else None
    if source is None:  # plain BC on a task without target actors: targets unused
        source = ZeroSaliency()
    grid_shape = tuple(extractor.map_shape[1:])
    return demo_tensors(cfg, demo_set, grid_shape, model, source, oracle, device), oracle


def fit(run: Pretraining) -> Outcome:
    """The loop: `steps` gradient steps, logging the losses every LOG_EVERY steps, pictures every
    `image_every` and evaluating in the env every `eval_every` steps (each also at the last step)."""
    cfg = run.cfg
    logger = make_logger(run.run_dir, verbose=0)
    optimizer = torch.optim.Adam(run.model.policy.parameters(), lr=cfg.learning_rate)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    picture_idx = torch.linspace(0, len(run.data) - 1, 4).long()
    env = make_eval_env(run.demo_set, run.horizon) if cfg.eval_episodes > 0 else None
    outcome = Outcome(eval_rows=[], last_eval={}, start=time.perf_counter())
    bar = tqdm(total=cfg.steps, desc=f"pretrain {run.demo_set.env_id} {cfg.objective}", disable=not cfg.progress_bar,
               dynamic_ncols=True)
    running = RunningLosses()
    try:
        for step in range(1, cfg.steps + 1):
            losses = gradient_step(run, optimizer, generator)
            running.add(losses)
            if step % LOG_EVERY == 0 or step == cfg.steps:
                log_losses(run, logger, running, losses, step, outcome.start)
                bar.set_postfix(bc=f"{running.bc / running.n:.4f}", obj=f"{running.objective / running.n:.4f}")
                running = RunningLosses()
            if cfg.image_every and (step % cfg.image_every == 0 or step == cfg.steps):
                log_pictures(run, logger, picture_idx)
            if env is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                outcome.last_eval = evaluate(run, env)
                outcome.eval_rows.append(eval_row(step, outcome.last_eval, losses, outcome.start))
                log_evaluation(logger, step, outcome.last_eval)
            if step % LOG_EVERY == 0 or step == cfg.steps:
                logger.dump(step)
            bar.update(1)
    finally:
        bar.close()
        if env is not None:
            env.close()
    return outcome


def gradient_step(run: Pretraining, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> StepLosses:
    """One Adam step on a random batch of demonstration pairs: the BC loss plus the objective's
    weight times the attention objective (0 with objective none)."""
    model, objective = run.model, run.objective
    model.policy.set_training_mode(True)
    idx = torch.randint(len(run.data), (run.cfg.batch_size,), generator=generator).to(run.device)
    observations = run.data.observations(idx)
    loss_bc, mse = bc_loss(model, observations, run.data.actions[idx], run.cfg.bc_loss)
    if objective.name != "none":
        pre = preprocess_obs(observations, model.policy.observation_space, normalize_images=True)
        attention = objective.attention(pre)
        target = run.data.grid[idx] if objective.target == "grid" else run.data.saliency[idx]
        loss_obj = objective.loss(attention, target)
    else:
        loss_obj = loss_bc.new_zeros(())
    loss = loss_bc + objective.weight * loss_obj
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepLosses(loss_bc, mse, loss_obj, idx, observations)


def log_losses(run: Pretraining, logger: Logger, running: RunningLosses, last: StepLosses, step: int,
               start: float) -> None:
    """Records the mean losses since the last log line, the policy's attention on the last batch
    (attention-on-target against its coverage; the gaze's sigma and centre) and the speed."""
    n = running.n
    logger.record("losses/bc", running.bc / n)
    logger.record("losses/bc_action_mse", running.mse / n)
    logger.record(f"losses/{run.objective.name if run.objective.name != 'none' else 'objective'}", running.objective / n)
    with torch.no_grad():
        pre = preprocess_obs(last.observations, run.model.policy.observation_space, normalize_images=True)
        attention = policy_attention(run.extractor, pre, run.metric_mode, run.cfg.beta)
        if run.data.coverage is not None:
            logger.record("attention/on_target_train",
                          float(np.mean(attention_on_target(attention.grid, run.data.coverage[last.idx]))))
        if attention.params is not None:
            logger.record("attention/sigma_mean", float(attention.params.sigma.mean()))
            logger.record("attention/mu_abs_mean", float(attention.params.mu.abs().mean()))
    logger.record("charts/steps_per_s", step / (time.perf_counter() - start))


def log_pictures(run: Pretraining, logger: Logger, picture_idx: torch.Tensor) -> None:
    """Records the saliency | attention pictures of a fixed set of demonstration frames."""
    with torch.no_grad():
        pics = run.data.observations(picture_idx.to(run.device))
        pre = preprocess_obs(pics, run.model.policy.observation_space, normalize_images=True)
        shown = policy_attention(run.extractor, pre, run.metric_mode, run.cfg.beta)
    rows = [picture_row(pics["rgb"][j], run.data.saliency[picture_idx[j]].cpu().numpy(), shown, j)
            for j in range(len(picture_idx))]
    logger.record("attention/saliency_vs_attention", Image(np.concatenate(rows, axis=0), "HWC"),
                  exclude=("stdout", "log", "json", "csv"))


def evaluate(run: Pretraining, env: VecEnv) -> dict[str, Any]:
    """Runs the held-out episodes of the deterministic policy (with attention-on-target when the
    task has target actors)."""
    oracle = run.oracle
    meter = AttentionOnTargetMeter(run.model, oracle.targets, run.metric_mode, run.cfg.beta) if oracle is not None else None
    return evaluate_in_env(run.model, env, run.cfg.eval_episodes, run.cfg.eval_seed, meter)


def eval_row(step: int, result: dict[str, Any], losses: StepLosses, start: float) -> dict[str, Any]:
    """eval.csv's row of an evaluation: its numbers, the losses of the step before it, the time since `start`."""
    return {"step": step, **{k: result.get(k, float("nan")) for k in EVAL_COLUMNS[1:8]},
            "bc_loss": float(losses.bc.detach()), "objective_loss": float(losses.objective.detach()),
            "wall_time": round(time.perf_counter() - start, 1)}


def log_evaluation(logger: Logger, step: int, result: dict[str, Any]) -> None:
    """An evaluation's numbers to TensorBoard (eval/) and as a line."""
    for key in ("success_once", "success_at_end", "return_mean", "length_mean", "attention_on_target",
                "attention_on_target_lift"):
        if key in result:
            logger.record(f"eval/{key}", result[key])
    tqdm.write(f"step {step}: success_once {result['success_once']:.2f} success_at_end "
               f"{result['success_at_end']:.2f} return {result['return_mean']:.2f}"
               + (f" attention-on-target {result['attention_on_target']:.3f} (chance "
                  f"{result['attention_on_target_chance']:.3f})" if "attention_on_target" in result
                  else ""))


def write_results(run: Pretraining, outcome: Outcome) -> None:
    """checkpoints/final.pt (weights, for --init-from) and final.zip (SB3 model), eval.csv and summary.json."""
    checkpoints = run.run_dir / "checkpoints"
    save_pretrained(run.model.policy, run.architecture, checkpoints / "final.pt")
    run.model.save(checkpoints / "final.zip")
    with (run.run_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        writer.writeheader()
        writer.writerows(outcome.eval_rows)
    cfg, demo_set = run.cfg, run.demo_set
    write_json(run.run_dir / "summary.json", {
        "env_id": demo_set.env_id, "objective": run.objective.name, "weight": run.objective.weight, "method": cfg.method,
        "seed": cfg.seed, "demos": len(demo_set), "steps": cfg.steps, "eval_horizon": run.horizon,
        "final_eval": outcome.last_eval, "seconds": round(time.perf_counter() - outcome.start, 1),
    })


def print_next_steps(run: Pretraining) -> None:
    """Where the run's files are, and the commands that fine-tune and evaluate its policy."""
    run_dir, demo_set, cfg = run.run_dir, run.demo_set, run.cfg
    checkpoints = run_dir / "checkpoints"
    print(f"\nRun directory: {run_dir}\n"
          f"  pretrained policy: {checkpoints / 'final.pt'}\n"
          f"  fine-tune:         gaze-rl train --init-from {checkpoints / 'final.pt'} --env-id {demo_set.env_id} "
          f"--algo {cfg.algo} --method {cfg.method} --image-size {demo_set.image_size} "
          f"--control-mode {demo_set.control_mode}\n"
          f"  evaluations:       {run_dir / 'eval.csv'}\n"
          f"  TensorBoard:       tensorboard --logdir {run_dir / 'tb'}\n"
          f"  evaluate:          gaze-rl eval --checkpoint {checkpoints / 'final.zip'} --attention-on-target")
