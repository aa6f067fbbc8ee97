"""The allocator setting of gaze_rl's own processes (the `gaze-rl` command and its env workers).

glibc's malloc serves every allocation above its mmap threshold (128 KiB, rising with use to
at most 32 MiB) with a fresh mmap and gives it back to the kernel when it is freed; it also
returns free memory at the top of its heap beyond the trim threshold. A learner's activation
buffers (a SAC gradient step with PlainConv at batch 512 and 64 px: buffers of 30-130 MB) are
allocated and freed at every step, so each step re-faults them page by page: about 0.9-1.4M
page faults, and half of the step's CPU time in the kernel. `tune_malloc` raises both thresholds so that
freed buffers stay in the heap and are reused (results/speed/sac-dropin-cpu2.md).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# mallopt's parameter numbers (glibc's malloc.h) and the values gaze_rl sets: allocations up to
# 1 GiB from the heap, and no trimming (-1 turns it off, man 3 mallopt).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, 1 << 30), "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, -1)}
# The user's own ways of setting these thresholds: environment variables and glibc tunables.
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


@dataclass(frozen=True)
class MallocTuning:
    """What tune_malloc did in this process: the settings it applied (mallopt parameter name ->
    value; empty when it left the allocator alone) and why."""

    applied: dict[str, int] = field(default_factory=dict)
    reason: str = ""


_last_tuning: MallocTuning | None = None  # this process's tune_malloc result (last_malloc_tuning)


def user_malloc_setting(environ: Mapping[str, str]) -> str | None:
    """The user's own mmap / trim threshold setting in `environ` (a variable or a glibc
    tunable, named as set), or None when there is none."""
    for name in USER_VARIABLES:
        if name in environ:
            return name
    tunables = environ.get("GLIBC_TUNABLES", "")
    for tunable in USER_TUNABLES:
        if tunable in tunables:
            return f"GLIBC_TUNABLES {tunable}"
    return None


def glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt(param, value)` (returns 1 on success), or None off glibc (macOS,
    Windows, musl)."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; glibc only
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or no such name
        version = None
    if not version or not version.startswith("glibc"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def tune_malloc(environ: Mapping[str, str] | None = None,
                mallopt: Callable[[int, int], int] | None = None) -> MallocTuning:
    """Sets glibc's M_MMAP_THRESHOLD to 1 GiB and turns heap trimming off (M_TRIM_THRESHOLD -1)
    for this process, so that buffers below 1 GiB freed by one training step are reused by the
    next instead of being unmapped and re-faulted (a SAC gradient step with PlainConv at batch
    512, 64 px: 0.9M -> 4k page faults, 2.4x less CPU; results/speed/sac-dropin-cpu2.md). With
    a 1 GiB trim threshold instead, 128 px steps still re-faulted 0.4M pages. The cost: the process's
    heap stays at its peak (a learner reaches its peak at every step anyway).

    Call it at process start-up, before large allocations (the `gaze-rl` command and its env
    worker processes do). It does nothing off glibc, and nothing where the user set either
    threshold (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, or GLIBC_TUNABLES with
    glibc.malloc.mmap_threshold / trim_threshold): the user's value stands. To opt out, set one
    of them yourself, e.g. `MALLOC_TRIM_THRESHOLD_=131072` (glibc's initial value).

    `environ` (default os.environ) and `mallopt` (default glibc_mallopt()) are for tests.
    Returns what was applied, also kept for last_malloc_tuning()."""
    global _last_tuning
    environ = os.environ if environ is None else environ
    mallopt = mallopt or glibc_mallopt()
    user = user_malloc_setting(environ)
    if mallopt is None:
        tuning = MallocTuning(reason="not glibc: the allocator is left as it is")
    elif user is not None:
        tuning = MallocTuning(reason=f"the user's {user} is set: the allocator is left as it is")
    else:
        applied = {name: value for name, (param, value) in MALLOC_SETTINGS.items() if mallopt(param, value) == 1}
        tuning = MallocTuning(applied, "set by gaze_rl" if applied else "glibc refused the settings")
    _last_tuning = tuning
    return tuning


def last_malloc_tuning() -> MallocTuning | None:
    """What tune_malloc did in this process (None when it was not called), as run configs record it."""
    return _last_tuning
