"""One episode loop for every command that runs a policy in an env: eval, analyze, pretrain's evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Called with each observation before the policy acts on it, and its step index over all episodes.
Observer = Callable[[Any, int], None]


def run_episodes(model: Any, env: Any, episodes: int, *, deterministic: bool = True, first_seed: int | None = None,
                 observe: Observer | None = None) -> list[dict[str, Any]]:
    """Runs `episodes` episodes of the policy in a one-env VecEnv; one record per episode: return,
    length, success_once, success_at_end (and its seed with `first_seed`).

    `first_seed`: episode i starts from reset(seed=first_seed + i); None: one reset, then the
    env's own auto-resets continue the seed stream it was built with.
    """
    records: list[dict[str, Any]] = []
    obs, step = None, 0
    while len(records) < episodes:
        if obs is None:
            if first_seed is not None:
                env.seed(first_seed + len(records))
            obs = env.reset()
        if observe is not None:
            observe(obs, step)
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, _, dones, infos = env.step(action)
        step += 1
        if dones[0]:
            info = infos[0]
            record = {"return": float(info["episode"]["r"]), "length": int(info["episode"]["l"]),
                      "success_once": bool(info["success_once"]), "success_at_end": bool(info["success_at_end"])}
            if first_seed is not None:
                record = {"seed": first_seed + len(records), **record}
                obs = None  # the next episode starts from its own seed
            records.append(record)
    return records


def episode_stats(records: list[dict[str, Any]]) -> dict[str, float]:
    """Success rates and return / length statistics of run_episodes' records."""
    def column(key: str) -> np.ndarray:
        return np.array([r[key] for r in records], dtype=float)

    return {"success_once": float(column("success_once").mean()),
            "success_at_end": float(column("success_at_end").mean()),
            "return_mean": float(column("return").mean()), "return_std": float(column("return").std()),
            "length_mean": float(column("length").mean())}
