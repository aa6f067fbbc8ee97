"""Where a demonstrator looked: saliency maps per frame, behind one interface.

Sources (`SaliencySource.maps(index, demo) -> (T+1, H, W)` in [0, 1], one map per observation):
- `OracleSaliency`: the simulation plays the part of AutoFocus-IL's VLM + detector. The
  task-relevant actors (per-task defaults in `TASK_TARGETS`, or the user's list) are found in the
  segmentation; each becomes a Gaussian blob at its centre (AutoFocus-IL's boxes -> Gaussians) or
  its blurred mask. An actor the camera does not see (PickCube's goal_site is hidden from
  cameras; an occluded cube) is placed at its world position projected through the camera.
- `HeatmapSaliency`: the user's own per-frame heatmaps (a gaze estimator, a VLM pipeline) from an
  .npz or .h5 file with one (frames, H, W) array per demonstration, named `traj_<i>`.

Then, for every source:
- `temporal_aggregate`: `S_t = sum_k alpha^k S_{t-k}` over the episode's past frames
  (AutoFocus-IL: alpha = 0.7), min-max normalised per frame;
- `grid_distribution`: the map summed into the cells of the encoder's feature grid (exact area
  pooling), normalised to sum 1 and smoothed with epsilon / N (Gaze-VLM), the target g of the
  gaze-KL objective; the saliency-MSE objective uses the image-resolution map itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import h5py
import numpy as np

from gaze_rl.errors import ConfigError
from gaze_rl.segmentation.targets import TaskTargets, sum_pool_to_grid

SHAPES = ("gaussian", "mask")


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-frame min-max normalisation of (..., H, W) maps to [0, 1] (flat maps become 0)."""
    maps = np.asarray(maps, dtype=np.float32)
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def gaussian_blobs(centres: Sequence[tuple[float, float]], height: int, width: int, sigma: float) -> np.ndarray:
    """Sum of isotropic Gaussians exp(-d^2 / 2 sigma^2) at pixel coordinates (x, y), evaluated at
    pixel centres (pixel (r, c) sits at (c + 0.5, r + 0.5)); (H, W) float32, not normalised."""
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    out = np.zeros((height, width), np.float32)
    for x, y in centres:
        out += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2.0 * sigma * sigma))
    return out


class SaliencySource(Protocol):
    """One saliency map per observation of a demonstration."""

    def maps(self, index: int, demo) -> np.ndarray:
        """(T+1, H, W) float32 in [0, 1] for demonstration `index` of the demo set."""
        ...


class OracleSaliency:
    """Saliency from the simulator: Gaussian blobs at (or blurred masks of) the task's actors.

    :param env_id: task id (for the default actors).
    :param segmentation_names: segmentation id -> name of the demonstrations' env.
    :param actor_names: names of the recorded actor positions.
    :param actors: task-relevant actors; None = `TASK_TARGETS[env_id]`.
    :param shape: "gaussian" (a blob at each centre, AutoFocus-IL) or "mask" (the blurred
        segmentation mask; hidden actors still get a blob at their projection).
    :param sigma: blob sigma / mask blur as a fraction of the image side (AutoFocus-IL places
        Gaussians of sigma 20-30 px; 0.06 is ~4 px at 64 px).
    :param camera: camera whose frames are used; None = the first.
    """

    def __init__(self, env_id: str, segmentation_names: dict[int, str], actor_names: Sequence[str],
                 actors: Sequence[str] | None = None, shape: str = "gaussian", sigma: float = 0.06,
                 camera: str | None = None):
        if shape not in SHAPES:
            raise ConfigError(f"unknown saliency shape {shape!r}; valid choices: {', '.join(SHAPES)}")
        if sigma <= 0:
            raise ConfigError(f"saliency sigma must be > 0 (got {sigma}); it is a fraction of the image side")
        self.targets = TaskTargets(env_id, segmentation_names, actor_names, actors, radius=sigma, camera=camera)
        self.resolver = self.targets.resolver
        self.shape, self.sigma, self.camera = shape, sigma, camera

    def _camera(self, demo) -> str:
        if self.camera is None:
            return next(iter(demo.segmentation))
        if self.camera not in demo.segmentation:
            raise ConfigError(f"camera {self.camera!r} not recorded; cameras: {', '.join(demo.segmentation)}")
        return self.camera

    def frame(self, segmentation: np.ndarray, positions: dict[str, np.ndarray], intrinsic: np.ndarray,
              extrinsic: np.ndarray) -> np.ndarray:
        """(H, W) min-max normalised saliency of one frame."""
        height, width = segmentation.shape
        sigma_px = self.sigma * max(height, width)
        centres = self.resolver.centres(segmentation, positions, intrinsic, extrinsic)
        if self.shape == "gaussian":
            out = gaussian_blobs([(x, y) for _, x, y, _ in centres], height, width, sigma_px)
        else:
            mask = self.resolver.mask(segmentation).astype(np.float32)
            blurred = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_CONSTANT)
            out = blurred + gaussian_blobs([(x, y) for _, x, y, visible in centres if not visible], height, width, sigma_px)
        return minmax(out)

    def maps(self, index: int, demo) -> np.ndarray:
        camera = self._camera(demo)
        return np.stack([
            self.frame(demo.segmentation[camera][t], {k: v[t] for k, v in demo.actor_positions.items()},
                       demo.intrinsic[camera][t], demo.extrinsic[camera][t])
            for t in range(len(demo.segmentation[camera]))
        ])

    def target_mask(self, segmentation: np.ndarray, positions: dict[str, np.ndarray], intrinsic: np.ndarray,
                    extrinsic: np.ndarray) -> np.ndarray:
        """(H, W) bool pixels of the task-relevant actors (see TaskTargets.mask)."""
        return self.targets.mask(segmentation, positions, intrinsic, extrinsic)

    def demo_target_masks(self, demo) -> np.ndarray:
        """(T+1, H, W) bool target masks of a demonstration."""
        camera = self._camera(demo)
        return np.stack([
            self.target_mask(demo.segmentation[camera][t], {k: v[t] for k, v in demo.actor_positions.items()},
                             demo.intrinsic[camera][t], demo.extrinsic[camera][t])
            for t in range(len(demo.segmentation[camera]))
        ])


class HeatmapSaliency:
    """User-supplied heatmaps, one (frames, H, W) array per demonstration, named `traj_<i>` after
    the demonstration's group in demos.h5 (i = 0, 1, ...), in an .npz or .h5 file (an h5 group
    `traj_<i>` with a dataset `heatmap` also works). frames = T + 1 (one per observation) or T
    (one per action; the final observation then reuses the last map). Values >= 0, any scale
    (each frame is min-max normalised).
    """

    def __init__(self, path: Path, demo_set):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"heatmap file {path} does not exist")
        self.path = path
        arrays: dict[str, np.ndarray] = {}
        if path.suffix == ".npz":
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        elif path.suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as f:
                for key in f:
                    item = f[key]
                    if isinstance(item, h5py.Group):
                        if "heatmap" in item:
                            arrays[key] = item["heatmap"][:]
                    else:
                        arrays[key] = item[:]
        else:
            raise ConfigError(f"heatmap file {path} must be .npz or .h5 (one (frames, H, W) array per demonstration)")
        height = width = demo_set.image_size
        self.heatmaps = []
        for i, demo in enumerate(demo_set.demos):
            key = f"traj_{i}"
            if key not in arrays:
                raise ConfigError(f"{path} has no heatmaps for demonstration {i} (key {key!r}; found "
                                 f"{', '.join(sorted(arrays)) or 'nothing'}); write one (frames, H, W) array per "
                                 "demonstration, named traj_<i> after demos.h5")
            maps = np.asarray(arrays[key], dtype=np.float32)
            steps = len(demo)
            if maps.ndim != 3 or maps.shape[1:] != (height, width):
                raise ConfigError(f"{path}: {key} has shape {maps.shape}, expected (frames, {height}, {width}); "
                                 f"resize heatmaps to the demonstrations' {height}x{width} images")
            if maps.shape[0] not in (steps, steps + 1):
                raise ConfigError(f"{path}: {key} has {maps.shape[0]} frames but demonstration {i} has {steps + 1} "
                                 f"observations ({steps} actions); give one map per observation (or per action)")
            if not np.isfinite(maps).all() or (maps < 0).any():
                raise ConfigError(f"{path}: {key} has negative or non-finite values; heatmaps must be >= 0")
            if maps.shape[0] == steps:
                maps = np.concatenate([maps, maps[-1:]], axis=0)
            self.heatmaps.append(minmax(maps))

    def maps(self, index: int, demo) -> np.ndarray:
        return self.heatmaps[index]


def temporal_aggregate(maps: np.ndarray, alpha: float = 0.7, window: int | None = None) -> np.ndarray:
    """AutoFocus-IL's temporal map `S_t = sum_{k=0}^{K} alpha^k S_{t-k}` (K = t, or window - 1),
    min-max normalised per frame.

    :param maps: (T, H, W) maps of one episode, oldest first.
    :param alpha: decay in [0, 1); 0 keeps each frame's own map.
    :param window: number of frames summed (None = every past frame of the episode).
    """
    if not 0.0 <= alpha < 1.0:
        raise ConfigError(f"temporal alpha must be in [0, 1) (got {alpha}); AutoFocus-IL uses 0.7")
    if window is not None and window < 1:
        raise ConfigError(f"temporal window must be >= 1 frames (got {window})")
    maps = np.asarray(maps, dtype=np.float64)
    out = np.zeros_like(maps)
    if window is None:
        running = np.zeros_like(maps[0])
        for t in range(len(maps)):
            running = maps[t] + alpha * running
            out[t] = running
    else:
        for t in range(len(maps)):
            for k in range(min(window, t + 1)):
                out[t] += alpha**k * maps[t - k]
    return minmax(out)


def grid_distribution(maps: np.ndarray, height: int, width: int, eps: float = 0.01) -> np.ndarray:
    """Saliency as a distribution over feature-grid cells: sum-pool, normalise to sum 1 (an empty
    map becomes uniform), then smooth `g = (g + eps / N) / (1 + eps)` so that no cell is 0.

    :return: (..., height, width) float32, each map sums to 1.
    """
    if eps < 0:
        raise ConfigError(f"saliency eps must be >= 0 (got {eps})")
    pooled = sum_pool_to_grid(maps, height, width)
    cells = height * width
    total = pooled.sum(axis=(-2, -1), keepdims=True)
    g = np.where(total > 0, pooled / np.where(total > 0, total, 1), 1.0 / cells)
    return ((g + eps / cells) / (1.0 + eps)).astype(np.float32)
