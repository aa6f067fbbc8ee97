"""`gaze-rl demos`: demonstrations planned by ManiSkill3's motion planners, or converted from a
ManiSkill trajectory file, re-rendered in the RL env (the pipeline: gaze_rl.imitation.demos)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gaze_rl.configuration.commands import DemosConfig
from gaze_rl.envs.factory import check_env_id
from gaze_rl.errors import ConfigError
from gaze_rl.imitation.demos import (
    FORMAT,
    convert_trajectories,
    motion_planning_solutions,
    plan_and_replay,
    read_maniskill_trajectories,
    write_demos,
)


def validate_demos_config(cfg: DemosConfig) -> None:
    """What DemosConfig's own checks cannot see (the task registry, the file), before any env starts."""
    if cfg.from_h5 is None:
        assert cfg.env_id is not None  # DemosConfig: --env-id or --from-h5
        check_env_id(cfg.env_id)
        solutions = motion_planning_solutions()
        if cfg.env_id not in solutions:
            raise ConfigError(
                f"ManiSkill3 has no motion-planning solution for {cfg.env_id}; tasks with one: "
                f"{', '.join(sorted(solutions))}. For other tasks convert your own trajectories with --from-h5"
            )
    else:
        read_maniskill_trajectories(cfg.from_h5)  # raises on missing files / keys


def default_out(cfg: DemosConfig) -> Path:
    name = cfg.env_id or Path(str(cfg.from_h5)).stem
    return Path("demos") / f"{name}__{cfg.image_size}px__{cfg.control_mode}"


def generate(cfg: DemosConfig) -> Path:
    """`gaze-rl demos`: generates or converts demonstrations; returns the output directory."""
    validate_demos_config(cfg)
    out = Path(cfg.out) if cfg.out is not None else default_out(cfg)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise FileExistsError(f"{out} already exists and is not empty; pick another --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if cfg.from_h5 is None:
        demo_set, stats = plan_and_replay(cfg, out)
        source = "motionplanning"
    else:
        demo_set, stats = convert_trajectories(cfg, Path(cfg.from_h5))
        source = str(cfg.from_h5)
    write_demos(demo_set, out / "demos.h5")
    meta = {
        "format": FORMAT, "env_id": demo_set.env_id, "control_mode": demo_set.control_mode,
        "image_size": demo_set.image_size, "include_state": demo_set.include_state, "cameras": demo_set.cameras,
        "source": source, "written": stats.written, "requested": stats.requested,
        "failed_plans": stats.failed_plans, "failed_replays": stats.failed_replays, "seeds": stats.seeds,
        "lengths": stats.lengths, "seconds": round(time.perf_counter() - start, 1),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "command": " ".join(sys.argv),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{demo_set.env_id}: wrote {stats.written} demonstrations ({stats.failed_plans} failed plans, "
          f"{stats.failed_replays} failed replays dropped; lengths {min(stats.lengths)}-{max(stats.lengths)} "
          f"steps, control mode {demo_set.control_mode}) to {out / 'demos.h5'} in {meta['seconds']} s")
    return out
