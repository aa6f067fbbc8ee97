"""The task's own objects: which actors they are, where the camera sees them, and how large.

Shared by the oracle gaze (`GazeTargetObservation` puts each object's image position and size
into the observations, key `gaze_target`), attention-on-target and imitation's saliency
(gaze_rl.segmentation), so every part of gaze_rl agrees on what "the target" is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from gaze_rl.errors import ConfigError

# Task-relevant actors per task (segmentation / scene actor names). PickCube's goal_site is
# hidden from cameras, so it is always projected.
TASK_TARGETS: dict[str, tuple[str, ...]] = {
    "PushCube-v1": ("cube", "goal_region"),
    "PickCube-v1": ("cube", "goal_site"),
    "StackCube-v1": ("cubeA", "cubeB"),
    "PullCube-v1": ("cube", "goal_region"),
    "PushT-v1": ("Tee", "goal_Tee"),
    "PokeCube-v1": ("cube", "peg", "goal_region"),
}
# The observation key of the oracle gaze's targets; never an input of the state MLP.
GAZE_TARGET_KEY = "gaze_target"
# Per target: (mu_x, mu_y, sigma_x, sigma_y) in the feature grid's [-1, 1] image coordinates.
GAZE_TARGET_FIELDS = 4


def task_targets(env_id: str, actors: Sequence[str] | None = None) -> tuple[str, ...]:
    """The user's actors if given, else the task's defaults; raises when neither exists."""
    if actors:
        return tuple(actors)
    if env_id not in TASK_TARGETS:
        raise ConfigError(
            f"no default task-relevant actors for {env_id} (defaults exist for {', '.join(TASK_TARGETS)}); "
            "name them with --saliency.actors NAME [NAME ...] (segmentation or scene actor names)"
        )
    return TASK_TARGETS[env_id]


def project_points(points: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> np.ndarray:
    """Pixel coordinates (x = column, y = row; pixel centres at +0.5) of world points.

    :param points: (..., 3) world positions.
    :param intrinsic: (3, 3) OpenCV intrinsic matrix; :param extrinsic: (3, 4) world -> camera.
    :return: (..., 2) pixel coordinates; points behind the camera give NaN.
    """
    points = np.asarray(points, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones((*points.shape[:-1], 1))], axis=-1)
    camera = homogeneous @ np.asarray(extrinsic, dtype=np.float64).T
    pixels = camera @ np.asarray(intrinsic, dtype=np.float64).T
    depth = pixels[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.where(depth > 0, pixels[..., :2] / depth, np.nan)
    return uv


def _shape_scale(shape: Any) -> np.ndarray:
    """Per-axis scale of a render shape's part vertices: SAPIEN stores primitives as unit meshes
    (box +-1, cylinder and capsule along x with radius 1) sized by their attributes."""
    if hasattr(shape, "half_size"):  # box
        return np.asarray(shape.half_size, dtype=np.float64)
    if hasattr(shape, "half_length"):  # cylinder, capsule
        length = shape.half_length + (shape.radius if type(shape).__name__.endswith("Capsule") else 0.0)
        return np.array([length, shape.radius, shape.radius], dtype=np.float64)
    if hasattr(shape, "radius"):  # sphere
        return np.full(3, shape.radius, dtype=np.float64)
    return np.asarray(shape.get_scale(), dtype=np.float64) if hasattr(shape, "get_scale") else np.ones(3)


def visual_radius(actor: Any) -> float:
    """Radius (m) of the sphere around the actor's origin that holds all its visual geometry."""
    import sapien

    radius = 0.0
    for entity in actor._objs[:1]:
        body = entity.find_component_by_type(sapien.render.RenderBodyComponent)
        for shape in [] if body is None else body.render_shapes:
            scale = _shape_scale(shape)
            local = shape.get_local_pose().to_transformation_matrix()
            for part in shape.get_parts():
                vertices = np.asarray(part.get_vertices(), dtype=np.float64) * scale
                if len(vertices):
                    placed = vertices @ local[:3, :3].T + local[:3, 3]
                    radius = max(radius, float(np.linalg.norm(placed, axis=1).max()))
    return radius


def to_numpy(x: Any) -> np.ndarray:
    """A ManiSkill value (torch tensor or array-like) as a numpy array."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


class GazeTargetObservation(gym.ObservationWrapper):
    """Adds `obs["gaze_target"]`, (K, 4) float32: for each of the task's K objects, the image
    position of its centre and its projected visual radius, in the feature grid's coordinates
    ([-1, 1] edge to edge, x along columns, y down the rows; gaze_rl.nets.attention).

    What the oracle gaze (method `gaze-oracle`) looks at. Positions are projected through the
    first camera from the simulator's poses every step (no segmentation render, so it costs
    ~nothing); the radius is that of the sphere holding the object's visual meshes, so a
    Gaussian with sigma = radius covers the object. An object behind the camera gets the image
    centre and sigma 1 (a wide, harmless map). Wraps one CPU env's flattened numpy observations
    (after ManiSkill's CPUGymWrapper).
    """

    def __init__(self, env: gym.Env, env_id: str, actors: Sequence[str] | None = None):
        super().__init__(env)
        self.targets = task_targets(env_id, actors)
        scene_actors = env.unwrapped.scene.actors
        unknown = [t for t in self.targets if t not in scene_actors]
        if unknown:
            raise ConfigError(f"gaze targets {unknown} are not actors of {env_id}; actors: {', '.join(sorted(scene_actors))}")
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise ValueError("GazeTargetObservation wraps Dict observations (ManiSkill's flattened rgb + state)")
        space = gym.spaces.Box(-np.inf, np.inf, (len(self.targets), GAZE_TARGET_FIELDS), np.float32)
        self.observation_space = gym.spaces.Dict({**env.observation_space.spaces, GAZE_TARGET_KEY: space})
        self._radii: dict[str, float] = {}

    def reset(self, **kwargs: Any):
        self._radii = {}  # a reconfigure may rebuild the objects
        return super().reset(**kwargs)

    def _radius(self, name: str) -> float:
        if name not in self._radii:
            self._radii[name] = visual_radius(self.env.unwrapped.scene.actors[name])
        return self._radii[name]

    def targets_now(self) -> np.ndarray:
        """(K, 4) gaze targets of the scene's current state."""
        base = self.env.unwrapped
        camera = next(iter(base.scene.sensors.values()))
        params = camera.get_params()
        intrinsic = to_numpy(params["intrinsic_cv"])[0]
        extrinsic = to_numpy(params["extrinsic_cv"])[0]
        width, height = camera.config.width, camera.config.height
        out = np.zeros((len(self.targets), GAZE_TARGET_FIELDS), dtype=np.float32)
        for i, name in enumerate(self.targets):
            centre = to_numpy(base.scene.actors[name].pose.p)[0]
            x, y = project_points(centre, intrinsic, extrinsic)
            depth = float((extrinsic @ np.append(centre, 1.0))[2])
            if not (np.isfinite(x) and np.isfinite(y)) or depth <= 0:
                out[i] = (0.0, 0.0, 1.0, 1.0)
                continue
            radius = self._radius(name)
            out[i] = (2.0 * x / width - 1.0, 2.0 * y / height - 1.0,
                      2.0 * intrinsic[0, 0] * radius / depth / width, 2.0 * intrinsic[1, 1] * radius / depth / height)
        return out

    def observation(self, observation: dict) -> dict:
        return {**observation, GAZE_TARGET_KEY: self.targets_now()}
