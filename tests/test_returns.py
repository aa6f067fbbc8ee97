"""Tests for gaze_rl.contrastive.returns (return-to-go attached to stored states)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaze_rl.contrastive.buffer import FeatureBuffer
from gaze_rl.contrastive.returns import (
    RETURN_LABELS,
    EpisodeBook,
    EpisodeReturnTracker,
    buffer_labels,
    discounted_returns_to_go,
    episode_success,
    step_successes,
)


def _reference(rewards, dones, gamma, bootstrap=None):
    """Per-env, per-episode loops written independently of the implementation."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for i in range(N):
        # split env i's steps into episodes: an episode ends after a step with done
        start = 0
        for t in range(T):
            if dones[t, i] or t == T - 1:
                tail = 0.0
                if not dones[t, i] and bootstrap is not None:
                    tail = float(bootstrap[i])  # unfinished last episode
                for s in range(start, t + 1):
                    out[s, i] = sum(gamma ** (u - s) * rewards[u, i] for u in range(s, t + 1))
                    out[s, i] += gamma ** (t + 1 - s) * tail
                start = t + 1
    return out


def test_hand_computed_with_done_and_bootstrap():
    rewards = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 1.0]], dtype=np.float32)
    dones = np.array([[False, False], [True, False], [False, False], [False, True]])
    returns = discounted_returns_to_go(rewards, dones, 0.5, bootstrap=np.array([10.0, 5.0]))
    # env 0: episode [1, 2] ends at t=1; episode [3, 4] is unfinished, G_4 = 10
    #   t3 = 4 + 0.5 * 10 = 9, t2 = 3 + 0.5 * 9 = 7.5, t1 = 2, t0 = 1 + 0.5 * 2 = 2
    # env 1: ends at t=3, so its bootstrap (5) must be ignored
    #   t3 = 1, t2 = 0.5, t1 = 0.25, t0 = 0.125
    expected = np.array([[2.0, 0.125], [2.0, 0.25], [7.5, 0.5], [9.0, 1.0]])
    np.testing.assert_allclose(returns, expected, rtol=0, atol=1e-6)
    assert returns.dtype == np.float32
    assert returns.shape == rewards.shape


def test_hand_computed_without_bootstrap():
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    dones = np.array([[False], [True], [False], [False]])
    returns = discounted_returns_to_go(rewards, dones, 0.5)
    # unfinished tail bootstraps with 0: t3 = 4, t2 = 3 + 2 = 5
    np.testing.assert_allclose(returns[:, 0], [2.0, 2.0, 5.0, 4.0], atol=1e-6)


def test_gamma_edge_cases():
    rewards = np.array([[1.0], [2.0], [3.0]])
    dones = np.zeros_like(rewards, dtype=bool)
    np.testing.assert_allclose(discounted_returns_to_go(rewards, dones, 0.0)[:, 0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(discounted_returns_to_go(rewards, dones, 1.0)[:, 0], [6.0, 5.0, 3.0])
    np.testing.assert_allclose(
        discounted_returns_to_go(rewards, dones, 1.0, bootstrap=np.array([4.0]))[:, 0], [10.0, 9.0, 7.0]
    )


def test_inputs_not_modified_and_shape_checked():
    rewards = np.arange(6, dtype=np.float32).reshape(3, 2)
    dones = np.array([[False, True], [False, False], [True, False]])
    bootstrap = np.array([1.0, 2.0])
    r0, d0, b0 = rewards.copy(), dones.copy(), bootstrap.copy()
    discounted_returns_to_go(rewards, dones, 0.9, bootstrap)
    np.testing.assert_array_equal(rewards, r0)
    np.testing.assert_array_equal(dones, d0)
    np.testing.assert_array_equal(bootstrap, b0)
    with pytest.raises(ValueError, match="same shape"):
        discounted_returns_to_go(rewards, dones[:2], 0.9)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 12),
    N=st.integers(1, 3),
    gamma=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    use_bootstrap=st.booleans(),
)
def test_matches_reference(T, N, gamma, seed, use_bootstrap):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    dones = rng.random((T, N)) < 0.3
    bootstrap = rng.normal(size=N).astype(np.float32) if use_bootstrap else None
    got = discounted_returns_to_go(rewards, dones, gamma, bootstrap)
    np.testing.assert_allclose(got, _reference(rewards, dones, gamma, bootstrap), rtol=1e-4, atol=1e-4)


def test_tracker_two_envs_ending_at_different_steps():
    gamma = 0.5
    tracker = EpisodeReturnTracker(num_envs=2, gamma=gamma)
    # env 0: episodes of length 2, 2; env 1: one episode of length 3, then unfinished
    rewards = [np.array([1.0, 10.0]), np.array([2.0, 20.0]), np.array([3.0, 30.0]), np.array([4.0, 40.0])]
    dones = [np.array([False, False]), np.array([True, False]), np.array([False, True]), np.array([True, False])]
    finished_per_step = []
    for t in range(4):
        obs = {
            "rgb": np.stack([np.full((2, 2, 3), 10 * i + t, dtype=np.uint8) for i in range(2)]),
            "state": np.array([[float(t), 0.0], [float(t), 1.0]], dtype=np.float32),
        }
        finished_per_step.append(tracker.record(obs, rewards[t], dones[t]))
        obs["rgb"][:] = 255  # the tracker must have copied the observations
        obs["state"][:] = -1.0

    assert [len(f) for f in finished_per_step] == [0, 1, 1, 1]

    (obs_a, lab_a), = finished_per_step[1]  # env 0, steps 0-1
    ret_a = lab_a.to_go
    np.testing.assert_allclose(ret_a, [1.0 + 0.5 * 2.0, 2.0])
    np.testing.assert_array_equal(obs_a["state"][:, 0], [0.0, 1.0])
    np.testing.assert_array_equal(obs_a["state"][:, 1], [0.0, 0.0])
    assert obs_a["rgb"].shape == (2, 2, 2, 3) and obs_a["rgb"].dtype == np.uint8
    np.testing.assert_array_equal(obs_a["rgb"][:, 0, 0, 0], [0, 1])

    (obs_b, lab_b), = finished_per_step[2]  # env 1, steps 0-2
    ret_b = lab_b.to_go
    np.testing.assert_allclose(ret_b, [10.0 + 0.5 * 20.0 + 0.25 * 30.0, 20.0 + 0.5 * 30.0, 30.0])
    np.testing.assert_array_equal(obs_b["state"][:, 1], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(obs_b["rgb"][:, 0, 0, 0], [10, 11, 12])
    assert ret_b.dtype == np.float32

    (obs_c, lab_c), = finished_per_step[3]  # env 0's second episode, steps 2-3
    ret_c = lab_c.to_go
    np.testing.assert_allclose(ret_c, [3.0 + 0.5 * 4.0, 4.0])
    np.testing.assert_array_equal(obs_c["state"][:, 0], [2.0, 3.0])


def test_episode_book_carries_episodes_across_rollouts():
    gamma = 0.5
    book = EpisodeBook(num_envs=2, gamma=gamma)
    # env 0: one episode over both rollouts; env 1: a new episode at t=1 of rollout 1
    rewards = np.array([[1.0, 1.0], [2.0, 2.0]])
    starts = np.array([[True, True], [False, True]])
    first = book.label_rollout(rewards, starts, to_go=np.array([[5.0, 1.0], [4.0, 3.0]]))
    np.testing.assert_array_equal(first.step, [0, 0, 1, 0])
    e = first.episode
    assert e[0] == e[2] and len({e[0], e[1], e[3]}) == 3
    # past + gamma^t * G_t: env 0 at t=1: 1 + 0.5 * 4
    np.testing.assert_allclose(first.episode_return, [5.0, 1.0, 3.0, 3.0])
    second = book.label_rollout(np.array([[4.0, 4.0]]), np.array([[False, False]]), to_go=np.array([[4.0, 4.0]]))
    np.testing.assert_array_equal(second.episode, [e[0], e[3]])
    np.testing.assert_array_equal(second.step, [2, 1])
    # env 0: 1 + 0.5 * 2 + 0.25 * 4; env 1: 2 + 0.5 * 4
    np.testing.assert_allclose(second.episode_return, [3.0, 4.0])


def _buffer(to_go, steps, episode_returns=None):
    buf = FeatureBuffer(16, (1, 2, 2), 2)
    n = len(to_go)
    buf.add(torch.zeros(n, 1, 2, 2), torch.zeros(n, 2), torch.tensor(to_go), torch.zeros(n, dtype=torch.int64),
            torch.tensor(steps), None if episode_returns is None else torch.tensor(episode_returns))
    return buf


def test_labels():
    buf = _buffer([2.0, 4.0, 1.0, 3.0, float("nan")], [0, 0, 1, 1, 0], [7.0, 7.0, 8.0, 8.0, 9.0])
    np.testing.assert_allclose(buffer_labels(buf, "to-go").numpy(), [2.0, 4.0, 1.0, 3.0, np.nan])
    np.testing.assert_allclose(buffer_labels(buf, "episode").numpy(), [7.0, 7.0, 8.0, 8.0, 9.0])
    # minus the mean of the finite labels at the same step: step 0 -> 3, step 1 -> 2
    np.testing.assert_allclose(buffer_labels(buf, "detrended").numpy(), [-1.0, 1.0, -1.0, 1.0, np.nan])
    with pytest.raises(ValueError, match="unknown return label 'nope'"):
        buffer_labels(buf, "nope")
    assert set(RETURN_LABELS) == {"to-go", "episode", "detrended", "success"}


def test_success_label_is_the_episode_flag_not_the_rewards():
    buf = _buffer([9.0, 9.0, 0.0, 0.0, 5.0], [0, 1, 0, 1, 0], [9.0, 9.0, 0.0, 0.0, 5.0])
    # episode of high reward failed, episode of no reward succeeded, the last one still runs
    buf._successes[:5] = torch.tensor([0.0, 0.0, 1.0, 1.0, float("nan")])
    np.testing.assert_array_equal(buffer_labels(buf, "success").numpy(), [0.0, 0.0, 1.0, 1.0, np.nan])


def test_episode_success_reads_maniskill_then_sb3_keys():
    assert episode_success({"success_once": True, "is_success": False}) == 1.0
    assert episode_success({"is_success": np.bool_(False)}) == 0.0
    assert np.isnan(episode_success({"episode": {"r": 1.0}}))
    np.testing.assert_array_equal(
        step_successes([{"success_once": True}, {"success_once": False}, {}], np.array([True, False, True])),
        [1.0, np.nan, np.nan])


def test_episode_book_success_of_ended_episodes_and_nan_tails():
    book = EpisodeBook(num_envs=2, gamma=0.5)
    # env 0: an episode of steps 0-1 that succeeds with no reward, then a tail (steps 2-3);
    # env 1: one 4-step episode with high rewards that fails
    rewards = np.array([[0.0, 5.0], [0.0, 5.0], [1.0, 5.0], [1.0, 5.0]])
    starts = np.array([[True, True], [False, False], [True, False], [False, False]])
    dones = np.array([[False, False], [True, False], [False, False], [False, True]])
    successes = np.full((4, 2), np.nan, np.float32)
    successes[1, 0], successes[3, 1] = 1.0, 0.0
    labels = book.label_rollout(rewards, starts, np.zeros((4, 2)), dones, successes)
    np.testing.assert_array_equal(labels.success.reshape(4, 2), [[1, 0], [1, 0], [np.nan, 0], [np.nan, 0]])
    ids, flags = labels.ended
    e = labels.episode.reshape(4, 2)
    assert sorted(zip(ids.tolist(), flags.tolist())) == sorted([(e[0, 0], 1.0), (e[0, 1], 0.0)])
    # the tail's episode ends in the next rollout, failing: only that rollout's labels know it
    more = book.label_rollout(np.zeros((1, 2)), np.zeros((1, 2), bool), np.zeros((1, 2)),
                              np.array([[True, False]]), np.array([[0.0, np.nan]], np.float32))
    assert more.episode[0] == e[2, 0] and more.success[0] == 0.0 and np.isnan(more.success[1])
    assert more.ended[0].tolist() == [e[2, 0]] and more.ended[1].tolist() == [0.0]
    # without dones nothing is known
    assert np.isnan(book.label_rollout(rewards, starts, np.zeros((4, 2))).success).all()


def test_tracker_success_from_infos():
    tracker = EpisodeReturnTracker(num_envs=2, gamma=0.9)
    obs = np.zeros((2, 1), np.float32)
    assert tracker.record(obs, np.array([5.0, 0.0]), np.array([False, False]), [{}, {}]) == []
    done = tracker.record(obs, np.array([5.0, 0.0]), np.array([True, True]),
                          [{"success_once": False}, {"success_once": True}])
    assert [lab.success.tolist() for _, lab in done] == [[0.0, 0.0], [1.0, 1.0]]
    # no infos, or infos without a flag: unknown
    done = tracker.record(obs, np.array([1.0, 1.0]), np.array([True, True]))
    assert all(np.isnan(lab.success).all() for _, lab in done)
