"""`gaze-rl eval`: run a trained checkpoint for N episodes; success rates, returns, a video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecTransposeImage

from gaze_rl.checkpoints import load_model
from gaze_rl.config import EvalConfig
from gaze_rl.envs.factory import EnvSpec, make_vec_env
from gaze_rl.runlog import write_json
from gaze_rl.train import ALGO_CLASSES, resolve_device
from gaze_rl.visualize import attention_of, overlays


def load_run_config(checkpoint: Path) -> dict[str, Any]:
    """The config.json of the run a checkpoint belongs to (<run>/checkpoints/<name>.zip)."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; pass a .zip from <run>/checkpoints/")
    config_path = checkpoint.resolve().parent.parent / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no config.json next to the checkpoint's run directory ({config_path}); gaze-rl eval needs "
            "a checkpoint inside a run directory written by gaze-rl train"
        )
    return json.loads(config_path.read_text())


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Runs the episodes, prints and saves the summary; returns it."""
    if cfg.episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {cfg.episodes})")
    run = load_run_config(cfg.checkpoint)
    # One in-process env, run to the time limit so success_at_end means what ManiSkill means.
    spec = EnvSpec(**{**run["env"], "num_envs": 1, "ignore_terminations": True})
    if cfg.variant is not None:
        spec.variant = cfg.variant
    out_dir = cfg.out_dir or cfg.checkpoint.resolve().parent.parent / "eval"
    stem = f"{cfg.checkpoint.stem}__seed{cfg.seed}" + (f"__{spec.variant}" if spec.variant != "none" else "")
    result_path, video_path = out_dir / f"{stem}.json", out_dir / f"{stem}.mp4"
    for path in (result_path, video_path if cfg.video else None):
        if path is not None and path.exists() and not cfg.overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or another --seed or --out-dir")
    algo_class = ALGO_CLASSES[run["train"]["algo"]]
    model = load_model(algo_class, cfg.checkpoint, device=resolve_device(cfg.device))
    # Channel-first images, as the policy saw them in training (SB3 transposes there too).
    meter = None
    if cfg.attention_on_target:  # the same env, rendering segmentation on the side
        from gaze_rl.segmentation.on_target import segmented_eval_env

        env, meter = segmented_eval_env(model, spec, cfg.target_actors, seed=cfg.seed)
    else:
        env = VecTransposeImage(make_vec_env(spec, seed=cfg.seed))
    episodes: list[dict[str, Any]] = []
    frames: list[np.ndarray] = []
    try:
        obs = env.reset()
        while len(episodes) < cfg.episodes:
            if cfg.video:
                frames.extend(overlays(obs, attention_of(model, obs), limit=1))
            if meter is not None:
                meter.observe(obs, env.get_attr("frame"))
            action, _ = model.predict(obs, deterministic=cfg.deterministic)
            obs, _, dones, infos = env.step(action)
            if dones[0]:
                info = infos[0]
                episodes.append({"return": float(info["episode"]["r"]), "length": int(info["episode"]["l"]),
                                 "success_once": bool(info["success_once"]),
                                 "success_at_end": bool(info["success_at_end"])})
    finally:
        env.close()
    summary = {
        "checkpoint": str(cfg.checkpoint), "env_id": spec.env_id, "variant": spec.variant, "episodes": cfg.episodes, "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        "success_once": float(np.mean([e["success_once"] for e in episodes])),
        "success_at_end": float(np.mean([e["success_at_end"] for e in episodes])),
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "return_std": float(np.std([e["return"] for e in episodes])),
        "per_episode": episodes,
        **(meter.summary() if meter is not None else {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result_path, summary)
    if cfg.video:
        import imageio.v2 as imageio

        imageio.mimwrite(video_path, frames, fps=20, macro_block_size=1)
        summary["video"] = str(video_path)
    print(f"{spec.env_id} ({spec.variant}): success_once {summary['success_once']:.2f}  success_at_end "
          f"{summary['success_at_end']:.2f}  return {summary['return_mean']:.2f} +- {summary['return_std']:.2f} "
          f"over {cfg.episodes} episodes"
          + (f"  attention-on-target {summary['attention_on_target']:.3f} (uniform {summary['attention_on_target_chance']:.3f})"
             if meter is not None else "")
          + f"\nsaved {result_path}" + (f"\nvideo {video_path}" if cfg.video else ""))
    return summary
