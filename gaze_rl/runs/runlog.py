"""What a training run writes: its directory, TensorBoard names, the curve CSV, gaze pictures.

A run directory holds `config.json` (everything needed to rebuild the run), `tb/`
(TensorBoard: charts/, losses/, eval/, gaze/), `curve.csv` (one row per finished episode),
`on_target.csv` (attention-on-target on the probe frames, one row per measurement) and
`checkpoints/`.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, Logger, make_output_format

from gaze_rl.runs.visualize import attention_of, overlays

CURVE_COLUMNS = ("global_step", "episodic_return", "episodic_length", "success_once", "success_at_end",
                 "env_steps_per_s", "wall_time")


def prepare_run_dir(run_dir: Path, overwrite: bool) -> Path:
    """Creates the run directory; an existing non-empty one is an error unless `overwrite`."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"run directory {run_dir} already exists and is not empty; pick another --run-dir "
                "or pass --overwrite to delete it"
            )
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run_dir


def truncate_curve(path: Path, rows: int) -> None:
    """Keeps the header and the first `rows` rows of a curve.csv (the rows a checkpoint saw)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: rows + 1]))


def truncate_after_step(path: Path, step: int) -> None:
    """Keeps the header and the rows of a CSV whose first column (the env step) is < `step`: a
    resumed run measures again from its checkpoint's step."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) < step]))


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


class NamespacedLogger(Logger):
    """SB3 logger whose keys follow the CleanRL / ManiSkill names: SB3's `train/` -> `losses/`,
    `rollout/` and `time/` -> `charts/`."""

    RENAMES = {"train/": "losses/", "rollout/": "charts/", "time/": "charts/"}

    @classmethod
    def _rename(cls, key: str) -> str:
        for old, new in cls.RENAMES.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        super().record(self._rename(key), value, exclude)

    def record_mean(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        super().record_mean(self._rename(key), value, exclude)


def make_logger(run_dir: Path, verbose: int) -> NamespacedLogger:
    formats = [make_output_format("tensorboard", str(run_dir / "tb"))]
    if verbose > 0:
        formats.append(make_output_format("stdout", str(run_dir)))
    return NamespacedLogger(str(run_dir), formats)


class CurveLogger(BaseCallback):
    """Writes one curve.csv row per finished episode and logs episode outcomes to `charts/`."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.rows_written = 0
        self._file: Any = None
        self._writer: Any = None
        self._start = 0.0
        self._start_steps = 0
        self._recent: deque[tuple[float, int]] = deque(maxlen=20)  # (return, success_once), newest last

    def _on_training_start(self) -> None:
        new = not self.path.exists()
        if not new:  # a resumed run appends after the rows its checkpoint kept
            with self.path.open() as f:
                self.rows_written = sum(1 for _ in f) - 1
        self._file = self.path.open("a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(CURVE_COLUMNS)
        self._start, self._start_steps = time.perf_counter(), self.num_timesteps

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is None:
                continue
            wall = time.perf_counter() - self._start
            sps = (self.num_timesteps - self._start_steps) / max(wall, 1e-9)
            row = (self.num_timesteps, episode["r"], episode["l"], int(info.get("success_once", False)),
                   int(info.get("success_at_end", False)), round(sps, 2), round(wall, 3))
            self._writer.writerow(row)
            self.rows_written += 1
            self._recent.append((float(episode["r"]), row[3]))
            self.logger.record_mean("charts/episodic_return", float(episode["r"]))
            self.logger.record_mean("charts/success_once", float(row[3]))
            self.logger.record_mean("charts/success_at_end", float(row[4]))
            self.logger.record("charts/env_steps_per_s", sps)
        self._file.flush()
        return True

    def recent_summary(self) -> str:
        """Mean return and success of this session's last 20 episodes, as one phrase."""
        if not self._recent:
            return "no episode finished yet"
        returns, successes = zip(*self._recent)
        return (f"return {np.mean(returns):.2f}  success {np.mean(successes):.2f} "
                f"(last {len(returns)} episodes)")

    def _on_training_end(self) -> None:
        self.logger.dump(self.num_timesteps)  # SAC dumps only every few episodes: flush the rest
        if self._file is not None:
            self._file.close()


class GazeImageLogger(BaseCallback):
    """Every `every` env steps, logs the current observations with the policy's attention drawn
    over them as `gaze/frames` (a TensorBoard image)."""

    def __init__(self, every: int, limit: int = 4):
        super().__init__()
        self.every, self.limit = every, limit
        self._next = 0

    def _on_step(self) -> bool:
        if self.every <= 0 or self.num_timesteps < self._next:
            return True
        self._next = self.num_timesteps + self.every
        self._record()
        return True

    def _on_training_end(self) -> None:
        if self.every > 0 and self._record():  # the gaze the run ends with
            self.logger.dump(self.num_timesteps)

    def _record(self) -> bool:
        observations = self.locals.get("new_obs")
        if not isinstance(observations, dict) or "rgb" not in observations:
            return False
        attention = attention_of(self.model, observations)
        if attention is None:
            return False
        grid = np.concatenate(overlays(observations, attention, self.limit, size=192), axis=1)
        self.logger.record("gaze/frames", Image(grid, "HWC"), exclude=("stdout", "log", "json", "csv"))
        return True


ON_TARGET_COLUMNS = ("global_step", "attention_on_target", "attention_on_target_chance", "attention_on_target_lift")


class AttentionOnTargetProbe(BaseCallback):
    """At the start of training and every `every` env steps, the policy's attention-on-target on
    a fixed probe set (gaze_rl.segmentation.on_target.ProbeSet), logged as
    `gaze/attention_on_target`, `..._chance` and `..._lift`, and appended to `csv_path` (one row
    per measurement); every method has one (the baseline's is its feature-energy map).

    With a `tracking` probe set (frames spread over scenes, for policies with a Gaussian gaze),
    also the gaze tracking on it (`gaze/track_slope_x`, `..._y`, `gaze/track_r2_x`, `..._y`,
    `gaze/track_dist_cells`, `gaze/track_dist_cells_centred`) and the gaze's spread and size on
    the current network (`gaze/policy_mu_x_std`, `..._y_std`, `gaze/policy_sigma_mean`), in
    TensorBoard and as further CSV columns; a run without a Gaussian gaze writes no such columns.
    """

    def __init__(self, probe: Any, every: int, csv_path: Path | None = None, tracking: Any = None):
        super().__init__()
        self.probe, self.every, self.csv_path, self.tracking = probe, every, csv_path, tracking
        self._next = 0

    def _measure(self) -> None:
        values = self.probe.measure(self.model)
        if self.tracking is not None:
            values.update(self.tracking.track(self.model))
        for name, value in values.items():
            self.logger.record(f"gaze/{name}", value)
        if self.csv_path is not None:
            self._append(values)
        self._next = self.num_timesteps + self.every

    def _append(self, values: dict[str, float]) -> None:
        """One CSV row; the columns are the file's own (a resumed run keeps its header), else
        ON_TARGET_COLUMNS and the tracking columns measured."""
        from gaze_rl.segmentation.tracking import POLICY_GAZE_COLUMNS, TRACK_COLUMNS

        assert self.csv_path is not None
        columns: list[str] = []
        if self.csv_path.exists():
            with self.csv_path.open(newline="") as f:
                columns = next(csv.reader(f), [])
        new = not columns
        if new:
            columns = [*ON_TARGET_COLUMNS, *(c for c in (*TRACK_COLUMNS, *POLICY_GAZE_COLUMNS) if c in values)]
        with self.csv_path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(columns)
            writer.writerow([self.num_timesteps, *(f"{values.get(c, float('nan')):.6g}" for c in columns[1:])])

    def _on_training_start(self) -> None:
        self._measure()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._measure()
        return True


class NonFiniteGuard(BaseCallback):
    """After each rollout, checks every network parameter for NaN / Inf and stops training with
    the name of the first bad parameter (the last checkpoint before it is intact)."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        for name, param in self.model.policy.named_parameters():
            if not torch.isfinite(param).all():
                raise FloatingPointError(
                    f"non-finite values in policy parameter {name!r} at step {self.num_timesteps}; "
                    "lower the learning rate, or resume from the last checkpoint with gaze-rl train --resume"
                )


class ProgressReport(BaseCallback):
    """Progress of the whole run, resumed runs included (step N of the total, not 0 of the rest).

    On a terminal: a tqdm bar. Elsewhere (CI, nohup, a notebook's log), where a bar only shows
    up at the end: one line every `every_s` seconds with the step, the recent return and
    success, the speed and the time left."""

    def __init__(self, total: int, curve: CurveLogger, every_s: float = 30.0):
        super().__init__()
        self.total, self.curve, self.every_s = total, curve, every_s
        self._bar: Any = None
        self._last = self._start = 0.0
        self._start_steps = 0

    def _on_training_start(self) -> None:
        self._start = self._last = time.perf_counter()
        self._start_steps = self.num_timesteps
        if sys.stdout.isatty():
            from tqdm import tqdm

            # initial: a resumed run's bar goes on from its step, not from 0
            self._bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step")

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(self.num_timesteps - self._bar.n)
        elif time.perf_counter() - self._last >= self.every_s:
            self._last = time.perf_counter()
            print(self.line(), flush=True)
        return True

    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        speed = (self.num_timesteps - self._start_steps) / max(elapsed, 1e-9)
        left = (self.total - self.num_timesteps) / speed if speed > 0 else float("nan")
        return (f"step {self.num_timesteps}/{self.total} ({100 * self.num_timesteps / self.total:.0f}%)  "
                f"{self.curve.recent_summary()}  {speed:.1f} steps/s  {left / 60:.1f} min left")

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.update(self.num_timesteps - self._bar.n)
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def read_curve(path: Path) -> dict[str, np.ndarray]:
    """A run's curve.csv as float arrays per column (one entry per finished episode)."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def plot_curve(curve_csv: Path, out: Path) -> Path | None:
    """Writes the learning curve (episodic return and success per episode, with a running
    mean) as a PNG; None when no episode has finished."""
    curve = read_curve(curve_csv)
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    window = max(1, len(curve["global_step"]) // 10)
    for ax, metric in zip(axes, ("episodic_return", "success_once")):
        values = curve[metric]
        ax.plot(curve["global_step"], values, ".", alpha=0.3, label="episodes")
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(curve["global_step"][window - 1:], smooth, label=f"mean of {window}")
        ax.set_xlabel("env steps")
        ax.set_title(metric)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
