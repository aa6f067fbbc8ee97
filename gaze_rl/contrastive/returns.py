"""The labels attached to stored states, and the registry of labels mining can use.

Every stored state carries its discounted return-to-go G_t, the discounted return of its
whole episode (the same number for every state of the episode), its episode id and its
step index (gaze_rl.contrastive.buffer). A *label* is computed from these at mining time:

* ``to-go``: G_t (the natural per-state reading of the paper's "return of the state").
  With a near-constant dense reward and fixed-length episodes it mostly measures time left
  (issue 12: Spearman(G_t, t) = -0.89 on PushT-v1).
* ``episode``: the episode's discounted return from its first state,
  sum_{i<t} gamma^i r_i + gamma^t G_t, equal for every state of an episode: it says how
  the episode went, not how much of it is left.
* ``detrended``: G_t minus the mean G over the buffer's states at the same step index, so
  that the part explained by time alone is removed.
* ``success``: the episode's success flag (ManiSkill's ``success_once``, read from the info of
  the episode's last step, see :func:`episode_success`), 1 / 0 for every state of the episode,
  whatever its rewards; NaN until the episode ends (and for envs that report no success).

Discount: every discounted label (to-go, episode, detrended) uses ``return_discount`` of the
contrastive config, which is the algorithm's gamma when None (the default, the behaviour
before it was its own setting). A discount near 1 makes the episode label the episode's
(undiscounted) sum of rewards; a small one makes it mostly the first rewards, i.e. mostly the
start state. GazePPO's tail bootstrap V(s_T) is the value network's, trained with the
algorithm's gamma, so with another return discount the tails mix the two discounts.

Episode ends and rollout tails, for both algorithms: an episode that ended (terminated *or*
truncated by the time limit) is labelled with the rewards it collected, with no bootstrap:
the label is what that episode returned. GazePPO's rollout tails (episodes still running
when the rollout ends) are completed with the value network's V(s_T), the best estimate of
what the episode will still collect. GazeSAC stores an episode when it ends, and once a
running episode holds `sac_update_interval` states it hands them over unfinished
(EpisodeReturnTracker.flush), completed with the critics' estimate (the smaller of
the twin Q(s_T, mu(s_T)) at the actor's deterministic action), so that a long episode is
neither held in memory without limit nor kept from the gaze; the episode's later states
continue its id, step count and discounted reward. The success label of such a part (and of
a PPO tail) is NaN when it enters the buffer and is filled, for every state of the episode
still held, when the episode ends later (FeatureBuffer.set_episode_success).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from gaze_rl.contrastive.buffer import FeatureBuffer
from gaze_rl.contrastive.labels import RETURN_LABELS

Observation = np.ndarray | dict[str, np.ndarray]


def discounted_returns_to_go(
    rewards: np.ndarray, dones: np.ndarray, gamma: float, bootstrap: np.ndarray | None = None
) -> np.ndarray:
    """Return-to-go G_t = r_t + gamma * G_{t+1}, restarted after each done.

    :param rewards: (T, N) rewards, time first.
    :param dones: (T, N) True where the episode ended after step t.
    :param gamma: discount in [0, 1].
    :param bootstrap: (N,) value of G_T for envs whose last episode is unfinished (0 if None).
    """
    if rewards.shape != dones.shape:
        raise ValueError(f"rewards {rewards.shape} and dones {dones.shape} must have the same shape")
    returns = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[1], dtype=np.float32) if bootstrap is None else bootstrap.astype(np.float32)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running * (1.0 - dones[t].astype(np.float32))
        returns[t] = running
    return returns


@dataclass
class StateLabels:
    """What the buffer stores beside each state, flattened to one row per state."""

    to_go: np.ndarray  # (n,) float32, discounted return-to-go
    episode_return: np.ndarray  # (n,) float32, discounted return of the whole episode
    episode: np.ndarray  # (n,) int64, episode id (unique across envs and resets)
    step: np.ndarray  # (n,) int64, step index within the episode
    success: np.ndarray  # (n,) float32, the episode's success flag (1 / 0); NaN while it runs
    # ids and success flags of the episodes that ended with these states (their states from
    # earlier rollouts, still in the feature buffer, get the flag too)
    ended: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(0, np.float32)))


def episode_success(info: Mapping[str, Any]) -> float:
    """The success flag an env reports on an episode's last step: ManiSkill's `success_once`
    (gaze_rl.envs EpisodeOutcome), else SB3's `is_success`; NaN when it reports neither."""
    for key in ("success_once", "is_success"):
        if key in info and info[key] is not None:
            return float(bool(np.asarray(info[key]).item()))
    return float("nan")


def step_successes(infos: Sequence[Mapping[str, Any]], dones: np.ndarray) -> np.ndarray:
    """(N,) float32 success flags of one vec-env step: the flag where an episode ended, else NaN."""
    return np.array([episode_success(info) if done else np.nan for info, done in zip(infos, dones)], np.float32)


class EpisodeBook:
    """Per-env episode id, step index and discounted reward so far, carried across rollouts
    (an episode may span several PPO rollouts)."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma = gamma
        self._next_id = 0
        self.ids = self.new_ids(num_envs)
        self.step = np.zeros(num_envs, dtype=np.int64)
        self.past = np.zeros(num_envs, dtype=np.float64)  # sum_{i<t} gamma^i r_i

    def new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def label_rollout(self, rewards: np.ndarray, starts: np.ndarray, to_go: np.ndarray,
                      dones: np.ndarray | None = None, successes: np.ndarray | None = None) -> StateLabels:
        """Labels of a (T, N) rollout, time first; rows flattened time-major as SB3's buffer.

        :param rewards: (T, N) rewards.
        :param starts: (T, N) True where observation t is the first of an episode.
        :param to_go: (T, N) discounted returns-to-go (tails already bootstrapped).
        :param dones: (T, N) True where the episode ended after step t (starts shifted by one,
            the last row from the env); None = no episode known to end (success all NaN).
        :param successes: (T, N) success flag reported where an episode ended (NaN elsewhere,
            see :func:`step_successes`); None = unknown.
        """
        T, N = rewards.shape
        episode = np.empty((T, N), dtype=np.int64)
        step = np.empty((T, N), dtype=np.int64)
        past = np.empty((T, N), dtype=np.float64)
        for t in range(T):
            new = starts[t].astype(bool)
            if new.any():
                self.ids[new] = self.new_ids(int(new.sum()))
                self.step[new], self.past[new] = 0, 0.0
            episode[t], step[t], past[t] = self.ids, self.step, self.past
            self.past += self.gamma ** self.step * rewards[t]
            self.step += 1
        episode_return = past + self.gamma ** step * to_go
        success = np.full((T, N), np.nan, dtype=np.float32)
        ended = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if dones is not None:
            dones = dones.astype(bool)
            flags = np.full((T, N), np.nan, np.float32) if successes is None else successes.astype(np.float32)
            running = np.full(N, np.nan, dtype=np.float32)  # the tail's episode has not ended: NaN
            for t in reversed(range(T)):
                running = np.where(dones[t], flags[t], running)
                success[t] = running
            ended = (episode[dones], flags[dones])
        return StateLabels(to_go.reshape(-1).astype(np.float32), episode_return.reshape(-1).astype(np.float32),
                           episode.reshape(-1), step.reshape(-1), success.reshape(-1), ended)


def episode_labels(rewards: np.ndarray, gamma: float, episode_id: int, success: float = float("nan"), *,
                   first_step: int = 0, past: float = 0.0, bootstrap: float = 0.0, ended: bool = True) -> StateLabels:
    """Labels of one episode's (T,) rewards (and its success flag, NaN if unknown).

    By default the whole of a finished episode. For a part of it (GazeSAC's bounded memory):
    `first_step` = the step index of its first state, `past` = sum_{i < first_step} gamma^i r_i
    of the states handed over before it, `bootstrap` = the estimate of what follows its last
    state (0 once the episode has ended), `ended` = whether the episode ended with it (if not,
    success is NaN). A part that ends an episode started earlier reports the episode in
    `ended`, so that its earlier states get the success flag too."""
    rewards = np.asarray(rewards, dtype=np.float64)
    n = len(rewards)
    to_go = discounted_returns_to_go(rewards.astype(np.float32)[:, None], np.zeros((n, 1), bool), gamma,
                                     np.array([bootstrap], np.float32))[:, 0]
    step = first_step + np.arange(n, dtype=np.int64)
    # sum_{i<t} gamma^i r_i + gamma^t G_t is the same for every t of the part: one number, exactly
    # G_0 for a whole episode (gamma^t underflows to 0 for huge t)
    episode_return = past + float(gamma) ** first_step * float(to_go[0]) if n else 0.0
    flag = success if ended else float("nan")
    labels = StateLabels(to_go, np.full(n, episode_return, np.float32), np.full(n, episode_id, np.int64), step,
                         np.full(n, flag, np.float32))
    if ended and first_step > 0:
        labels.ended = (np.array([episode_id], np.int64), np.array([flag], np.float32))
    return labels


class EpisodeReturnTracker:
    """Collects each env's observations and rewards until its episode ends, then hands back
    the episode with its labels (the off-policy route: a replay buffer stores no returns).
    `flush` hands back the states of the running episodes early, their return-to-go completed
    with a bootstrap value; the episode then continues (same id, step count, discounted sum)."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma = gamma
        self._next_id = 0
        self._obs: list[list[Observation]] = [[] for _ in range(num_envs)]
        self._rewards: list[list[float]] = [[] for _ in range(num_envs)]
        # per env: the running episode's id (-1: none handed over yet), states handed over, and
        # their discounted reward sum_{i < first} gamma^i r_i
        self._ids = np.full(num_envs, -1, np.int64)
        self._first = np.zeros(num_envs, np.int64)
        self._past = np.zeros(num_envs, np.float64)

    @property
    def pending(self) -> int:
        """States of the unfinished episodes held in memory (not yet handed over)."""
        return sum(len(obs) for obs in self._obs)

    def reset(self) -> None:
        """Drops the unfinished episodes (the envs were reset under them)."""
        for i, (obs, rewards) in enumerate(zip(self._obs, self._rewards)):
            obs.clear()
            rewards.clear()
            self._start_episode(i)

    def _start_episode(self, i: int) -> None:
        self._ids[i], self._first[i], self._past[i] = -1, 0, 0.0

    def _episode_id(self, i: int) -> int:
        if self._ids[i] < 0:  # ids in the order episodes are first handed over
            self._ids[i] = self._next_id
            self._next_id += 1
        return int(self._ids[i])

    def _hand_over(self, i: int, example: Observation, success: float, bootstrap: float,
                   ended: bool) -> tuple[Observation, StateLabels]:
        """Env i's held states with their labels; the env's record then starts empty."""
        rewards = np.asarray(self._rewards[i])
        labels = episode_labels(rewards, self.gamma, self._episode_id(i), success, first_step=int(self._first[i]),
                                past=float(self._past[i]), bootstrap=bootstrap, ended=ended)
        episode = self._obs[i]
        stacked: Observation = ({k: np.stack([o[k] for o in episode]) for k in example} if isinstance(example, dict)
                                else np.stack(episode))  # type: ignore[arg-type]  # arrays when obs is
        if ended:
            self._start_episode(i)
        else:
            weight = np.power(float(self.gamma), self._first[i] + np.arange(len(rewards), dtype=np.float64))
            self._past[i] += float((weight * rewards).sum())
            self._first[i] += len(rewards)
        self._obs[i], self._rewards[i] = [], []
        return stacked, labels

    def record(
        self, obs: Observation, rewards: np.ndarray, dones: np.ndarray,
        infos: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[tuple[Observation, StateLabels]]:
        """Adds one vec-env step (obs = the observations the actions were taken from: an array,
        or a dict of arrays, with the envs first; infos = the step's infos, for the success label).

        Returns the episodes that ended at this step, each as (stacked observations, labels)
        (only their states not yet handed over by `flush`).
        """
        finished = []
        for i, done in enumerate(dones):
            self._obs[i].append({k: v[i].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[i].copy())
            self._rewards[i].append(float(rewards[i]))
            if done:
                success = episode_success(infos[i]) if infos is not None else float("nan")
                finished.append(self._hand_over(i, obs, success, 0.0, ended=True))
        return finished

    def holding(self, at_least: int = 1) -> list[int]:
        """The envs whose running episode has at least this many states held."""
        return [i for i, held in enumerate(self._obs) if len(held) >= max(1, at_least)]

    def flush(self, bootstrap: np.ndarray, envs: Sequence[int] | None = None) -> list[tuple[Observation, StateLabels]]:
        """Hands back the held states of the running episodes of `envs` (None: every env holding
        some), labelled with their return-to-go completed by `bootstrap` (N,): the value estimate
        of each env's next state (the one after its last recorded step). The episodes go on;
        their success flags stay NaN until they end."""
        flushed = []
        for i in self.holding() if envs is None else envs:
            held = self._obs[i]
            if held:
                flushed.append(self._hand_over(i, held[0], float("nan"), float(bootstrap[i]), ended=False))
        return flushed


def buffer_labels(buffer: FeatureBuffer, label: str) -> Tensor:
    """The (len(buffer),) float32 labels named `label` (a key of RETURN_LABELS)."""
    if label not in RETURN_LABELS:
        raise ValueError(f"unknown return label {label!r}; choose one of {', '.join(RETURN_LABELS)}")
    if len(buffer) == 0:
        return buffer.returns
    return RETURN_LABELS[label].fn(buffer)
