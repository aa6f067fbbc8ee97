"""Tests for GazePPO / GazeSAC (gaze_rl.algos) and their ContrastiveLearner.

Fast tests run on `HiddenReturnEnv`, a tiny gymnasium env with ManiSkill's observation layout
(64x64x3 uint8 image + float32 state) whose returns depend on a hidden bit drawn at reset, so
that states that look almost alike have different returns. It is a small real env, not a mock:
SB3's vec envs, buffers and callbacks all run for real on it. One slow test trains both
algorithms on ManiSkill's PushT-v1 from pixels.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from gaze_rl import ContrastiveConfig, GazeExtractor, GazePPO, GazeSAC, gaze_policy_kwargs
from gaze_rl.contrastive.learner import ContrastiveLearner
from gaze_rl.contrastive.returns import buffer_labels
from gaze_rl.errors import ConfigError
from gaze_rl.nets.attention import GaussianGaze, NoAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

IMG = 64


class HiddenReturnEnv(gym.Env):
    """Fixed-length episodes; reward = hidden bit (drawn at reset) + 0.1 * t / length + 0.05 * a0.

    The image is a grey frame with a bright square that moves with t; the hidden bit changes one
    pixel only, so k-NN neighbours often have different returns. Every emitted observation and
    every (reward, terminated, truncated) is logged for hand computations.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 6, truncate: bool = False, zero_reward: bool = False):
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (IMG, IMG, 3), np.uint8),
            "state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.length, self.truncate, self.zero_reward = length, truncate, zero_reward
        self.steps: list[tuple[float, bool, bool]] = []  # (reward, terminated, truncated)
        self.emitted: list[dict[str, np.ndarray]] = []  # every observation returned, in order

    def _obs(self) -> dict[str, np.ndarray]:
        rgb = np.full((IMG, IMG, 3), 60, dtype=np.uint8)
        x = 4 + 6 * self.t
        rgb[24:36, x:x + 12] = 220
        rgb[0, 0, 0] = 60 + 100 * self.hidden
        state = np.array([self.t / self.length, self.hidden, 1.0], dtype=np.float32)
        obs = {"rgb": rgb, "state": state}
        self.emitted.append({k: v.copy() for k, v in obs.items()})
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.hidden = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = 0.0 if self.zero_reward else self.hidden + 0.1 * self.t / self.length + 0.05 * float(action[0])
        self.t += 1
        end = self.t >= self.length
        terminated, truncated = (False, end) if self.truncate else (end, False)
        self.steps.append((reward, terminated, truncated))
        return self._obs(), reward, terminated, truncated, {}


def make_env(lengths=(6,), seed: int = 0, **kwargs) -> DummyVecEnv:
    env = DummyVecEnv([lambda n=n: Monitor(HiddenReturnEnv(length=n, **kwargs)) for n in lengths])
    env.seed(seed)
    return env


def sub_envs(env: DummyVecEnv) -> list[HiddenReturnEnv]:
    return [e.unwrapped for e in env.envs]


def acted_from(sub: HiddenReturnEnv, n: int) -> list[dict[str, np.ndarray]]:
    """The first n observations actions were taken from: emitted ones minus each episode's terminal one."""
    per_episode = sub.length + 1  # o_0 .. o_L, o_L is terminal
    return [o for j, o in enumerate(sub.emitted) if j % per_episode != sub.length][:n]


def small_policy_kwargs(method: str = "gaze", sac: bool = False, backbone: str = "nature") -> dict:
    kwargs = gaze_policy_kwargs(method, backbone=backbone, image_features=32, state_features=16,
                                attention_kwargs=dict(hidden=16))
    kwargs["net_arch"] = dict(pi=[32], qf=[32]) if sac else dict(pi=[32], vf=[32])
    return kwargs


SMALL_CONTRASTIVE = dict(buffer_size=2000, num_anchors=32, k=8, projection_dim=16, key_dim=32)


def ppo(env, contrastive=SMALL_CONTRASTIVE, n_steps=16, **kwargs) -> GazePPO:
    kwargs = {"policy_kwargs": small_policy_kwargs(), "n_steps": n_steps, "batch_size": 16,
              "n_epochs": 2, "seed": 0, "device": "cpu", **kwargs}
    return GazePPO("MultiInputPolicy", env, contrastive=contrastive, **kwargs)


def sac(env, contrastive=SMALL_CONTRASTIVE, **kwargs) -> GazeSAC:
    # NatureCNN keeps the fast tests fast on CPU; PlainConv (the ManiSkill presets' SAC encoder) runs in the slow test
    kwargs = {"policy_kwargs": small_policy_kwargs(sac=True), "buffer_size": 1000,
              "batch_size": 16, "learning_starts": 30, "train_freq": 8, "gradient_steps": 1,
              "seed": 0, "device": "cpu", **kwargs}
    return GazeSAC("MultiInputPolicy", env, contrastive=contrastive, **kwargs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


def names_of(owner: torch.nn.Module, sub: torch.nn.Module) -> set[str]:
    ids = {id(p) for p in sub.parameters()}
    return {name for name, p in owner.named_parameters() if id(p) in ids}


def all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def raw_to_maps(model, emitted: list[dict[str, np.ndarray]], extractor=None) -> torch.Tensor:
    """Feature maps of channel-last env observations, computed here (independently of the mixin)."""
    obs = {
        "rgb": torch.as_tensor(np.stack([o["rgb"] for o in emitted])).permute(0, 3, 1, 2),
        "state": torch.as_tensor(np.stack([o["state"] for o in emitted])),
    }
    obs = preprocess_obs(obs, model.observation_space, normalize_images=True)
    with torch.no_grad():
        return (extractor or model._gaze_extractor()).feature_map(obs)


def reference_returns(rewards, ends, gamma, tail_value=0.0) -> np.ndarray:
    """Return-to-go of one env's step sequence; episodes end where `ends`, the tail bootstraps."""
    out, running = np.zeros(len(rewards)), float(tail_value)
    for t in reversed(range(len(rewards))):
        if ends[t]:
            running = 0.0
        running = rewards[t] + gamma * running
        out[t] = running
    return out


# --------------------------------------------------------------------------------------------
# ContrastiveConfig and construction errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=16, buffer_size=16), r"k \(16\) must be smaller than buffer_size \(16\)"),
        (dict(k=100, buffer_size=50), "must be smaller than buffer_size"),
        (dict(rule="nearest"), "unknown triplet rule 'nearest'.*threshold, relative"),
        (dict(knn_backend="annoy"), "unknown knn_backend 'annoy'.*faiss"),
        (dict(num_anchors=0), "num_anchors must be >= 1"),
        (dict(k=0), "k must be >= 1"),
        (dict(update_every=0), "update_every must be >= 1"),
        (dict(margin=-0.1), "margin and loss weights must be >= 0"),
        (dict(spread_weight=-1.0), "margin and loss weights must be >= 0"),
        (dict(spread_target=0.0), "spread_target must be > 0"),
        (dict(return_discount=1.5), r"return_discount must be in \[0, 1\]"),
    ],
)
def test_contrastive_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContrastiveConfig(**kwargs)


def test_contrastive_argument_validation():
    env = make_env()
    with pytest.raises(ValueError, match="must be smaller than buffer_size"):
        GazePPO("MultiInputPolicy", env, contrastive={"k": 8, "buffer_size": 4})
    with pytest.raises(TypeError, match="contrastive must be a ContrastiveConfig, a dict or None"):
        GazePPO("MultiInputPolicy", env, contrastive="gaze")
    with pytest.raises(TypeError):
        GazePPO("MultiInputPolicy", env, contrastive={"no_such_field": 1})
    # the contrastive loss needs a Gaussian gaze
    with pytest.raises(ValueError, match="Gaussian gaze"):
        GazePPO("MultiInputPolicy", env, policy_kwargs=gaze_policy_kwargs("baseline"))


def test_gaze_sac_unshared_extractor_raises():
    env = make_env()
    with pytest.raises(ValueError, match="share_features_extractor=False"):
        sac(env, policy_kwargs={**small_policy_kwargs(sac=True), "share_features_extractor": False})
    # without the contrastive loss an unshared extractor is fine
    model = sac(env, contrastive=None,
                policy_kwargs={**small_policy_kwargs(sac=True), "share_features_extractor": False})
    assert model.contrastive is None
    assert model.critic.features_extractor is not model.actor.features_extractor


def test_default_policies():
    env = make_env()
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16)
    ext = model.policy.features_extractor
    assert isinstance(ext, GazeExtractor) and isinstance(ext.attention, GaussianGaze)
    assert ext.detach_attention  # contrastive on: RL gradients stop at the gaze map
    assert type(ext.backbone).__name__ == "NatureCNN"
    assert model.contrastive.config == ContrastiveConfig()
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, contrastive={"rl_trains_gaze": True})
    assert not model.policy.features_extractor.detach_attention
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, contrastive=None)
    assert model.contrastive is None  # the foveal ablation
    assert isinstance(model.policy.features_extractor.attention, GaussianGaze)
    assert not model.policy.features_extractor.detach_attention
    model = GazeSAC("MultiInputPolicy", env, buffer_size=100)
    assert type(model.actor.features_extractor.backbone).__name__ == "NatureCNN"  # SB3's encoder: the image fits it
    assert model.critic.features_extractor is model.actor.features_extractor  # one shared gaze head
    assert model.actor.features_extractor.detach_attention


def test_detach_attention_that_contradicts_the_contrastive_config_is_refused():
    env = make_env()
    agreeing = {"features_extractor_kwargs": {"detach_attention": True}}
    assert GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, policy_kwargs=agreeing).policy \
        .features_extractor.detach_attention
    with pytest.raises(ConfigError, match="rl_trains_gaze"):
        GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16,
                policy_kwargs={"features_extractor_kwargs": {"detach_attention": False}})


def test_custom_extractor_class_without_contrastive():
    model = GazePPO("MultiInputPolicy", make_env(), n_steps=16, batch_size=16, contrastive=None,
                    policy_kwargs=dict(features_extractor_class=CombinedExtractor))
    assert isinstance(model.policy.features_extractor, CombinedExtractor)


def test_partial_extractor_kwargs_keep_the_gaze():
    env = make_env()
    pk = dict(features_extractor_kwargs=dict(image_features=32))
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, contrastive=None, policy_kwargs=pk)
    assert isinstance(model.policy.features_extractor.attention, GaussianGaze)
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, policy_kwargs=pk)
    assert model.policy.features_extractor.features_dim == 32 + 256


# --------------------------------------------------------------------------------------------
# Which parameters each loss trains
# --------------------------------------------------------------------------------------------


def test_contrastive_update_changes_only_gaze_head_and_projection():
    env = make_env(lengths=(5, 7))
    # update_every huge: learn() collects one rollout and runs PPO, but no contrastive step
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "update_every": 10**6}, n_steps=32)
    model.learn(64)
    learner = model.contrastive
    assert len(learner.buffer) == 64 and learner.num_updates == 0
    policy_before, proj_before = snapshot(model.policy), snapshot(learner.projection)
    metrics = learner.update()
    assert metrics["gaze/num_triplets"] > 0 and np.isfinite(metrics["gaze/contrastive_loss"])
    assert learner.num_updates == learner.config.steps_per_update
    gaze_names = names_of(model.policy, model.policy.features_extractor.attention)
    moved = changed(policy_before, model.policy)
    assert moved, "the contrastive step changed nothing"
    assert moved <= gaze_names, f"contrastive step changed non-gaze parameters: {sorted(moved - gaze_names)}"
    assert changed(proj_before, learner.projection) == set(proj_before)  # weight and bias
    assert all_finite(model.policy)


def test_ppo_rl_step_trains_backbone_not_detached_gaze():
    env = make_env(lengths=(5, 7))
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "update_every": 10**6}, n_steps=32)
    ext = model.policy.features_extractor
    assert ext.detach_attention
    before = snapshot(model.policy)
    model.learn(64)  # one rollout, PPO's update, no contrastive step
    moved = changed(before, model.policy)
    gaze_names = names_of(model.policy, ext.attention)
    assert not (moved & gaze_names), f"RL changed the detached gaze head: {sorted(moved & gaze_names)}"
    assert names_of(model.policy, ext.backbone) <= moved
    assert names_of(model.policy, ext.image_fc) <= moved
    assert names_of(model.policy, model.policy.action_net) <= moved


@pytest.mark.parametrize("how", ["rl_trains_gaze", "plain_sb3_foveal"])
def test_rl_trains_attached_gaze(how):
    env = make_env(lengths=(5, 7))
    if how == "rl_trains_gaze":
        model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "update_every": 10**6, "rl_trains_gaze": True},
                    n_steps=32)
    else:
        model = PPO("MultiInputPolicy", env, policy_kwargs=small_policy_kwargs("foveal"), n_steps=32,
                    batch_size=16, n_epochs=2, seed=0, device="cpu")
    ext = model.policy.features_extractor
    assert not ext.detach_attention
    before = snapshot(model.policy)
    model.learn(64)
    moved = changed(before, model.policy)
    gaze_names = names_of(model.policy, ext.attention)
    assert moved & gaze_names, "RL gradients did not reach the attached gaze head"
    assert names_of(model.policy, ext.backbone) <= moved


def test_plain_sb3_ppo_with_gaze_policy_kwargs_learns():
    env = make_env(lengths=(5, 7))
    model = PPO("MultiInputPolicy", env, policy_kwargs=gaze_policy_kwargs("foveal"), n_steps=32,
                batch_size=32, n_epochs=1, seed=0, device="cpu")
    assert isinstance(model.policy.features_extractor, GazeExtractor)
    model.learn(128)
    assert model.num_timesteps == 128
    assert len(model.ep_info_buffer) > 0
    assert all_finite(model.policy)
    obs = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2, 2) and np.isfinite(action).all()


# --------------------------------------------------------------------------------------------
# Returns that enter the feature buffer
# --------------------------------------------------------------------------------------------


class LastValues(BaseCallback):
    """Value of the observation after the rollout under the rollout's (pre-update) policy, and a
    copy of that policy's extractor (the buffer stores feature maps computed before PPO's update)."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        obs = self.model.policy.obs_to_tensor(self.model._last_obs)[0]
        with torch.no_grad():
            self.values = self.model.policy.predict_values(obs).numpy().ravel()
        self.extractor = copy.deepcopy(self.model.policy.features_extractor)


@pytest.mark.parametrize("return_discount", [None, 0.5])
def test_ppo_rollout_returns_match_hand_computation(return_discount):
    lengths, n_steps, gamma = (5, 7), 16, 0.9  # 16 steps: both envs end mid-episode
    env = make_env(lengths=lengths)
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "return_discount": return_discount}, n_steps=n_steps,
                gamma=gamma, gae_lambda=0.7)
    cb = LastValues()
    model.learn(n_steps * len(lengths), callback=cb)
    discount = gamma if return_discount is None else return_discount
    expected = np.zeros((n_steps, len(lengths)))
    maps = []
    for i, sub in enumerate(sub_envs(env)):
        rewards = [r for r, _, _ in sub.steps]
        ends = [term for _, term, _ in sub.steps]
        assert len(rewards) == n_steps and sum(ends) == n_steps // lengths[i]
        expected[:, i] = reference_returns(rewards, ends, discount, tail_value=cb.values[i])
        maps.append(raw_to_maps(model, acted_from(sub, n_steps), extractor=cb.extractor))
    buf = model.contrastive.buffer
    assert len(buf) == n_steps * len(lengths)
    # buffer order is time-major, env-minor (rollout_buffer.reshape(-1))
    np.testing.assert_allclose(buf.returns.numpy(), expected.reshape(-1), rtol=1e-5, atol=1e-5)
    expected_maps = torch.stack(maps, dim=1).flatten(0, 1)
    torch.testing.assert_close(buf.features.float(), expected_maps, rtol=2e-3, atol=2e-3)
    assert len(set(np.round(expected.ravel(), 4))) > 10  # the check is not vacuous


def test_ppo_returns_of_truncated_episodes_are_within_episode():
    lengths, n_steps, gamma = (4,), 12, 0.9  # three truncated episodes, no unfinished tail
    env = make_env(lengths=lengths, truncate=True)
    model = ppo(env, n_steps=n_steps, gamma=gamma, batch_size=12)
    model.learn(n_steps)
    sub = sub_envs(env)[0]
    rewards = [r for r, _, _ in sub.steps]
    ends = [trunc for _, _, trunc in sub.steps]
    expected = reference_returns(rewards, ends, gamma)
    np.testing.assert_allclose(model.contrastive.buffer.returns.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_ppo_episode_bookkeeping_across_envs_resets_rollouts_and_the_wrap():
    """Episode ids, step indices and the episode label, over two rollouts of two envs whose
    episodes end mid-rollout and span rollouts, in a buffer that wraps around."""
    lengths, n_steps, gamma, capacity = (5, 7), 16, 0.9, 40
    env = make_env(lengths=lengths)
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "buffer_size": capacity}, n_steps=n_steps, gamma=gamma)
    model.learn(2 * n_steps * len(lengths))
    buf = model.contrastive.buffer
    assert len(buf) == capacity
    inserted = 2 * n_steps * len(lengths)
    expected_step, expected_key, expected_label = {}, {}, {}
    for j in range(inserted - capacity, inserted):  # the states the wrap kept
        rollout, rest = divmod(j, n_steps * len(lengths))
        t, i = divmod(rest, len(lengths))  # time-major, env-minor
        s, length = rollout * n_steps + t, lengths[i]
        episode, step = divmod(s, length)
        slot = j % capacity
        expected_step[slot], expected_key[slot] = step, (i, episode)
        end = (episode + 1) * length
        # whole-episode label is exact when the episode ended and its states were labelled
        # after its end or in the rollout it ended in (earlier rollouts used V for the tail)
        if end <= 2 * n_steps and (rollout == 1 or end <= n_steps):
            rewards = [r for r, _, _ in sub_envs(env)[i].steps][episode * length:end]
            expected_label[slot] = sum(gamma ** u * r for u, r in enumerate(rewards))
    np.testing.assert_array_equal(buf.steps.numpy(), [expected_step[k] for k in range(capacity)])
    ids = buf.episodes.tolist()
    pairs = {(expected_key[k], ids[k]) for k in range(capacity)}
    # one id per (env, episode) and one (env, episode) per id: unique across envs and resets
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs}) > 6
    slots = sorted(expected_label)
    assert len(slots) > 20
    np.testing.assert_allclose(buf.episode_returns.numpy()[slots], [expected_label[k] for k in slots],
                               rtol=1e-5, atol=1e-5)


def test_sac_returns_match_hand_computation():
    lengths, steps, gamma, discount = (5, 7), 16, 0.8, 0.6
    # truncated episodes: SAC completes them without any value bootstrap
    env = make_env(lengths=lengths, truncate=True)
    # learning_starts > total steps: no training, only collection (the extractor stays fixed)
    model = sac(env, contrastive={**SMALL_CONTRASTIVE, "return_discount": discount}, gamma=gamma,
                learning_starts=1000, train_freq=1)
    model.learn(steps * len(lengths))
    # episodes enter the buffer when they end: env 0 at steps 5, 10, 15; env 1 at steps 7, 14
    ends_at = sorted((end, i) for i, n in enumerate(lengths) for end in range(n, steps + 1, n))
    expected_returns, expected_maps = [], []
    for end, i in ends_at:
        sub, n = sub_envs(env)[i], lengths[i]
        rewards = [r for r, _, _ in sub.steps][end - n:end]
        assert [trunc for _, _, trunc in sub.steps][end - n:end] == [False] * (n - 1) + [True]
        expected_returns.append(reference_returns(rewards, [False] * n, discount))
        expected_maps.append(raw_to_maps(model, acted_from(sub, end)[end - n:]))
    buf = model.contrastive.buffer
    assert len(buf) == 3 * 5 + 2 * 7  # unfinished episodes are not stored yet
    np.testing.assert_allclose(buf.returns.numpy(), np.concatenate(expected_returns), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(buf.features.float(), torch.cat(expected_maps), rtol=2e-3, atol=2e-3)
    # each finished episode: one fresh id, steps 0..n-1, its G_0 as every state's episode label
    ids = buf.episodes.split([n for _, i in ends_at for n in [lengths[i]]])
    assert [int(x.unique().numel()) for x in ids] == [1] * len(ends_at)
    assert len({int(x[0]) for x in ids}) == len(ends_at)
    np.testing.assert_array_equal(buf.steps.numpy(), np.concatenate([np.arange(lengths[i]) for _, i in ends_at]))
    np.testing.assert_allclose(buf.episode_returns.numpy(), np.concatenate([np.full(len(r), r[0]) for r in expected_returns]),
                               rtol=1e-5, atol=1e-5)


class SuccessEnv(HiddenReturnEnv):
    """HiddenReturnEnv that reports ManiSkill's `success_once` on an episode's last step: success
    when the hidden bit is 0, i.e. in the episodes with the *lower* rewards."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes: list[float] = []  # success flag of each finished episode, in order

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if terminated or truncated:
            self.outcomes.append(float(self.hidden == 0))
            info["success_once"] = self.hidden == 0
        return obs, reward, terminated, truncated, info


def make_success_env(lengths=(5, 7), seed: int = 0, **kwargs) -> DummyVecEnv:
    env = DummyVecEnv([lambda n=n: Monitor(SuccessEnv(length=n, **kwargs)) for n in lengths])
    env.seed(seed)
    return env


def ppo_slot_episode(j: int, n_steps: int, lengths: tuple[int, ...]) -> tuple[int, int, int]:
    """(env, episode index, step) of the j-th state GazePPO inserted (time-major, env-minor)."""
    rollout, rest = divmod(j, n_steps * len(lengths))
    t, i = divmod(rest, len(lengths))
    episode, step = divmod(rollout * n_steps + t, lengths[i])
    return i, episode, step


def test_ppo_success_label_is_the_episode_flag_and_tails_are_filled_when_they_end():
    lengths, n_steps = (5, 7), 16
    env = make_success_env(lengths)
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "label": "success"}, n_steps=n_steps)
    model.learn(2 * n_steps * len(lengths))
    buf = model.contrastive.buffer
    assert len(buf) == 2 * n_steps * len(lengths)
    subs = sub_envs(env)
    expected = []
    for j in range(len(buf)):
        i, episode, _ = ppo_slot_episode(j, n_steps, lengths)
        ended = (episode + 1) * lengths[i] <= 2 * n_steps
        expected.append(subs[i].outcomes[episode] if ended else np.nan)
    np.testing.assert_array_equal(buf.successes.numpy(), expected)
    # not vacuous: both outcomes, still-running tails, and first-rollout tails filled in the second
    assert {0.0, 1.0} <= set(np.array(expected)[np.isfinite(expected)].tolist()) and np.isnan(expected).any()
    tails = [j for j in range(n_steps * len(lengths))
             if (ppo_slot_episode(j, n_steps, lengths)[1] + 1) * lengths[j % 2] > n_steps]
    assert tails and np.isfinite(buf.successes.numpy()[tails]).all()
    # the label ignores the rewards: successful episodes collected less
    finite = np.isfinite(expected)
    ret = buf.episode_returns.numpy()[finite]
    assert ret[np.array(expected)[finite] == 1.0].max() < ret[np.array(expected)[finite] == 0.0].min()
    assert model.contrastive.num_updates > 0


def test_sac_success_label_from_the_last_step_info():
    lengths, steps = (5, 7), 16
    env = make_success_env(lengths, truncate=True)
    model = sac(env, contrastive={**SMALL_CONTRASTIVE, "label": "success"}, learning_starts=1000, train_freq=1)
    model.learn(steps * len(lengths))
    ends_at = sorted((end, i) for i, n in enumerate(lengths) for end in range(n, steps + 1, n))
    counters = [0, 0]
    expected = []
    for _, i in ends_at:
        expected += [sub_envs(env)[i].outcomes[counters[i]]] * lengths[i]
        counters[i] += 1
    np.testing.assert_array_equal(model.contrastive.buffer.successes.numpy(), expected)
    assert {0.0, 1.0} <= set(expected)


@pytest.mark.parametrize("return_discount", [None, 0.5])
def test_ppo_episode_and_detrended_labels_use_the_return_discount(return_discount):
    lengths, n_steps, gamma = (4,), 12, 0.9  # three whole episodes, no tail
    env = make_env(lengths=lengths)
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "return_discount": return_discount}, n_steps=n_steps,
                gamma=gamma, batch_size=12)
    model.learn(n_steps)
    discount = gamma if return_discount is None else return_discount
    rewards = np.array([r for r, _, _ in sub_envs(env)[0].steps]).reshape(3, 4)
    closed_form = [sum(discount ** u * r for u, r in enumerate(ep)) for ep in rewards]  # sum_u d^u r_u
    buf = model.contrastive.buffer
    np.testing.assert_allclose(buf.episode_returns.numpy(), np.repeat(closed_form, 4), rtol=1e-5, atol=1e-5)
    to_go = np.array([[sum(discount ** (u - t) * ep[u] for u in range(t, 4)) for t in range(4)] for ep in rewards])
    detrended = (to_go - to_go.mean(axis=0)).reshape(-1)
    np.testing.assert_allclose(buffer_labels(buf, "detrended").numpy(), detrended, rtol=1e-4, atol=1e-4)
    if return_discount is not None:  # not vacuous: gamma would give other labels
        other = [sum(gamma ** u * r for u, r in enumerate(ep)) for ep in rewards]
        assert np.abs(np.array(other) - closed_form).min() > 0.1


def test_buffer_growth_in_a_later_learn_keeps_episode_ids_steps_and_labels():
    lengths, n_steps = (5, 7), 16
    env = make_success_env(lengths)
    model = ppo(env, n_steps=n_steps)
    model.learn(n_steps * len(lengths))
    buf = model.contrastive.buffer
    old = {name: getattr(buf, name).clone() for name in ("episodes", "steps", "returns", "episode_returns",
                                                         "successes", "features")}
    capacity = buf.capacity
    model.learn(2 * n_steps * len(lengths), reset_num_timesteps=False)
    buf = model.contrastive.buffer
    assert buf.capacity > capacity and len(buf) == 3 * n_steps * len(lengths)
    n = len(old["episodes"])
    for name in ("episodes", "steps", "returns", "episode_returns", "features"):
        assert torch.equal(getattr(buf, name)[:n], old[name]), name
    known = torch.isfinite(old["successes"])
    assert torch.equal(buf.successes[:n][known], old["successes"][known])
    assert torch.isfinite(buf.successes[:n]).all()  # the tails of the first learn ended since: filled
    # an episode running across the two learn() calls keeps one id on both sides
    for i in range(len(lengths)):
        first = [j for j in range(n) if j % 2 == i][-1]
        after = first + len(lengths)
        assert ppo_slot_episode(first, n_steps, lengths)[1] == ppo_slot_episode(after, n_steps, lengths)[1]
        assert int(buf.episodes[first]) == int(buf.episodes[after])
    assert len(set(buf.episodes.tolist())) == sum(-(-3 * n_steps // n) for n in lengths)


# --------------------------------------------------------------------------------------------
# learn / save / load
# --------------------------------------------------------------------------------------------


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return a == b


def _check_round_trip(model, loaded, obs):
    ext, ext2 = model._gaze_extractor(), loaded._gaze_extractor()
    assert _state_equal(ext.attention.state_dict(), ext2.attention.state_dict())
    assert _state_equal(model.policy.state_dict(), loaded.policy.state_dict())
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    if model.contrastive is None:
        assert loaded.contrastive is None
        return
    c, c2 = model.contrastive, loaded.contrastive
    assert c2.config == c.config
    assert _state_equal(c.projection.state_dict(), c2.projection.state_dict())
    assert _state_equal(c.optimizer.state_dict(), c2.optimizer.state_dict())
    assert c.optimizer.state_dict()["state"], "the optimizer state is empty: nothing was compared"
    # the loaded gaze optimizer drives the loaded model's live gaze head and projection
    live = {id(p) for p in list(ext2.attention.parameters()) + list(c2.projection.parameters())}
    assert {id(p) for g in c2.optimizer.param_groups for p in g["params"]} == live
    assert len(c2.buffer) == 0  # the feature buffer is rebuilt, not pickled


def test_gaze_ppo_learn_save_load(tmp_path):
    env = make_env(lengths=(5, 7))
    model = ppo(env, n_steps=64, batch_size=32)
    model.learn(256)
    assert model.num_timesteps == 256
    assert len(model.contrastive.buffer) == 256
    assert model.contrastive.num_updates >= 1
    assert all_finite(model.policy) and all_finite(model.contrastive.projection)
    model.save(tmp_path / "ppo")
    loaded = GazePPO.load(tmp_path / "ppo", env=env, device="cpu")
    obs = env.reset()
    _check_round_trip(model, loaded, obs)
    # training continues after loading, and the contrastive step still trains the loaded gaze head
    gaze_before = snapshot(loaded.policy.features_extractor.attention)
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded.num_timesteps == 384 and len(loaded.contrastive.buffer) == 128
    assert changed(gaze_before, loaded.policy.features_extractor.attention)


@pytest.mark.parametrize("projection", ["frozen", "none"])
def test_gaze_ppo_projection_options_learn_save_load(tmp_path, projection):
    env = make_env(lengths=(5, 7))
    model = ppo(env, contrastive={**SMALL_CONTRASTIVE, "projection": projection}, n_steps=32)
    projection_before = snapshot(model.contrastive.projection)
    model.learn(64)
    assert model.contrastive.num_updates >= 1
    assert not changed(projection_before, model.contrastive.projection)  # never trained
    model.save(tmp_path / "ppo")
    loaded = GazePPO.load(tmp_path / "ppo", env=env, device="cpu")
    c, c2 = model.contrastive, loaded.contrastive
    assert c2.config.projection == projection
    assert _state_equal(c.projection.state_dict(), c2.projection.state_dict())
    assert _state_equal(c.optimizer.state_dict(), c2.optimizer.state_dict())
    optimised = {id(p) for g in c2.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in loaded._gaze_extractor().attention.parameters()}
    loaded.learn(32, reset_num_timesteps=False)
    assert all_finite(loaded.policy)


def test_gaze_sac_learn_save_load(tmp_path):
    env = make_env(lengths=(6,))
    model = sac(env)
    model.learn(200)
    assert len(model.contrastive.buffer) == 198  # 33 finished 6-step episodes
    assert model.contrastive.num_updates >= 1
    assert all_finite(model.policy) and all_finite(model.contrastive.projection)
    model.save(tmp_path / "sac")
    loaded = GazeSAC.load(tmp_path / "sac", env=env, device="cpu")
    assert loaded.critic.features_extractor is loaded.actor.features_extractor
    _check_round_trip(model, loaded, env.reset())


def test_contrastive_none_learns_and_round_trips(tmp_path):
    env = make_env(lengths=(5, 7))
    model = ppo(env, contrastive=None, n_steps=32)
    assert model.contrastive is None and not model.policy.features_extractor.detach_attention
    model.learn(64)
    model.save(tmp_path / "foveal")
    loaded = GazePPO.load(tmp_path / "foveal", env=env, device="cpu")
    _check_round_trip(model, loaded, env.reset())
    model = sac(env, contrastive=None, learning_starts=20)
    model.learn(40)
    assert model.contrastive is None and all_finite(model.policy)


# --------------------------------------------------------------------------------------------
# No return variation: no triplets, nothing breaks
# --------------------------------------------------------------------------------------------


def test_learner_constant_returns_gives_no_triplets():
    ext = GazeExtractor(spaces.Dict({"rgb": spaces.Box(0, 255, (3, IMG, IMG), np.uint8)}), attention="gaussian")
    learner = ContrastiveLearner(ext, ContrastiveConfig(**SMALL_CONTRASTIVE))
    maps = torch.rand(40, *ext.map_shape)
    # no more states than k: nothing to search
    learner.add(maps[:8], torch.ones(8))
    assert learner.update()["gaze/num_triplets"] == 0.0
    learner.add(maps[8:], torch.ones(32))
    before = snapshot(ext)
    metrics = learner.update()
    assert metrics["gaze/num_triplets"] == 0.0 and metrics["gaze/valid_fraction"] == 0.0
    assert metrics["gaze/buffer_size"] == 40.0
    assert learner.num_updates == 0 and not changed(before, ext)
    # with return variation among neighbours the same buffer gives triplets
    learner.add(torch.rand(20, *ext.map_shape), torch.full((20,), 5.0))
    assert learner.update()["gaze/num_triplets"] > 0 and learner.num_updates == learner.config.steps_per_update
    assert all_finite(ext)


def test_learner_rejects_extractor_without_gaze():
    ext = GazeExtractor(spaces.Dict({"rgb": spaces.Box(0, 255, (3, IMG, IMG), np.uint8)}), attention="none")
    assert isinstance(ext.attention, NoAttention)
    with pytest.raises(ValueError, match="Gaussian gaze"):
        ContrastiveLearner(ext, ContrastiveConfig(**SMALL_CONTRASTIVE))


def test_gaze_sac_constant_returns_no_triplets_no_nan():
    env = make_env(lengths=(6,), zero_reward=True)
    model = sac(env)
    model.learn(120)
    learner = model.contrastive
    assert len(learner.buffer) == 120
    assert bool((learner.buffer.returns == 0).all())
    assert learner.update()["gaze/num_triplets"] == 0.0
    assert learner.num_updates == 0
    assert all_finite(model.policy) and all_finite(learner.projection)


# --------------------------------------------------------------------------------------------
# Real pixels
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pusht_env():
    from gaze_rl.envs import make_vec_env

    env = make_vec_env(env_id="PushT-v1", num_envs=1, image_size=64, seed=0)
    yield env
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_learn_on_pusht_pixels(pusht_env, algo):
    # Two episodes only: with the default episode label and own-episode exclusion every anchor's
    # neighbours are all in the other class, so no triplet exists (correctly). Return-to-go without
    # exclusion has triplets from the first rollout: the mechanics on real frames are what is tested.
    contrastive = dict(buffer_size=1000, num_anchors=64, k=8, label="to-go", exclude_window=0)
    if algo == "ppo":
        model = GazePPO("MultiInputPolicy", pusht_env, n_steps=100, batch_size=50, n_epochs=1, seed=0,
                        device="cpu", contrastive=contrastive)
    else:
        model = GazeSAC("MultiInputPolicy", pusht_env, buffer_size=1000, batch_size=32, learning_starts=100,
                        train_freq=50, seed=0, device="cpu", contrastive=contrastive, backbone="plain")
    model.learn(200)
    learner = model.contrastive
    assert learner.extractor.map_shape == ((64, 4, 4))
    assert len(learner.buffer) == 200  # two 100-step episodes
    returns = learner.buffer.returns
    assert bool(torch.isfinite(returns).all()) and float(returns.std()) > 0
    assert learner.num_updates >= 1
    assert [ep["l"] for ep in model.ep_info_buffer] == [100, 100]
    assert all_finite(model.policy)


@pytest.mark.parametrize("method", ["baseline", "gaze"])
def test_probe_set_attention_on_target(method):
    """ProbeSet.measure on a real policy: every method has an attention (the baseline's is its
    feature-energy map); a mask over one feature-grid cell scores that cell's attention."""
    from gaze_rl.segmentation.on_target import ProbeSet, policy_attention, policy_extractor

    env = make_env()
    policy_kwargs = gaze_policy_kwargs(method, image_features=32, state_features=16)
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, contrastive=None, policy_kwargs=policy_kwargs)
    obs = env.reset()
    everywhere = ProbeSet(obs, np.ones((1, IMG, IMG), bool))
    result = everywhere.measure(model)
    assert result["attention_on_target"] == pytest.approx(1.0) and result["attention_on_target_lift"] == pytest.approx(1.0)
    corner = np.zeros((1, IMG, IMG), bool)
    corner[0, :16, :16] = True  # the top-left cell of the 4x4 grid
    expected_mode = "features" if method == "baseline" else "map"
    with torch.no_grad():
        obs_tensor = preprocess_obs(model.policy.obs_to_tensor(obs)[0], model.observation_space, normalize_images=True)
        grid = policy_attention(policy_extractor(model), obs_tensor, expected_mode, 50.0).grid
    result = ProbeSet(obs, corner).measure(model)
    assert result["attention_on_target"] == pytest.approx(float(grid[0, 0, 0]), rel=1e-5)
    assert result["attention_on_target_chance"] == pytest.approx(1 / 16)


def test_gaze_frozen_keeps_its_initial_vignette_while_rl_trains_the_rest():
    env = make_env()
    model = GazePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, contrastive=None,
                    policy_kwargs=small_policy_kwargs("gaze-frozen"))
    ext = model._gaze_extractor()
    gaze_before, backbone_before = snapshot(ext.attention), snapshot(ext.backbone)
    model.learn(64)
    assert not changed(gaze_before, ext.attention)
    assert changed(backbone_before, ext.backbone)
