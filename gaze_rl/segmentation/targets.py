"""Which pixels of a ManiSkill frame are the task's: task-relevant actors, their masks, and the
fraction of each feature-grid cell they cover.

Shared by imitation (oracle saliency), evaluation, analysis and RL training (attention-on-target).
An actor the camera does not see (PickCube's goal_site is hidden from cameras; an occluded cube)
is placed at its world position projected through the camera.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gaze_rl.envs.task_objects import project_points, task_targets
from gaze_rl.errors import ConfigError


class ActorResolver:
    """Finds named actors in segmentation frames and camera projections.

    :param segmentation_names: segmentation id -> actor / link name (ManiSkill's segmentation_id_map).
    :param actor_names: names whose world positions are recorded (the scene's actors).
    :param targets: actor names to find; each must be in one of the two.
    """

    def __init__(self, segmentation_names: dict[int, str], actor_names: Sequence[str], targets: Sequence[str]):
        ids: dict[str, list[int]] = {}
        for i, name in segmentation_names.items():
            ids.setdefault(name, []).append(int(i))
        unknown = [t for t in targets if t not in ids and t not in actor_names]
        if unknown:
            known = sorted(set(ids) | set(actor_names))
            raise ConfigError(f"actors {unknown} are not in this task's scene; known names: {', '.join(known)}")
        self.targets = tuple(targets)
        self.ids = {t: np.asarray(ids.get(t, []), dtype=np.int64) for t in targets}
        self.actor_names = set(actor_names)

    def centres(self, segmentation: np.ndarray, positions: dict[str, np.ndarray], intrinsic: np.ndarray,
                extrinsic: np.ndarray) -> list[tuple[str, float, float, bool]]:
        """(name, x, y, visible) per target: the centroid of its visible pixels, else its projected
        world position; targets neither visible nor recorded are left out."""
        out = []
        for name in self.targets:
            rows, cols = np.nonzero(np.isin(segmentation, self.ids[name])) if len(self.ids[name]) else ((), ())
            if len(rows):
                out.append((name, float(np.mean(cols)) + 0.5, float(np.mean(rows)) + 0.5, True))
            elif name in positions:
                x, y = project_points(positions[name], intrinsic, extrinsic)
                if np.isfinite(x) and np.isfinite(y):
                    out.append((name, float(x), float(y), False))
        return out

    def mask(self, segmentation: np.ndarray) -> np.ndarray:
        """(H, W) bool: pixels of any visible target."""
        ids = np.concatenate([v for v in self.ids.values()]) if self.ids else np.zeros(0, np.int64)
        return np.isin(segmentation, ids)


class TaskTargets:
    """The task-relevant pixels of frames of one task.

    :param env_id: task id (for the default actors).
    :param segmentation_names: segmentation id -> name of the env's actors / links.
    :param actor_names: names whose world positions are recorded (the scene's actors).
    :param actors: task-relevant actors; None = `TASK_TARGETS[env_id]`.
    :param radius: radius of the disc drawn around a hidden target's projection, as a
        fraction of the image side.
    :param camera: camera whose frames are used; None = the first.
    """

    def __init__(self, env_id: str, segmentation_names: dict[int, str], actor_names: Sequence[str],
                 actors: Sequence[str] | None = None, radius: float = 0.06, camera: str | None = None):
        self.resolver = ActorResolver(segmentation_names, actor_names, task_targets(env_id, actors))
        self.radius, self.camera = radius, camera

    def mask(self, segmentation: np.ndarray, positions: dict[str, np.ndarray], intrinsic: np.ndarray,
             extrinsic: np.ndarray) -> np.ndarray:
        """(H, W) bool pixels of the task-relevant actors: their segmentation, plus a disc of radius
        `radius` around the projection of each target the camera does not see (hidden goals)."""
        mask = self.resolver.mask(segmentation)
        hidden = [(x, y) for _, x, y, visible in self.resolver.centres(segmentation, positions, intrinsic, extrinsic)
                  if not visible]
        if hidden:
            height, width = segmentation.shape
            radius = self.radius * max(height, width)
            ys = np.arange(height)[:, None] + 0.5
            xs = np.arange(width)[None, :] + 0.5
            for x, y in hidden:
                mask |= (xs - x) ** 2 + (ys - y) ** 2 <= radius * radius
        return mask

    def frame_mask(self, frame) -> np.ndarray:
        """(H, W) bool target pixels of a SegmentationTap frame (gaze_rl.segmentation.envs.Frame)."""
        camera = self.camera or next(iter(frame.segmentation))
        return self.mask(frame.segmentation[camera], frame.actor_positions, frame.intrinsic[camera],
                         frame.extrinsic[camera])


def _overlap(n_pixels: int, n_cells: int) -> np.ndarray:
    """(n_cells, n_pixels): the length of pixel p inside cell i, cells splitting [0, n_pixels)
    into equal parts (the feature grid's cell i covers the image region it sits on)."""
    edges = np.linspace(0.0, n_pixels, n_cells + 1)
    lo = np.maximum(edges[:-1, None], np.arange(n_pixels)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_pixels)[None, :] + 1.0)
    return np.clip(hi - lo, 0.0, None)


def sum_pool_to_grid(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Exact area sum-pooling of (..., H, W) maps into a (..., height, width) grid; pixels split
    between cells count in proportion (works when H is not a multiple of height). The networks'
    pooling of feature maps, an adaptive average, is gaze_rl.nets.levels.mean_pool_to_grid."""
    maps = np.asarray(maps, dtype=np.float64)
    rows = _overlap(maps.shape[-2], height)
    cols = _overlap(maps.shape[-1], width)
    return np.einsum("ip,...pq,jq->...ij", rows, maps, cols)


def coverage_grid(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fraction of each feature-grid cell covered by a (..., H, W) boolean mask."""
    masks = np.asarray(masks, dtype=np.float64)
    cell_area = masks.shape[-2] * masks.shape[-1] / (height * width)
    return (sum_pool_to_grid(masks, height, width) / cell_area).astype(np.float32)
