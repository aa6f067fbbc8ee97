"""ContrastiveLearner on synthetic feature maps: mining over the buffer, the update, guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from gaze_rl.contrastive.labels import shuffle_labels
from gaze_rl.contrastive.learner import ContrastiveConfig, ContrastiveLearner
from gaze_rl.errors import ConfigError
from gaze_rl.nets.extractor import GazeExtractor


def extractor(attention: str = "gaussian") -> GazeExtractor:
    space = spaces.Dict(rgb=spaces.Box(0, 255, (3, 64, 64), np.uint8))
    return GazeExtractor(space, attention=attention)


def filled_learner(**config) -> ContrastiveLearner:
    torch.manual_seed(0)
    learner = ContrastiveLearner(extractor(), ContrastiveConfig(buffer_size=512, **config))
    maps = torch.rand(400, *learner.extractor.map_shape)
    learner.add(maps, torch.linspace(0, 1, 400))
    return learner


def test_update_trains_only_the_gaze_head_and_projection():
    learner = filled_learner()
    before = {n: p.detach().clone() for n, p in learner.extractor.named_parameters()}
    metrics = learner.update()
    assert metrics["gaze/num_triplets"] > 0 and np.isfinite(metrics["gaze/triplet_loss"])
    changed = {n for n, p in learner.extractor.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("attention.") for n in changed)


def test_keys_are_unit_norm_random_projections():
    learner = filled_learner()
    keys = learner.buffer.keys.float()
    assert keys.shape == (400, 256)
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(400), atol=2e-3, rtol=0)


def test_constant_returns_give_no_triplets_and_no_step():
    learner = ContrastiveLearner(extractor(), ContrastiveConfig(buffer_size=512))
    learner.add(torch.rand(100, *learner.extractor.map_shape), torch.zeros(100))
    metrics = learner.update()
    assert metrics["gaze/num_triplets"] == 0 and metrics["gaze/valid_fraction"] == 0.0
    assert learner.num_updates == 0 and not learner.optimizer.state


def test_non_finite_loss_is_skipped_and_counted():
    learner = filled_learner()
    with torch.no_grad():
        next(learner.extractor.attention.parameters()).fill_(float("nan"))
    metrics = learner.update()
    # every step of the update is skipped (and counted)
    assert metrics["gaze/skipped_nonfinite"] == learner.config.steps_per_update and metrics["gaze/steps_taken"] == 0
    assert learner.num_updates == 0 and not learner.optimizer.state


def test_needs_a_gaussian_gaze():
    with pytest.raises(ValueError, match="Gaussian gaze"):
        ContrastiveLearner(extractor("patch"), ContrastiveConfig())


# --- the gaze-shuffled control -------------------------------------------------------------------

def _episodes(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode ids and steps of episodes of these lengths, states interleaved as in a buffer."""
    episodes = torch.cat([torch.full((n,), e) for e, n in enumerate(lengths)])
    steps = torch.cat([torch.arange(n) for n in lengths])
    order = torch.randperm(len(episodes), generator=torch.Generator().manual_seed(1))
    return episodes[order], steps[order]


def test_episode_shuffle_moves_whole_episodes():
    lengths = [3, 5, 5, 1, 4, 5, 2, 5]
    episodes, steps = _episodes(lengths)
    per_episode = torch.tensor([10.0, 11.0, 12.0, 13.0, float("nan"), 15.0, 16.0, 17.0])
    labels = per_episode[episodes]  # an episode-constant label (episode return, success)
    moved = 0
    for seed in range(5):
        shuffled = shuffle_labels(labels, "episode", torch.Generator().manual_seed(seed), episodes, steps)
        got = []
        for e in range(len(lengths)):
            values = shuffled[episodes == e]
            assert values.isnan().all() or (values == values[0]).all()  # one label per episode
            got.append(float(values[0]))
        # the multiset of episode labels is preserved (NaN moves with its episode)
        assert sorted(map(str, got)) == sorted(map(str, per_episode.tolist()))
        moved += sum(str(g) != str(v) for g, v in zip(got, per_episode.tolist()))
    assert moved > 0  # some episode got another's label


def test_episode_shuffle_keeps_the_course_within_episodes():
    episodes, steps = _episodes([4, 4, 4, 4, 4, 4])
    labels = (episodes * 100 + (3 - steps)).float()  # a to-go: decreasing within each episode
    shuffled = shuffle_labels(labels, "episode", torch.Generator().manual_seed(0), episodes, steps)
    for e in range(6):
        mine = shuffled[episodes == e][steps[episodes == e].argsort()]
        source = int(mine[0]) // 100
        assert mine.tolist() == [source * 100 + 3 - s for s in range(4)]  # another episode's sequence, in order
    # a 'state' shuffle mixes episodes (the control before issue 23)
    mixed = shuffle_labels(labels, "state", torch.Generator().manual_seed(0), episodes, steps)
    assert any(len({int(v) // 100 for v in mixed[episodes == e]}) > 1 for e in range(6))


def test_shuffle_by_state_is_the_old_per_state_permutation():
    learner = filled_learner(shuffle_labels=True, shuffle_by="state")
    labels = torch.linspace(0, 1, 400)
    expected = labels[torch.randperm(400, generator=torch.Generator().manual_seed(0))]
    got = shuffle_labels(labels, "state", torch.Generator().manual_seed(0), learner.buffer.episodes,
                         learner.buffer.steps)
    assert torch.equal(got, expected)
    assert learner.update()["gaze/num_triplets"] > 0


@pytest.mark.parametrize("field, value, match", [
    ("shuffle_by", "scene", "unknown shuffle_by 'scene'; valid choices: episode, state"),
    ("shuffle_labels", "episode", "shuffle_labels must be True or False"),
    ("projection", "learned", "unknown projection 'learned'; valid choices: trained, frozen, none"),
])
def test_bad_control_and_projection_values(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ContrastiveConfig(**{field: value})


def test_update_logs_the_share_of_active_triplets():
    metrics = filled_learner().update()
    assert 0.0 < metrics["gaze/active_fraction"] <= 1.0


# --- what the triplet loss compares --------------------------------------------------------------

def test_frozen_projection_is_not_optimised():
    learner = filled_learner(projection="frozen")
    optimised = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in learner.extractor.attention.parameters()}
    assert isinstance(learner.projection, torch.nn.Linear) and learner.projection.out_features == 128
    before = {n: p.detach().clone() for n, p in learner.projection.named_parameters()}
    gaze_before = {n: p.detach().clone() for n, p in learner.extractor.attention.named_parameters()}
    metrics = learner.update()
    assert metrics["gaze/steps_taken"] > 0 and np.isfinite(metrics["gaze/triplet_loss"])
    assert all(torch.equal(p, before[n]) for n, p in learner.projection.named_parameters())
    assert any(not torch.equal(p, gaze_before[n]) for n, p in learner.extractor.attention.named_parameters())
    # 'trained' (the default) optimises the projection too
    trained = filled_learner()
    optimised = {id(p) for group in trained.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in trained.projection.parameters()} <= optimised


def test_no_projection_compares_the_attended_maps():
    learner = filled_learner(projection="none")
    assert isinstance(learner.projection, torch.nn.Identity)
    optimised = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in learner.extractor.attention.parameters()}
    metrics = learner.update()
    assert metrics["gaze/steps_taken"] > 0 and np.isfinite(metrics["gaze/triplet_loss"])
    assert np.isfinite(metrics["gaze/contrastive_loss"])


# --- the buffer grows with every column ------------------------------------------------------------

def test_reserve_grows_the_buffer_keeping_episode_ids_steps_and_labels():
    learner = ContrastiveLearner(extractor(), ContrastiveConfig(buffer_size=1000, k=4))
    learner.reserve(30)
    maps = torch.rand(30, *learner.extractor.map_shape)
    ids = torch.arange(30)
    learner.add(maps, ids * 1.0, ids // 6, ids % 6, ids * 2.0 + 1.0, (ids // 6 % 2).float())
    assert learner.buffer.capacity == 30
    learner.reserve(50)
    buf = learner.buffer
    assert buf.capacity == 80 and len(buf) == 30
    assert buf.returns.tolist() == (ids * 1.0).tolist()
    assert buf.episodes.tolist() == (ids // 6).tolist()
    assert buf.steps.tolist() == (ids % 6).tolist()
    assert buf.episode_returns.tolist() == (ids * 2.0 + 1.0).tolist()
    assert buf.successes.tolist() == (ids // 6 % 2).float().tolist()
    torch.testing.assert_close(buf.features.float(), maps, atol=2e-3, rtol=2e-3)


def test_a_mining_pool_bounds_the_search_and_mines_buffer_slots():
    """With more states than `mining_pool`, the k-NN index holds only the pool, and the triplets
    the gaze trains on are buffer slots whose labels obey the rule (a pool position mistaken for
    a slot would pair states at random)."""
    torch.manual_seed(0)
    learner = ContrastiveLearner(extractor(), ContrastiveConfig(buffer_size=1024, mining_pool=256, label="to-go"))
    labels = (torch.rand(900) < 0.5).float()
    # each map is filled with its label + 1, so the maps the gaze sees reveal which side they are on
    maps = (labels + 1.0)[:, None, None, None].expand(-1, *learner.extractor.map_shape).contiguous()
    learner.add(maps, labels)
    seen: list[torch.Tensor] = []
    learner.extractor.attention.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    metrics = learner.update()
    assert metrics["gaze/pool_size"] == 256 and learner.knn._keys.shape[0] == 256
    assert metrics["gaze/num_triplets"] > 0 and seen
    for batch in seen:
        anchor, positive, negative = (chunk.flatten(1)[:, 0] for chunk in batch.chunk(3))
        assert torch.equal(anchor, positive) and not torch.equal(anchor, negative)
        assert bool((anchor != negative).all())


def test_mining_pool_must_exceed_k():
    with pytest.raises(ConfigError, match=r"mining_pool must be 0 \(the whole buffer\) or > k \(16\)"):
        ContrastiveConfig(mining_pool=8, k=16)


def test_anchor_gaze_reweights_all_three_maps_with_the_anchors_map():
    """triplet_gaze 'anchor': the gaze runs on the anchors only and the positives and negatives are
    compared through the anchor's map, so moving the gaze cannot separate them by position alone."""
    learner = filled_learner(triplet_gaze="anchor", projection="none")
    seen: list[int] = []
    learner.extractor.attention.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    maps = learner.buffer.features[:6].float()
    params, attended = learner._attend(maps)
    assert seen == [2] and params.mu.shape[0] == 2
    weights = learner.extractor.attention(maps[:2]).weights
    torch.testing.assert_close(attended[:2], maps[:2] * weights[:, None])
    torch.testing.assert_close(attended[2:4], maps[2:4] * weights[:, None])
    torch.testing.assert_close(attended[4:6], maps[4:6] * weights[:, None])
    before = [p.detach().clone() for p in learner.extractor.attention.parameters()]
    metrics = learner.update()
    assert metrics["gaze/steps_taken"] > 0 and np.isfinite(metrics["gaze/triplet_loss"])
    assert any(not torch.equal(p, b) for p, b in zip(learner.extractor.attention.parameters(), before))
