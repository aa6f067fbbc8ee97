"""Image augmentation for the RL update: the reviewers' baseline (DrQ / RAD random shift).

`RandomShift(pad=4)` pads each image by `pad` pixels (edge pixels repeated) and crops it back
at a random offset per image, as DrQ-v2's `RandomShiftsAug`. The features extractor applies it
only in training mode, which SB3 switches on inside `train()` (SAC's obs and next_obs, each
drawn independently) and off while collecting rollouts and in `predict`: the policy acts on the
true frame and learns from shifted ones.

PPO is the exception (Raileanu et al. 2021, DrAC): shifting only inside the update would give
pi_new(a|aug(s)) / pi_old(a|s) as PPO's ratio, so the augmentation alone would move the ratio,
its clipping and the approx-KL early stop. GazePPO therefore shifts each minibatch itself
(`RandomShift.shift`), evaluates the old policy on the same shifted frames, and pauses the
in-forward shift meanwhile (`augmentation_paused`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

AUGMENTS = ("none", "shift")


class RandomShift(nn.Module):
    """Random integer translation by up to `pad` pixels per image (replicate padding).

    `forward` shifts in training mode unless `active` is False (see `augmentation_paused`);
    `shift` always does."""

    def __init__(self, pad: int = 4):
        super().__init__()
        if pad < 1:
            raise ValueError(f"random shift pad must be >= 1 pixel (got {pad})")
        self.pad = pad
        self.active = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return images
        return self.shift(images)

    def shift(self, images: torch.Tensor) -> torch.Tensor:
        """A fresh random shift per image, whatever the mode. Pure pixel copies (the result has
        the input's dtype), so shifting raw [0, 255] frames and then scaling them equals
        scaling them and then shifting."""
        n, _, h, w = images.shape
        padded = F.pad(images.float(), (self.pad,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), device=images.device)
        rows = (torch.arange(h, device=images.device)[None, :] + offsets[:, :1])  # (n, h)
        cols = (torch.arange(w, device=images.device)[None, :] + offsets[:, 1:])  # (n, w)
        batch = torch.arange(n, device=images.device)[:, None, None]
        # (n, h, w, c) gathered from the padded (n, c, H, W) image, then back to channel-first
        cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return cropped.permute(0, 3, 1, 2).to(images.dtype)


@contextmanager
def augmentation_paused(module: nn.Module) -> Iterator[None]:
    """Turns off the in-forward shift of every RandomShift inside `module` for the duration
    (the caller shifts the observations itself); restores each one's setting afterwards."""
    shifts = [m for m in module.modules() if isinstance(m, RandomShift)]
    saved = [m.active for m in shifts]
    for m in shifts:
        m.active = False
    try:
        yield
    finally:
        for m, active in zip(shifts, saved):
            m.active = active


def make_augment(name: str) -> nn.Module:
    """'none' -> identity, 'shift' -> RandomShift(pad=4) (DrQ / RAD)."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augment {name!r}; valid choices: {', '.join(AUGMENTS)}")
    return RandomShift(4) if name == "shift" else nn.Identity()
