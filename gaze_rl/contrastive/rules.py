"""The mining rules: how the labels of an anchor's neighbours make positives and negatives.

A new rule is one function here plus one MINING_RULES entry; the CLI choices
(`--contrastive.rule`) and the config's checks read the table. Torch-free at import (the
functions only compare tensors), so that the CLI can list the rules without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

# A mining rule turns the labels of each anchor's neighbours into (positive, negative) masks.
# Arguments: neighbour labels (Q, k), anchor labels (Q, 1), the class split (None for rules
# that need none). A new rule is one function plus one MINING_RULES entry.
RuleFn = Callable[["Tensor", "Tensor", "float | None"], tuple["Tensor", "Tensor"]]


def _threshold_rule(neighbor: Tensor, anchor: Tensor, split: float | None) -> tuple[Tensor, Tensor]:
    # Paper's reading (per the public reviews): high-return positive, low-return negative,
    # whatever the anchor's own class.
    return neighbor > split, neighbor <= split


def _class_rule(neighbor: Tensor, anchor: Tensor, split: float | None) -> tuple[Tensor, Tensor]:
    # Class-consistent: pulled towards its own side of the split, pushed from the other.
    same = (neighbor > split) == (anchor > split)
    return same, ~same


def _relative_rule(neighbor: Tensor, anchor: Tensor, split: float | None) -> tuple[Tensor, Tensor]:
    # Third-party port: higher return than the anchor's = positive, lower = negative.
    return neighbor > anchor, neighbor < anchor


@dataclass(frozen=True)
class MiningRule:
    fn: RuleFn
    uses_split: bool
    help: str


MINING_RULES: dict[str, MiningRule] = {
    "class": MiningRule(_class_rule, True, "positive: nearest neighbour on the anchor's side of the split; "
                                           "negative: nearest on the other side"),
    "threshold": MiningRule(_threshold_rule, True, "the paper's reading: positive above the split, negative at or "
                                                   "below it, whatever the anchor's return"),
    "relative": MiningRule(_relative_rule, False, "third-party port: positive = higher return than the anchor's, "
                                                  "negative = lower"),
}
TRIPLET_RULES = tuple(MINING_RULES)
