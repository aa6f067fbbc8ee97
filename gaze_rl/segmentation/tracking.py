"""Gaze tracking: how well the gaze mean follows the task's target object across frames.

Attention-on-target says how much attention mass lies on the targets; it cannot tell a gaze
that follows the cube from a fixed vignette that happens to overlap it. Tracking regresses the
gaze mean mu on the target's image position over a set of frames where the target moves
(gaze_rl.segmentation.on_target.collect_probe_set with `scenes`), per axis, in the feature
grid's [-1, 1] coordinates (gaze_rl.nets.attention):

* slope: d mu / d target (least squares). 1 = the gaze moves with the target; 0 = it does not
  move with it (a fixed gaze has slope 0 whatever its R^2).
* R^2: the share of the gaze's movement the target's position explains (squared correlation).
* distance: mean |mu - target| in cells of the feature grid (one cell = 2 / side units), and the
  same for the centred gaze (mu = 0): the reference a fixed central vignette scores.

A gaze mixture (K > 1) is summarised by its mixture-weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Names of the tracking statistics (TensorBoard gaze/<name>, on_target.csv columns).
TRACK_COLUMNS = ("track_slope_x", "track_slope_y", "track_r2_x", "track_r2_y", "track_dist_cells",
                 "track_dist_cells_centred")
# Statistics of the policy's gaze on the probe frames (TensorBoard gaze/<name>, on_target.csv columns).
POLICY_GAZE_COLUMNS = ("policy_mu_x_std", "policy_mu_y_std", "policy_sigma_mean")
# Variance (grid units^2) below which a coordinate counts as constant over the frames.
_STILL = 1e-12


def _grid_shape(grid: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)):
        return int(grid), int(grid)
    height, width = (int(g) for g in grid)
    return height, width


def tracking_stats(mu: np.ndarray, target: np.ndarray, grid: int | Sequence[int]) -> dict[str, float]:
    """Tracking statistics of gaze means `mu` (N, 2) against target positions `target` (N, 2),
    both (x, y) in grid units [-1, 1], on a feature grid of side `grid` (or (height, width)).

    Per axis, closed-form least squares mu = slope * target + intercept, and R^2 (the squared
    correlation). Conventions where the regression is degenerate: a gaze constant on an axis has
    slope 0 and R^2 0 there (the target explains none of a movement that does not happen); a
    target constant on an axis gives slope and R^2 NaN (the frames cannot measure tracking).
    Distances are in cells (x scaled by width / 2, y by height / 2). Frames whose target or
    mu is not finite (a target the camera lost) are left out; none left: every value NaN.
    """
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    if mu.shape != target.shape:
        raise ValueError(f"mu {mu.shape} and target {target.shape} must both be (N, 2)")
    keep = np.isfinite(mu).all(axis=1) & np.isfinite(target).all(axis=1)
    mu, target = mu[keep], target[keep]
    if not len(mu):
        return dict.fromkeys(TRACK_COLUMNS, float("nan"))
    height, width = _grid_shape(grid)
    out: dict[str, float] = {}
    for axis, name in enumerate("xy"):
        t = target[:, axis] - target[:, axis].mean()
        m = mu[:, axis] - mu[:, axis].mean()
        var_t, var_m, cov = float(t @ t) / len(t), float(m @ m) / len(m), float(t @ m) / len(t)
        if var_t <= _STILL:
            slope = r2 = float("nan")
        elif var_m <= _STILL:
            slope = r2 = 0.0
        else:
            slope, r2 = cov / var_t, min(1.0, cov * cov / (var_t * var_m))
        out[f"track_slope_{name}"], out[f"track_r2_{name}"] = slope, r2
    cells = np.array([width / 2.0, height / 2.0])
    out["track_dist_cells"] = float(np.linalg.norm((mu - target) * cells, axis=1).mean())
    out["track_dist_cells_centred"] = float(np.linalg.norm(target * cells, axis=1).mean())
    return {name: out[name] for name in TRACK_COLUMNS}


def gaze_mean(mu: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Mixture-weighted mean (B, 2) of the gaze means `mu` (B, K, 2) with weights `mix` (B, K)."""
    mu, mix = np.asarray(mu, dtype=np.float64), np.asarray(mix, dtype=np.float64)
    return (mix[..., None] * mu).sum(axis=1) / mix.sum(axis=1, keepdims=True)


def policy_gaze_stats(mean_mu: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Spread of the gaze mean over frames (std of the (B, 2) mixture means per axis) and the
    mean sigma (over frames, components and axes of (B, K, 2))."""
    mean_mu = np.asarray(mean_mu, dtype=np.float64)
    return {"policy_mu_x_std": float(mean_mu[:, 0].std()), "policy_mu_y_std": float(mean_mu[:, 1].std()),
            "policy_sigma_mean": float(np.mean(sigma))}
