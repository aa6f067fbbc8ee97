"""k-NN search and return-guided triplet mining over a :class:`~gaze_rl.contrastive.buffer.FeatureBuffer`.

Gaze on the Prize (arXiv 2510.08442) builds triplets from states that *look
alike* but *led to different returns*: the gaze is then trained to make their
attended features distinguishable. This module provides the two steps:

1. **k-NN search** over the buffer's keys by exact inner product (cosine
   similarity when the keys are L2-normalised), either with FAISS
   (:class:`FaissKNN`, CPU or GPU) or with plain torch (:class:`TorchKNN`, on the
   keys' device, no extra dependency). :func:`make_knn` picks one.
2. **Triplet mining** (:func:`mine_triplets`): among each anchor's neighbours,
   pick the nearest one the rule calls positive and the nearest one it calls
   negative, vectorised over anchors. Rules live in
   :data:`gaze_rl.contrastive.rules.MINING_RULES`.

FAISS is imported lazily so the package works without it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from gaze_rl.contrastive.config import KNN_BACKENDS
from gaze_rl.contrastive.rules import MINING_RULES, TRIPLET_RULES

_FAISS_FIX = (
    "install it with `pip install faiss-cpu`, or `pip install 'gaze_rl[faiss-gpu]'` (in place of faiss-cpu) for GPU search"
)


def _import_faiss() -> ModuleType:
    try:
        import faiss
    except ImportError as err:
        raise ImportError(f"faiss is not installed; {_FAISS_FIX}.") from err
    return faiss


def _faiss_has_gpu(faiss: ModuleType) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _check_search_args(queries: Tensor, k: int, dim: int) -> None:
    if queries.dim() != 2 or queries.shape[1] != dim:
        raise ValueError(
            f"queries must have shape (Q, {dim}), got {tuple(queries.shape)}; "
            "pass keys computed the same way as the ones given to build()."
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}; ask for at least one neighbour.")


def _to_numpy(x: Tensor) -> np.ndarray:
    # faiss takes C-contiguous float32 host arrays only.
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


class TorchKNN:
    """Exact inner-product k-NN by chunked matmul + topk on the keys' device (works on GPU).

    The keys are scanned ``chunk_size`` rows at a time, keeping a running top-k,
    so memory stays ``O(Q * chunk_size)`` whatever the buffer size. Similarities
    are computed in float32 even when the keys are stored in float16.

    :param chunk_size: number of keys scored per matmul.
    """

    def __init__(self, chunk_size: int = 8192) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}; pass a positive number of keys per chunk.")
        self.chunk_size = chunk_size
        self._keys: Tensor | None = None

    def build(self, keys: Tensor) -> None:
        """Index ``keys`` ``(N, d)``; inner product = cosine when keys are L2-normalised.

        The keys are referenced, not copied: rebuild after the buffer changes.
        """
        if keys.dim() != 2:
            raise ValueError(f"keys must have shape (N, d), got {tuple(keys.shape)}; pass one key per row.")
        self._keys = keys.detach()

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Return the ``k`` keys with the largest inner product with each query.

        :param queries: ``(Q, d)`` query keys.
        :param k: number of neighbours.
        :return: ``(Q, k)`` float32 similarities in descending order and ``(Q, k)``
            int64 key indices, on the queries' device. When ``k`` exceeds the
            number of keys, rows are padded with index ``-1`` and similarity ``-inf``
            (as FAISS does).
        """
        if self._keys is None:
            raise RuntimeError("TorchKNN.search() called before build(); call build(keys) first.")
        keys = self._keys
        _check_search_args(queries, k, keys.shape[1])
        q = queries.detach().to(device=keys.device, dtype=torch.float32)

        sims = torch.empty((q.shape[0], 0), dtype=torch.float32, device=keys.device)
        idx = torch.empty((q.shape[0], 0), dtype=torch.int64, device=keys.device)
        for start in range(0, keys.shape[0], self.chunk_size):
            chunk_sims = q @ keys[start : start + self.chunk_size].float().T
            top_sims, top_idx = chunk_sims.topk(min(k, chunk_sims.shape[1]), dim=1)
            # Merge this chunk's top-k with the running top-k.
            sims = torch.cat([sims, top_sims], dim=1)
            idx = torch.cat([idx, top_idx + start], dim=1)
            sims, order = sims.topk(min(k, sims.shape[1]), dim=1)
            idx = idx.gather(1, order)

        missing = k - sims.shape[1]
        if missing > 0:
            sims = torch.nn.functional.pad(sims, (0, missing), value=float("-inf"))
            idx = torch.nn.functional.pad(idx, (0, missing), value=-1)
        return sims.to(queries.device), idx.to(queries.device)


class FaissKNN:
    """Exact inner-product index (``faiss.IndexFlatIP``), rebuilt from the keys at each :meth:`build`.

    A circular buffer overwrites rows, which flat indexes cannot update in place,
    so the index is rebuilt rather than updated. Uses a GPU index
    (``faiss.StandardGpuResources`` + ``index_cpu_to_gpu``) when ``use_gpu`` and
    faiss has GPU support (``hasattr(faiss, 'StandardGpuResources')`` and
    ``faiss.get_num_gpus() > 0``); else CPU, with a warning if a GPU was asked for.
    FAISS GPU flat search supports ``k <= 2048``.

    :param use_gpu: build the index on a GPU (the keys' CUDA device, else GPU 0).
    """

    def __init__(self, use_gpu: bool = False) -> None:
        self._faiss = _import_faiss()
        self.use_gpu = use_gpu and _faiss_has_gpu(self._faiss)
        if use_gpu and not self.use_gpu:
            warnings.warn(
                "FaissKNN(use_gpu=True) but this faiss build has no GPU support or sees no GPU; searching on the "
                "CPU. Install `gaze_rl[faiss-gpu]`, or use the 'torch' k-NN backend to search on the GPU.",
                stacklevel=2,
            )
        self._gpu_resources = None  # created once: StandardGpuResources reserves scratch GPU memory
        self._index = None

    def build(self, keys: Tensor) -> None:
        """Index ``keys`` ``(N, d)`` (copied to float32 on the host); inner product = cosine when L2-normalised."""
        if keys.dim() != 2:
            raise ValueError(f"keys must have shape (N, d), got {tuple(keys.shape)}; pass one key per row.")
        faiss = self._faiss
        index = faiss.IndexFlatIP(keys.shape[1])
        if self.use_gpu:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            gpu_id = keys.device.index if keys.device.type == "cuda" and keys.device.index is not None else 0
            index = faiss.index_cpu_to_gpu(self._gpu_resources, gpu_id, index)
        index.add(_to_numpy(keys))
        self._index = index

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Same contract as :meth:`TorchKNN.search`: ``(Q, k)`` float32 similarities (descending) and
        ``(Q, k)`` int64 indices, torch tensors on the queries' device, padded with ``-1`` / ``-inf``."""
        if self._index is None:
            raise RuntimeError("FaissKNN.search() called before build(); call build(keys) first.")
        _check_search_args(queries, k, self._index.d)
        sims_np, idx_np = self._index.search(_to_numpy(queries), k)
        sims = torch.from_numpy(sims_np)
        idx = torch.from_numpy(idx_np).long()
        sims[idx < 0] = float("-inf")  # faiss pads with -FLT_MAX; match TorchKNN
        return sims.to(queries.device), idx.to(queries.device)


def make_knn(backend: str = "auto", device: torch.device | str = "cpu") -> TorchKNN | FaissKNN:
    """Create a k-NN searcher.

    :param backend: ``"auto"``: a FAISS GPU index when the keys are on CUDA and faiss has GPU
        support, else :class:`TorchKNN`; ``"faiss"``: :class:`FaissKNN` (``ImportError`` naming
        the fix if faiss is missing); ``"torch"``: :class:`TorchKNN`.
    :param device: device the keys live on; a CUDA device asks FaissKNN for a GPU index.

    Why "auto" does not pick CPU FAISS: the circular buffer forces a flat index to be rebuilt
    every update, and measured at 100k keys, d = 256, 128 queries (results/speed/), rebuilding
    and searching IndexFlatIP took 157 ms against 17 ms for chunked torch matmul + topk on
    the same CPU, with identical neighbours (both are exact).
    """
    if backend not in KNN_BACKENDS:
        raise ValueError(f"unknown k-NN backend {backend!r}; choose one of {KNN_BACKENDS}.")
    on_cuda = torch.device(device).type == "cuda"
    if backend == "torch":
        return TorchKNN()
    if backend == "auto":
        try:
            faiss = _import_faiss()
        except ImportError:
            return TorchKNN()
        return FaissKNN(use_gpu=True) if on_cuda and _faiss_has_gpu(faiss) else TorchKNN()
    _import_faiss()  # backend "faiss": fail here, with the fix, when it is missing
    return FaissKNN(use_gpu=on_cuda)


@dataclass
class Triplets:
    """Mined triplets as buffer indices (slot indices of the :class:`FeatureBuffer`), and what mining skipped."""

    anchor: Tensor  # (T,) int64
    positive: Tensor  # (T,) int64, the neighbour the anchor is pulled towards
    negative: Tensor  # (T,) int64, the neighbour the anchor is pushed away from
    num_anchors: int  # how many anchors were tried
    skipped_nonfinite: int = 0  # buffer labels that were NaN/Inf (excluded from the split and from mining)
    single_class: bool = False  # the finite labels were all equal: nothing to contrast
    same_episode_fraction: float = float("nan")  # of the anchors' neighbours, the share from the anchor's episode
    excluded_fraction: float = 0.0  # of the anchors' neighbours, the share dropped by the episode exclusion

    @property
    def valid_fraction(self) -> float:
        """Fraction of tried anchors that produced a triplet (0.0 when none were tried)."""
        return len(self) / self.num_anchors if self.num_anchors > 0 else 0.0

    def __len__(self) -> int:
        return self.anchor.numel()


def return_threshold(labels: Tensor, quantile: float = 0.5) -> float | None:
    """Split of the class-based rules: the ``quantile`` of the finite labels (returns), moved to a
    value boundary that leaves both classes (``> split``, ``<= split``) non-empty.

    Our choice (the paper does not give its threshold). Tied labels always stay in one class;
    when the quantile falls on a tie at the maximum (e.g. binary success with success > 50%)
    the split moves down to the next lower distinct value, so "high" = the best labels seen
    and mining never stalls while labels differ. NaN/Inf are ignored. Returns None when fewer
    than two distinct finite values exist (a single class: nothing to contrast).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}; use 0.5 for the median.")
    finite = labels.detach().float()
    finite = finite[torch.isfinite(finite)]
    distinct = torch.unique(finite)  # sorted
    if distinct.numel() < 2:
        return None
    split = torch.quantile(finite, quantile, interpolation="lower")
    return float(split.clamp(distinct[0], distinct[-2]))


def mine_triplets(
    neighbors: Tensor,
    anchors: Tensor,
    labels: Tensor,
    rule: str = "class",
    threshold: float | None = None,
    quantile: float = 0.5,
    episodes: Tensor | None = None,
    steps: Tensor | None = None,
    exclude_window: int = 0,
) -> Triplets:
    """Build (anchor, positive, negative) triplets from each anchor's nearest neighbours.

    :param neighbors: ``(Q, k)`` buffer indices of each anchor's nearest neighbours,
        nearest first. The anchor itself and ``-1`` padding (from faiss) are skipped.
    :param anchors: ``(Q,)`` buffer indices of the anchors.
    :param labels: ``(N,)`` label of every buffer slot (a return: gaze_rl.contrastive.labels);
        NaN/Inf labels are excluded (as anchors and as neighbours) and counted in ``skipped_nonfinite``.
    :param rule: a name of :data:`MINING_RULES`; the positive and the negative are the
        nearest neighbours that the rule's masks allow.
    :param threshold: split of the class-based rules; ``None`` = :func:`return_threshold`
        of the finite labels at ``quantile``.
    :param quantile: quantile of the default split (0.5 = median).
    :param episodes: ``(N,)`` episode id of every slot; needed by ``exclude_window`` and
        for ``same_episode_fraction``.
    :param steps: ``(N,)`` step index within its episode of every slot.
    :param exclude_window: 0 = keep every neighbour; ``W > 0`` = drop neighbours from the
        anchor's own episode within ``W`` steps of it; ``-1`` = drop the anchor's whole episode.
    :return: the triplets of the anchors that have both a positive and a negative among their
        neighbours, on the neighbours' device; empty (never an error) when there are none.
    """
    _check_mining_args(neighbors, anchors, labels, rule, exclude_window, episodes, steps)
    device = neighbors.device
    num_anchors = anchors.shape[0]
    labels = labels.detach().to(device=device, dtype=torch.float32)
    finite = torch.isfinite(labels)
    skipped = int((~finite).sum())
    empty = torch.empty(0, dtype=torch.int64, device=device)
    if num_anchors == 0 or neighbors.shape[1] == 0:
        return Triplets(empty, empty.clone(), empty.clone(), num_anchors, skipped)
    if int(neighbors.max()) >= labels.shape[0] or int(anchors.max()) >= labels.shape[0]:
        raise ValueError(
            f"neighbor/anchor indices must be < len(labels) = {labels.shape[0]}; "
            "search the same buffer whose labels are passed."
        )

    spec = MINING_RULES[rule]
    split = None
    if spec.uses_split:
        split = return_threshold(labels, quantile) if threshold is None else float(threshold)
        if split is None:  # fewer than two distinct finite labels
            return Triplets(empty, empty.clone(), empty.clone(), num_anchors, skipped, single_class=True)

    neighbors = neighbors.long()
    anchors = anchors.to(device=device, dtype=torch.int64)
    safe = neighbors.clamp(min=0)  # padding rows are masked out by `valid`
    valid, same_episode_fraction, excluded_fraction = _usable_neighbours(neighbors, anchors, episodes, steps,
                                                                         exclude_window)
    valid = valid & finite[safe] & finite[anchors][:, None]
    pos_mask, neg_mask = spec.fn(labels[safe], labels[anchors][:, None], split)
    rows, positive, negative = _nearest_positive_and_negative(neighbors, pos_mask & valid, neg_mask & valid)
    return Triplets(
        anchor=anchors[rows],
        positive=positive,
        negative=negative,
        num_anchors=num_anchors,
        skipped_nonfinite=skipped,
        same_episode_fraction=same_episode_fraction,
        excluded_fraction=excluded_fraction,
    )


def _check_mining_args(neighbors: Tensor, anchors: Tensor, labels: Tensor, rule: str, exclude_window: int,
                       episodes: Tensor | None, steps: Tensor | None) -> None:
    """mine_triplets' arguments, checked before any work (an error names the fix)."""
    if rule not in MINING_RULES:
        raise ValueError(f"unknown triplet rule {rule!r}; choose one of {TRIPLET_RULES}.")
    if exclude_window < -1:
        raise ValueError(f"exclude_window must be -1 (whole episode), 0 (off) or a positive window, got {exclude_window}.")
    if neighbors.dim() != 2:
        raise ValueError(f"neighbors must have shape (Q, k), got {tuple(neighbors.shape)}; pass k-NN indices.")
    if anchors.dim() != 1 or anchors.shape[0] != neighbors.shape[0]:
        raise ValueError(
            f"anchors must have shape ({neighbors.shape[0]},) to match neighbors, got {tuple(anchors.shape)}; "
            "pass one anchor index per row of neighbors."
        )
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}; pass the buffer's labels.")
    if exclude_window != 0 and (episodes is None or steps is None):
        raise ValueError("exclude_window needs the episodes and steps of the buffer; pass both or exclude_window=0.")


def _usable_neighbours(neighbors: Tensor, anchors: Tensor, episodes: Tensor | None, steps: Tensor | None,
                       exclude_window: int) -> tuple[Tensor, float, float]:
    """The exclusion mask: (Q, k) True where a neighbour may serve its anchor (not padding, not the
    anchor itself, not dropped by the episode exclusion), with the share of the (non-padding,
    non-anchor) neighbours that come from the anchor's episode (NaN without episodes) and the share
    the exclusion dropped."""
    safe = neighbors.clamp(min=0)
    valid = (neighbors >= 0) & (neighbors != anchors[:, None])
    if episodes is None:
        return valid, float("nan"), 0.0
    episodes = episodes.to(neighbors.device)
    same = valid & (episodes[safe] == episodes[anchors][:, None])
    n_valid = int(valid.sum())
    same_episode_fraction = float(same.sum()) / n_valid if n_valid else float("nan")
    if exclude_window == 0:
        return valid, same_episode_fraction, 0.0
    drop = same
    if exclude_window > 0:
        steps = steps.to(neighbors.device)  # type: ignore[union-attr]
        drop = same & ((steps[safe] - steps[anchors][:, None]).abs() <= exclude_window)
    excluded_fraction = float(drop.sum()) / n_valid if n_valid else 0.0
    return valid & ~drop, same_episode_fraction, excluded_fraction


def _nearest_positive_and_negative(neighbors: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The rows (anchors) with both a positive and a negative neighbour, and those neighbours'
    buffer indices: the nearest (first) of each, neighbours being ordered nearest first."""
    keep = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    # argmax returns the first maximal entry, i.e. the nearest qualifying neighbour.
    pos_col = pos_mask.to(torch.uint8).argmax(dim=1)
    neg_col = neg_mask.to(torch.uint8).argmax(dim=1)
    rows = keep.nonzero(as_tuple=True)[0]
    return rows, neighbors[rows, pos_col[rows]], neighbors[rows, neg_col[rows]]


def sample_anchors(
    buffer_size: int,
    num_anchors: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform buffer indices without replacement, ``min(num_anchors, buffer_size)`` of them (int64).

    Drawn on the generator's device (so a CUDA generator works) and moved to ``device``.
    """
    if buffer_size < 0 or num_anchors < 0:
        raise ValueError(
            f"buffer_size and num_anchors must be >= 0, got {buffer_size} and {num_anchors}; "
            "pass len(buffer) and a non-negative anchor count."
        )
    draw_device = generator.device if generator is not None else device
    perm = torch.randperm(buffer_size, generator=generator, device=draw_device)[: min(num_anchors, buffer_size)]
    return perm if device is None else perm.to(device)
