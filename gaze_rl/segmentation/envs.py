"""The RL env with segmentation on the side: what demonstrations are recorded in and what
pretraining evaluates (and `gaze-rl eval --attention-on-target` runs) in.

`make_segmented_env` builds the CPU RL env with `gaze_rl.envs.single.make_single_env`, except
that ManiSkill renders `obs_mode="rgb+segmentation"`: a `SegmentationTap` below
the flattening wrapper keeps each frame's per-camera segmentation, camera matrices and actor
positions, then the observation goes on exactly as in RL (`{"rgb": uint8 (H, W, 3 * cameras),
"state": float32}`). The policy never sees the segmentation; the tap is read with
`env.get_wrapper_attr("frame")` (or `VecEnv.get_attr("frame")`) and always describes the latest
observation the env returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from gaze_rl.envs.single import make_single_env
from gaze_rl.envs.task_objects import to_numpy


@dataclass
class Frame:
    """What the camera saw besides the pixels, for one observation.

    :param segmentation: camera name -> (H, W) int16 per-pixel segmentation ids.
    :param intrinsic: camera name -> (3, 3) OpenCV intrinsic matrix.
    :param extrinsic: camera name -> (3, 4) OpenCV extrinsic (world -> camera) matrix.
    :param actor_positions: actor name -> (3,) world position of every actor in the scene
        (hidden ones included, e.g. PickCube's goal_site).
    """

    segmentation: dict[str, np.ndarray]
    intrinsic: dict[str, np.ndarray]
    extrinsic: dict[str, np.ndarray]
    actor_positions: dict[str, np.ndarray]


class SegmentationTap(gym.ObservationWrapper):
    """Keeps the segmentation, camera matrices and actor positions of each raw ManiSkill
    observation in `self.frame` and passes the observation on unchanged."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.frame: Frame | None = None

    def observation(self, observation: dict) -> dict:
        sensors, params = observation["sensor_data"], observation["sensor_param"]
        missing = [name for name, data in sensors.items() if "segmentation" not in data]
        if missing:
            raise ValueError(f"cameras {missing} render no segmentation; build the env with "
                             "obs_mode='rgb+segmentation'")
        scene = self.env.unwrapped.scene
        self.frame = Frame(
            segmentation={name: to_numpy(data["segmentation"])[0, ..., 0].copy() for name, data in sensors.items()},
            intrinsic={name: to_numpy(p["intrinsic_cv"])[0].copy() for name, p in params.items()},
            extrinsic={name: to_numpy(p["extrinsic_cv"])[0].copy() for name, p in params.items()},
            actor_positions={name: to_numpy(actor.pose.p)[0].copy() for name, actor in scene.actors.items()},
        )
        return observation


def segmentation_names(env: gym.Env) -> dict[int, str]:
    """Segmentation id -> actor or link name of a ManiSkill env."""
    return {int(i): obj.name for i, obj in env.unwrapped.segmentation_id_map.items()}


def make_segmented_env(env_id: str, **options: Any) -> gym.Env:
    """One CPU ManiSkill env whose observations match gaze_rl's RL env, with a SegmentationTap.

    The RL env's own builder (gaze_rl.envs.single.make_single_env, whose keyword `options` it
    takes: `image_size` and `control_mode`, then `include_state`, `ignore_terminations`,
    `reward_scale`, `monitor`, `max_episode_steps`, `variant`, ...) over a raw env rendering
    segmentation too.
    """
    return make_single_env(env_id, segmentation_tap=SegmentationTap, **options)
