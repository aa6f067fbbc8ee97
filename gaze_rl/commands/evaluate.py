"""`gaze-rl eval`: run a trained checkpoint for N episodes; success rates, returns, a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecTransposeImage

from gaze_rl.build import ALGO_CLASSES, load_run_config, resolve_device, use_torch_threads
from gaze_rl.configuration.commands import EvalConfig
from gaze_rl.envs.factory import make_vec_env
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.errors import ConfigError
from gaze_rl.runs.checkpoints import load_model
from gaze_rl.runs.episodes import episode_stats, run_episodes
from gaze_rl.runs.runlog import write_json
from gaze_rl.runs.visualize import attention_of, overlays


def result_stem(checkpoint: Path, seed: int, variant: str) -> str:
    """File name (without suffix) of an evaluation's json and mp4: one per checkpoint, seed and variant
    (`EnvSpec.variant_label()`: distract with its strength)."""
    return f"{checkpoint.stem}__seed{seed}" + (f"__{variant}" if variant != "none" else "")


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Runs the episodes, prints and saves the summary; returns it."""
    run = load_run_config(cfg.checkpoint)
    # One in-process env, run to the time limit so success_at_end means what ManiSkill means.
    spec = EnvSpec(**{**run["env"], "num_envs": 1, "ignore_terminations": True})
    if cfg.variant is not None:
        spec.variant = cfg.variant
    if cfg.distract_strength is not None:
        if spec.variant != "distract":
            raise ConfigError(f"--distract-strength is the strength of variant distract; the run was trained on "
                              f"{spec.variant!r}: add --variant distract")
        spec.distract_strength = cfg.distract_strength
    out_dir = cfg.out_dir or cfg.checkpoint.resolve().parent.parent / "eval"
    stem = result_stem(cfg.checkpoint, cfg.seed, spec.variant_label())
    result_path, video_path = out_dir / f"{stem}.json", out_dir / f"{stem}.mp4"
    for path in (result_path, video_path if cfg.video else None):
        if path is not None and path.exists() and not cfg.overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or another --seed or --out-dir")
    use_torch_threads(cfg.torch_threads)
    algo_class = ALGO_CLASSES[run["train"]["algo"]]
    model = load_model(algo_class, cfg.checkpoint, device=resolve_device(cfg.device))
    # Channel-first images, as the policy saw them in training (SB3 transposes there too).
    meter = None
    if cfg.attention_on_target:  # the same env, rendering segmentation on the side
        from gaze_rl.segmentation.on_target import segmented_eval_env

        env, meter = segmented_eval_env(model, spec, cfg.target_actors, seed=cfg.seed)
    else:
        env = VecTransposeImage(make_vec_env(spec, seed=cfg.seed))
    frames: list[np.ndarray] = []

    def observe(obs: Any, _step: int) -> None:
        if cfg.video:
            frames.extend(overlays(obs, attention_of(model, obs), limit=1))
        if meter is not None:
            meter.observe(obs, env.get_attr("frame"))

    try:
        episodes = run_episodes(model, env, cfg.episodes, deterministic=cfg.deterministic, observe=observe)
    finally:
        env.close()
    stats = episode_stats(episodes)
    summary = {
        "checkpoint": str(cfg.checkpoint), "env_id": spec.env_id, "variant": spec.variant,
        **({"distract_strength": spec.distract_strength} if spec.variant == "distract" else {}),
        "episodes": cfg.episodes, "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        **{key: stats[key] for key in ("success_once", "success_at_end", "return_mean", "return_std")},
        "per_episode": episodes,
        **(meter.summary() if meter is not None else {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result_path, summary)
    if cfg.video:
        import imageio.v2 as imageio

        imageio.mimwrite(video_path, frames, fps=20, macro_block_size=1)
        summary["video"] = str(video_path)
    print(f"{spec.env_id} ({spec.variant_label()}): success_once {summary['success_once']:.2f}  success_at_end "
          f"{summary['success_at_end']:.2f}  return {summary['return_mean']:.2f} +- {summary['return_std']:.2f} "
          f"over {cfg.episodes} episodes"
          + (f"  attention-on-target {summary['attention_on_target']:.3f} (uniform {summary['attention_on_target_chance']:.3f})"
             if meter is not None else "")
          + f"\nsaved {result_path}" + (f"\nvideo {video_path}" if cfg.video else ""))
    return summary
