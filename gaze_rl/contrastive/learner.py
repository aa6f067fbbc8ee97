"""One return-guided contrastive step for the gaze head, shared by GazePPO and GazeSAC.

Per update: rebuild the k-NN index over the buffer's keys, sample anchors, mine triplets
(similar states, different returns), re-attend their stored feature maps with the *current*
gaze head, project, and minimise `triplet_weight * triplet + spread_weight * spread`. Only the
gaze head and the projection are optimised here; RL trains the encoder and policy.

Our choices where the paper is silent (documented in ContrastiveConfig): k-NN keys are a fixed
random projection (Johnson-Lindenstrauss) of the flattened feature map, L2-normalised, so that
the index stays small at d = 256 while cosine similarity of feature maps is preserved.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from gaze_rl.contrastive.buffer import FeatureBuffer
from gaze_rl.contrastive.losses import spread_regularizer, triplet_loss
from gaze_rl.contrastive.mining import KNN_BACKENDS, TRIPLET_RULES, make_knn, mine_triplets, sample_anchors
from gaze_rl.nets.extractor import GazeExtractor


@dataclass
class ContrastiveConfig:
    """Settings of the return-guided contrastive loss (method `gaze`)."""

    buffer_size: int = 100_000
    """States kept in the circular feature buffer (paper default 100k; ablated at ~20k and 200k)."""
    num_anchors: int = 128
    """Anchors sampled per update (third-party port: 128)."""
    k: int = 16
    """Nearest neighbours searched per anchor; positives and negatives are taken from them."""
    margin: float = 0.2
    """Triplet margin on cosine distance."""
    rule: Literal["threshold", "relative"] = "threshold"
    """'threshold' (paper): positive = a similar state with return above the threshold, negative = at or below it; 'relative': higher / lower return than the anchor's."""
    threshold: float | None = None
    """Return threshold of the 'threshold' rule; None = the buffer's median return (our choice)."""
    triplet_weight: float = 0.1
    """Weight of the triplet loss."""
    spread_weight: float = 0.01
    """Weight of the log-space spread regulariser that keeps the gaze from collapsing to a point."""
    spread_target: float = 0.45
    """Sigma the spread regulariser pulls towards (grid units, the map spans [-1, 1])."""
    projection_dim: int = 128
    """Width of the linear projection of attended features the loss compares; 0 = none."""
    key_dim: int = 256
    """Dimension of the k-NN keys (random projection of the feature map)."""
    learning_rate: float = 3e-4
    """Adam learning rate of the gaze optimizer."""
    update_every: int = 1
    """Contrastive update every N training iterations (PPO rollouts / SAC train calls)."""
    return_discount: float | None = None
    """Discount of the stored return-to-go; None = the algorithm's gamma."""
    knn_backend: Literal["auto", "faiss", "torch"] = "auto"
    """'auto': a FAISS GPU index with faiss-gpu on CUDA, else exact torch (faster than a rebuilt flat FAISS index); 'faiss': FAISS IndexFlatIP."""
    rl_trains_gaze: bool = False
    """Also let RL gradients train the gaze head (the paper splits: contrastive only)."""

    def __post_init__(self) -> None:
        positive = {"buffer_size": self.buffer_size, "num_anchors": self.num_anchors, "k": self.k,
                    "key_dim": self.key_dim, "update_every": self.update_every}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"contrastive {name} must be >= 1 (got {value})")
        if self.k >= self.buffer_size:
            raise ValueError(f"contrastive k ({self.k}) must be smaller than buffer_size ({self.buffer_size})")
        if self.margin < 0 or self.triplet_weight < 0 or self.spread_weight < 0:
            raise ValueError("contrastive margin and loss weights must be >= 0")
        if self.spread_target <= 0:
            raise ValueError(f"contrastive spread_target must be > 0 (got {self.spread_target})")
        if self.rule not in TRIPLET_RULES:
            raise ValueError(f"unknown triplet rule {self.rule!r}; valid choices: {', '.join(TRIPLET_RULES)}")
        if self.knn_backend not in KNN_BACKENDS:
            raise ValueError(f"unknown knn_backend {self.knn_backend!r}; valid choices: {', '.join(KNN_BACKENDS)}")
        if self.return_discount is not None and not 0.0 <= self.return_discount <= 1.0:
            raise ValueError(f"return_discount must be in [0, 1] (got {self.return_discount})")

    def to_dict(self) -> dict:
        return asdict(self)


class ContrastiveLearner:
    """Feature buffer + miner + gaze optimizer for one GazeExtractor."""

    def __init__(self, extractor: GazeExtractor, config: ContrastiveConfig, seed: int = 0):
        if not extractor.has_gaze:
            raise ValueError(
                "the contrastive loss trains a Gaussian gaze, but this policy's attention is "
                f"{type(extractor.attention).__name__}; use method 'gaze' (gaze_policy_kwargs('gaze'))"
            )
        self.config, self.extractor = config, extractor
        self.device = next(extractor.parameters()).device
        channels, h, w = extractor.map_shape
        flat = channels * h * w
        self.key_dim = min(config.key_dim, flat)
        # Fixed (seeded) projection: keys of old and new states stay comparable.
        proj = torch.Generator().manual_seed(0)
        self._key_matrix = (torch.randn(flat, self.key_dim, generator=proj) / math.sqrt(self.key_dim)).to(self.device)
        self.projection = (nn.Linear(flat, config.projection_dim) if config.projection_dim > 0 else nn.Identity()).to(self.device)
        params = list(extractor.attention.parameters()) + list(self.projection.parameters())
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        self._buffer: FeatureBuffer | None = None  # allocated on first use, see reserve()
        self._capacity = config.buffer_size
        self.knn = make_knn(config.knn_backend, self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.num_updates = 0
        self.skipped_nonfinite = 0

    @property
    def buffer(self) -> FeatureBuffer:
        """The feature buffer, allocated on first use with the capacity reserve() settled on."""
        if self._buffer is None:
            self._buffer = FeatureBuffer(self._capacity, self.extractor.map_shape, self.key_dim, device=self.device)
        return self._buffer

    def reserve(self, more: int) -> None:
        """Sizes the buffer for `more` states to come on top of those it holds, up to buffer_size,
        so that a 1k-step run does not hold 100k feature maps. A buffer in use only grows
        (keeping its states)."""
        held = 0 if self._buffer is None else len(self._buffer)
        capacity = min(self.config.buffer_size, max(held + int(more), self.config.k + 1))
        if self._buffer is None:
            self._capacity = capacity
        elif capacity > self._buffer.capacity:
            old = self._buffer
            self._capacity, self._buffer = capacity, None
            self.buffer.add(old.features, old.keys, old.returns)

    def keys(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """L2-normalised k-NN keys of feature maps (B, C, h, w) -> (B, key_dim)."""
        keys = feature_maps.flatten(1).float() @ self._key_matrix
        return nn.functional.normalize(keys, dim=1)

    @torch.no_grad()
    def add(self, feature_maps: torch.Tensor, returns: torch.Tensor) -> None:
        """Stores detached feature maps (B, C, h, w) with their returns (B,)."""
        feature_maps = feature_maps.detach().to(self.device)
        self.buffer.add(feature_maps, self.keys(feature_maps), returns.to(self.device))

    def update(self) -> dict[str, float]:
        """One contrastive step; returns metrics named for the `gaze/` TensorBoard section."""
        cfg = self.config
        metrics = {"gaze/buffer_size": float(len(self.buffer)), "gaze/num_triplets": 0.0,
                   "gaze/valid_fraction": 0.0}
        if len(self.buffer) <= cfg.k:
            return metrics
        start = time.perf_counter()
        self.knn.build(self.buffer.keys)  # fp16 as stored; each backend computes in fp32
        anchors = sample_anchors(len(self.buffer), cfg.num_anchors, self.generator).to(self.device)
        _, neighbors = self.knn.search(self.buffer.keys[anchors], cfg.k + 1)
        triplets = mine_triplets(neighbors, anchors, self.buffer.returns, cfg.rule, cfg.threshold)
        metrics["gaze/mining_ms"] = 1000.0 * (time.perf_counter() - start)
        metrics["gaze/num_triplets"] = float(len(triplets))
        metrics["gaze/valid_fraction"] = triplets.valid_fraction
        if len(triplets) == 0:
            return metrics  # no return variation among neighbours yet: nothing to learn from

        index = torch.cat([triplets.anchor, triplets.positive, triplets.negative])
        out = self.extractor.attention(self.buffer.features[index].float())
        z_anchor, z_pos, z_neg = self.projection(out.features.flatten(1)).chunk(3)
        trip = triplet_loss(z_anchor, z_pos, z_neg, cfg.margin)
        spread = spread_regularizer(out.params.sigma, cfg.spread_target)
        loss = cfg.triplet_weight * trip + cfg.spread_weight * spread
        if not torch.isfinite(loss):
            # Never step on NaN/Inf: skip, count, and let the logs say so.
            self.skipped_nonfinite += 1
            metrics["gaze/skipped_nonfinite"] = float(self.skipped_nonfinite)
            return metrics
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        sigma = out.params.sigma.detach()
        metrics.update({
            "gaze/triplet_loss": trip.item(),
            "gaze/spread_loss": spread.item(),
            "gaze/contrastive_loss": loss.item(),
            "gaze/mu_x": out.params.mu[..., 0].mean().item(),
            "gaze/mu_y": out.params.mu[..., 1].mean().item(),
            "gaze/sigma_x": sigma[..., 0].mean().item(),
            "gaze/sigma_y": sigma[..., 1].mean().item(),
            "gaze/sigma_xy": out.params.sigma_xy.mean().item(),
        })
        return metrics

