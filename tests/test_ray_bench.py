"""`gaze-rl bench --ray-address` on a real local Ray cluster (real ManiSkill3 runs): results come
back through Ray, a run whose Ray worker is killed is reported and retried, a finished grid
resumes with nothing to do, and the curves and summary equal those of `--workers`."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

import gaze_rl
from gaze_rl.bench.grid import RunSpec
from gaze_rl.cli import main

REPO = Path(gaze_rl.__file__).resolve().parents[1]
GRID = ["--envs", "PokeCube-v1", "--methods", "baseline", "gaze", "--seeds", "0", "1",
        "--total-timesteps", "100", "--num-envs", "1"]  # 2 PokeCube episodes per run
RUNS = [RunSpec("PokeCube-v1", "ppo", method, seed).name for method in ("baseline", "gaze") for seed in (0, 1)]
STARTED = re.compile(r"^bench: (\S+) started on \S+ \(Ray worker pid (\d+)\)")


@dataclass
class RayCluster:
    address: str
    worker_tmp: Path  # TMPDIR of the cluster's processes: where runs train, apart from the head's --out
    env: dict[str, str]  # environment of the processes that talk to the cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (fields[0], int(fields[1]), int(fields[2])) if fields[0] != "Z" else None


def is_gone(pid: int) -> bool:
    return proc_stat(pid) is None


def processes(where: int, field: int) -> list[int]:
    """Live processes whose parent (field 1) or process group (field 2) is `where`."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat[field] == where:
            found.append(int(entry.name))
    return found


def training_child(worker: int) -> int | None:
    """The `gaze-rl train` process among a Ray worker's children, found by its command line: the
    worker may have other children (Ray's own processes, whose cmdline is `ray::<task name>`)."""
    for pid in processes(worker, 1):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if "gaze_rl.cli" in command and "train" in command:
            return pid
    return None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def ray_cluster() -> Iterator[RayCluster]:
    """A one-node Ray cluster (2 CPUs) on 127.0.0.1 in its own temporary directory, stopped by
    killing its own process group (`ray stop` would stop every Ray cluster of the machine)."""
    root = Path(tempfile.mkdtemp(prefix="gzray"))  # short: Ray's socket paths have a length limit
    worker_tmp = root / "worker_tmp"
    worker_tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    start = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
         "--temp-dir", str(root / "ray"), "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port())],
        env={**env, "TMPDIR": str(worker_tmp)}, start_new_session=True,  # its own group: stopped as one
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    group = start.pid
    try:
        output, _ = start.communicate(timeout=180)
        assert start.returncode == 0, output
        yield RayCluster(f"127.0.0.1:{port}", worker_tmp, env)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            try:
                wait_for(lambda: not processes(group, 2), 10, "the Ray cluster to stop")
                break
            except AssertionError:
                continue
        shutil.rmtree(root, ignore_errors=True)


def bench(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gaze_rl.cli", "bench", *args, *GRID], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def csv_rows(path: Path, drop: tuple[str, ...]) -> list[dict[str, str]]:
    """A CSV's rows without the columns that measure time (they differ between any two runs)."""
    with path.open() as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def kill_one_worker(head: subprocess.Popen, worker_tmp: Path) -> tuple[list[str], str | None]:
    """Reads the head's output to its end; SIGKILLs the Ray worker of the first run that starts,
    mid-training. Returns the output lines and that run's name."""
    lines, victim = [], None
    for line in head.stdout:
        lines.append(line)
        started = STARTED.match(line)
        if started and victim is None:
            victim, worker = started.group(1), int(started.group(2))
            # The worker's training process, under the worker's own temporary directory.
            training = wait_for(partial(training_child, worker), 120, f"{victim}'s training process")
            command = Path(f"/proc/{training}/cmdline").read_text().split("\0")
            assert Path(command[command.index("--run-dir") + 1]).is_relative_to(worker_tmp)
            time.sleep(3)  # mid-run
            os.kill(worker, signal.SIGKILL)
            # The training process dies with its worker (no orphan left on the node).
            wait_for(partial(is_gone, training), 30, "the killed worker's training process to exit")
    return lines, victim


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ray_grid_returns_results_retries_a_killed_worker_and_matches_local_workers(ray_cluster, tmp_path):
    out = tmp_path / "ray_out"
    head = bench("--ray-address", ray_cluster.address, "--out", str(out), env=ray_cluster.env)
    try:
        lines, victim = kill_one_worker(head, ray_cluster.worker_tmp)
    except BaseException:
        head.kill()  # no head left waiting on a cluster that is about to stop
        raise
    log = "".join(lines)
    assert head.wait(timeout=60) == 0, log
    assert victim is not None, log
    assert re.search(rf"bench: {victim} lost \(WorkerCrashedError: .*; retry 1/2\)", log), log
    assert re.search(rf"bench: {victim} done \| [1-4]/4 done", log), log
    assert re.search(r"bench: \S+ done \| 4/4 done, 0 running, 0 failed", log), log

    for name in RUNS:
        run = out / "runs" / name
        for file in ("config.json", "curve.csv", "checkpoints/final.zip"):
            assert (run / file).is_file(), (name, file)
        assert list((run / "tb").glob("events.out.tfevents.*")), name
        assert not list((run / "checkpoints").glob("step_*")), name  # intermediate checkpoints stay behind
        assert "Run directory:" in (out / "logs" / f"{name}.log").read_text()
        # Trained under the worker's temporary directory, received by the head through Ray.
        trained_in = Path(json.loads((run / "config.json").read_text())["train"]["run_dir"])
        assert trained_in.is_relative_to(ray_cluster.worker_tmp) and not trained_in.exists(), trained_in
    # Workers clean up after themselves; only the killed attempt's directory is left.
    leftovers = [p.name for p in ray_cluster.worker_tmp.glob("gaze_rl_*")]
    assert len(leftovers) <= 1 and all(p.startswith(f"gaze_rl_{victim}_") for p in leftovers), leftovers

    # Resumable: a finished grid has nothing left to train.
    again = bench("--ray-address", ray_cluster.address, "--out", str(out), env=ray_cluster.env)
    again_log = again.communicate(timeout=600)[0]
    assert again.returncode == 0 and "4 already finished, 0 to train" in again_log, again_log

    # The same grid as local processes: the same curves and summary (CPU determinism, same seeds).
    local = tmp_path / "local_out"
    main(["bench", "--workers", "2", "--out", str(local), *GRID])
    assert csv_rows(out / "curves.csv", ("wall_s",)) == csv_rows(local / "curves.csv", ("wall_s",))
    timing = ("wall_s", "env_steps_per_s")
    assert csv_rows(out / "summary.csv", timing) == csv_rows(local / "summary.csv", timing)
    assert len(csv_rows(local / "curves.csv", ())) == 4 * 2


LAUNCH_FROM_A_THREAD = """\
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from gaze_rl.bench.grid import run_process
pid_file, log, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
with ThreadPoolExecutor(1) as pool:  # as run_local starts its runs (and a Ray worker its task's)
    pool.submit(run_process, command, log, 1, lambda process: pid_file.write_text(str(process.pid))).result()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="dying with the parent is Linux's PR_SET_PDEATHSIG")
def test_a_run_process_started_from_a_thread_dies_with_its_parent(tmp_path):
    """The training process is the command itself (what a node's process list shows), and when the
    process that started it from a pool thread is SIGKILLed (a Ray worker killed), it goes too."""
    pid_file, command = tmp_path / "pid", [sys.executable, "-c", "import time; time.sleep(120)"]
    parent = subprocess.Popen([sys.executable, "-c", LAUNCH_FROM_A_THREAD, str(pid_file), str(tmp_path / "log"), *command],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        child = int(wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 60, "the process to start"))
        wait_for(lambda: Path(f"/proc/{child}/cmdline").read_text().split("\0")[:-1] == command, 30,
                 "the process to become the command")
        assert proc_stat(child)[1] == parent.pid
        os.kill(parent.pid, signal.SIGKILL)
        wait_for(partial(is_gone, child), 30, "the orphaned process to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # the process group of both


@pytest.mark.skipif(sys.platform != "linux", reason="dying with the parent is Linux's PR_SET_PDEATHSIG")
def test_a_run_process_whose_parent_is_gone_before_it_starts_never_runs():
    from gaze_rl.bench.grid import dying_with_parent

    command = dying_with_parent([sys.executable, "-c", "import time; time.sleep(120)"])
    command[command.index(str(os.getpid()))] = "1"  # started by a parent that has died since: adopted by another
    assert subprocess.run(command, timeout=30).returncode == 1


def test_bad_ray_options_fail_before_anything_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--out", str(tmp_path), "--ray-num-cpus", "2"])
    assert exit_info.value.code == 2 and "only apply with --ray-address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--out", str(tmp_path), "--ray-address", "auto", "--ray-max-retries", "-1"])
    assert "ray-max-retries must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing listens there: a clear error, not minutes of Ray's retries
        main(["bench", "--out", str(tmp_path), "--ray-address", f"127.0.0.1:{free_port()}", "--envs", "PushT-v1"])
    assert "no Ray cluster answers at '127.0.0.1:" in capsys.readouterr().err


def test_each_run_asks_ray_for_what_it_uses(tmp_path):
    from gaze_rl.bench.cluster import run_resources
    from gaze_rl.configuration.commands import BenchConfig

    ppo, sac = RunSpec("PushT-v1", "ppo", "gaze", 0), RunSpec("PushT-v1", "sac", "gaze", 0)
    # cpu profile: 2 env processes + the learner; a single env lives in the learner's process.
    assert run_resources(ppo, BenchConfig(out=tmp_path)) == {"num_cpus": 3.0, "num_gpus": 0.0}
    assert run_resources(ppo, BenchConfig(out=tmp_path, num_envs=1)) == {"num_cpus": 1.0, "num_gpus": 0.0}
    # gpu profile: physx_cuda simulates every env in the learner's process, on the GPU.
    assert run_resources(sac, BenchConfig(out=tmp_path, profile="gpu")) == {"num_cpus": 1.0, "num_gpus": 1.0}
    overridden = BenchConfig(out=tmp_path, profile="gpu", ray_address="auto", ray_num_cpus=4, ray_num_gpus=0.5)
    assert run_resources(ppo, overridden) == {"num_cpus": 4, "num_gpus": 0.5}


def test_run_files_skip_intermediate_checkpoints_and_land_in_one_rename(tmp_path):
    from gaze_rl.bench.cluster import run_files, write_run

    run = tmp_path / "worker" / "run"
    for name in ("config.json", "curve.csv", "tb/events.out.tfevents.1", "checkpoints/final.zip",
                 "checkpoints/step_100.zip", "checkpoints/step_100.state.pt"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(name.encode())
    files = run_files(run)
    assert sorted(files) == ["checkpoints/final.zip", "config.json", "curve.csv", "tb/events.out.tfevents.1"]
    target = tmp_path / "head" / "runs" / "x"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("an unfinished earlier attempt")
    write_run(target, files)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(files)
    assert (target / "tb/events.out.tfevents.1").read_bytes() == b"tb/events.out.tfevents.1"
    assert [p.name for p in target.parent.iterdir()] == ["x"]


def test_progress_counts_runs_and_estimates_time_left(monkeypatch, capsys):
    from gaze_rl.bench import grid as bench_module

    now = [0.0]
    monkeypatch.setattr(bench_module.time, "monotonic", lambda: now[0])
    progress = bench_module.Progress(total=4)
    progress.start("a")
    progress.start("b")
    now[0] = 10.0
    progress.finish("a", True)
    # 2 runs at once, 10 s a run: b is due now, 2 more queued -> 2 x 10 s / 2 slots.
    assert progress.eta() == "10s"
    progress.requeue("b", "WorkerCrashedError")
    progress.start("b")
    progress.finish("b", False, "exit code 1")
    assert capsys.readouterr().out.splitlines()[-1] == "bench: b FAILED (exit code 1) | 1/4 done, 0 running, 1 failed, ETA 10s"
