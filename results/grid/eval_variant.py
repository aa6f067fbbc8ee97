"""Train on the normal task, evaluate on a visual variant: every finished run of a bench grid is
evaluated with `gaze-rl eval` on the task as trained and on the variant (same held-out episode
seeds, the policy's sampled actions as in training, attention-on-target measured), and the drop
is summarised per method.

    python results/grid/eval_variant.py BENCH_DIR OUT_DIR [--variant clutter] [--episodes 20]
    python results/grid/eval_variant.py BENCH_DIR OUT_DIR --variant distract --strengths 0.25 0.5 1 --methods baseline

Resumable: an evaluation whose json exists in OUT_DIR is not re-run. Writes OUT_DIR/summary.md
(per method and variant: success on each, the drop and the relative drop with 95% bootstrap
intervals over seeds, attention-on-target on each) and OUT_DIR/evals.csv (one row per run and
variant). With `distract`, each of --strengths is a variant of its own ('distract-0.5'): the
calibration table of the distractor benchmark.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
from pathlib import Path

import numpy as np

from gaze_rl.bench.curves import bootstrap_ci
from gaze_rl.bench.grid import cli_command
from gaze_rl.commands.evaluate import result_stem
from gaze_rl.configuration.methods import BENCH_ARMS
from gaze_rl.envs.spec import EnvSpec


def run_name_parts(name: str) -> tuple[str, str, str, int]:
    """'PushCube-v1__ppo__gaze+shift__s2' -> ('PushCube-v1', 'ppo', 'gaze+shift', 2)."""
    env_id, algo, method, seed = name.split("__")
    return env_id, algo, method, int(seed.removeprefix("s"))


def evaluate(checkpoint: Path, out_dir: Path, variant: EnvSpec, episodes: int, seed: int) -> dict:
    """One `gaze-rl eval` (in its own process: a fresh ManiSkill env each time), or its saved result.
    `variant` holds the variant and, for distract, its strength (always passed, so the result's
    name, EnvSpec.variant_label, is known before the run).

    Actions are sampled, as in the training curves: on this CPU protocol PPO's mean action succeeds
    far less often than its samples (baseline+shift seed 0: 0 of 30 episodes, against ~20% in training).
    """
    result = out_dir / f"{result_stem(checkpoint, seed, variant.variant_label())}.json"
    if not result.exists():
        strength = ["--distract-strength", str(variant.distract_strength)] if variant.variant == "distract" else []
        subprocess.run(cli_command(["eval", "--checkpoint", str(checkpoint), "--episodes", str(episodes), "--seed", str(seed),
                                    "--variant", variant.variant, "--no-deterministic", "--attention-on-target",
                                    *strength, "--out-dir", str(out_dir)]), check=True)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", default="clutter", choices=["clutter", "lighting", "distract"])
    parser.add_argument("--strengths", type=float, nargs="+", default=None,
                        help="distract strengths to evaluate, each a variant of its own (default: the variant's default)")
    parser.add_argument("--methods", nargs="+", default=None, help="evaluate only these methods' runs (default: all)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10_000, help="first evaluation episode's seed (held out from training)")
    args = parser.parse_args()
    if args.strengths is not None and args.variant != "distract":
        parser.error("--strengths are strengths of --variant distract")
    variants = [EnvSpec()] + [EnvSpec(variant=args.variant, **({} if strength is None else {"distract_strength": strength}))
                              for strength in (args.strengths or [None])]

    rows = []
    for run in sorted((args.bench_dir / "runs").iterdir()):
        checkpoint = run / "checkpoints" / "final.zip"
        if not checkpoint.exists():
            continue  # unfinished run
        env_id, algo, method, seed = run_name_parts(run.name)
        if args.methods is not None and method not in args.methods:
            continue
        for variant in variants:
            result = evaluate(checkpoint, args.out_dir / run.name, variant, args.episodes, args.seed)
            rows.append({"env_id": env_id, "algo": algo, "method": method, "seed": seed,
                         "variant": variant.variant_label(),
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
             f"{args.episodes} episodes per run and variant (seeds {args.seed}..., the same initial states in every "
             "variant, sampled actions, final checkpoint); mean over training seeds, 95% bootstrap interval over seeds "
             "in brackets. success = success_once; drop = normal - variant, paired by seed; relative = drop / normal; "
             "attention = the policy's attention-on-target (chance in brackets).",
             "",
             "| task | method | variant | seeds | success, normal | success, variant | drop | relative drop "
             "| attention, normal | attention, variant |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    arms = sorted({(row["env_id"], row["method"]) for row in rows}, key=lambda arm: (arm[0], BENCH_ARMS.index(arm[1])))
    for (env_id, method), variant in itertools.product(arms, variants[1:]):
        label = variant.variant_label()

        def values(variant: str, key: str, env_id: str = env_id, method: str = method) -> np.ndarray:
            picked = [row for row in rows if (row["env_id"], row["method"], row["variant"]) == (env_id, method, variant)]
            return np.array([row[key] for row in sorted(picked, key=lambda row: row["seed"])], dtype=float)
        pairs = np.stack([values("none", "success_once"), values(label, "success_once")], axis=1)  # (seeds, 2)
        normal, varied = pairs.mean(axis=0)
        low, high = bootstrap_ci([list(pairs)], lambda p: float((p[:, 0] - p[:, 1]).mean()))
        rel_low, rel_high = bootstrap_ci([list(pairs)], lambda p: float((p[:, 0] - p[:, 1]).mean() / p[:, 0].mean()))
        relative = (normal - varied) / normal if normal > 0 else float("nan")
        lines.append(f"| {env_id} | {method} | {label} | {len(pairs)} | {normal:.2f} | {varied:.2f} | "
                     f"{normal - varied:+.2f} [{low:+.2f}, {high:+.2f}] | {relative:+.0%} [{rel_low:+.0%}, {rel_high:+.0%}] | "
                     f"{values('none', 'attention_on_target').mean():.3f} "
                     f"({values('none', 'attention_on_target_chance').mean():.3f}) | "
                     f"{values(label, 'attention_on_target').mean():.3f} "
                     f"({values(label, 'attention_on_target_chance').mean():.3f}) |")
    (args.out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
