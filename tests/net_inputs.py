"""Shared helpers of the network tests: a synthetic observation space and batches for it."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from gaze_rl.nets.extractor import GazeExtractor


def dict_space(size: int = 64) -> spaces.Dict:
    return spaces.Dict({"rgb": spaces.Box(0, 255, (3, size, size), np.uint8),
                        "state": spaces.Box(-np.inf, np.inf, (5,), np.float32)})


def batch(space: spaces.Dict, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = {"rgb": torch.randint(0, 256, (n, *space["rgb"].shape), generator=g, dtype=torch.uint8),
           "state": torch.randn(n, 5, generator=g)}
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
