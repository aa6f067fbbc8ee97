"""Imitation benchmark: BC vs BC + gaze-KL vs BC + saliency-MSE (gaze_rl.imitation), per task and
seed, evaluated on held-out seeds (10000 + i) for success and attention-on-target.

    # 1. demonstrations (ManiSkill3 motion planning; or re-rendered from raw trajectories), 2. runs
    python results/imitation/bench.py run --out runs/imitation_bench --tasks PushCube-v1 PickCube-v1 \
        --seeds 0 1 2 --num-demos 20 --steps 2000 --eval-every 1000 --eval-episodes 20 --workers 2
    # 3. tables and plots (results.csv, eval_curves.csv, table.md, bench.png) into results/imitation/
    python results/imitation/bench.py aggregate --out runs/imitation_bench --results results/imitation

`run` skips runs that already have a summary.json, so it can be interrupted and restarted.
Demonstrations come from `<out>/demos/<task>/demos.h5`; if missing, from a ManiSkill trajectory
file `<out>/raw/<task>.h5` (`gaze-rl demos --from-h5`, used where mplib is unavailable), else
they are generated (`gaze-rl demos --env-id`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OBJECTIVES = ("none", "gaze-kl", "saliency-mse")
LABELS = {"none": "BC", "gaze-kl": "BC + gaze-KL", "saliency-mse": "BC + saliency-MSE"}


def gaze_rl(*args: str) -> list[str]:
    return [sys.executable, "-m", "gaze_rl.cli", *args]


def run_logged(cmd: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def ensure_demos(out: Path, task: str, num: int, image_size: int) -> Path:
    demos = out / "demos" / task
    if (demos / "demos.h5").is_file():
        return demos
    raw = out / "raw" / f"{task}.h5"
    if raw.is_file():
        cmd = gaze_rl("demos", "--from-h5", str(raw), "--num", str(num), "--out", str(demos), "--overwrite",
                      "--image-size", str(image_size), "--no-progress-bar")
    else:
        cmd = gaze_rl("demos", "--env-id", task, "--num", str(num), "--out", str(demos), "--overwrite",
                      "--image-size", str(image_size), "--no-progress-bar")
    code = run_logged(cmd, out / "logs" / f"demos__{task}.log")
    if code != 0:
        raise SystemExit(f"demonstrations for {task} failed; see {out / 'logs' / f'demos__{task}.log'}")
    return demos


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    jobs = []
    with ThreadPoolExecutor(max(1, min(args.workers, len(args.tasks)))) as pool:  # one process per task
        demo_dirs = list(pool.map(lambda task: ensure_demos(out, task, args.num_demos, args.image_size), args.tasks))
    for task, demos in zip(args.tasks, demo_dirs):
        for objective in args.objectives:
            for seed in args.seeds:
                run_dir = out / "runs" / f"{task}__{args.method}__{objective}__s{seed}"
                if (run_dir / "summary.json").is_file():
                    continue
                cmd = gaze_rl("pretrain", "--demos", str(demos), "--objective", objective, "--method", args.method,
                              "--seed", str(seed), "--steps", str(args.steps), "--eval-every", str(args.eval_every),
                              "--eval-episodes", str(args.eval_episodes), "--run-dir", str(run_dir), "--overwrite",
                              "--no-progress-bar", *args.extra)
                jobs.append((run_dir.name, cmd))
    print(f"{len(jobs)} runs to do, {args.workers} at a time")
    start = time.perf_counter()

    def one(job):
        name, cmd = job
        t = time.perf_counter()
        code = run_logged(cmd, out / "logs" / f"{name}.log")
        print(f"[{time.perf_counter() - start:7.0f}s] {name}: {'ok' if code == 0 else f'FAILED ({code})'} "
              f"in {time.perf_counter() - t:.0f}s", flush=True)
        return code

    with ThreadPoolExecutor(args.workers) as pool:
        codes = list(pool.map(one, jobs))
    (out / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")
    if any(codes):
        raise SystemExit(f"{sum(c != 0 for c in codes)} runs failed; see {out / 'logs'}")


def machine() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def aggregate(args: argparse.Namespace) -> None:
    import numpy as np

    out, results = Path(args.out), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    rows, curves = [], []
    for summary_path in sorted((out / "runs").glob("*/summary.json")):
        run_dir = summary_path.parent
        summary = json.loads(summary_path.read_text())
        config = json.loads((run_dir / "config.json").read_text())
        final = summary["final_eval"]
        rows.append({
            "task": summary["env_id"], "method": summary["method"], "objective": summary["objective"],
            "weight": summary["weight"], "seed": summary["seed"], "demos": summary["demos"],
            "steps": summary["steps"], "eval_episodes": final.get("episodes"), "eval_horizon": summary["eval_horizon"],
            "success_once": final.get("success_once"), "success_at_end": final.get("success_at_end"),
            "return_mean": final.get("return_mean"), "attention_on_target": final.get("attention_on_target"),
            "attention_on_target_chance": final.get("attention_on_target_chance"),
            "attention_on_target_lift": final.get("attention_on_target_lift"),
            "attention_mode": final.get("attention_mode"), "seconds": summary["seconds"],
            "device": config["machine"].get("cuda_device", "cpu"),
        })
        with (run_dir / "eval.csv").open() as f:
            for r in csv.DictReader(f):
                curves.append({"task": summary["env_id"], "objective": summary["objective"], "seed": summary["seed"],
                               **{k: float(v) for k, v in r.items()}})
    if not rows:
        raise SystemExit(f"no finished runs under {out / 'runs'}")
    with (results / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with (results / "eval_curves.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curves[0]))
        writer.writeheader()
        writer.writerows(curves)

    # One group per (task, method), in the order the runs appear.
    groups = list(dict.fromkeys((r["task"], r["method"]) for r in rows))
    objectives = [o for o in OBJECTIVES if any(r["objective"] == o for r in rows)]

    def values(group, objective, key):
        return np.array([r[key] for r in rows if (r["task"], r["method"]) == group and r["objective"] == objective
                         and r[key] is not None], dtype=float)

    lines = ["| task | method | objective | seeds | success_once | success_at_end | attention-on-target | chance | lift |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for group in groups:
        for objective in objectives:
            seeds = values(group, objective, "seed")
            if not len(seeds):
                continue
            cells = [*group, LABELS[objective], str(len(seeds))]
            for key in ("success_once", "success_at_end", "attention_on_target", "attention_on_target_chance",
                        "attention_on_target_lift"):
                v = values(group, objective, key)
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) else "-")
            lines.append("| " + " | ".join(cells) + " |")
    (results / "table.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(2 + 2.2 * len(groups), 9))
    keys = (("success_once", "success rate (held-out seeds)"), ("attention_on_target", "attention-on-target"),
            ("attention_on_target_lift", "attention-on-target / chance"))
    width = 0.8 / max(1, len(objectives))
    for ax, (key, title) in zip(axes, keys):
        for j, objective in enumerate(objectives):
            for i, group in enumerate(groups):
                v = values(group, objective, key)
                x = i + (j - (len(objectives) - 1) / 2) * width
                ax.bar(x, v.mean() if len(v) else 0, width, color=f"C{j}", alpha=0.7,
                       label=LABELS[objective] if i == 0 else None)
                ax.scatter(np.full(len(v), x), v, color="k", s=10, zorder=3)
        ax.set_xticks(range(len(groups)), [f"{t}\n{m}" for t, m in groups], fontsize=8)
        ax.set_title(title)
        if key == "attention_on_target_lift":
            ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results / "bench.png", dpi=120)
    print((results / "table.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", default="runs/imitation_bench")
    r.add_argument("--tasks", nargs="+", default=["PushCube-v1", "PickCube-v1"])
    r.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--method", default="gaze")
    r.add_argument("--num-demos", type=int, default=20)
    r.add_argument("--image-size", type=int, default=64)
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--eval-every", type=int, default=1000)
    r.add_argument("--eval-episodes", type=int, default=20)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more gaze-rl pretrain options")
    a = sub.add_parser("aggregate")
    a.add_argument("--out", default="runs/imitation_bench")
    a.add_argument("--results", default="results/imitation")
    args = parser.parse_args()
    run(args) if args.command == "run" else aggregate(args)


if __name__ == "__main__":
    main()
