"""The allocator setting of gaze_rl's own processes (gaze_rl.runtime.tune_malloc): what it sets,
when it leaves the user's setting alone, and where it runs (the CLI, the env workers, run configs)."""

from __future__ import annotations

import signal

import pytest

from gaze_rl import runtime
from gaze_rl.runtime import MallocTuning, last_malloc_tuning, tune_malloc, user_malloc_setting


class FakeMallopt:
    """Records mallopt(param, value) calls; answers `result` (glibc: 1 = done, 0 = refused)."""

    def __init__(self, result: int = 1):
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_applies_both_thresholds_and_records_them():
    mallopt = FakeMallopt()
    tuning = tune_malloc(environ={}, mallopt=mallopt)
    assert mallopt.calls == [(-3, 1 << 30), (-1, -1)]  # M_MMAP_THRESHOLD 1 GiB, trimming off
    assert tuning.applied == {"M_MMAP_THRESHOLD": 1 << 30, "M_TRIM_THRESHOLD": -1}
    assert last_malloc_tuning() == tuning


@pytest.mark.parametrize("environ, named", [
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_"),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, "glibc.malloc.trim_threshold"),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=2:glibc.malloc.mmap_threshold=4096"}, "glibc.malloc.mmap_threshold"),
])
def test_the_users_own_setting_is_left_alone(environ, named):
    mallopt = FakeMallopt()
    tuning = tune_malloc(environ=environ, mallopt=mallopt)
    assert mallopt.calls == [] and tuning.applied == {}
    assert named in tuning.reason and last_malloc_tuning() == tuning


def test_other_tunables_and_variables_do_not_count():
    environ = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "MALLOC_ARENA_MAX": "2"}
    assert user_malloc_setting(environ) is None
    assert tune_malloc(environ=environ, mallopt=FakeMallopt()).applied == {"M_MMAP_THRESHOLD": 1 << 30,
                                                                           "M_TRIM_THRESHOLD": -1}


def test_a_refused_setting_is_not_recorded_as_applied():
    tuning = tune_malloc(environ={}, mallopt=FakeMallopt(result=0))
    assert tuning == MallocTuning({}, "glibc refused the settings")


def test_nothing_off_glibc(monkeypatch):
    monkeypatch.setattr(runtime, "glibc_mallopt", lambda: None)
    tuning = tune_malloc(environ={})
    assert tuning.applied == {} and "not glibc" in tuning.reason


@pytest.mark.skipif(runtime.glibc_mallopt() is None, reason="glibc only")
def test_real_glibc_takes_the_settings():
    assert tune_malloc(environ={}).applied == {"M_MMAP_THRESHOLD": 1 << 30, "M_TRIM_THRESHOLD": -1}


def test_the_cli_and_the_env_workers_tune_at_start_up(monkeypatch):
    from gaze_rl import cli
    from gaze_rl.envs import factory

    started: list[str] = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: started.append("cli"))
    monkeypatch.setattr(factory, "tune_malloc", lambda: started.append("worker"))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert factory.ignoring_ctrl_c(lambda: "env") == "env"
    finally:
        signal.signal(signal.SIGINT, previous)
    assert started == ["cli", "worker"]


def test_run_configs_record_the_setting():
    from gaze_rl.build import machine_info

    tuning = tune_malloc(environ={"MALLOC_TRIM_THRESHOLD_": "1"}, mallopt=FakeMallopt())
    assert machine_info()["malloc"] == {"applied": {}, "reason": tuning.reason}
