"""ContrastiveConfig: the options of the return-guided contrastive loss (`--contrastive.*`).

Torch-free, so that the CLI builds its parser without loading torch; the rule and label
choices come from the registries (gaze_rl.contrastive.rules, gaze_rl.contrastive.labels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from gaze_rl.contrastive.labels import LABEL_NAMES, SHUFFLE_UNITS
from gaze_rl.contrastive.rules import TRIPLET_RULES
from gaze_rl.errors import ConfigError
from gaze_rl.validation import Validated

KNN_BACKENDS = ("auto", "faiss", "torch")
FRESH_UPDATES = 16  # buffer_size None: the feature buffer holds the states of this many contrastive updates
PROJECTIONS = ("trained", "frozen", "none")
TRIPLET_GAZES = ("own", "anchor")

# CLI types built from the registries, so a new rule or label is one registry entry.
RuleName = Literal[TRIPLET_RULES]  # type: ignore[valid-type]
LabelName = Literal[LABEL_NAMES]  # type: ignore[valid-type]


@dataclass
class ContrastiveConfig(Validated):
    """Settings of the return-guided contrastive loss (method `gaze`)."""

    buffer_size: int | None = None
    """States kept in the circular feature buffer; None = the states of the last FRESH_UPDATES (16) contrastive updates (GazePPO: n_steps x n_envs x update_every each, 1,600 on the CPU protocol; GazeSAC: sac_update_interval x update_every), because stored maps go stale as RL trains the encoder: 1k env steps apart the same frame's maps have cosine 0.91 and the gaze's mean on them differs by 3.7 cells, 7k apart 0.63 and 9.3 cells (results/signal/staleness). The paper keeps 100k states (ablated at ~20k and 200k), which a CPU run never evicts."""
    mining_pool: int = 4096
    """States an update mines among: all of them while the buffer holds at most this many, else a fresh uniform sample of this many per update, so that the update's cost (k-NN search, label split) stays flat however large the buffer (results/speed/); 0 = always the whole buffer."""
    num_anchors: int = 128
    """Anchors sampled per update (third-party port: 128)."""
    k: int = 16
    """Nearest neighbours searched per anchor; positives and negatives are taken from them."""
    margin: float = 0.2
    """Triplet margin on cosine distance."""
    rule: RuleName = "class"
    """Triplet rule (gaze_rl.contrastive.rules.MINING_RULES). 'class': positive = nearest neighbour on the anchor's side of the split, negative = nearest on the other side; 'threshold' (the paper's reading): positive above the split, negative at or below it, whatever the anchor's return; 'relative': higher / lower return than the anchor's."""
    label: LabelName = "episode"
    """Return label mining splits on (gaze_rl.contrastive.labels.RETURN_LABELS): 'to-go' (G_t), 'episode' (the whole episode's discounted return), 'detrended' (G_t minus the mean G at the same step index), 'success' (the episode's success flag, 1 / 0 for all its states; unknown, so skipped, until the episode ends)."""
    threshold: float | None = None
    """Split of the 'class' / 'threshold' rules; None = the buffer's `quantile`, moved so both classes are non-empty (our choice)."""
    quantile: float = 0.5
    """Quantile of the labels used as the default split (0.5 = median)."""
    exclude_window: int = -1
    """Drop neighbours from the anchor's own episode within this many steps of it; 0 = keep all, -1 = the whole episode."""
    steps_per_update: int = 8
    """Contrastive Adam steps per update, each on freshly sampled anchors."""
    shuffle_labels: bool = False
    """Control (method gaze-shuffled): randomly permute the labels at every contrastive step (how: shuffle_by)."""
    shuffle_by: Literal["episode", "state"] = "episode"
    """What shuffle_labels permutes: 'episode' = whole episodes (each episode gets another episode's labels, at the same relative times, so within-episode structure is kept); 'state' = single states (the control before issue 23)."""
    triplet_weight: float = 0.1
    """Weight of the triplet loss."""
    spread_weight: float = 0.0
    """Weight of the log-space spread regulariser towards `spread_target` (third-party port: 0.01). Off by default: on the synthetic signal benchmark it pinned sigma at the target and lowered the gaze's weight on the deciding cell (results/signal/); sigma_floor already prevents a point."""
    spread_target: float = 0.45
    """Sigma the spread regulariser pulls towards (grid units, the map spans [-1, 1])."""
    projection_dim: int = 128
    """Width of the linear projection of attended features the loss compares; 0 = none (as projection 'none')."""
    projection: Literal["trained", "frozen", "none"] = "trained"
    """What the triplet loss compares: 'trained' = a linear projection trained with the gaze head (the port's); 'frozen' = a fixed random linear projection the optimizer does not train (so only the gaze can lower the loss); 'none' = the attended feature map itself, flattened."""
    triplet_gaze: Literal["own", "anchor"] = "own"
    """Which gaze re-weights the positive's and the negative's maps: 'own' = each its own (as the policy would see them); 'anchor' = the anchor's gaze on all three, so the loss falls only by looking where positive and negative differ in content. With 'own' and no projection, real runs lowered the loss by sending the two classes' gazes to opposite edges of the map, a position code that looks at nothing (results/signal/README.md)."""
    key_dim: int = 256
    """Dimension of the k-NN keys (random projection of the feature map)."""
    learning_rate: float = 3e-4
    """Adam learning rate of the gaze optimizer."""
    update_every: int = 1
    """Contrastive update every N training iterations: GazePPO's rollouts, GazeSAC's intervals of `sac_update_interval` env steps."""
    sac_update_interval: int = 128
    """GazeSAC: a contrastive update after SAC's next train() every this many env steps (summed over envs, as num_timesteps counts them; times `update_every`; at most one per train()), instead of after every train() call; and a running episode that holds this many states hands them to the feature buffer unfinished (return-to-go bootstrapped with the critics), so at most this many per env wait in memory. Default 128: an update cost 0.3 s of CPU at 10k stored states, 2.1 s at 100k (84 px, one thread, mining the whole buffer, before mining_pool), <= 1.3% of SB3 SAC's 1.3 s per env step at 128 steps apart (README); ManiSkill's episodes (<= 100 steps) stay whole."""
    return_discount: float | None = None
    """Discount of every discounted label (to-go, episode, detrended); None = the algorithm's gamma. Not used by 'success'."""
    knn_backend: Literal["auto", "faiss", "torch"] = "auto"
    """'auto': a FAISS GPU index with faiss-gpu on CUDA, else exact torch (faster than a rebuilt flat FAISS index); 'faiss': FAISS IndexFlatIP."""
    rl_trains_gaze: bool = False
    """Also let RL gradients train the gaze head (the paper splits: contrastive only)."""

    def check(self) -> None:
        # buffer_size None: sized by the algorithm (FRESH_UPDATES updates' states)
        sized = {} if self.buffer_size is None else {"buffer_size": self.buffer_size}
        positive = {**sized, "num_anchors": self.num_anchors, "k": self.k,
                    "key_dim": self.key_dim, "update_every": self.update_every,
                    "sac_update_interval": self.sac_update_interval,
                    "steps_per_update": self.steps_per_update}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"contrastive {name} must be >= 1 (got {value})")
        if self.mining_pool < 0 or 0 < self.mining_pool <= self.k:
            raise ConfigError(f"contrastive mining_pool must be 0 (the whole buffer) or > k ({self.k}) "
                             f"(got {self.mining_pool})")
        if self.buffer_size is not None and self.k >= self.buffer_size:
            raise ConfigError(f"contrastive k ({self.k}) must be smaller than buffer_size ({self.buffer_size})")
        if self.margin < 0 or self.triplet_weight < 0 or self.spread_weight < 0:
            raise ConfigError("contrastive margin and loss weights must be >= 0")
        if self.spread_target <= 0:
            raise ConfigError(f"contrastive spread_target must be > 0 (got {self.spread_target})")
        if self.rule not in TRIPLET_RULES:
            raise ConfigError(f"unknown triplet rule {self.rule!r}; valid choices: {', '.join(TRIPLET_RULES)}")
        if self.label not in LABEL_NAMES:
            raise ConfigError(f"unknown return label {self.label!r}; valid choices: {', '.join(LABEL_NAMES)}")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"contrastive quantile must be in (0, 1) (got {self.quantile}); use 0.5 for the median")
        if self.exclude_window < -1:
            raise ConfigError(f"contrastive exclude_window must be -1 (whole episode), 0 (off) or > 0 "
                             f"(got {self.exclude_window})")
        if self.knn_backend not in KNN_BACKENDS:
            raise ConfigError(f"unknown knn_backend {self.knn_backend!r}; valid choices: {', '.join(KNN_BACKENDS)}")
        if self.shuffle_by not in SHUFFLE_UNITS:
            raise ConfigError(f"unknown shuffle_by {self.shuffle_by!r}; valid choices: {', '.join(SHUFFLE_UNITS)}")
        if not isinstance(self.shuffle_labels, bool):
            raise ConfigError(f"shuffle_labels must be True or False (got {self.shuffle_labels!r}); choose what is "
                              f"permuted with shuffle_by ({', '.join(SHUFFLE_UNITS)})")
        if self.triplet_gaze not in TRIPLET_GAZES:
            raise ConfigError(f"unknown triplet_gaze {self.triplet_gaze!r}; valid choices: {', '.join(TRIPLET_GAZES)}")
        if self.projection not in PROJECTIONS:
            raise ConfigError(f"unknown projection {self.projection!r}; valid choices: {', '.join(PROJECTIONS)}")
        if self.projection_dim < 0:
            raise ConfigError(f"contrastive projection_dim must be >= 0 (got {self.projection_dim})")
        if self.return_discount is not None and not 0.0 <= self.return_discount <= 1.0:
            raise ConfigError(f"return_discount must be in [0, 1] (got {self.return_discount})")

    def to_dict(self) -> dict:
        return asdict(self)
