"""Tests for gaze_rl.contrastive.buffer.FeatureBuffer."""

import numpy as np
import pytest
import torch

from gaze_rl.contrastive.buffer import FeatureBuffer

SHAPE = (3, 4, 5)
KEY_DIM = 6


def make_batch(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """States whose every entry encodes their id, so content can be traced after wrap-around."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    features = ids[:, None, None, None].expand(n, *SHAPE).clone()
    keys = ids[:, None].expand(n, KEY_DIM).clone()
    returns = ids * 10.0 + 0.5
    return features, keys, returns


def stored_ids(buf: FeatureBuffer) -> list[int]:
    ids = buf.features[:, 0, 0, 0].float()
    # Every field of a slot must belong to the same state.
    assert torch.all(buf.features.float() == ids[:, None, None, None])
    assert torch.all(buf.keys.float() == ids[:, None])
    assert torch.equal(buf.returns, ids * 10.0 + 0.5)
    return sorted(int(i) for i in ids)


def test_fill_without_wrap_keeps_insertion_order():
    buf = FeatureBuffer(8, SHAPE, KEY_DIM)
    buf.add(*make_batch(0, 3))
    buf.add(*make_batch(3, 2))
    assert len(buf) == 5 and not buf.full
    assert buf.features[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert stored_ids(buf) == [0, 1, 2, 3, 4]


def test_wrap_around_keeps_last_capacity_items():
    buf = FeatureBuffer(5, SHAPE, KEY_DIM)
    for start in range(0, 12, 3):  # 12 states in batches of 3 -> ids 7..11 survive
        buf.add(*make_batch(start, 3))
    assert len(buf) == 5 and buf.full
    assert stored_ids(buf) == [7, 8, 9, 10, 11]
    # Slot order: 12 writes into 5 slots -> slot i holds the last id written to it.
    assert buf.features[:, 0, 0, 0].tolist() == [10, 11, 7, 8, 9]


def test_add_more_than_capacity_at_once():
    buf = FeatureBuffer(4, SHAPE, KEY_DIM)
    buf.add(*make_batch(0, 1))
    buf.add(*make_batch(100, 10))
    assert len(buf) == 4
    assert stored_ids(buf) == [106, 107, 108, 109]
    # Same slots as adding the 10 states one at a time.
    ref = FeatureBuffer(4, SHAPE, KEY_DIM)
    ref.add(*make_batch(0, 1))
    for i in range(100, 110):
        ref.add(*make_batch(i, 1))
    assert torch.equal(buf.features, ref.features)
    assert torch.equal(buf.returns, ref.returns)


def test_storage_dtypes_and_detach():
    buf = FeatureBuffer(4, SHAPE, KEY_DIM)
    features = torch.randn(2, *SHAPE, requires_grad=True)
    keys = torch.randn(2, KEY_DIM, dtype=torch.float64)
    returns = torch.tensor([1, 2], dtype=torch.int64)
    buf.add(features * 2, keys, returns)
    assert buf.features.dtype == torch.float16 and buf.keys.dtype == torch.float16
    assert buf.returns.dtype == torch.float32
    assert not buf.features.requires_grad
    assert buf.returns.tolist() == [1.0, 2.0]
    assert torch.allclose(buf.features.float(), (features * 2).detach(), atol=1e-2, rtol=1e-3)


def test_float32_storage():
    buf = FeatureBuffer(4, SHAPE, KEY_DIM, dtype=torch.float32)
    features, keys, returns = make_batch(0, 2)
    buf.add(features + 0.1, keys, returns)
    assert buf.features.dtype == torch.float32
    assert torch.equal(buf.features, features + 0.1)


@pytest.mark.parametrize("dtype, size", [(torch.float16, 2), (torch.float32, 4)])
def test_nbytes_and_bytes_per_state(dtype, size):
    buf = FeatureBuffer(7, SHAPE, KEY_DIM, dtype=dtype)
    # features + key in dtype, two float32 returns, int64 episode id and step, float32 success flag
    per_state = (3 * 4 * 5 + KEY_DIM) * size + 2 * 4 + 2 * 8 + 4
    assert buf.bytes_per_state() == per_state
    assert buf.nbytes() == 7 * per_state
    buf.add(*make_batch(0, 3))  # storage is preallocated: filling does not change it
    assert buf.nbytes() == 7 * per_state


def test_empty_add_is_noop():
    buf = FeatureBuffer(3, SHAPE, KEY_DIM)
    buf.add(*make_batch(0, 0))
    assert len(buf) == 0 and buf.features.shape == (0, *SHAPE)


def test_invalid_capacity():
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        FeatureBuffer(0, SHAPE, KEY_DIM)


def test_shape_errors_name_expected_and_got():
    buf = FeatureBuffer(4, SHAPE, KEY_DIM)
    features, keys, returns = make_batch(0, 2)
    with pytest.raises(ValueError, match=r"features must have shape \('N', 3, 4, 5\), got \(2, 3, 5, 4\)"):
        buf.add(features.transpose(2, 3), keys, returns)
    with pytest.raises(ValueError, match=r"keys must have shape \('N', 6\), got \(2, 5\)"):
        buf.add(features, keys[:, :5], returns)
    with pytest.raises(ValueError, match=r"returns must have shape \('N',\), got \(2, 1\)"):
        buf.add(features, keys, returns[:, None])
    with pytest.raises(ValueError, match="same batch size N, got 2, 1 and 2"):
        buf.add(features, keys[:1], returns)
    assert len(buf) == 0  # failed adds write nothing


def _full_columns(buf: FeatureBuffer, ids: torch.Tensor) -> None:
    """Every column of the states `ids` in `buf` (added in that order) encodes the state's id."""
    buf.add(*make_batch(int(ids[0]), len(ids)), episodes=ids // 3, steps=ids % 3, episode_returns=ids * 2.0,
            successes=(ids % 2).float())


def test_grown_keeps_every_column_in_insertion_order():
    buf = FeatureBuffer(5, SHAPE, KEY_DIM)
    for start in range(0, 12, 3):  # wraps: ids 7..11 held, slots [10, 11, 7, 8, 9]
        _full_columns(buf, torch.arange(start, start + 3))
    buf.add(*make_batch(50, 1))  # a state without an episode id: a fresh negative one
    solo = int(buf.episodes[buf.features[:, 0, 0, 0] == 50])
    big = buf.grown(9)
    assert big.capacity == 9 and len(big) == 5 and not big.full
    ids = big.features[:, 0, 0, 0].long()
    assert ids.tolist() == [8, 9, 10, 11, 50]  # oldest first
    assert stored_ids(big) == [8, 9, 10, 11, 50]
    regular = ids != 50
    assert big.episodes[regular].tolist() == (ids[regular] // 3).tolist()
    assert big.steps[regular].tolist() == (ids[regular] % 3).tolist()
    assert big.episode_returns[regular].tolist() == (ids[regular] * 2.0).tolist()
    assert big.successes[regular].tolist() == (ids[regular] % 2).float().tolist()
    assert int(big.episodes[~regular]) == solo and torch.isnan(big.successes[~regular]).all()
    # the next adds fill the new slots, then overwrite the oldest state (8) first
    big.add(*make_batch(60, 5))
    assert stored_ids(big) == [9, 10, 11, 50, 60, 61, 62, 63, 64]
    big.add(*make_batch(70, 1))
    assert int(big.episodes[big.features[:, 0, 0, 0] == 70]) < solo  # solo ids are never reused
    with pytest.raises(ValueError, match="only grows"):
        big.grown(4)


def test_set_episode_success_fills_held_states_of_those_episodes():
    buf = FeatureBuffer(8, SHAPE, KEY_DIM)
    _full_columns(buf, torch.arange(0, 6))  # episodes 0 (ids 0-2) and 1 (ids 3-5)
    buf._successes[:] = float("nan")
    assert buf.set_episode_success(torch.tensor([1, 7]), torch.tensor([1.0, 0.0])) == 3
    np.testing.assert_array_equal(buf.successes.numpy(), [np.nan] * 3 + [1.0] * 3)
    assert buf.set_episode_success(torch.tensor([0]), torch.tensor([0.0])) == 3
    np.testing.assert_array_equal(buf.successes.numpy(), [0.0] * 3 + [1.0] * 3)
