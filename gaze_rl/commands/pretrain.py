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
from stable_baselines3.common.logger import Image
from stable_baselines3.common.preprocessing import preprocess_obs
from tqdm.auto import tqdm

from gaze_rl.build import machine_info, resolve_device, train_architecture, use_torch_threads
from gaze_rl.config import PretrainConfig
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.envs.task_objects import TASK_TARGETS
from gaze_rl.errors import ConfigError
from gaze_rl.imitation.bc import (
    EVAL_COLUMNS,
    LOG_EVERY,
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
from gaze_rl.runlog import make_logger, prepare_run_dir, write_json
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


def pretrain(cfg: PretrainConfig) -> Path:
    """Runs one pretraining run; returns its directory."""
    demo_set = load_checked_demos(cfg)
    device = resolve_device(cfg.device)
    use_torch_threads(cfg.torch_threads)
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
        source = ZeroSaliency()
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
            if step % LOG_EVERY == 0 or step == cfg.steps:
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
                rows = [picture_row(pics["rgb"][j], data.saliency[picture_idx[j]].cpu().numpy(), shown, j)
                        for j in range(len(picture_idx))]
                logger.record("attention/saliency_vs_attention", Image(np.concatenate(rows, axis=0), "HWC"),
                              exclude=("stdout", "log", "json", "csv"))
            if env is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                meter = AttentionOnTargetMeter(model, oracle.targets, metric_mode, cfg.beta) if oracle is not None else None
                last_eval = evaluate_in_env(model, env, cfg.eval_episodes, cfg.eval_seed, meter)
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
            if step % LOG_EVERY == 0 or step == cfg.steps:
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
