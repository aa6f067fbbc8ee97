"""Drawing attention over observation frames (TensorBoard images, eval videos)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import preprocess_obs

from gaze_rl.nets.attention import AttentionOutput


@torch.no_grad()
def attention_of(model: BaseAlgorithm, observations: dict[str, np.ndarray]) -> AttentionOutput | None:
    """The policy's attention for a batch of vec-env observations, or None if it has none."""
    extractor = model.policy.features_extractor if hasattr(model.policy, "features_extractor") else None
    if extractor is None:  # SAC policies keep the extractor on the actor
        extractor = model.policy.actor.features_extractor
    if not hasattr(extractor, "attend"):
        return None
    obs_tensor, _ = model.policy.obs_to_tensor(observations)
    return extractor.attend(preprocess_obs(obs_tensor, model.observation_space, normalize_images=model.policy.normalize_images))


def overlay(frame: np.ndarray, weights: np.ndarray | None, mu: np.ndarray | None = None,
            sigma: np.ndarray | None = None, rho: np.ndarray | None = None, size: int = 256) -> np.ndarray:
    """An RGB frame (H, W, 3) upscaled to `size`, dimmed where the attention map (h, w) is low,
    with each Gaussian's centre and 1- and 2-sigma ellipses drawn (mu, sigma: (K, 2); rho: (K,))."""
    image = cv2.resize(np.ascontiguousarray(frame[..., :3]), (size, size), interpolation=cv2.INTER_NEAREST)
    if weights is None:
        return image
    heat = cv2.resize(weights.astype(np.float32) / max(float(weights.max()), 1e-8), (size, size),
                      interpolation=cv2.INTER_LINEAR)
    # Dim what the policy does not attend to; the attended region keeps its colours.
    image = (image * (0.2 + 0.8 * heat[..., None])).astype(np.uint8)
    if mu is not None and sigma is not None and rho is not None:
        half = size / 2.0  # grid coordinates [-1, 1] -> pixels
        for (mx, my), (sx, sy), r in zip(mu, sigma, rho):
            cov = np.array([[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]]) * half * half
            evals, evecs = np.linalg.eigh(cov)
            angle = float(np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])))
            centre = (int(round((mx + 1) * half)), int(round((my + 1) * half)))
            for scale in (1.0, 2.0):
                axes = (int(scale * np.sqrt(evals[1])), int(scale * np.sqrt(evals[0])))
                cv2.ellipse(image, centre, axes, angle, 0, 360, (255, 255, 255), 1, cv2.LINE_AA)
            cv2.drawMarker(image, centre, (255, 255, 255), cv2.MARKER_CROSS, 10, 1)
    return image


def overlays(observations: dict[str, np.ndarray], attention: AttentionOutput | None, limit: int = 4,
             size: int = 256) -> list[np.ndarray]:
    """Overlay images for the first `limit` envs of channel-first vec-env observations."""
    frames = np.asarray(observations["rgb"])[:limit].transpose(0, 2, 3, 1)
    images = []
    for i, frame in enumerate(frames):
        if attention is None:
            images.append(overlay(frame, None, size=size))
            continue
        params = attention.params
        images.append(overlay(
            frame, attention.weights[i].cpu().numpy(),
            None if params is None else params.mu[i].cpu().numpy(),
            None if params is None else params.sigma[i].cpu().numpy(),
            None if params is None else params.rho[i].cpu().numpy(), size=size,
        ))
    return images
