"""The return labels mining can split on: buffer columns -> one number per stored state.

A new label is one function here plus one RETURN_LABELS entry; the CLI choices
(`--contrastive.label`) and the config's checks read the table. Torch is imported inside the
functions, so that the CLI can list the labels without loading it.

The discounted labels (to-go, episode, detrended) are computed with the contrastive config's
`return_discount` (None = the algorithm's gamma) when states enter the buffer
(gaze_rl.contrastive.returns); `success` is not discounted. Here too: the label controls of
method gaze-shuffled (:func:`shuffle_labels`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Generator, Tensor

    from gaze_rl.contrastive.buffer import FeatureBuffer

# A label turns the buffer's stored columns into the (N,) numbers mining splits on.
LabelFn = Callable[["FeatureBuffer"], "Tensor"]


def _to_go(buffer: FeatureBuffer) -> Tensor:
    return buffer.returns


def _episode(buffer: FeatureBuffer) -> Tensor:
    return buffer.episode_returns


def _detrended(buffer: FeatureBuffer) -> Tensor:
    import torch

    # G_t minus the mean G of the buffer's finite states at the same step index.
    to_go, steps = buffer.returns, buffer.steps
    finite = torch.isfinite(to_go)
    sums = torch.zeros(int(steps.max()) + 1, device=to_go.device).index_add_(0, steps, torch.where(finite, to_go, 0.0))
    counts = torch.zeros_like(sums).index_add_(0, steps, finite.float())
    return to_go - sums[steps] / counts[steps].clamp_min(1.0)


def _success(buffer: FeatureBuffer) -> Tensor:
    # 1 / 0 for every state of an episode that succeeded / failed (ManiSkill's success_once);
    # NaN while the episode runs or when the env reports no success (mining skips NaN).
    return buffer.successes


@dataclass(frozen=True)
class ReturnLabel:
    fn: LabelFn
    help: str


RETURN_LABELS: dict[str, ReturnLabel] = {
    "to-go": ReturnLabel(_to_go, "discounted return-to-go G_t"),
    "episode": ReturnLabel(_episode, "discounted return of the whole episode, the same for all its states"),
    "detrended": ReturnLabel(_detrended, "G_t minus the buffer's mean G at the same step index"),
    "success": ReturnLabel(_success, "the episode's success flag (1 / 0), the same for all its states; NaN until "
                                     "the episode ends"),
}
LABEL_NAMES = tuple(RETURN_LABELS)

SHUFFLE_UNITS = ("episode", "state")
"""What the gaze-shuffled control permutes: whole episodes' labels, or single states' labels."""


def shuffle_labels(labels: Tensor, unit: str, generator: Generator, episodes: Tensor | None = None,
                   steps: Tensor | None = None) -> Tensor:
    """The labels of the gaze-shuffled control: `labels` (N,) permuted at random (torch
    `generator`, on the CPU).

    * ``"state"``: a permutation of the N states (every state another state's label).
    * ``"episode"``: a permutation of the buffer's episodes (``episodes`` (N,) ids): every state of
      episode e gets a label of episode pi(e), at the same relative position in time (states
      ordered by ``steps``; the j-th of n_e states takes the round(j (n' - 1) / (n_e - 1))-th of
      pi(e)'s n' states). Labels that are constant over an episode (episode, success) move
      as one value; a per-state label (to-go) keeps its within-episode course. The multiset of
      the episodes' labels is preserved; NaN labels move with their episode.
    """
    import torch

    if unit not in SHUFFLE_UNITS:
        raise ValueError(f"unknown shuffle unit {unit!r}; choose one of {', '.join(SHUFFLE_UNITS)}")
    n = labels.shape[0]
    if unit == "state" or episodes is None:
        return labels[torch.randperm(n, generator=generator).to(labels.device)]
    device = labels.device
    episodes = episodes.to(device)
    steps = torch.zeros_like(episodes) if steps is None else steps.to(device)
    ids, inverse, counts = torch.unique(episodes, return_inverse=True, return_counts=True)
    # states sorted by (episode, step): each episode's states are one contiguous run
    by_step = torch.sort(steps, stable=True).indices
    order = by_step[torch.sort(inverse[by_step], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(inverse)
    position[order] = torch.arange(n, device=device) - starts[inverse[order]]
    source = torch.randperm(len(ids), generator=generator).to(device)[inverse]  # pi(e) of each state
    length, source_length = counts[inverse], counts[source]
    scale = (source_length - 1).double() / (length - 1).clamp_min(1).double()
    picked = torch.round(position.double() * scale).long().clamp(max=source_length - 1)
    return labels[order[starts[source] + picked]]
