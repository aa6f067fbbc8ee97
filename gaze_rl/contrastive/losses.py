"""Losses that train the foveal gaze in Gaze on the Prize (arXiv 2510.08442).

* :func:`triplet_loss`: margin triplet loss on cosine distances of the *attended*
  features of mined triplets, pulling each anchor towards its high-return
  neighbour and away from its low-return one, so the gaze learns to look where
  return-relevant differences are.
* :func:`spread_regularizer`: keeps the gaze's Gaussian spread near a target so
  the contrastive signal cannot be satisfied by collapsing the gaze to a point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_distance(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cosine_similarity`` along the last dimension: ``(..., D), (..., D) -> (...)``.

    Norms are clamped to ``eps``, so a zero vector gives distance 1 and finite gradients.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}; "
            "pass paired rows of equal dimension."
        )
    return 1.0 - (F.normalize(a, dim=-1, eps=eps) * F.normalize(b, dim=-1, eps=eps)).sum(dim=-1)


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.2) -> Tensor:
    """Mean over triplets of ``max(0, d(a, p) - d(a, n) + margin)`` with cosine distance ``d``.

    :param anchor: ``(T, D)`` attended features of the anchors; extra trailing
        dimensions (e.g. ``(T, C, h, w)``) are flattened per triplet.
    :param positive: same shape, features of the high-return neighbours.
    :param negative: same shape, features of the low-return neighbours.
    :param margin: hinge margin, in cosine-distance units (``[0, 2]``).
    :return: scalar loss. With no triplets (``T = 0``) it is a zero that is still
        connected to the inputs' graph, so ``backward()`` works and nothing is NaN.
    """
    _check_triplets(anchor, positive, negative, margin)
    if anchor.shape[0] == 0:
        # The mean of nothing is NaN; a graph-connected zero keeps the training step uniform.
        return (anchor.sum() + positive.sum() + negative.sum()) * 0.0
    return _hinge(anchor, positive, negative, margin).mean()


def triplet_hinge(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.2) -> Tensor:
    """Per-triplet ``max(0, d(a, p) - d(a, n) + margin)`` ``(T,)``, whose mean is :func:`triplet_loss`;
    the share of entries > 0 is the share of *active* triplets (those that still give a gradient)."""
    _check_triplets(anchor, positive, negative, margin)
    return _hinge(anchor, positive, negative, margin)


def _check_triplets(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> None:
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}; pass a non-negative hinge margin.")
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() < 2:
        raise ValueError(
            f"anchor, positive and negative must share one shape (T, D, ...), got {tuple(anchor.shape)}, "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}; index the same features with the triplets."
        )


def _hinge(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    a, p, n = anchor.flatten(1), positive.flatten(1), negative.flatten(1)
    return F.relu(cosine_distance(a, p) - cosine_distance(a, n) + margin)


def spread_regularizer(sigma: Tensor, target: float = 0.45, eps: float = 1e-6) -> Tensor:
    """Log-space spread penalty that prevents the gaze collapsing to a point.

    ``mean over batch (and Gaussians) of sum over axes of (log sigma - log target)^2``.
    Penalising in log space makes shrinking by a factor as costly as growing by
    the same factor, and its gradient grows steeply as ``sigma -> 0``.

    :param sigma: ``(..., 2)`` positive per-axis spreads of the gaze Gaussians.
    :param target: spread the penalty pulls towards, in the units of ``sigma``.
    :param eps: lower clamp on ``sigma`` before the log, guarding against ``log(0)``.
    :return: scalar penalty, zero when every spread equals ``target``.
    """
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}; pass a positive target spread.")
    if sigma.dim() < 1 or sigma.shape[-1] != 2:
        raise ValueError(
            f"sigma must have shape (..., 2), got {tuple(sigma.shape)}; pass one (sigma_x, sigma_y) pair per Gaussian."
        )
    log_ratio = torch.log(sigma.clamp_min(eps)) - math.log(target)
    return log_ratio.square().sum(dim=-1).mean()
