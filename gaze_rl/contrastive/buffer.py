"""Circular buffer of detached CNN feature maps for return-guided contrastive learning.

Gaze on the Prize (arXiv 2510.08442) mines triplets among *past* states: it keeps
the encoder's feature maps together with the return observed from each state,
searches them for visually similar neighbours and contrasts neighbours whose
returns differ. :class:`FeatureBuffer` is that memory. It stores

* ``features``: the feature maps ``(C, h, w)`` the gaze attends over, **detached**,
  so that storing them never keeps an autograd graph (or the encoder's
  activations) alive;
* ``keys``: the vectors the k-NN search runs on, computed by the caller (e.g.
  pooled and L2-normalised features), so the buffer does not impose an
  embedding;
* ``returns``: the return-to-go attached to each state, always ``float32``;
* ``episode_returns``: the return of the state's whole episode (``float32``), for the
  ``episode`` label (gaze_rl.contrastive.returns);
* ``episodes`` / ``steps``: the state's episode id (unique across envs and resets, int64)
  and its step index within that episode (int64), so that labels can be detrended in time
  and mining can exclude neighbours from the anchor's own episode;
* ``successes``: the success flag of the state's episode (float32: 1.0 / 0.0, NaN while the
  episode has not ended or the env reports no success), for the ``success`` label; filled
  for every held state of an episode when it ends (:meth:`FeatureBuffer.set_episode_success`).

Everything is preallocated once on a single torch device, so adding states never
allocates and a GPU-resident buffer never copies to the host. Features and keys
default to ``float16`` to halve memory (our choice; the paper does not say how it
stores them); returns stay ``float32`` because mining compares them exactly.

The buffer owns its growth (:meth:`FeatureBuffer.grown`): every column is copied, in
insertion order, so a buffer resized between two ``learn()`` calls keeps its states' episode
ids, steps and labels.
"""

from __future__ import annotations

import torch
from torch import Tensor


class FeatureBuffer:
    """Circular buffer of detached feature maps, their k-NN keys and returns, on one torch device.

    Once full, each :meth:`add` overwrites the oldest states. The read accessors
    (:attr:`features`, :attr:`keys`, :attr:`returns`) are views of the filled slots
    in **slot order**: row ``i`` is storage slot ``i``, which is insertion order
    until the buffer first wraps around and not afterwards. Slot indices are what
    the k-NN search and triplet mining return, so they index all three views
    consistently.

    :param capacity: maximum number of states held.
    :param feature_shape: ``(C, h, w)`` of one feature map.
    :param key_dim: dimension of one k-NN key.
    :param device: torch device holding the storage.
    :param dtype: floating dtype of the stored features and keys.
    """

    def __init__(
        self,
        capacity: int,
        feature_shape: tuple[int, int, int],
        key_dim: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float16,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}; pass a positive buffer size.")
        feature_shape = tuple(int(s) for s in feature_shape)  # type: ignore[assignment]  # checked below
        if len(feature_shape) != 3 or min(feature_shape) < 1:
            raise ValueError(
                f"feature_shape must be three positive ints (C, h, w), got {feature_shape}; "
                "pass the shape of one feature map without the batch dimension."
            )
        if key_dim < 1:
            raise ValueError(f"key_dim must be >= 1, got {key_dim}; pass the dimension of the k-NN keys.")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}; use torch.float16 or torch.float32.")

        self._capacity = int(capacity)
        self.feature_shape: tuple[int, int, int] = feature_shape
        self.key_dim = int(key_dim)
        self.device = torch.device(device)
        self.dtype = dtype

        self._features = torch.zeros((self._capacity, *feature_shape), dtype=dtype, device=self.device)
        self._keys = torch.zeros((self._capacity, self.key_dim), dtype=dtype, device=self.device)
        self._returns = torch.zeros(self._capacity, dtype=torch.float32, device=self.device)
        self._episode_returns = torch.zeros(self._capacity, dtype=torch.float32, device=self.device)
        self._episodes = torch.zeros(self._capacity, dtype=torch.int64, device=self.device)
        self._steps = torch.zeros(self._capacity, dtype=torch.int64, device=self.device)
        self._successes = torch.full((self._capacity,), float("nan"), dtype=torch.float32, device=self.device)
        self._next_solo_episode = -1  # ids for states added without one: negative, never reused
        self._pos = 0  # next slot to write
        self._size = 0

    @property
    def capacity(self) -> int:
        """Maximum number of states held."""
        return self._capacity

    @property
    def full(self) -> bool:
        """Whether every slot is filled (further adds overwrite the oldest states)."""
        return self._size == self._capacity

    def __len__(self) -> int:
        """Number of filled slots."""
        return self._size

    @property
    def features(self) -> Tensor:
        """Filled feature maps ``(len, C, h, w)`` in slot order; a view of the storage, do not modify."""
        return self._features[: self._size]

    @property
    def keys(self) -> Tensor:
        """Filled k-NN keys ``(len, key_dim)`` in slot order; a view of the storage, do not modify."""
        return self._keys[: self._size]

    @property
    def returns(self) -> Tensor:
        """Filled returns ``(len,)`` float32 in slot order; a view of the storage, do not modify."""
        return self._returns[: self._size]

    @property
    def episode_returns(self) -> Tensor:
        """Filled whole-episode returns ``(len,)`` float32 in slot order; a view, do not modify."""
        return self._episode_returns[: self._size]

    @property
    def episodes(self) -> Tensor:
        """Filled episode ids ``(len,)`` int64 in slot order; a view, do not modify."""
        return self._episodes[: self._size]

    @property
    def steps(self) -> Tensor:
        """Filled step indices within their episodes ``(len,)`` int64 in slot order; a view, do not modify."""
        return self._steps[: self._size]

    @property
    def successes(self) -> Tensor:
        """Filled episode success flags ``(len,)`` float32 (NaN = not known yet) in slot order; a view."""
        return self._successes[: self._size]

    def _columns(self) -> dict[str, Tensor]:
        """Every per-state storage tensor, by name: what growth copies and what nbytes counts."""
        return {"features": self._features, "keys": self._keys, "returns": self._returns,
                "episode_returns": self._episode_returns, "episodes": self._episodes, "steps": self._steps,
                "successes": self._successes}

    def chronological(self) -> Tensor:
        """Slot indices of the held states, oldest first (insertion order)."""
        if not self.full:
            return torch.arange(self._size, device=self.device)
        return (self._pos + torch.arange(self._capacity, device=self.device)) % self._capacity

    def grown(self, capacity: int) -> FeatureBuffer:
        """A buffer of ``capacity`` (>= this one's) holding this buffer's states with **every**
        column (features, keys, returns, episode returns, episode ids, steps, success flags), oldest
        first, so that the next adds overwrite the oldest states first once it fills up. States
        added later without an episode id still get ids never used by the copied states."""
        if capacity < self._capacity:
            raise ValueError(f"a buffer only grows: capacity {capacity} < current capacity {self._capacity}; "
                             "drop states by making a new buffer instead.")
        new = FeatureBuffer(capacity, self.feature_shape, self.key_dim, device=self.device, dtype=self.dtype)
        order, target = self.chronological(), new._columns()
        for name, column in self._columns().items():
            target[name][: self._size] = column[order]
        new._size, new._pos = self._size, self._size % capacity
        new._next_solo_episode = self._next_solo_episode
        return new

    @torch.no_grad()
    def set_episode_success(self, episodes: Tensor, successes: Tensor) -> int:
        """Sets the success flag of every held state of the given episodes (ids ``(E,)``, flags
        ``(E,)``, e.g. when those episodes end); returns how many states were set."""
        if episodes.shape != successes.shape or episodes.dim() != 1:
            raise ValueError(f"episodes and successes must have the same shape (E,), got {tuple(episodes.shape)} "
                             f"and {tuple(successes.shape)}; pass one flag per episode id.")
        if episodes.numel() == 0 or self._size == 0:
            return 0
        held = self._episodes[: self._size]
        episodes = episodes.to(device=self.device, dtype=torch.int64)
        sorted_ids, order = episodes.sort()
        where = torch.searchsorted(sorted_ids, held).clamp(max=len(sorted_ids) - 1)
        hit = sorted_ids[where] == held
        flags = successes.to(device=self.device, dtype=torch.float32)[order][where]
        self._successes[: self._size] = torch.where(hit, flags, self._successes[: self._size])
        return int(hit.sum())

    def add(
        self,
        features: Tensor,
        keys: Tensor,
        returns: Tensor,
        episodes: Tensor | None = None,
        steps: Tensor | None = None,
        episode_returns: Tensor | None = None,
        successes: Tensor | None = None,
    ) -> None:
        """Store a batch of states, overwriting the oldest ones once the buffer is full.

        :param features: ``(N, C, h, w)`` feature maps.
        :param keys: ``(N, key_dim)`` k-NN keys.
        :param returns: ``(N,)`` return-to-go of each state.
        :param episodes: ``(N,)`` episode id of each state; None = each state its own episode
            (a fresh negative id, never equal to another state's).
        :param steps: ``(N,)`` step index of each state within its episode; None = 0.
        :param episode_returns: ``(N,)`` return of each state's whole episode; None = ``returns``.
        :param successes: ``(N,)`` success flag of each state's episode (NaN = not known yet);
            None = all NaN.

        Inputs are detached and moved to the buffer's device; features and keys are
        cast to the buffer's dtype, returns to float32. ``N`` may exceed the
        capacity, in which case only the last ``capacity`` states are kept, in the
        same slots as if they had been added one at a time.
        """
        expected_features = ("N", *self.feature_shape)
        if features.dim() != 4 or tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"features must have shape {expected_features}, got {tuple(features.shape)}; "
                "pass a batch of feature maps matching the buffer's feature_shape."
            )
        if keys.dim() != 2 or keys.shape[1] != self.key_dim:
            raise ValueError(
                f"keys must have shape ('N', {self.key_dim}), got {tuple(keys.shape)}; "
                "pass one key of size key_dim per state."
            )
        if returns.dim() != 1:
            raise ValueError(
                f"returns must have shape ('N',), got {tuple(returns.shape)}; pass one scalar return per state "
                "(e.g. returns.reshape(-1))."
            )
        n = features.shape[0]
        if keys.shape[0] != n or returns.shape[0] != n:
            raise ValueError(
                f"features, keys and returns must have the same batch size N, got "
                f"{n}, {keys.shape[0]} and {returns.shape[0]}; pass one key and one return per feature map."
            )
        if n == 0:
            return
        if episodes is None:
            episodes = self._next_solo_episode - torch.arange(n, device=features.device)
            self._next_solo_episode -= n
        steps = torch.zeros(n, dtype=torch.int64) if steps is None else steps
        episode_returns = returns if episode_returns is None else episode_returns
        successes = torch.full((n,), float("nan")) if successes is None else successes
        if episodes.shape != (n,) or steps.shape != (n,) or episode_returns.shape != (n,) or successes.shape != (n,):
            raise ValueError(
                f"episodes, steps, episode_returns and successes must have shape ({n},), got "
                f"{tuple(episodes.shape)}, {tuple(steps.shape)}, {tuple(episode_returns.shape)} and "
                f"{tuple(successes.shape)}; pass one of each per state."
            )

        # Adding N > capacity states one by one would leave only the last `capacity`
        # of them; skip the rest but advance the write position as if written.
        if n > self._capacity:
            skip = n - self._capacity
            features, keys, returns = features[skip:], keys[skip:], returns[skip:]
            episodes, steps, episode_returns = episodes[skip:], steps[skip:], episode_returns[skip:]
            successes = successes[skip:]
            self._pos = (self._pos + skip) % self._capacity
            n = self._capacity

        slots = (self._pos + torch.arange(n, device=self.device)) % self._capacity
        self._features[slots] = features.detach().to(device=self.device, dtype=self.dtype)
        self._keys[slots] = keys.detach().to(device=self.device, dtype=self.dtype)
        self._returns[slots] = returns.detach().to(device=self.device, dtype=torch.float32)
        self._episode_returns[slots] = episode_returns.detach().to(device=self.device, dtype=torch.float32)
        self._episodes[slots] = episodes.to(device=self.device, dtype=torch.int64)
        self._steps[slots] = steps.to(device=self.device, dtype=torch.int64)
        self._successes[slots] = successes.detach().to(device=self.device, dtype=torch.float32)
        self._pos = (self._pos + n) % self._capacity
        self._size = min(self._size + n, self._capacity)

    def nbytes(self) -> int:
        """Bytes held by the storage tensors (allocated up front, independent of ``len``)."""
        return sum(t.numel() * t.element_size() for t in self._columns().values())

    def bytes_per_state(self) -> int:
        """Bytes of storage per state: one feature map, one key, two returns, an episode id, a step
        and a success flag."""
        return self.nbytes() // self._capacity
