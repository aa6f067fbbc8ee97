"""Train on the normal task, evaluate on a visual variant: every finished run of a bench grid is
evaluated with `gaze-rl eval` on the task as trained and on the variant (same held-out episode
seeds, the policy's sampled actions as in training, attention-on-target measured), and the drop
is summarised per method.

    python results/grid/eval_variant.py BENCH_DIR OUT_DIR [--variant clutter] [--episodes 20]

Resumable: an evaluation whose json exists in OUT_DIR is not re-run. Writes OUT_DIR/summary.md
(per method: success on each, the drop with a 95% bootstrap interval over seeds, attention-on-target
on each) and OUT_DIR/evals.csv (one row per run and variant).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
from pathlib import Path

import numpy as np

from gaze_rl.bench_runs import cli_command
from gaze_rl.commands.evaluate import result_stem
from gaze_rl.curves import bootstrap_ci
from gaze_rl.methods import BENCH_ARMS


def run_name_parts(name: str) -> tuple[str, str, str, int]:
    """'PushCube-v1__ppo__gaze+shift__s2' -> ('PushCube-v1', 'ppo', 'gaze+shift', 2)."""
    env_id, algo, method, seed = name.split("__")
    return env_id, algo, method, int(seed.removeprefix("s"))


def evaluate(checkpoint: Path, out_dir: Path, variant: str, episodes: int, seed: int) -> dict:
    """One `gaze-rl eval` (in its own process: a fresh ManiSkill env each time), or its saved result.

    Actions are sampled, as in the training curves: on this CPU protocol PPO's mean action succeeds
    far less often than its samples (baseline+shift seed 0: 0 of 30 episodes, against ~20% in training).
    """
    result = out_dir / f"{result_stem(checkpoint, seed, variant)}.json"
    if not result.exists():
        subprocess.run(cli_command(["eval", "--checkpoint", str(checkpoint), "--episodes", str(episodes), "--seed", str(seed),
                                    "--variant", variant, "--no-deterministic", "--attention-on-target",
                                    "--out-dir", str(out_dir)]), check=True)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", default="clutter", choices=["clutter", "lighting"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10_000, help="first evaluation episode's seed (held out from training)")
    args = parser.parse_args()

    rows = []
    for run in sorted((args.bench_dir / "runs").iterdir()):
        checkpoint = run / "checkpoints" / "final.zip"
        if not checkpoint.exists():
            continue  # unfinished run
        env_id, algo, method, seed = run_name_parts(run.name)
        for variant in ("none", args.variant):
            result = evaluate(checkpoint, args.out_dir / run.name, variant, args.episodes, args.seed)
            rows.append({"env_id": env_id, "algo": algo, "method": method, "seed": seed, "variant": variant,
                         "success_once": result["success_once"], "success_at_end": result["success_at_end"],
                         "return_mean": result["return_mean"], "attention_on_target": result["attention_on_target"],
                         "attention_on_target_chance": result["attention_on_target_chance"]})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(args.out_dir / "evals.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = [f"# Trained on the normal task, evaluated on `{args.variant}`",
             "",
             f"{args.episodes} episodes per run and variant (seeds {args.seed}..., sampled actions, final checkpoint); "
             "mean over training seeds, 95% bootstrap interval over seeds in brackets. "
             "success = success_once; attention = the policy's attention-on-target (chance in brackets).",
             "",
             f"| task | method | seeds | success, normal | success, {args.variant} | drop | attention, normal "
             f"| attention, {args.variant} |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    arms = sorted({(row["env_id"], row["method"]) for row in rows}, key=lambda arm: (arm[0], BENCH_ARMS.index(arm[1])))
    for env_id, method in arms:
        def values(variant: str, key: str, env_id: str = env_id, method: str = method) -> np.ndarray:
            picked = [row for row in rows if (row["env_id"], row["method"], row["variant"]) == (env_id, method, variant)]
            return np.array([row[key] for row in sorted(picked, key=lambda row: row["seed"])], dtype=float)
        normal, varied = values("none", "success_once"), values(args.variant, "success_once")
        drop = normal - varied
        low, high = bootstrap_ci([list(drop)], lambda d: float(d.mean()))
        chance = values(args.variant, "attention_on_target_chance").mean()
        lines.append(f"| {env_id} | {method} | {len(normal)} | {normal.mean():.2f} | {varied.mean():.2f} | "
                     f"{drop.mean():+.2f} [{low:+.2f}, {high:+.2f}] | {values('none', 'attention_on_target').mean():.3f} "
                     f"({values('none', 'attention_on_target_chance').mean():.3f}) | "
                     f"{values(args.variant, 'attention_on_target').mean():.3f} ({chance:.3f}) |")
    (args.out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
