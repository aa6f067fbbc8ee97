"""The runs of a `gaze-rl bench` grid: what each one is, the `gaze-rl train` command that trains
(or resumes) it, its process, and the grid's progress; `run_local` trains them on this machine
(gaze_rl.bench.cluster on a Ray cluster). Training the grid: gaze_rl.bench.train; its summary:
gaze_rl.bench.summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from gaze_rl.configuration.commands import BenchConfig
from gaze_rl.configuration.methods import parse_arm
from gaze_rl.configuration.presets import read_experiments_toml
from gaze_rl.errors import ConfigError
from gaze_rl.runs.checkpoints import latest_checkpoint

# The first thing a training process runs (argv: the pid of the process that starts it, then the command):
# it asks Linux to SIGKILL it when the thread that started it ends (PR_SET_PDEATHSIG = 1; it survives
# the exec), exits if its parent is already gone, then becomes the command. In the child, not in a
# preexec_fn: the bench starts processes from threads, where CPython documents preexec_fn as unsafe.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


@dataclass(frozen=True)
class RunSpec:
    env: str
    algo: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.env}__{self.algo}__{self.method}__s{self.seed}"


def profile_settings(profile: str, env: str, algo: str) -> dict[str, Any]:
    """The profile's settings for one (env, algo): profile, then algo table, then env table."""
    tables = read_experiments_toml("bench.toml")
    if profile not in tables:
        raise ConfigError(f"unknown profile {profile!r}; valid choices: {', '.join(tables)}")
    base = tables[profile]
    scalars = {k: v for k, v in base.items() if not isinstance(v, dict)}
    return {**scalars, **base.get(algo, {}), **base.get(env, {})}


def grid_of(cfg: BenchConfig) -> list[RunSpec]:
    """The grid's runs, seed-major within each (env, algo): every method's seed 0 comes before
    any seed 1, so a grid stopped part-way holds whole comparisons, not all seeds of one method."""
    return [RunSpec(env, algo, method, seed)
            for env, algo, seed, method in product(cfg.envs, cfg.algos, cfg.seeds, cfg.methods)]


def run_settings(spec: RunSpec, cfg: BenchConfig) -> dict[str, Any]:
    """The `gaze-rl train` options of one run: its profile's settings with the bench's overrides."""
    settings = profile_settings(cfg.profile, spec.env, spec.algo)
    settings.pop("threshold", None)
    if cfg.total_timesteps is not None:
        settings["total_timesteps"] = cfg.total_timesteps
    if cfg.num_envs is not None:
        settings["num_envs"] = cfg.num_envs
    if cfg.variant != "none":
        settings["variant"] = cfg.variant
    if cfg.distract_strength is not None:
        settings["distract_strength"] = cfg.distract_strength
    return settings


def train_args(spec: RunSpec, cfg: BenchConfig) -> list[str]:
    """`gaze-rl` arguments of one run, without its directory (the machine that runs it picks that)."""
    arm = parse_arm(spec.method)
    args = ["train", "--env-id", spec.env, "--algo", spec.algo, "--method", arm.method, "--augment", arm.augment,
            *(["--gaze.residual"] if arm.residual else []),
            "--seed", str(spec.seed), "--overwrite", "--no-progress-bar"]  # --overwrite only ever replaces an unfinished run
    for key, value in run_settings(spec, cfg).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def cli_command(args: list[str], run_dir: Path | None = None) -> list[str]:
    # sys.executable of the machine that runs the command (on a cluster: the worker's Python).
    return [sys.executable, "-m", "gaze_rl.cli", *args, *(["--run-dir", str(run_dir)] if run_dir else [])]


BENCH_ARGS_FILE = "bench_args.json"  # the arguments a run was started with, to resume it only unchanged


def train_command(spec: RunSpec, cfg: BenchConfig, run_dir: Path) -> list[str]:
    """The command that trains one run: a resume from its newest checkpoint (to this bench's budget)
    when an earlier bench left it unfinished with the same arguments, else a fresh start (replacing
    any unfinished run)."""
    args = train_args(spec, cfg)
    started_with = run_dir / BENCH_ARGS_FILE
    if (latest_checkpoint(run_dir) is not None and started_with.is_file()
            and _without_budget(json.loads(started_with.read_text())) == _without_budget(args)):
        total = run_settings(spec, cfg)["total_timesteps"]
        return cli_command(["train", "--resume", str(run_dir), "--total-timesteps", str(total), "--no-progress-bar"])
    return cli_command(args, run_dir)


def _without_budget(args: list[str]) -> list[str]:
    """Train arguments less `--total-timesteps N`: a resumed run may be extended to a larger budget."""
    i = args.index("--total-timesteps") if "--total-timesteps" in args else len(args)
    return args[:i] + args[i + 2:]


def record_args(args: list[str], run_dir: Path, process: subprocess.Popen) -> None:
    """Writes a fresh run's arguments beside it once training has (re)created the directory
    (its new config.json), so that a later bench can resume it."""
    started, config = time.time(), run_dir / "config.json"
    while process.poll() is None:
        if config.is_file() and config.stat().st_mtime >= started - 1:
            (run_dir / BENCH_ARGS_FILE).write_text(json.dumps(args))
            return
        time.sleep(1)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "final.zip").is_file()


def dying_with_parent(command: list[str]) -> list[str]:
    """`command` started so that it dies with the thread that starts it (Linux; elsewhere unchanged)."""
    if sys.platform != "linux":
        return command
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


def run_process(command: list[str], log: Path, torch_threads: int,
                on_start: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Runs one training process with its output in `log` (appended: a resumed run keeps its
    history); returns its exit code (< 0: killed by that signal). `on_start(process)` runs while
    it trains. The process dies with its parent (on Linux), so a killed Ray worker leaves no orphan
    training behind on its node."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch_threads)}  # torch's thread count
    with log.open("a") as out:
        process = subprocess.Popen(dying_with_parent(command), stdout=out, stderr=subprocess.STDOUT, env=env)
        if on_start is not None:
            on_start(process)
        return process.wait()


def failure_note(code: int, log: Path) -> str:
    return f"exit code {code}; log: {log}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """The grid's progress on the head: one line per event with runs done / running / failed and
    an ETA (mean duration of the runs done so far, over the most runs seen running at once)."""

    def __init__(self, total: int):
        self.total = total
        self.running: dict[str, float] = {}  # run name -> start time
        self.durations: list[float] = []
        self.failed: list[str] = []
        self.slots = 1  # most runs seen running at once: the grid's parallelism
        self._lock = threading.Lock()  # local runs report from their threads

    def start(self, name: str, where: str = "") -> None:
        with self._lock:
            self.running[name] = time.monotonic()
            self.slots = max(self.slots, len(self.running))
            self._say(f"{name} started{where}")

    def finish(self, name: str, ok: bool, note: str = "") -> None:
        with self._lock:
            started = self.running.pop(name, None)
            if ok and started is not None:
                self.durations.append(time.monotonic() - started)
            elif not ok:
                self.failed.append(name)
            self._say(f"{name} {'done' if ok else 'FAILED'}{f' ({note})' if note else ''}")

    def requeue(self, name: str, note: str) -> None:
        """A run that lost its worker and will run again."""
        with self._lock:
            self.running.pop(name, None)
            self._say(f"{name} lost ({note})")

    def report(self) -> None:
        with self._lock:
            self._say("still going")

    def eta(self) -> str:
        if not self.durations:
            return "after the first run"
        mean, now = float(np.mean(self.durations)), time.monotonic()
        queued = self.total - len(self.durations) - len(self.failed) - len(self.running)
        left = queued * mean + sum(max(mean - (now - t), 0.0) for t in self.running.values())
        return _duration(left / self.slots)

    def _say(self, event: str) -> None:
        print(f"bench: {event} | {len(self.durations)}/{self.total} done, {len(self.running)} running, "
              f"{len(self.failed)} failed, ETA {self.eta()}", flush=True)


def run_local(specs: list[RunSpec], cfg: BenchConfig, progress: Progress) -> None:
    """Trains the runs as local processes, `cfg.workers` at a time, each logging to its own file."""

    def run_one(spec: RunSpec) -> None:
        log = cfg.out / "logs" / f"{spec.name}.log"
        run_dir = cfg.out / "runs" / spec.name
        command = train_command(spec, cfg, run_dir)
        resumed = "--resume" in command
        progress.start(spec.name, " (resumed)" if resumed else "")
        code = run_process(command, log, cfg.torch_threads,
                           on_start=None if resumed else partial(record_args, train_args(spec, cfg), run_dir))
        progress.finish(spec.name, code == 0, "" if code == 0 else failure_note(code, log))

    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        list(pool.map(run_one, specs))
