"""`gaze-rl analyze`: the layer-wise grounding analysis of a checkpoint (gaze_rl.analysis) on
the observations of a few episodes of its deterministic policy; a JSON and a PNG."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaze_rl.analysis import default_label, layer_analysis, obs_rows, plot
from gaze_rl.build import ALGO_CLASSES, load_run_config, resolve_device
from gaze_rl.configuration.commands import AnalyzeConfig
from gaze_rl.envs.spec import EnvSpec
from gaze_rl.errors import ConfigError
from gaze_rl.runs.checkpoints import load_model
from gaze_rl.runs.episodes import run_episodes
from gaze_rl.runs.runlog import write_json
from gaze_rl.segmentation.on_target import policy_extractor, segmented_eval_env


def analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    """Runs `gaze-rl analyze`: episodes, per-layer analysis, JSON and PNG."""
    compare = []
    for path in cfg.compare:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--compare {path} does not exist; pass JSONs written by gaze-rl analyze")
        compare.append(json.loads(Path(path).read_text()))
    run = load_run_config(cfg.checkpoint)
    spec = EnvSpec(**{**run["env"], "num_envs": 1, "ignore_terminations": True})
    out_dir = cfg.out_dir or cfg.checkpoint.resolve().parent.parent / "analysis"
    stem = f"{cfg.checkpoint.stem}__seed{cfg.seed}"
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    for path in (json_path, png_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass another --seed or --out-dir")
    model = load_model(ALGO_CLASSES[run["train"]["algo"]], cfg.checkpoint, device=resolve_device(cfg.device))
    extractor = policy_extractor(model)
    if not hasattr(extractor, "backbone"):
        raise ConfigError(f"gaze-rl analyze needs gaze_rl's GazeExtractor (got {type(extractor).__name__})")
    env, meter = segmented_eval_env(model, spec, cfg.target_actors, seed=cfg.seed)
    frames: list[dict[str, np.ndarray]] = []
    masks: list[np.ndarray] = []

    def observe(obs: Any, step: int) -> None:
        if step % cfg.every == 0:
            frame = env.get_attr("frame")[0]
            masks.append(meter.targets.frame_mask(frame))
            meter.observe(obs, [frame])
            frames.append({k: v.copy() for k, v in obs.items()})

    try:
        episodes = [{key: record[key] for key in ("return", "success_once", "success_at_end")}
                    for record in run_episodes(model, env, cfg.episodes, observe=observe)]
    finally:
        env.close()
    stacked = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    obs_tensor, _ = model.policy.obs_to_tensor(stacked)
    model.policy.set_training_mode(False)
    act = lambda o: model.policy._predict(o, deterministic=True)  # noqa: E731  (the mean action, unclipped)
    layers = layer_analysis(extractor.backbone, act, obs_tensor, np.stack(masks), cfg.cover_threshold,
                            cfg.control_draws, seed=cfg.seed)
    with torch.no_grad():  # the scale the sensitivities compare to
        norms = [act(obs_rows(obs_tensor, i, i + 256)).flatten(1).norm(dim=1) for i in range(0, len(masks), 256)]
    action_norm = float(torch.cat(norms).mean())
    pruned = run["train"].get("prune_top_k") is not None
    attention = meter.summary()
    result = {
        "checkpoint": str(cfg.checkpoint), "label": cfg.label or default_label(run["train"]),
        "env_id": spec.env_id, "algo": run["train"]["algo"], "method": run["train"]["method"],
        "image_size": spec.image_size, "prune_top_k": run["train"].get("prune_top_k"),
        "prune_source": extractor.prune_source if pruned else None, "multi_level": bool(run["train"].get("multi_level")),
        "train_steps": run["train"]["total_timesteps"], "seed": cfg.seed, "episodes": cfg.episodes,
        "every": cfg.every, "cover_threshold": cfg.cover_threshold, "control_draws": cfg.control_draws,
        "success_once": float(np.mean([e["success_once"] for e in episodes])),
        "success_at_end": float(np.mean([e["success_at_end"] for e in episodes])),
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "policy_attention_on_target": attention.get("attention_on_target"),
        "policy_attention_lift": attention.get("attention_on_target_lift"),
        "policy_attention_mode": attention.get("attention_mode"),
        "image_head_params": sum(p.numel() for p in extractor.image_fc.parameters()),
        "policy_params": sum(p.numel() for p in model.policy.parameters()),
        "action_norm_mean": action_norm,
        "layers": [asdict(layer) for layer in layers],
        "per_episode": episodes,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(json_path, result)
    plot([result, *compare], png_path)
    print(f"{spec.env_id} {result['label']}: {len(masks)} frames of {cfg.episodes} episodes, success_once "
          f"{result['success_once']:.2f}, return {result['return_mean']:.2f}, mean |action| {action_norm:.3f}")
    for layer in layers:
        print(f"  {layer.name:<22} attention-on-target {layer.attention_on_target:.3f} (lift {layer.lift:.2f})  "
              f"sensitivity target {layer.sensitivity_target:.4f} vs random {layer.sensitivity_control:.4f}")
    print(f"saved {json_path}\nplot  {png_path}")
    return result
