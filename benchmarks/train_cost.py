"""Training cost per env step of each method under a bench profile, side by side.

A grid's env-steps/s depend on what ran beside each run (two runs share a 2-core machine), so
they cannot compare methods. This benchmark runs the bench's own `gaze-rl train` command
(`gaze_rl.bench.grid.train_args`: profile settings, 2 env processes, ...) for each method at two
budgets, interleaved (round r: every method at both budgets), and records the CPU seconds of
the whole process tree (trainer + env workers + lavapipe threads, sampled from /proc every
0.5 s) and the wall time. The marginal CPU per env step, (cpu(long) - cpu(short)) /
(long - short), leaves out start-up (imports, env creation, the attention-on-target probe set),
so it is the cost a longer run pays per step. Per method: the median over rounds; vs baseline:
the median of per-round ratios.

    python benchmarks/train_cost.py --out results/speed/train_cost-cpu2.json
    python benchmarks/train_cost.py --methods baseline gaze --budgets 500 1500 --rounds 1
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from gaze_rl.bench.grid import RunSpec, cli_command, train_args
from gaze_rl.configuration.commands import BenchConfig

from _common import median, print_table, write_result


def tree_cpu_seconds(command: list[str], log: Path) -> tuple[float, float]:
    """(CPU seconds of the command's process tree, wall seconds) of one run to completion; its
    output goes to `log` (a pipe nobody reads while it runs could fill and stall the run)."""
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    root = psutil.Process(process.pid)
    seen: dict[int, float] = {}  # the last CPU total read per process: a worker's own final reading counts

    def sample() -> None:
        for p in [root, *root.children(recursive=True)]:
            try:
                times = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen[p.pid] = times.user + times.system

    while process.poll() is None:
        sample()
        time.sleep(0.5)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{log.read_text()[-2000:]}")
    return sum(seen.values()), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--env-id", default="PushCube-v1")
    p.add_argument("--profile", default="cpu-learn", help="bench profile (experiments/bench.toml)")
    p.add_argument("--methods", nargs="+", default=["baseline", "foveal", "gaze"],
                   help="bench arms, e.g. gaze or baseline+shift")
    p.add_argument("--budgets", type=int, nargs=2, default=[1000, 3000], help="short and long env-step budgets")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    short, long = sorted(a.budgets)

    samples: dict[str, list[dict[str, float]]] = {m: [] for m in a.methods}
    with tempfile.TemporaryDirectory(prefix="train_cost") as tmp:
        for r in range(a.rounds):
            for method in a.methods:
                spec = RunSpec(a.env_id, "ppo", method, a.seed)
                run = {}
                for steps in (short, long):
                    cfg = BenchConfig(out=Path(tmp), profile=a.profile, total_timesteps=steps)  # type: ignore[arg-type]
                    command = cli_command(train_args(spec, cfg), Path(tmp) / f"{method}-{steps}")
                    run[f"cpu_s_{steps}"], run[f"wall_s_{steps}"] = tree_cpu_seconds(command, Path(tmp) / f"{method}-{steps}.log")
                run["cpu_ms_per_step"] = 1e3 * (run[f"cpu_s_{long}"] - run[f"cpu_s_{short}"]) / (long - short)
                run["wall_ms_per_step"] = 1e3 * (run[f"wall_s_{long}"] - run[f"wall_s_{short}"]) / (long - short)
                samples[method].append(run)
                print(f"  round {r} {method}: {run['cpu_ms_per_step']:.1f} CPU ms / env step "
                      f"({run['wall_ms_per_step']:.1f} ms wall)", flush=True)

    base = a.methods[0]
    rows: list[dict[str, Any]] = []
    for method, runs in samples.items():
        rows.append({
            "method": method,
            "median_cpu_ms_per_env_step": median([s["cpu_ms_per_step"] for s in runs]),
            "median_wall_ms_per_env_step": median([s["wall_ms_per_step"] for s in runs]),
            f"cpu_vs_{base}": median([s["cpu_ms_per_step"] / b["cpu_ms_per_step"] for s, b in zip(runs, samples[base])]),
            "rounds": runs,
        })
    print_table(f"{a.env_id}, profile {a.profile}: marginal cost per env step (medians over {a.rounds} rounds)",
                ["method", "CPU ms/step", "wall ms/step", f"CPU x {base}"],
                [[r["method"], r["median_cpu_ms_per_env_step"], r["median_wall_ms_per_env_step"], r[f"cpu_vs_{base}"]]
                 for r in rows])
    write_result(a.out, "train_cost", vars(a) | {"out": str(a.out)}, rows)


if __name__ == "__main__":
    main()
