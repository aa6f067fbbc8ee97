"""Image augmentation for the RL update: the reviewers' baseline (DrQ / RAD random shift).

`RandomShift(pad=4)` pads each image by `pad` pixels (edge pixels repeated) and crops it back
at a random offset per image, as DrQ-v2's `RandomShiftsAug`. The features extractor applies it
only in training mode, which SB3 switches on inside `train()` (PPO's minibatches, SAC's
obs and next_obs, each drawn independently) and off while collecting rollouts and in
`predict`: the policy acts on the true frame and learns from shifted ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AUGMENTS = ("none", "shift")


class RandomShift(nn.Module):
    """Random integer translation by up to `pad` pixels per image (replicate padding)."""

    def __init__(self, pad: int = 4):
        super().__init__()
        if pad < 1:
            raise ValueError(f"random shift pad must be >= 1 pixel (got {pad})")
        self.pad = pad

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return images
        n, _, h, w = images.shape
        padded = F.pad(images.float(), (self.pad,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), device=images.device)
        rows = (torch.arange(h, device=images.device)[None, :] + offsets[:, :1])  # (n, h)
        cols = (torch.arange(w, device=images.device)[None, :] + offsets[:, 1:])  # (n, w)
        batch = torch.arange(n, device=images.device)[:, None, None]
        # (n, h, w, c) gathered from the padded (n, c, H, W) image, then back to channel-first
        cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return cropped.permute(0, 3, 1, 2).to(images.dtype)


def make_augment(name: str) -> nn.Module:
    """'none' -> identity, 'shift' -> RandomShift(pad=4) (DrQ / RAD)."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augment {name!r}; valid choices: {', '.join(AUGMENTS)}")
    return RandomShift(4) if name == "shift" else nn.Identity()
