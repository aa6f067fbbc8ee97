"""Learning-curve arithmetic: per-seed curves on a common step grid, mean and 95% interval,
steps to a threshold, area under the curve, the final level, the sample-efficiency ratio vs a
baseline, bootstrap intervals over seeds, and the difference of two arms over seeds (bootstrap
interval and exact permutation p)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CURVE_METRICS = ("episodic_return", "success_once", "success_at_end")


def on_grid(curve: dict[str, np.ndarray], metric: str, grid: np.ndarray) -> np.ndarray:
    """Mean of `metric` over the episodes that finished in each grid interval (step_{i-1}, step_i].

    Intervals without an episode carry the previous value (NaN before the first episode).
    """
    steps, values = curve["global_step"], curve[metric]
    out = np.full(len(grid), np.nan)
    lower = -np.inf
    for i, upper in enumerate(grid):
        inside = (steps > lower) & (steps <= upper)
        out[i] = values[inside].mean() if inside.any() else (out[i - 1] if i else np.nan)
        lower = upper
    return out


@dataclass
class Band:
    """Mean curve over seeds with a two-sided 95% t-interval (equal to the mean for one seed)."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def band(per_seed: list[np.ndarray], steps: np.ndarray) -> Band:
    values = np.vstack(per_seed)
    n = len(per_seed)
    with warnings.catch_warnings():  # grid points before any episode ended are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        if n < 2:
            return Band(steps, mean, mean.copy(), mean.copy(), n)
        half = stats.t.ppf(0.975, n - 1) * np.nanstd(values, axis=0, ddof=1) / np.sqrt(n)
    return Band(steps, mean, mean - half, mean + half, n)


def steps_to_reach(steps: np.ndarray, values: np.ndarray, level: float) -> float | None:
    """First step at which the curve reaches `level` (None if it never does)."""
    hit = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= level)
    return float(steps[hit[0]]) if len(hit) else None


def normalised_auc(steps: np.ndarray, values: np.ndarray) -> float:
    """Area under the curve divided by the step range (the curve's mean height)."""
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return float(np.nanmean(values)) if ok.any() else float("nan")
    return float(np.trapz(values[ok], steps[ok]) / (steps[ok][-1] - steps[ok][0]))


def final_level(curves: np.ndarray) -> float:
    """The final level of a curve on the step grid, or of seed-stacked curves (seeds, points): the
    mean over its last 10% of grid points (at least one), NaN points left out."""
    tail = max(1, curves.shape[-1] // 10)
    return float(np.nanmean(curves[..., -tail:]))


SUCCESS_SCORES = ("final_success_once", "success_auc")


def success_scores(steps: np.ndarray, success: np.ndarray) -> dict[str, float]:
    """One seed's success_once curve on the step grid, scored as the bench reports it: the final
    level and the normalised area under the curve (the keys of SUCCESS_SCORES)."""
    return {"final_success_once": final_level(success), "success_auc": normalised_auc(steps, success)}


def efficiency_ratio(steps: np.ndarray, baseline: np.ndarray, method: np.ndarray) -> float | None:
    """Sample-efficiency ratio (the paper's headline metric): steps the baseline needs to reach
    its own final level, divided by the steps the method needs to reach that level.

    None when the method never reaches it; values > 1 mean the method needs fewer samples.
    """
    level = baseline[~np.isnan(baseline)][-1] if (~np.isnan(baseline)).any() else None
    if level is None:
        return None
    base_steps, method_steps = steps_to_reach(steps, baseline, level), steps_to_reach(steps, method, level)
    if base_steps is None or method_steps is None:
        return None
    return base_steps / method_steps


def bootstrap_ci(samples: Sequence[Sequence[np.ndarray]], statistic: Callable[..., float | None],
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of `statistic(*groups)`, each group's seeds resampled
    with replacement (groups independently: e.g. a method's seeds and the baseline's).

    `samples` is one sequence of per-seed arrays per group; `statistic` takes one stacked array
    (seeds, ...) per group. A statistic that is None (e.g. a curve that never reaches a level)
    counts as +inf, so an upper bound of inf says "not reached in some resamples".
    """
    rng = np.random.default_rng(seed)
    stacked = [np.stack(list(group)) for group in samples]
    values = np.empty(resamples)
    with warnings.catch_warnings():  # grid points before any episode ended are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(resamples):
            picks = [group[rng.integers(0, len(group), len(group))] for group in stacked]
            value = statistic(*picks)
            values[i] = np.inf if value is None or np.isnan(value) else value
    # order statistics, no interpolation (an interval end may be inf)
    return float(np.percentile(values, 2.5, method="lower")), float(np.percentile(values, 97.5, method="higher"))


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided permutation p-value of mean(a) - mean(b) over seeds: the share of all ways to
    split the pooled per-seed values into groups of these sizes whose difference is at least as
    large in magnitude (exact; 5 vs 5 seeds give 252 splits, so p >= 1/126 for two-sided)."""
    from itertools import combinations

    pooled = np.asarray([*a, *b], dtype=np.float64)
    n, observed = len(a), abs(float(np.mean(a)) - float(np.mean(b)))
    total = pooled.sum()
    splits = [abs(pooled[list(idx)].sum() / n - (total - pooled[list(idx)].sum()) / (len(pooled) - n))
              for idx in combinations(range(len(pooled)), n)]
    return float(np.mean(np.asarray(splits) >= observed - 1e-12))


def difference_ci(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b), each group's seeds resampled independently."""
    return bootstrap_ci([[np.array(x, dtype=np.float64) for x in a], [np.array(x, dtype=np.float64) for x in b]],
                        lambda x, y: float(x.mean() - y.mean()), resamples, seed)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) of two arms' per-seed values, its 95% bootstrap interval (each arm's seeds
    resampled independently) and its exact two-sided permutation p over seeds."""

    mean: float
    low: float
    high: float
    p: float


def seed_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """The difference of arm a over arm b, the test behind every comparison of two arms."""
    low, high = difference_ci(a, b)
    return Difference(float(np.mean(a)) - float(np.mean(b)), low, high, permutation_p(a, b))
