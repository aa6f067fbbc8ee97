"""Shared helpers of the network tests: a synthetic observation space and batches for it."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from gaze_rl.nets.extractor import GazeExtractor

STATE_DIM = 5


def dict_space(size: int = 64, channels: int = 3, state: bool = True, channel_first: bool = True) -> spaces.Dict:
    """A square uint8 image "rgb" (channel-first unless told) and, unless state=False, a STATE_DIM "state" vector."""
    shape = (channels, size, size) if channel_first else (size, size, channels)
    parts = {"rgb": spaces.Box(0, 255, shape, np.uint8)}
    if state:
        parts["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
    return spaces.Dict(parts)


def batch(space: spaces.Dict, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Preprocessed (float, images in [0, 1]) observations, as SB3 feeds the extractor."""
    g = torch.Generator().manual_seed(seed)
    raw = {"rgb": torch.randint(0, 256, (n, *space["rgb"].shape), generator=g, dtype=torch.uint8)}
    if "state" in space.spaces:
        raw["state"] = torch.randn(n, *space["state"].shape, generator=g)
    return preprocess_obs(raw, space, normalize_images=True)


def head_input(ext: GazeExtractor, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{"x": what the extractor's linear image head receives} for one forward pass."""
    seen: dict[str, torch.Tensor] = {}

    def record(_module, inputs, _output) -> None:  # returns None: the output is left alone
        seen["x"] = inputs[0]

    handle = ext.image_fc.register_forward_hook(record)
    ext(obs)
    handle.remove()
    return seen
