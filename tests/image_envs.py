"""Small synthetic image envs of the kinds an SB3 user brings (Box images channel-first or
channel-last, grayscale, non-square, floats; Dicts with any image key), with rewards that
depend on the image so that returns differ and the contrastive loss has triplets to learn from."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ImageEnv(gym.Env):
    """Random frames; reward = brightness of the frame's left half (centred), 8-step episodes.

    :param shape: image shape as the env emits it.
    :param channel_first: where the channels are in `shape` (decides the reward's half).
    :param dtype: uint8 images in [0, 255], or float32 in [0, 1].
    :param dict_key: wrap the image as {dict_key: image, "vec": float32 (3,)}.
    """

    def __init__(self, shape: tuple[int, int, int] = (48, 64, 3), channel_first: bool = False,
                 dtype: type = np.uint8, dict_key: str | None = None, episode_length: int = 8):
        high = 255 if dtype == np.uint8 else 1.0
        image = spaces.Box(0, high, shape, dtype)
        self.channel_first, self.dict_key, self.episode_length = channel_first, dict_key, episode_length
        self.observation_space = image if dict_key is None else spaces.Dict(
            {dict_key: image, "vec": spaces.Box(-1, 1, (3,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self._image = image
        self._t = 0

    def _obs(self):
        self._frame = self._image.sample()
        if self.dict_key is None:
            return self._frame
        return {self.dict_key: self._frame, "vec": self.np_random.uniform(-1, 1, 3).astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._image.seed(int(self.np_random.integers(2**31)))
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        width = self._frame.shape[-1] if self.channel_first else self._frame.shape[-2]
        left = self._frame[..., : width // 2] if self.channel_first else self._frame[:, : width // 2]
        reward = float(left.mean()) / float(self._image.high.max()) - 0.5
        self._t += 1
        return self._obs(), reward, False, self._t >= self.episode_length, {}
