"""`gaze-rl train`: build the env, the agent and the run directory from a TrainConfig; learn."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from gaze_rl.build import (
    ALGO_CLASSES,
    algo_kwargs_for,
    build_model,
    check_buildable,
    env_spec_for,
    machine_info,
    resolve_device,
    train_config_from_dict,
    use_torch_threads,
)
from gaze_rl.configuration.commands import TrainConfig
from gaze_rl.configuration.presets import load_preset
from gaze_rl.envs.factory import make_vec_env
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.envs.task_objects import TASK_TARGETS
from gaze_rl.errors import ConfigError, TrainingInterrupted
from gaze_rl.runs.checkpoints import AtomicCheckpoint, latest_checkpoint, load_model, load_state, restore_rng_state
from gaze_rl.runs.runlog import (
    AttentionOnTargetProbe,
    CurveLogger,
    GazeImageLogger,
    NonFiniteGuard,
    ProgressReport,
    make_logger,
    plot_curve,
    prepare_run_dir,
    truncate_after_step,
    truncate_curve,
    write_json,
)
from gaze_rl.segmentation.on_target import collect_probe_set, has_gaze_params, policy_extractor

DEFAULT_TOTAL_TIMESTEPS = 5_000


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id}__{cfg.algo}__{cfg.method}__s{cfg.seed}__{stamp}"


def train(cfg: TrainConfig) -> Path:
    """Runs one training run (or resumes one, with `cfg.resume`) and returns its directory."""
    if cfg.resume is not None:
        return resume(cfg.resume, cfg.total_timesteps)
    if cfg.total_timesteps is None:
        cfg = dataclasses.replace(cfg, total_timesteps=DEFAULT_TOTAL_TIMESTEPS)
    check_buildable(cfg)
    use_torch_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg.run_dir or default_run_dir(cfg), cfg.overwrite)
    preset = load_preset(cfg.algo, cfg.env_id)
    spec = env_spec_for(cfg, preset)
    write_json(run_dir / "config.json", {
        "train": dataclasses.asdict(cfg), "env": dataclasses.asdict(spec),
        "algo_kwargs": algo_kwargs_for(cfg, preset), "policy": preset.policy,
        "command": " ".join(sys.argv), "machine": machine_info(),
    })
    try:
        env = make_vec_env(spec, seed=cfg.seed)
        try:
            model = build_model(cfg, env, preset, device)
        except BaseException:
            env.close()
            raise
    except BaseException:
        shutil.rmtree(run_dir)  # nothing was trained: leave no directory that blocks --run-dir
        raise
    return learn(cfg, run_dir, env, model, spec)


def resume(run_dir: Path, total_timesteps: int | None = None) -> Path:
    """Continues a run from its newest checkpoint: same config, step counter, optimizers and RNG
    states; the curve keeps only the episodes the checkpoint had seen. Envs restart from a
    reset (seeded by the checkpoint's step), so the episodes in flight at the kill are dropped.
    `total_timesteps` extends the run (a finished one too) to that many steps."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; --resume takes a run directory written by gaze-rl train")
    saved = json.loads(config_path.read_text())
    cfg = train_config_from_dict(saved["train"])
    use_torch_threads(cfg.torch_threads)
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"no checkpoint with a state file in {run_dir / 'checkpoints'} to resume from; "
                                "runs save one every --checkpoint-every steps and at their end")
    model_path, state_path = found
    state = load_state(state_path)
    if total_timesteps is not None:
        if total_timesteps <= state["num_timesteps"]:
            raise ConfigError(f"--total-timesteps {total_timesteps} is not beyond the checkpoint's step "
                             f"{state['num_timesteps']}; pass a larger total to extend the run")
        cfg = dataclasses.replace(cfg, total_timesteps=total_timesteps)
        saved["train"]["total_timesteps"] = total_timesteps  # a later --resume continues to it
        write_json(config_path, saved)
    elif state["num_timesteps"] >= cfg.total_timesteps:
        raise ConfigError(f"{run_dir} finished at step {state['num_timesteps']}; extend it with "
                         f"gaze-rl train --resume {run_dir} --total-timesteps N (N > {state['num_timesteps']})")
    if (run_dir / "curve.csv").exists():
        truncate_curve(run_dir / "curve.csv", state["curve_rows"])
    if (run_dir / "on_target.csv").exists():
        truncate_after_step(run_dir / "on_target.csv", state["num_timesteps"])
    spec = EnvSpec(**saved["env"])
    env = make_vec_env(spec, seed=cfg.seed + state["num_timesteps"])
    try:
        model = load_model(ALGO_CLASSES[cfg.algo], model_path, env=env, device=resolve_device(cfg.device))
    except BaseException:
        env.close()
        raise
    restore_rng_state(state)  # SB3's load re-seeds from the run's seed; continue the saved streams
    print(f"Resuming {run_dir} from step {state['num_timesteps']} ({model_path.name}) to {cfg.total_timesteps}")
    return learn(cfg, run_dir, env, model, spec)


@contextlib.contextmanager
def ctrl_c_stops_at_rollout_start(checkpoint: AtomicCheckpoint) -> Iterator[None]:
    """The first Ctrl-C asks the checkpoint callback to save at the next rollout start and end
    the run there (no half-applied update in the checkpoint); a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def on_ctrl_c(signum: int, frame: Any) -> None:
        if checkpoint.stop_requested:
            raise KeyboardInterrupt
        checkpoint.request_stop()
        print("\nCtrl-C: stopping at the next rollout start with a checkpoint "
              "(Ctrl-C again to stop at once, without one)", flush=True)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def on_target_probe(cfg: TrainConfig, spec: EnvSpec, model: BaseAlgorithm, run_dir: Path) -> AttentionOnTargetProbe | None:
    """The attention-on-target callback, or None when it is off or the task has no default targets.

    Attention-on-target keeps its probe frames (consecutive random-action frames of one seeded
    env, as in earlier versions, so runs stay comparable with committed grids). A policy with a
    Gaussian gaze also gets a tracking probe set of as many frames, each from its own episode
    (new object placements), on which the gaze's tracking of the first task object is measured."""
    if cfg.on_target_every <= 0:
        return None
    if cfg.env_id not in TASK_TARGETS:
        print(f"attention-on-target: no default target actors for {cfg.env_id}; not logged")
        return None
    # a seed of its own: the probe frames never depend on the training envs' streams
    probe = collect_probe_set(model, spec, cfg.on_target_frames, seed=10_000_000 + cfg.seed)
    tracking = None
    if has_gaze_params(policy_extractor(model)):
        tracking = collect_probe_set(model, spec, cfg.on_target_frames, seed=20_000_000 + cfg.seed,
                                     scenes=cfg.on_target_frames)
    return AttentionOnTargetProbe(probe, cfg.on_target_every, run_dir / "on_target.csv", tracking=tracking)


def learn(cfg: TrainConfig, run_dir: Path, env: VecEnv, model: BaseAlgorithm, spec: EnvSpec | None = None) -> Path:
    """Trains `model` up to cfg.total_timesteps, logging into run_dir; saves checkpoints, the
    final model, a learning-curve plot and a summary. Raises TrainingInterrupted on Ctrl-C.
    `spec` (the EnvSpec `env` was built from) enables the attention-on-target probe."""
    assert cfg.total_timesteps is not None, "train() and resume() set the budget"
    checkpoints = run_dir / "checkpoints"
    try:
        model.set_logger(make_logger(run_dir, cfg.verbose))
        curve = CurveLogger(run_dir / "curve.csv")
        checkpoint = AtomicCheckpoint(checkpoints, cfg.checkpoint_every or cfg.total_timesteps,
                                      lambda: curve.rows_written, keep=cfg.keep_checkpoints)
        progress = ProgressReport(cfg.total_timesteps, curve) if cfg.progress_bar else None
        probe = on_target_probe(cfg, spec, model, run_dir) if spec is not None else None
        callbacks = [curve, GazeImageLogger(cfg.gaze_image_every), NonFiniteGuard(), checkpoint,
                     *([progress] if progress else []), *([probe] if probe else [])]
        remaining = cfg.total_timesteps - model.num_timesteps
        started = time.perf_counter()
        try:
            with ctrl_c_stops_at_rollout_start(checkpoint):
                # log_interval=1: PPO logs every iteration, SAC every episode.
                model.learn(remaining, callback=callbacks, log_interval=1,
                            reset_num_timesteps=model.num_timesteps == 0)
        except KeyboardInterrupt:
            if progress is not None:
                progress.close()  # else tqdm complains at interpreter exit
            found = latest_checkpoint(run_dir)
            raise TrainingInterrupted(
                f"stopped at once at step {model.num_timesteps}, without a new checkpoint; "
                + (f"gaze-rl train --resume {run_dir} continues from {found[0].name}" if found
                   else "no checkpoint to resume from")) from None
        if checkpoint.stopped_at is not None:
            raise TrainingInterrupted(f"saved {checkpoint.stopped_at} (taken at a rollout start); continue with "
                                      f"gaze-rl train --resume {run_dir}")
        # The end is a rollout start too: a resumable checkpoint, final.zip its twin.
        last = checkpoint.save(model.num_timesteps)
        link_or_copy(last, checkpoints / "final.zip")
    finally:
        env.close()
    plot = plot_curve(run_dir / "curve.csv", run_dir / "curve.png")
    print(f"\nDone: {model.num_timesteps} steps in {(time.perf_counter() - started) / 60:.1f} min; "
          f"{curve.recent_summary()}\n"
          f"Run directory: {run_dir}\n"
          f"  learning curve: {run_dir / 'curve.csv'}" + (f" (plot: {plot})" if plot else "") + "\n"
          f"  checkpoint:     {checkpoints / 'final.zip'}\n"
          f"  TensorBoard:    tensorboard --logdir {run_dir / 'tb'}\n"
          f"  evaluate:       gaze-rl eval --checkpoint {checkpoints / 'final.zip'} --video\n"
          f"  train longer:   gaze-rl train --resume {run_dir} --total-timesteps {2 * model.num_timesteps}")
    return run_dir


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes the same file as `source` (a hard link: no second 12 MB), atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
