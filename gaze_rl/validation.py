"""Configs that validate themselves: one style for every config dataclass.

A config subclasses `Validated` and puts its own field checks in `check()`, raising ConfigError.
Construction validates (so the Python API refuses a bad ContrastiveConfig at once); `validate()`
also validates nested configs. The CLI parses inside `deferred_validation()` and validates the
parsed config afterwards, so that a bad option is reported as one line by gaze-rl rather than
inside tyro's parse error (tyro catches the ValueErrors that constructors raise).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

from gaze_rl.errors import ConfigError

_deferred = contextvars.ContextVar("gaze_rl_deferred_validation", default=False)


class Validated:
    """Base of the config dataclasses: `check()` is the class's own field checks."""

    def __post_init__(self) -> None:
        if not _deferred.get():
            self.validate()

    def check(self) -> None:
        """Raises ConfigError naming the fix when a field (or a combination) cannot work."""

    def validate(self) -> None:
        """Checks nested configs, then this one."""
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            value = getattr(self, field.name)
            if isinstance(value, Validated):
                value.validate()
        self.check()


@contextlib.contextmanager
def deferred_validation() -> Iterator[None]:
    """Configs built inside are not validated on construction (call `validate()` after)."""
    token = _deferred.set(True)
    try:
        yield
    finally:
        _deferred.reset(token)


def at_least(low: float, **values: float | None) -> None:
    """Raises a ConfigError naming the first value below `low` (None means unset: allowed)."""
    for name, value in values.items():
        if value is not None and value < low:
            raise ConfigError(f"{name} must be >= {low} (got {value})")
