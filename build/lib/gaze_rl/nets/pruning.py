"""Attention-guided pruning of feature-map cells (DeepVision-VLA's Action-Guided Visual Pruning,
for CNN policies).

DeepVision-VLA keeps the top-K visual tokens ranked by shallow-layer attention and drops the
rest. Here a token is a cell of the last feature map: the policy head sees only the K cells
with the highest score, so its input shrinks from C*h*w to K*(C+2). The scores are

- "attention": the policy's own attention map A (the Gaussian gaze or the patch softmax);
- "shallow": the activation energy `sum_c |a_c|` of the first conv layer, average-pooled to the
  last map's grid (what the baseline CNN, which has no attention map, always uses).

Choices of ours, documented:
- Kept cells are ordered by score (slot 0 holds the best cell) and each carries its cell-centre
  coordinates (x, y) in [-1, 1] (attention.feature_grid) after its C values, so the head still
  knows where each kept cell is once the others are gone.
- The kept values are the attended features F * A, so the gaze still gets gradients through
  them; which cells are kept is not differentiable (the selection uses detached scores), and
  dropped cells get no gradient from the head.
- Ties are broken by raster order (lower cell index first), with a stable sort, so the
  selection is deterministic (the centred starting gaze is symmetric and has exact ties).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gaze_rl.nets.attention import feature_grid

PRUNE_SOURCES = ("attention", "shallow")
# Per kept cell the head also sees its (x, y) position.
COORDS_PER_CELL = 2


def check_top_k(k: int, height: int, width: int) -> None:
    """Raises a ValueError unless 1 <= k <= height * width (the feature grid's cells)."""
    cells = height * width
    if not 1 <= k <= cells:
        raise ValueError(
            f"prune_top_k must be between 1 and the number of feature-map cells, {height}x{width} = {cells} "
            f"(got {k}); use a smaller K or larger images (NatureCNN: 4x4 at 64 px, 12x12 at 128 px)"
        )


def check_prune_source(source: str) -> None:
    """Raises a ValueError naming the valid sources unless `source` is one of PRUNE_SOURCES."""
    if source not in PRUNE_SOURCES:
        raise ValueError(f"unknown prune_source {source!r}; valid choices: {', '.join(PRUNE_SOURCES)}")


def pruned_features_dim(channels: int, k: int) -> int:
    """Width of the pruned representation: K cells of C values and 2 coordinates each."""
    return k * (channels + COORDS_PER_CELL)


def select_cells(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k) into the flattened h*w grid of the k highest-scoring cells, best first
    (ties: lower index first)."""
    order = torch.sort(scores.detach().flatten(1), dim=1, descending=True, stable=True).indices
    return order[:, :k]


def prune_cells(features: Tensor, scores: Tensor, k: int) -> Tensor:
    """Keeps the k highest-scoring cells of a feature map, with their positions.

    :param features: (B, C, h, w) attended feature map (F * A).
    :param scores: (B, h, w) cell scores (attention map or shallow energy).
    :param k: cells kept, 1 <= k <= h * w.
    :return: (B, k, C + 2): per kept cell (best first) its C feature values, then its (x, y).
    """
    b, c, h, w = features.shape
    check_top_k(k, h, w)
    index = select_cells(scores, k)
    kept = features.flatten(2).gather(2, index[:, None, :].expand(b, c, k)).transpose(1, 2)
    x, y = feature_grid(h, w, device=features.device, dtype=features.dtype)
    coords = torch.stack([x.flatten(), y.flatten()], dim=1)[index]  # (B, k, 2)
    return torch.cat([kept, coords], dim=2)
