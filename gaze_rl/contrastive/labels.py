"""The return labels mining can split on: buffer columns -> one number per stored state.

A new label is one function here plus one RETURN_LABELS entry; the CLI choices
(`--contrastive.label`) and the config's checks read the table. Torch is imported inside the
functions, so that the CLI can list the labels without loading it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

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


@dataclass(frozen=True)
class ReturnLabel:
    fn: LabelFn
    help: str


RETURN_LABELS: dict[str, ReturnLabel] = {
    "to-go": ReturnLabel(_to_go, "discounted return-to-go G_t"),
    "episode": ReturnLabel(_episode, "discounted return of the whole episode, the same for all its states"),
    "detrended": ReturnLabel(_detrended, "G_t minus the buffer's mean G at the same step index"),
}
LABEL_NAMES = tuple(RETURN_LABELS)
