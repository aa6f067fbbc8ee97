"""`gaze-rl bench --ray-address`: the grid's runs as tasks on a Ray cluster.

Each run is one Ray task that reserves what the run uses (its env processes and learner, a GPU
with physx_cuda), trains `gaze-rl train` in a temporary directory of its node and sends the run
directory's small files (config, curve, TensorBoard events, final checkpoint) and its log back
to the head through Ray; the head writes them under --out. No shared filesystem is needed (a
shared one works the same). A run whose worker or node dies, or whose process is killed, is
reported by name and started again up to --ray-max-retries times while the grid goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gaze_rl.bench.grid import Progress, RunSpec, cli_command, failure_note, run_process, run_settings, train_args
from gaze_rl.configuration.commands import BenchConfig, TrainConfig
from gaze_rl.errors import ConfigError

PROGRESS_EVERY_S = 60.0  # a progress line at least this often, even while no run starts or ends


def run_resources(spec: RunSpec, cfg: BenchConfig) -> dict[str, float]:
    """Ray resources of one run: CPUs = env processes + 1 for the learner, a GPU with physx_cuda."""
    settings = run_settings(spec, cfg)
    gpu_sim = settings.get("sim_backend") == "physx_cuda"
    num_envs = settings.get("num_envs", TrainConfig.num_envs)
    # gaze_rl.envs: physx_cuda simulates all envs in the learner's process, physx_cpu runs one
    # process per env when there are several and a single env in the learner's process.
    env_processes = 0 if gpu_sim or num_envs == 1 else num_envs
    return {"num_cpus": float(env_processes + 1) if cfg.ray_num_cpus is None else cfg.ray_num_cpus,
            "num_gpus": float(gpu_sim) if cfg.ray_num_gpus is None else cfg.ray_num_gpus}


def run_files(run_dir: Path) -> dict[str, bytes]:
    """The files of a run directory that go back to the head: all but the intermediate checkpoints
    (only `gaze-rl train --resume` needs them; a bench restarts an unfinished run from scratch)."""
    files = {}
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if path.is_file() and (relative.parts[0] != "checkpoints" or relative.name == "final.zip"):
            files[relative.as_posix()] = path.read_bytes()
    return files


def train_on_node(name: str, args: list[str], torch_threads: int) -> Iterator[dict[str, Any]]:
    """The Ray task of one run (a streaming generator): first where it runs, then the result."""
    import ray

    yield {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}
    work = Path(tempfile.mkdtemp(prefix=f"gaze_rl_{name}_"))  # this node's own disk
    try:
        code = run_process(cli_command(args, work / "run"), work / "train.log", torch_threads)
        result = {"returncode": code, "log": (work / "train.log").read_bytes(),
                  "files": run_files(work / "run") if code == 0 else {}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    yield result


def write_run(run_dir: Path, files: dict[str, bytes]) -> None:
    """Writes a run's files as `run_dir` (replacing an unfinished one) with one final rename, so
    a head killed meanwhile never leaves a run that looks finished."""
    staging = run_dir.with_name(f".{run_dir.name}.incoming")
    shutil.rmtree(staging, ignore_errors=True)
    for relative, data in files.items():
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    shutil.rmtree(run_dir, ignore_errors=True)
    staging.rename(run_dir)


def warn_unplaceable(ray: Any, specs: list[RunSpec], cfg: BenchConfig) -> None:
    """Warns when no node of the cluster can hold a run (Ray then waits for one to join)."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    for cpus, gpus in {(need["num_cpus"], need["num_gpus"]) for need in (run_resources(s, cfg) for s in specs)}:
        if not any(node.get("CPU", 0.0) >= cpus and node.get("GPU", 0.0) >= gpus for node in nodes):
            print(f"bench: warning: a run asks Ray for {cpus:g} CPUs and {gpus:g} GPUs, more than any node of the "
                  "cluster has; it waits until such a node joins (lower --num-envs, or set --ray-num-cpus / "
                  "--ray-num-gpus)", flush=True)


def connect(ray: Any, address: str) -> None:
    """ray.init, with a quick clear error where no cluster answers (Ray itself retries for minutes)."""
    hint = "start one with `ray start --head` (README: A grid larger than one machine)"
    if address != "auto" and "://" not in address:  # host:port of a head's GCS
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as err:
            raise ConfigError(f"no Ray cluster answers at {address!r} ({err}); {hint}") from None
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise ConfigError(f"no Ray cluster at {address!r} ({err}); {hint}") from None


def run_ray(specs: list[RunSpec], cfg: BenchConfig, progress: Progress) -> None:
    """Trains the runs on the Ray cluster at cfg.ray_address; their results land under cfg.out."""
    import ray

    assert cfg.ray_address is not None  # run_grid comes here only with an address
    connect(ray, cfg.ray_address)
    try:
        warn_unplaceable(ray, specs, cfg)
        task = ray.remote(train_on_node)
        attempts: Counter[RunSpec] = Counter()
        pending: dict[Any, RunSpec] = {}  # the tasks' generators

        def submit(spec: RunSpec) -> None:
            attempts[spec] += 1
            # Ray's own retries are off: the head retries, so that it can say which run lost its worker.
            options = {**run_resources(spec, cfg), "num_returns": "streaming", "max_retries": 0, "name": spec.name}
            pending[task.options(**options).remote(spec.name, train_args(spec, cfg), cfg.torch_threads)] = spec

        def retry_or_fail(spec: RunSpec, reason: str) -> None:
            if attempts[spec] <= cfg.ray_max_retries:
                progress.requeue(spec.name, f"{reason}; retry {attempts[spec]}/{cfg.ray_max_retries}")
                submit(spec)
            else:
                progress.finish(spec.name, False, f"{reason}; no retries left")

        for spec in specs:
            submit(spec)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
            if not ready:
                progress.report()
                continue
            spec = pending[ready[0]]
            try:
                message = ray.get(next(ready[0]))
            except ray.exceptions.RayTaskError as err:  # gaze_rl's own code raised on the worker: not retried
                del pending[ready[0]]
                progress.finish(spec.name, False, str(err).splitlines()[-1])
                continue
            except ray.exceptions.RayError as err:  # the worker or its node died
                del pending[ready[0]]
                retry_or_fail(spec, f"{type(err).__name__}: its Ray worker or node died")
                continue
            if "pid" in message:
                progress.start(spec.name, f" on {message['node']} (Ray worker pid {message['pid']})")
                continue
            del pending[ready[0]]
            log = cfg.out / "logs" / f"{spec.name}.log"
            log.write_bytes(message["log"])
            code = message["returncode"]
            if code == 0:
                write_run(cfg.out / "runs" / spec.name, message["files"])
                progress.finish(spec.name, True)
            elif code < 0:  # killed by a signal (e.g. an out-of-memory killer): the run itself may be fine
                retry_or_fail(spec, f"training process killed by signal {-code}; log: {log}")
            else:
                progress.finish(spec.name, False, failure_note(code, log))
    finally:
        ray.shutdown()
