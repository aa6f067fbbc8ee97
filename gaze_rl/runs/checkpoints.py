"""Crash-safe checkpoints and what a resumed run needs to continue where it stopped.

Every file is written to a temporary name and renamed into place, so a kill leaves either the
previous checkpoint or the new one, never half a file. Next to each `step_<N>.zip` (SB3's
format: model, optimizers, gaze head, projection) lies `step_<N>.state.pt`, loadable with
`torch.load(weights_only=True)`: the step counter, the RNG states of python, numpy and torch,
and the number of curve rows written so far.
"""

from __future__ import annotations

import os
import random
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from gaze_rl.errors import ConfigError

STEP_FILE = re.compile(r"^step_(\d+)\.zip$")


def atomic_save_model(model: BaseAlgorithm, path: Path) -> None:
    """`model.save(path)` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    model.save(tmp)
    # SB3 appends .zip to names without it.
    saved = tmp if tmp.exists() else tmp.with_name(tmp.name + ".zip")
    os.replace(saved, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    # the legacy tuple form (get_state's default)
    _, np_keys, np_pos, np_has_gauss, np_gauss = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    _, py_state, py_gauss = random.getstate()
    return {
        "python": list(py_state), "python_gauss": py_gauss,
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)), "numpy_pos": int(np_pos),
        "numpy_gauss": [int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: Path) -> tuple[Path, Path] | None:
    """The newest `step_<N>.zip` with its state file, or None."""
    found = []
    for path in (run_dir / "checkpoints").glob("step_*.zip"):
        match = STEP_FILE.match(path.name)
        if match is None:
            continue
        state = path.with_name(f"step_{match.group(1)}.state.pt")
        if state.is_file():
            found.append((int(match.group(1)), path, state))
    if not found:
        return None
    _, model_path, state_path = max(found)
    return model_path, state_path


def load_model(algo_class: type[BaseAlgorithm], path: Path, **kwargs: Any) -> BaseAlgorithm:
    """`algo_class.load` with a clear error for a truncated or foreign checkpoint file."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # SB3 would say "wasn't a zip-file"
        raise ConfigError(f"checkpoint {path} is damaged (not a complete zip file); use another checkpoint "
                         "of the run, or resume from the previous one by deleting this one")
    try:
        return algo_class.load(path, **kwargs)
    except (zipfile.BadZipFile, EOFError, KeyError, RuntimeError) as err:
        raise ConfigError(f"checkpoint {path} is damaged or not a {algo_class.__name__} checkpoint "
                         f"({type(err).__name__}: {err})") from None


def load_state(path: Path) -> dict[str, Any]:
    """Reads a state file without executing code; a damaged file is a clear error."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ConfigError(f"checkpoint state {path} is damaged or not a gaze_rl state file ({err}); "
                         "delete it to resume from the previous checkpoint") from None


class AtomicCheckpoint(BaseCallback):
    """Saves `step_<N>.zip` + `step_<N>.state.pt` atomically at the first rollout start after
    every `every` env steps, keeping the newest `keep` of them (0 = all).

    `request_stop()` (Ctrl-C) makes it save at the next rollout start and end learn() there,
    so that the checkpoint never holds a half-applied update."""

    def __init__(self, directory: Path, every: int, curve_rows: Callable[[], int], keep: int = 0):
        super().__init__()
        self.directory, self.every, self.curve_rows, self.keep = directory, every, curve_rows, keep
        self._next = 0
        self.stop_requested = False
        self.stopped_at: Path | None = None

    def request_stop(self) -> None:
        self.stop_requested = True

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return self.stopped_at is None  # False ends learn() before this step is used

    def _on_rollout_start(self) -> None:
        # Between a training step and the next collection: PPO has trained on every rollout
        # so far (a mid-rollout checkpoint would drop one rollout's update), SAC likewise.
        if self.stop_requested:
            self.stopped_at = self.save(self.num_timesteps)
        elif self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.every + 1) * self.every
            self.save(self.num_timesteps)

    def save(self, step: int) -> Path:
        path = self.directory / f"step_{step}.zip"
        atomic_save_model(self.model, path)
        atomic_torch_save({"num_timesteps": step, "curve_rows": self.curve_rows(), **rng_state()},
                          path.with_name(f"step_{step}.state.pt"))
        self._prune()
        return path

    def _prune(self) -> None:
        """Deletes all but the newest `keep` checkpoints (final.zip is never touched)."""
        if self.keep <= 0:
            return
        steps = sorted(int(m.group(1)) for p in self.directory.glob("step_*.zip") if (m := STEP_FILE.match(p.name)))
        for step in steps[:-self.keep]:
            for name in (f"step_{step}.zip", f"step_{step}.state.pt"):
                (self.directory / name).unlink(missing_ok=True)
