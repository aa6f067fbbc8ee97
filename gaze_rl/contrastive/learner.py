"""The return-guided contrastive update of the gaze head, shared by GazePPO and GazeSAC.

Per update: compute the labels (gaze_rl.contrastive.returns) and rebuild the k-NN index over
the buffer's keys; then, `steps_per_update` times: sample anchors, mine triplets (similar
states, different labels; gaze_rl.contrastive.mining), re-attend their stored feature maps
with the *current* gaze head, project, and take one Adam step on
`triplet_weight * triplet + spread_weight * spread`. Only the gaze head and the projection
(`projection='trained'`; a 'frozen' one is fixed, 'none' compares the attended maps
themselves) are optimised here; RL trains the encoder and policy. Every update logs what the
signal looked like (`gaze/label_step_spearman`, `gaze/same_episode_fraction`,
`gaze/active_fraction` = share of triplets whose hinge is still > 0, ...), so an inert or
confounded signal shows in TensorBoard.

Our choices where the paper is silent (documented in ContrastiveConfig): k-NN keys are a fixed
random projection (Johnson-Lindenstrauss) of the flattened feature map, L2-normalised, so that
the index stays small at d = 256 while cosine similarity of feature maps is preserved.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from gaze_rl.contrastive.buffer import FeatureBuffer
from gaze_rl.contrastive.config import FRESH_UPDATES, ContrastiveConfig
from gaze_rl.contrastive.labels import shuffle_labels
from gaze_rl.contrastive.losses import spread_regularizer, triplet_hinge
from gaze_rl.contrastive.mining import make_knn, mine_triplets, return_threshold, sample_anchors
from gaze_rl.contrastive.returns import buffer_labels
from gaze_rl.nets.attention import AttentionOutput, GazeParams, reweight
from gaze_rl.nets.extractor import GazeExtractor


class ContrastiveLearner:
    """Feature buffer + miner + gaze optimizer for one GazeExtractor."""

    def __init__(self, extractor: GazeExtractor, config: ContrastiveConfig, seed: int = 0,
                 states_per_update: int = 128):
        """:param states_per_update: states the buffer gains between two updates (GazePPO: a
            rollout); with `buffer_size` None the buffer holds FRESH_UPDATES times this many."""
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
        self.projection = self._make_projection(flat).to(self.device)
        # a frozen projection's weights have requires_grad=False and stay out of the optimizer
        params = list(extractor.attention.parameters()) + [p for p in self.projection.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        self._buffer: FeatureBuffer | None = None  # allocated on first use, see reserve()
        fresh = max(FRESH_UPDATES * int(states_per_update), config.k + 1)
        self.max_capacity = fresh if config.buffer_size is None else config.buffer_size  # reserve()'s limit
        self._capacity = self.max_capacity
        self.knn = make_knn(config.knn_backend, self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.num_updates = 0  # Adam steps taken
        self.num_update_calls = 0  # update() calls (each up to steps_per_update Adam steps)
        self.skipped_nonfinite = 0

    def _make_projection(self, flat: int) -> nn.Module:
        """What the triplet loss compares the attended features through (ContrastiveConfig.projection)."""
        cfg = self.config
        if cfg.projection == "none" or cfg.projection_dim == 0:
            return nn.Identity()
        projection = nn.Linear(flat, cfg.projection_dim)  # 'frozen' draws the same initial weights as 'trained'
        if cfg.projection == "frozen":
            projection.requires_grad_(False)
        return projection

    @property
    def buffer(self) -> FeatureBuffer:
        """The feature buffer, allocated on first use with the capacity reserve() settled on."""
        if self._buffer is None:
            self._buffer = FeatureBuffer(self._capacity, self.extractor.map_shape, self.key_dim, device=self.device)
        return self._buffer

    def reserve(self, more: int) -> None:
        """Sizes the buffer for `more` states to come on top of those it holds, up to max_capacity,
        so that a short run does not hold a full buffer of feature maps. A buffer in use only grows,
        keeping its states with all their columns (FeatureBuffer.grown)."""
        held = 0 if self._buffer is None else len(self._buffer)
        capacity = min(self.max_capacity, max(held + int(more), self.config.k + 1))
        if self._buffer is None:
            self._capacity = capacity
        elif capacity > self._buffer.capacity:
            self._capacity, self._buffer = capacity, self._buffer.grown(capacity)

    def keys(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """L2-normalised k-NN keys of feature maps (B, C, h, w) -> (B, key_dim)."""
        keys = feature_maps.flatten(1).float() @ self._key_matrix
        return nn.functional.normalize(keys, dim=1)

    @torch.no_grad()
    def add(self, feature_maps: torch.Tensor, returns: torch.Tensor, episodes: torch.Tensor | None = None,
            steps: torch.Tensor | None = None, episode_returns: torch.Tensor | None = None,
            successes: torch.Tensor | None = None) -> None:
        """Stores detached feature maps (B, C, h, w) with their returns-to-go (B,) and, optionally,
        episode ids, step indices, whole-episode returns and episode success flags (B,) (see
        FeatureBuffer.add)."""
        feature_maps = feature_maps.detach().to(self.device)
        self.buffer.add(feature_maps, self.keys(feature_maps), returns.to(self.device), episodes, steps,
                        episode_returns, successes)

    def update(self) -> dict[str, float]:
        """`steps_per_update` contrastive steps; returns metrics named for the `gaze/` TensorBoard section."""
        cfg = self.config
        self.num_update_calls += 1
        metrics = {"gaze/buffer_size": float(len(self.buffer)), "gaze/num_triplets": 0.0,
                   "gaze/valid_fraction": 0.0}
        if len(self.buffer) <= cfg.k:
            return metrics
        start = time.perf_counter()
        labels = buffer_labels(self.buffer, cfg.label)
        metrics.update(label_stats(labels, self.buffer.steps, self.generator))
        pool = self._mining_pool()  # slots this update mines among; None = all (views, no copies)
        keys, labels, episodes, steps = (column if pool is None else column[pool]
                                         for column in (self.buffer.keys, labels, self.buffer.episodes, self.buffer.steps))
        metrics["gaze/pool_size"] = float(len(labels))
        # The split depends on the labels' values only, which shuffling keeps: computed once per update.
        split = cfg.threshold if cfg.threshold is not None else return_threshold(labels, cfg.quantile)
        self.knn.build(keys)  # fp16 as stored; each backend computes in fp32
        search_k = self._search_k(episodes)
        sums: dict[str, tuple[float, int]] = {}
        steps_taken, params, mining_s = 0, None, time.perf_counter() - start
        for _ in range(cfg.steps_per_update):
            mine_start = time.perf_counter()
            step_labels = labels
            if cfg.shuffle_labels:  # the control: any structure left in the labels is noise
                step_labels = shuffle_labels(labels, cfg.shuffle_by, self.generator, episodes, steps)
            anchors = sample_anchors(len(labels), cfg.num_anchors, self.generator).to(self.device)
            _, neighbors = self.knn.search(keys[anchors], search_k)
            triplets = mine_triplets(neighbors, anchors, step_labels, cfg.rule, split, cfg.quantile,
                                     episodes, steps, cfg.exclude_window)
            mining_s += time.perf_counter() - mine_start
            _accumulate(sums, {"num_triplets": float(len(triplets)), "valid_fraction": triplets.valid_fraction,
                               "same_episode_fraction": triplets.same_episode_fraction,
                               "excluded_fraction": triplets.excluded_fraction})
            metrics["gaze/single_class"] = float(triplets.single_class)
            if len(triplets) == 0:
                continue  # no label variation among neighbours: nothing to learn from
            index = torch.cat([triplets.anchor, triplets.positive, triplets.negative])
            index = index if pool is None else pool[index]  # pool positions -> buffer slots
            params, attended = self._attend(self.buffer.features[index].float())
            z_anchor, z_pos, z_neg = self.projection(attended.flatten(1)).chunk(3)
            hinge = triplet_hinge(z_anchor, z_pos, z_neg, cfg.margin)
            trip = hinge.mean()
            spread = spread_regularizer(params.sigma, cfg.spread_target)
            loss = cfg.triplet_weight * trip + cfg.spread_weight * spread
            if not torch.isfinite(loss):
                # Never step on NaN/Inf: skip, count, and let the logs say so.
                self.skipped_nonfinite += 1
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.num_updates += 1
            steps_taken += 1
            _accumulate(sums, {"triplet_loss": trip.item(), "spread_loss": spread.item(),
                               "contrastive_loss": loss.item(),
                               "active_fraction": float((hinge.detach() > 0).float().mean())})
        metrics["gaze/mining_ms"] = 1000.0 * mining_s
        metrics["gaze/update_ms"] = 1000.0 * (time.perf_counter() - start)
        metrics["gaze/steps_taken"] = float(steps_taken)
        metrics["gaze/skipped_nonfinite"] = float(self.skipped_nonfinite)
        metrics.update({f"gaze/{name}": value / count for name, (value, count) in sums.items()})
        if params is not None:
            metrics.update(gaze_param_stats(params))
        return metrics


    def _attend(self, maps: torch.Tensor) -> tuple[GazeParams, torch.Tensor]:
        """The gaze's parameters and the attended maps of stacked (anchor, positive, negative)
        maps: each re-weighted by its own gaze, or all three by the anchor's (`triplet_gaze`; the
        parameters are then the anchors' only)."""
        attention = self.extractor.attention
        anchor_only = self.config.triplet_gaze == "anchor"
        out: AttentionOutput = attention(maps.chunk(3)[0] if anchor_only else maps)
        assert out.params is not None  # a Gaussian gaze (checked at construction)
        if not anchor_only:
            return out.params, out.features
        others, shared = maps[len(maps) // 3:], out.weights.repeat(2, 1, 1)
        return out.params, torch.cat([out.features, reweight(others, shared, attention.residual)])

    def _mining_pool(self) -> torch.Tensor | None:
        """Slots of the states this update mines among: None = all of them, else a uniform
        sample of `mining_pool` once the buffer holds more, so that the update's cost stops
        growing with the buffer (the k-NN search and the label split scan the pool, not the buffer)."""
        held, pool = len(self.buffer), self.config.mining_pool
        if pool == 0 or held <= pool:
            return None
        return torch.randperm(held, generator=self.generator)[:pool].to(self.device)

    def _search_k(self, episodes: torch.Tensor) -> int:
        """Neighbours to search: k plus the anchor, plus as many as the exclusion can drop, so
        that k candidates remain (a state's nearest neighbours are mostly its own episode's)."""
        cfg = self.config
        if cfg.exclude_window == 0:
            return cfg.k + 1
        if cfg.exclude_window > 0:
            dropped = 2 * cfg.exclude_window
        else:
            dropped = int(torch.unique(episodes, return_counts=True)[1].max()) - 1
        return min(cfg.k + 1 + dropped, len(episodes))


def _accumulate(sums: dict[str, tuple[float, int]], values: dict[str, float]) -> None:
    """Running (sum, count) per metric, skipping NaN (e.g. no neighbours to count)."""
    for name, value in values.items():
        if math.isfinite(value):
            total, count = sums.get(name, (0.0, 0))
            sums[name] = (total + value, count + 1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two (n,) tensors (ties ranked by order); NaN if either is constant."""
    ranks = [x.argsort().argsort().float() for x in (a, b)]
    ra, rb = (r - r.mean() for r in ranks)
    denom = ra.norm() * rb.norm()
    return float((ra * rb).sum() / denom) if denom > 0 and float(a.std()) > 0 and float(b.std()) > 0 else float("nan")


@torch.no_grad()
def label_stats(labels: torch.Tensor, steps: torch.Tensor, generator: torch.Generator,
                sample: int = 8192) -> dict[str, float]:
    """How much signal the labels carry: their spread, how many are NaN/Inf, and how much of
    them time alone explains (Spearman with the step index, on a random sample of states)."""
    finite = torch.isfinite(labels)
    values, finite_steps = labels[finite], steps[finite]
    stats = {"gaze/label_nonfinite": float((~finite).sum()), "gaze/label_std": float("nan"),
             "gaze/label_step_spearman": float("nan")}
    if values.numel() > 1:
        stats["gaze/label_std"] = float(values.std())
        pick = torch.randperm(values.numel(), generator=generator)[:sample].to(values.device)
        stats["gaze/label_step_spearman"] = spearman(values[pick], finite_steps[pick].float())
    return stats


def gaze_param_stats(params: GazeParams) -> dict[str, float]:
    """Mean, spread and range of the gaze's mu and sigma over a batch."""
    mu, sigma = params.mu.detach(), params.sigma.detach()
    return {
        "gaze/mu_x": mu[..., 0].mean().item(), "gaze/mu_y": mu[..., 1].mean().item(),
        "gaze/mu_std": mu.std().item() if mu.numel() > 1 else 0.0,
        "gaze/sigma_x": sigma[..., 0].mean().item(), "gaze/sigma_y": sigma[..., 1].mean().item(),
        "gaze/sigma_min": sigma.min().item(), "gaze/sigma_max": sigma.max().item(),
        "gaze/sigma_xy": params.sigma_xy.detach().mean().item(),
    }
