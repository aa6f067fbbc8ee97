"""Synthetic feature maps where one cell decides the return: a test bench for the gaze's signal.

Used by the tests and by benchmarks/gaze_signal.py to check, without any simulator, that a
contrastive configuration moves the gaze onto the region that decides the return (and that a
control does not). The maps imitate what made the real signal fail (issue 12):

* a few *scenes* (shared backgrounds), so k-NN neighbours are states of the same scene;
* an *episode offset* on every cell, so a state's nearest neighbours are its own episode's;
* a *clock* cell whose content grows with the step index, while a near-constant dense reward
  makes the return-to-go mostly measure time left;
* a *deciding* cell whose content is the episode's outcome (success or not), which alone sets
  how much reward the episode collects above the constant part.

A gaze that learns where to look ends up on the deciding cell; one that learns "early vs
late" ends up on the clock cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gaze_rl.contrastive.returns import episode_labels


@dataclass
class SyntheticStates:
    """States of `num_episodes` episodes, one row per state, episode-major."""

    features: Tensor  # (N, C, h, w) non-negative feature maps
    to_go: Tensor  # (N,) discounted return-to-go
    episode_return: Tensor  # (N,) discounted return of the state's episode
    episodes: Tensor  # (N,) int64 episode id
    steps: Tensor  # (N,) int64 step index
    outcome: Tensor  # (N,) 0/1 outcome of the state's episode
    deciding_cell: tuple[int, int]
    clock_cell: tuple[int, int]


def synthetic_states(
    seed: int,
    num_episodes: int = 256,
    length: int = 25,
    shape: tuple[int, int, int] = (64, 4, 4),
    num_scenes: int = 8,
    deciding_cell: tuple[int, int] = (0, 0),
    clock_cell: tuple[int, int] = (3, 3),
    signal: float = 0.3,
    episode_noise: float = 0.3,
    state_noise: float = 0.1,
    success_bonus: float = 0.2,
    gamma: float = 0.99,
) -> SyntheticStates:
    """Draw the episodes (see the module docstring). Rewards per step: 1 + outcome * success_bonus."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    scenes = np.abs(rng.normal(size=(num_scenes, c, h, w)))
    outcome_pattern, clock_pattern = np.abs(rng.normal(size=(2, c)))
    features, labels, outcomes = [], [], []
    for episode in range(num_episodes):
        outcome = int(rng.integers(2))
        base = scenes[rng.integers(num_scenes)] + episode_noise * rng.normal(size=(c, h, w))
        maps = np.repeat(base[None], length, axis=0) + state_noise * rng.normal(size=(length, c, h, w))
        maps[:, :, deciding_cell[0], deciding_cell[1]] += signal * outcome * outcome_pattern
        time = np.arange(length) / (length - 1)
        maps[:, :, clock_cell[0], clock_cell[1]] += signal * time[:, None] * clock_pattern
        features.append(np.maximum(maps, 0.0))  # post-ReLU, as a CNN's last map
        labels.append(episode_labels(np.full(length, 1.0 + outcome * success_bonus), gamma, episode))
        outcomes.append(np.full(length, outcome))

    def cat(name: str) -> Tensor:
        return torch.as_tensor(np.concatenate([getattr(lab, name) for lab in labels]))

    return SyntheticStates(
        features=torch.as_tensor(np.concatenate(features), dtype=torch.float32),
        to_go=cat("to_go"), episode_return=cat("episode_return"), episodes=cat("episode"), steps=cat("step"),
        outcome=torch.as_tensor(np.concatenate(outcomes)), deciding_cell=deciding_cell, clock_cell=clock_cell,
    )


@torch.no_grad()
def cell_mass(attention: torch.nn.Module, features: Tensor, cell: tuple[int, int]) -> float:
    """Mean share of the attention map's mass on one cell over a batch of feature maps."""
    weights = attention(features).weights
    share = weights[:, cell[0], cell[1]] / weights.flatten(1).sum(dim=1)
    return float(share.mean())
