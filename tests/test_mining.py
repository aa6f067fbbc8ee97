"""Tests for gaze_rl.contrastive.mining: k-NN backends and triplet rules."""

import numpy as np
import pytest
import torch

from gaze_rl.contrastive.mining import (
    KNN_BACKENDS,
    FaissKNN,
    TorchKNN,
    Triplets,
    make_knn,
    mine_triplets,
    return_threshold,
    sample_anchors,
)

# ---------------------------------------------------------------- k-NN


@pytest.fixture(scope="module")
def knn_data() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(2000, 32, generator=gen), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(50, 32, generator=gen), dim=1)
    # Brute-force reference in float64 numpy.
    sims = queries.double().numpy() @ keys.double().numpy().T
    ref = np.argsort(-sims, axis=1)[:, :8]
    return keys, queries, ref


@pytest.mark.parametrize("knn", [TorchKNN(), TorchKNN(chunk_size=300), FaissKNN()], ids=["torch", "torch-chunked", "faiss"])
def test_knn_matches_brute_force(knn, knn_data):
    keys, queries, ref = knn_data
    knn.build(keys)
    sims, idx = knn.search(queries, 8)
    assert isinstance(sims, torch.Tensor) and isinstance(idx, torch.Tensor)
    assert sims.shape == idx.shape == (50, 8)
    assert idx.dtype == torch.int64 and sims.dtype == torch.float32
    for row, ref_row in zip(idx.tolist(), ref):
        assert set(row) == set(ref_row.tolist())
    # Similarities are descending and equal the actual inner products.
    assert torch.all(sims[:, :-1] >= sims[:, 1:])
    expected = (queries[:, None, :] * keys[idx]).sum(-1)
    assert torch.allclose(sims, expected, atol=1e-5)


def test_knn_fp16_keys():
    gen = torch.Generator().manual_seed(1)
    keys = torch.nn.functional.normalize(torch.randn(500, 16, generator=gen), dim=1).half()
    queries = keys[:10].float()
    for knn in (TorchKNN(), FaissKNN()):
        knn.build(keys)
        _, idx = knn.search(queries, 1)
        assert idx[:, 0].tolist() == list(range(10))  # each key is its own nearest neighbour


@pytest.mark.parametrize("knn", [TorchKNN(chunk_size=2), FaissKNN()], ids=["torch", "faiss"])
def test_knn_pads_when_k_exceeds_keys(knn):
    keys = torch.eye(3)
    knn.build(keys)
    sims, idx = knn.search(torch.tensor([[0.0, 1.0, 0.5]]), 5)
    assert idx[0, :2].tolist() == [1, 2]
    assert idx[0, 3:].tolist() == [-1, -1]
    assert sims[0, 0] == pytest.approx(1.0) and sims[0, 1] == pytest.approx(0.5)
    assert torch.isinf(sims[0, 3:]).all() and (sims[0, 3:] < 0).all()


@pytest.mark.parametrize("knn", [TorchKNN(), FaissKNN()], ids=["torch", "faiss"])
def test_knn_errors(knn):
    with pytest.raises(RuntimeError, match="call build"):
        knn.search(torch.zeros(1, 4), 1)
    knn.build(torch.eye(4))
    with pytest.raises(ValueError, match=r"queries must have shape \(Q, 4\), got \(1, 3\)"):
        knn.search(torch.zeros(1, 3), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn.search(torch.zeros(1, 4), 0)


def test_make_knn():
    assert isinstance(make_knn("auto"), TorchKNN)  # CPU: exact torch beats rebuilding a flat index
    assert isinstance(make_knn("faiss"), FaissKNN)
    assert isinstance(make_knn("torch"), TorchKNN)
    with pytest.raises(ValueError) as err:
        make_knn("nope")
    for name in KNN_BACKENDS:
        assert repr(name) in str(err.value)


def test_make_knn_without_faiss(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # makes `import faiss` raise ImportError
    assert isinstance(make_knn("auto"), TorchKNN)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        make_knn("faiss")


# ---------------------------------------------------------------- triplets


def triplet_lists(t: Triplets) -> list[tuple[int, int, int]]:
    return list(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))


# Buffer of 8 states; returns chosen so the median (lower middle) is 2.0.
RETURNS = torch.tensor([0.0, 5.0, 1.0, 3.0, 2.0, 2.0, 4.0, 0.0])


def test_return_threshold_is_median():
    assert return_threshold(RETURNS) == 2.0
    assert return_threshold(torch.tensor([1.0, 3.0, 2.0])) == 2.0
    assert return_threshold(torch.empty(0)) is None  # nothing to split: a single (empty) class
    assert return_threshold(RETURNS, quantile=0.75) == 3.0
    with pytest.raises(ValueError, match="quantile must be in"):
        return_threshold(RETURNS, quantile=1.0)


def test_threshold_keeps_both_classes_when_most_returns_tie_at_the_top():
    # binary success, 80% successes: the median is 1.0 and "> median" would be empty
    returns = torch.tensor([1.0] * 8 + [0.0] * 2)
    assert return_threshold(returns) == 0.0
    # NaN/Inf are ignored by the split
    assert return_threshold(torch.tensor([float("nan"), 1.0, float("inf"), 0.0, 1.0])) == 0.0
    # a single finite value: one class
    assert return_threshold(torch.tensor([2.0, 2.0, float("nan")])) is None


def test_threshold_rule_by_hand():
    anchors = torch.tensor([0, 3, 4, 6])
    neighbors = torch.tensor(
        [
            [0, 2, 5, 3, 1],  # self skipped; low: 2 (1.0); high: 3 (3.0)
            [1, 3, 6, 7, 0],  # high: 1 (5.0) first; self 3 skipped; low: 7 (0.0)
            [6, 1, 3, -1, -1],  # all high, -1 padding skipped -> dropped (no negative)
            [-1, 5, 6, 4, 1],  # padding skipped; low: 5 (2.0 <= 2.0); self 6 skipped; high: 1
        ]
    )
    t = mine_triplets(neighbors, anchors, RETURNS, rule="threshold")
    assert triplet_lists(t) == [(0, 3, 2), (3, 1, 7), (6, 1, 5)]
    assert t.num_anchors == 4 and len(t) == 3
    assert t.valid_fraction == pytest.approx(0.75)
    assert t.anchor.dtype == torch.int64


def test_threshold_rule_ignores_anchor_return_and_uses_explicit_threshold():
    anchors = torch.tensor([1])  # anchor return 5.0, the highest
    neighbors = torch.tensor([[6, 3, 4, 0]])  # 4.0, 3.0, 2.0, 0.0
    assert triplet_lists(mine_triplets(neighbors, anchors, RETURNS, "threshold", threshold=3.5)) == [(1, 6, 3)]
    assert triplet_lists(mine_triplets(neighbors, anchors, RETURNS, "threshold")) == [(1, 6, 4)]  # median 2.0
    # Relative rule: nothing above 5.0 -> no positive -> dropped.
    assert len(mine_triplets(neighbors, anchors, RETURNS, rule="relative")) == 0


def test_relative_rule_by_hand():
    anchors = torch.tensor([3, 4, 0, 2])
    neighbors = torch.tensor(
        [
            [3, 4, 6, 0, 1],  # anchor 3.0: lower 4 (2.0) first, higher 6 (4.0)
            [5, -1, 3, 0, 2],  # anchor 2.0: 5 equal (skipped), padding, higher 3, lower 0
            [7, 2, 4, 1, 6],  # anchor 0.0: nothing lower (7 equal) -> dropped
            [2, 7, 5, -1, -1],  # anchor 1.0: self skipped, lower 7, higher 5
        ]
    )
    t = mine_triplets(neighbors, anchors, RETURNS, rule="relative")
    assert triplet_lists(t) == [(3, 6, 4), (4, 3, 0), (2, 5, 7)]
    assert t.valid_fraction == pytest.approx(0.75)


def test_class_rule_by_hand():
    # median 2.0: high = {1, 3, 6} (5, 3, 4), low = the rest
    anchors = torch.tensor([0, 3, 4])
    neighbors = torch.tensor(
        [
            [0, 3, 7, 2, 1],  # low anchor: self skipped, other class 3 first, same class 7
            [3, 4, 6, 1, 0],  # high anchor: other class 4, same class 6
            [4, 1, 3, 6, -1],  # low anchor: no low neighbour -> dropped
        ]
    )
    t = mine_triplets(neighbors, anchors, RETURNS, rule="class")
    assert triplet_lists(t) == [(0, 7, 3), (3, 6, 4)]
    assert t.valid_fraction == pytest.approx(2 / 3) and not t.single_class


def test_nonfinite_returns_are_excluded_and_counted_never_stalling_mining():
    returns = torch.tensor([0.0, 1.0, float("nan"), 0.5, 2.0, float("inf")])
    anchors = torch.tensor([0, 2, 3])
    neighbors = torch.tensor([[2, 5, 1, 3], [0, 1, 3, 4], [2, 5, 0, 4]])
    for rule in ("class", "threshold", "relative"):
        t = mine_triplets(neighbors, anchors, returns, rule=rule)
        assert t.skipped_nonfinite == 2
        assert len(t) >= 1  # a NaN in the buffer no longer empties the median
        used = torch.cat([t.anchor, t.positive, t.negative])
        assert torch.isfinite(returns[used]).all()
        assert 2 not in t.anchor.tolist()  # a NaN anchor is skipped


def test_mostly_tied_returns_still_mine():
    returns = torch.tensor([1.0] * 7 + [0.0])  # 7 of 8 successes
    neighbors = torch.tensor([[1, 2, 7], [0, 7, 3]])
    t = mine_triplets(neighbors, torch.tensor([0, 1]), returns, rule="class")
    assert len(t) == 2 and torch.all(t.negative == 7)


def test_single_class_is_reported():
    t = mine_triplets(torch.tensor([[1, 2]]), torch.tensor([0]), torch.ones(3), rule="class")
    assert len(t) == 0 and t.single_class


def test_exclusion_of_the_anchors_episode():
    # two episodes: 0 (slots 0-3, steps 0-3) and 1 (slots 4-7, steps 0-3)
    episodes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    steps = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    returns = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    anchors = torch.tensor([0])
    neighbors = torch.tensor([[0, 1, 2, 3, 5, 6]])  # own episode first, then episode 1
    kw = dict(rule="class", episodes=episodes, steps=steps)
    t = mine_triplets(neighbors, anchors, returns, **kw)
    assert triplet_lists(t) == [(0, 1, 2)] and t.same_episode_fraction == pytest.approx(3 / 5)
    assert t.excluded_fraction == 0.0
    # window 2: slots 1 and 2 (steps 1, 2) go; slot 3 (step 3) stays
    t = mine_triplets(neighbors, anchors, returns, exclude_window=2, **kw)
    assert triplet_lists(t) == [(0, 5, 3)] and t.excluded_fraction == pytest.approx(2 / 5)
    # whole episode
    t = mine_triplets(neighbors, anchors, returns, exclude_window=-1, **kw)
    assert triplet_lists(t) == [(0, 5, 6)] and t.excluded_fraction == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="needs the episodes and steps"):
        mine_triplets(neighbors, anchors, returns, exclude_window=2)


@pytest.mark.parametrize("rule", ["class", "threshold", "relative"])
def test_equal_returns_give_no_triplets(rule):
    returns = torch.full((6,), 1.0)
    neighbors = torch.tensor([[1, 2, 3], [0, 2, 4], [5, 4, 3]])
    t = mine_triplets(neighbors, torch.tensor([0, 1, 2]), returns, rule=rule)
    assert len(t) == 0 and t.anchor.shape == (0,)
    assert t.num_anchors == 3 and t.valid_fraction == 0.0


def test_no_anchors():
    t = mine_triplets(torch.empty(0, 4, dtype=torch.int64), torch.empty(0, dtype=torch.int64), RETURNS)
    assert len(t) == 0 and t.num_anchors == 0 and t.valid_fraction == 0.0


def test_mining_on_knn_output_is_consistent():
    """End to end on random data: every triplet satisfies its rule and comes from the anchor's neighbours."""
    gen = torch.Generator().manual_seed(3)
    keys = torch.nn.functional.normalize(torch.randn(300, 8, generator=gen), dim=1)
    returns = torch.randint(0, 4, (300,), generator=gen).float()
    anchors = sample_anchors(300, 64, generator=gen)
    knn = TorchKNN()
    knn.build(keys)
    _, neighbors = knn.search(keys[anchors], 10)  # includes each anchor itself
    for rule in ("class", "threshold", "relative"):
        t = mine_triplets(neighbors, anchors, returns, rule=rule)
        assert len(t) > 0
        assert not torch.any(t.positive == t.anchor) and not torch.any(t.negative == t.anchor)
        thr = return_threshold(returns)
        if rule == "threshold":
            assert torch.all(returns[t.positive] > thr) and torch.all(returns[t.negative] <= thr)
        elif rule == "class":
            high = returns[t.anchor] > thr
            assert torch.equal(returns[t.positive] > thr, high) and torch.equal(returns[t.negative] > thr, ~high)
        else:
            assert torch.all(returns[t.positive] > returns[t.anchor])
            assert torch.all(returns[t.negative] < returns[t.anchor])
        rows = {a: row for a, row in zip(anchors.tolist(), neighbors.tolist())}
        for a, p, n in triplet_lists(t):
            assert p in rows[a] and n in rows[a]


def test_mining_errors():
    with pytest.raises(ValueError, match="unknown triplet rule 'nope'"):
        mine_triplets(torch.zeros(1, 2, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), RETURNS, rule="nope")
    with pytest.raises(ValueError, match=r"anchors must have shape \(2,\)"):
        mine_triplets(torch.zeros(2, 2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), RETURNS)
    with pytest.raises(ValueError, match="must be < len\\(labels\\) = 8"):
        mine_triplets(torch.tensor([[8, 1]]), torch.tensor([0]), RETURNS)


# ---------------------------------------------------------------- anchors


def test_sample_anchors():
    gen = torch.Generator().manual_seed(0)
    a = sample_anchors(100, 30, generator=gen)
    assert a.dtype == torch.int64 and a.shape == (30,)
    assert len(set(a.tolist())) == 30 and a.min() >= 0 and a.max() < 100
    assert sorted(sample_anchors(5, 30).tolist()) == [0, 1, 2, 3, 4]
    assert sample_anchors(0, 3).numel() == 0
    same = sample_anchors(100, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, same)
    with pytest.raises(ValueError, match="must be >= 0"):
        sample_anchors(-1, 3)
