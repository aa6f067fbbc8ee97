"""GazePPO / GazeSAC as drop-ins for SB3's PPO / SAC on the image envs an SB3 user has:
`CnnPolicy` on Box images (channel-first and channel-last, grayscale, non-square, frame
stacks, floats) and `MultiInputPolicy` on a Dict whose image is not called "rgb"; and with the
settings SB3 users bring (learning-rate schedules, unshared extractors, long episodes, SAC's
train_freq=1) (issue 27)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from gaze_rl import ContrastiveConfig, GazePPO, GazeSAC
from gaze_rl.contrastive.config import FRESH_UPDATES
from gaze_rl.nets.extractor import GazeExtractor

from image_envs import ImageEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

# sac_update_interval=16: GazeSAC's contrastive update every 16 env steps (the default 128 is
# more than these short runs have)
SMALL = ContrastiveConfig(k=4, num_anchors=8, projection_dim=16, key_dim=32, sac_update_interval=16)
ALGOS = {
    GazePPO: dict(n_steps=16, batch_size=16, n_epochs=1),
    GazeSAC: dict(learning_starts=16, batch_size=16, buffer_size=200, train_freq=4),
}
ENVS = {
    "channel-last rgb": lambda: DummyVecEnv([lambda: ImageEnv((48, 64, 3))]),
    "channel-first grayscale": lambda: DummyVecEnv([lambda: ImageEnv((1, 64, 48), channel_first=True)]),
    "frame stack": lambda: VecFrameStack(DummyVecEnv([lambda: ImageEnv((48, 48, 1))]), 4),
    "dict camera + vec": lambda: DummyVecEnv([lambda: ImageEnv((48, 64, 3), dict_key="camera")]),
}


def policy_for(env) -> str:
    return "MultiInputPolicy" if hasattr(env.observation_space, "spaces") else "CnnPolicy"


@pytest.mark.parametrize("env_name", ENVS)
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_learn_save_load_predict(tmp_path, algo, env_name):
    env = ENVS[env_name]()
    model = algo(policy_for(env), env, contrastive=SMALL, seed=0, **ALGOS[algo]).learn(48)
    extractor = model._gaze_extractor()
    assert isinstance(extractor, GazeExtractor) and extractor.has_gaze
    assert model.contrastive.num_updates > 0  # the contrastive loss found triplets and stepped
    obs = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=env)
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, rtol=1e-5, atol=1e-6)
    loaded.learn(16, reset_num_timesteps=False)  # and training continues


def test_channel_last_envs_are_transposed_as_sb3_does():
    model = GazePPO("CnnPolicy", DummyVecEnv([lambda: ImageEnv((48, 64, 3))]), n_steps=16, batch_size=16)
    assert isinstance(model.get_env(), VecTransposeImage)
    assert model._gaze_extractor().backbone[0].in_channels == 3


def test_float_images_and_normalize_images_false():
    env = DummyVecEnv([lambda: ImageEnv((2, 48, 48), channel_first=True, dtype=np.float32)])
    model = GazePPO("CnnPolicy", env, n_steps=16, batch_size=16, n_epochs=1, contrastive=SMALL,
                    policy_kwargs=dict(normalize_images=False)).learn(32)
    obs = env.reset()
    # the contrastive feature maps see the images as the policy does: not divided by 255
    expected = model._gaze_extractor().backbone(torch.as_tensor(obs))
    torch.testing.assert_close(model._feature_maps(obs), expected)


def test_positional_arguments_after_env():
    env = DummyVecEnv([lambda: ImageEnv()])
    model = GazePPO("CnnPolicy", env, 1e-3, 16, 8)
    assert (model.learning_rate, model.n_steps, model.batch_size) == (1e-3, 16, 8)
    assert GazeSAC("CnnPolicy", env, 1e-3, 500).buffer_size == 500


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_load_with_the_constructors_policy_kwargs(tmp_path, algo):
    env = DummyVecEnv([lambda: ImageEnv()])
    kwargs = dict(net_arch=[32], features_extractor_kwargs=dict(image_features=32))
    model = algo("CnnPolicy", env, policy_kwargs=kwargs, **ALGOS[algo])
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", policy_kwargs=model.policy_kwargs)
    assert loaded._gaze_extractor().features_dim == 32


def test_learning_rate_zero_freezes_everything_the_gaze_head_included():
    env = DummyVecEnv([lambda: ImageEnv()])
    model = GazePPO("CnnPolicy", env, learning_rate=0.0, contrastive=SMALL, **ALGOS[GazePPO])
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(48)
    assert model.contrastive.num_updates > 0
    for name, value in model.policy.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)


def test_gaze_lr_follows_the_schedule():
    env = DummyVecEnv([lambda: ImageEnv()])
    model = GazePPO("CnnPolicy", env, learning_rate=lambda p: 1e-3 * p, contrastive=SMALL, **ALGOS[GazePPO])
    model._current_progress_remaining = 0.25
    assert model._gaze_learning_rate() == pytest.approx(0.25 * SMALL.learning_rate)


def test_sac_return_record_reset_when_learn_resets_the_envs():
    env = DummyVecEnv([lambda: ImageEnv(episode_length=8)])
    model = GazeSAC("CnnPolicy", env, contrastive=SMALL, **ALGOS[GazeSAC])
    model.learn(12)  # one finished episode (8 states) + 4 states in flight
    assert len(model.contrastive.buffer) == 8
    model.learn(12)  # resets the envs: the 4 states in flight belong to no episode any more
    assert len(model.contrastive.buffer) == 16
    model.learn(12, reset_num_timesteps=False)  # no reset: the episode in flight continues
    assert len(model.contrastive.buffer) == 32  # 4 + 8 steps: two more episodes


def test_feature_buffer_sized_to_the_run():
    env = DummyVecEnv([lambda: ImageEnv()])
    model = GazePPO("CnnPolicy", env, **ALGOS[GazePPO]).learn(32)
    assert model.contrastive.buffer.capacity == 32 + 16  # the run plus one rollout, not 100k
    model.learn(64, reset_num_timesteps=False)  # a longer run grows it, keeping what it holds
    assert model.contrastive.buffer.capacity == 32 + 64 + 16 and len(model.contrastive.buffer) == 96


@pytest.mark.parametrize("algo", [GazePPO, GazeSAC])
def test_default_feature_buffer_holds_the_last_16_updates(algo):
    """buffer_size None: the buffer keeps the states of the last FRESH_UPDATES contrastive updates
    (fresh maps, results/signal/staleness), however long the run."""
    env = DummyVecEnv([lambda: ImageEnv(), lambda: ImageEnv()])
    model = algo("CnnPolicy", env, **ALGOS[algo])
    per_update = model.n_steps * 2 if algo is GazePPO else model.contrastive.config.sac_update_interval
    assert model.contrastive.max_capacity == FRESH_UPDATES * per_update
    model.contrastive.reserve(10**6)  # a long run does not grow it past that
    assert model.contrastive.buffer.capacity == FRESH_UPDATES * per_update


def test_sac_optimize_memory_usage_on_box_images():
    env = DummyVecEnv([lambda: ImageEnv()])
    model = GazeSAC("CnnPolicy", env, optimize_memory_usage=True, contrastive=SMALL,
                    replay_buffer_kwargs=dict(handle_timeout_termination=False), **ALGOS[GazeSAC]).learn(32)
    assert model.replay_buffer.optimize_memory_usage and not hasattr(model.replay_buffer, "next_observations")


@pytest.mark.parametrize("algo, plain", [(GazePPO, PPO), (GazeSAC, SAC)], ids=["ppo", "sac"])
def test_export_for_plain_sb3(tmp_path, algo, plain):
    env = DummyVecEnv([lambda: ImageEnv()])
    model = algo("CnnPolicy", env, contrastive=SMALL, **ALGOS[algo]).learn(16)
    obs = env.reset()
    model.save_sb3(tmp_path / "plain")
    loaded = plain.load(tmp_path / "plain", env=env)
    assert type(loaded) is plain
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0],
                               rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "full")  # the normal save still keeps the contrastive state
    assert algo.load(tmp_path / "full").contrastive.projection is not None


# --------------------------------------------------------------------------------------------
# Issue 27: SB3 users' own settings
# --------------------------------------------------------------------------------------------


class MeanReward(gym.Wrapper):
    """SB3's FakeImageEnv (random frames) with reward = the new frame's mean / 255, so that
    returns vary between states and episodes and the contrastive loss has triplets."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(obs.mean()) / 255.0, terminated, truncated, info


def fake_env(size: int = 48, ep_length: int | tuple[int, ...] = 10, discrete: bool = True) -> DummyVecEnv:
    """SB3's FakeImageEnv with MeanReward, one env per episode length."""
    def make(length: int):
        env = FakeImageEnv(screen_height=size, screen_width=size, n_channels=1, discrete=discrete)
        env.ep_length = length
        return MeanReward(env)

    lengths = ep_length if isinstance(ep_length, tuple) else (ep_length,)
    env = DummyVecEnv([lambda n=n: make(n) for n in lengths])
    env.seed(0)
    return env


def gaze_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model._gaze_extractor().attention.named_parameters()}


def moved(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


TINY = dict(net_arch=[32], features_extractor_kwargs=dict(image_features=32))
WARM_UP = lambda p: 3e-4 * min(1.0, (1.0 - p) * 4)  # noqa: E731  # 0 at the start, 3e-4 after a quarter
RISING = lambda p: 1e-5 + (1e-3 - 1e-5) * (1.0 - p)  # noqa: E731  # 1e-5 -> 1e-3


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("schedule, expected", [
    (1e-3, {1.0: 1.0, 0.5: 1.0, 0.0: 1.0}),  # constant: the configured rate
    (lambda p: 1e-3 * p, {1.0: 1.0, 0.25: 0.25, 0.0: 0.0}),  # linear decay: x progress
    (WARM_UP, {1.0: 0.0, 0.875: 0.5, 0.75: 1.0, 0.1: 1.0}),  # warm-up: rises to the configured rate
    (RISING, {1.0: 0.01, 0.5: 0.505, 0.0: 1.0}),  # rising: never above the configured rate
    (0.0, {1.0: 0.0, 0.5: 0.0, 0.0: 0.0}),  # lr 0: frozen
], ids=["constant", "linear", "warm-up", "rising", "zero"])
def test_gaze_lr_is_the_schedule_relative_to_its_peak(algo, schedule, expected):
    model = algo("CnnPolicy", fake_env(discrete=algo is GazePPO), learning_rate=schedule, contrastive=SMALL,
                 **ALGOS[algo])
    for progress, fraction in expected.items():
        model._current_progress_remaining = progress
        assert model._gaze_learning_rate() == pytest.approx(fraction * SMALL.learning_rate, rel=1e-6), progress


def test_warm_up_schedule_trains_the_gaze_head():
    # before issue 27 the gaze rate was contrastive lr * lr(p) / lr(1.0) = 0 for the whole run
    model = GazePPO("CnnPolicy", fake_env(), learning_rate=WARM_UP, contrastive=SMALL, seed=0, **ALGOS[GazePPO])
    before = gaze_params(model)
    model.learn(64)
    assert model.contrastive.num_updates > 0
    assert moved(before, model._gaze_extractor().attention)
    assert model._gaze_learning_rate() == pytest.approx(SMALL.learning_rate)  # past the warm-up


def test_unshared_extractor_with_the_contrastive_loss():
    # refused the same way by both algorithms: the second network's gaze head would never train
    for algo, second in ((GazePPO, "value network's"), (GazeSAC, "critics'")):
        with pytest.raises(ValueError, match=f"share_features_extractor=False.*{second} own gaze head would never"):
            algo("CnnPolicy", fake_env(discrete=algo is GazePPO), contrastive=SMALL,
                 policy_kwargs=dict(share_features_extractor=False), **ALGOS[algo])
    # with rl_trains_gaze RL trains both heads (the loss the policy's too): accepted, and both move
    config = ContrastiveConfig(**{**SMALL.to_dict(), "rl_trains_gaze": True})
    model = GazePPO("CnnPolicy", fake_env(), contrastive=config, policy_kwargs=dict(share_features_extractor=False),
                    seed=0, **ALGOS[GazePPO])
    pi, vf = model.policy.pi_features_extractor, model.policy.vf_features_extractor
    assert pi is not vf
    before = {"pi": {k: v.detach().clone() for k, v in pi.attention.named_parameters()},
              "vf": {k: v.detach().clone() for k, v in vf.attention.named_parameters()}}
    model.learn(32)
    assert moved(before["pi"], pi.attention) and moved(before["vf"], vf.attention)


class PendingStates(BaseCallback):
    """The most states GazeSAC held for unfinished episodes at any step, and the rewards."""

    def _on_training_start(self) -> None:
        self.most, self.rewards = 0, []

    def _on_step(self) -> bool:
        self.most = max(self.most, self.model._return_tracker.pending)
        self.rewards.append(float(self.locals["rewards"][0]))
        return True


def test_sac_memory_bounded_on_an_endless_episode_and_the_gaze_is_fed():
    # one episode longer than the run: before issue 27 every state was held until it ended
    # (never) and the gaze got no state and no contrastive step
    interval, steps = 32, 256
    config = ContrastiveConfig(**{**SMALL.to_dict(), "sac_update_interval": interval, "label": "to-go",
                                  "exclude_window": 0})  # one episode: its own states are all there is
    model = GazeSAC("CnnPolicy", fake_env(32, ep_length=10**9, discrete=False), contrastive=config, buffer_size=64,
                    learning_starts=16, batch_size=8, train_freq=8, policy_kwargs=TINY, seed=0)
    pending, bootstraps = PendingStates(), []
    state_values = model._state_values

    def spy(obs):  # what the bootstrap should be: min of the twin critics at the actor's mean action
        with torch.no_grad():
            tensor, _ = model.policy.obs_to_tensor(obs)
            q = torch.cat(model.critic(tensor, model.actor(tensor, deterministic=True)), dim=1)
        bootstraps.append(q.min(dim=1).values.numpy())
        return state_values(obs)

    model._state_values = spy
    before = gaze_params(model)
    model.learn(steps, callback=pending)
    assert pending.most <= interval
    buffer = model.contrastive.buffer
    assert len(buffer) == steps  # every state handed over, in order, as one episode
    assert buffer.episodes.unique().tolist() == [0]
    np.testing.assert_array_equal(buffer.steps.numpy(), np.arange(steps))
    # each part's last return-to-go is completed with the critics' value of the next state
    assert len(bootstraps) == steps // interval
    last = np.arange(interval - 1, steps, interval)
    np.testing.assert_allclose(buffer.returns.numpy()[last],
                               np.array(pending.rewards)[last] + model.gamma * np.concatenate(bootstraps), rtol=1e-5)
    # the contrastive update follows its interval (one per 32 env steps), not every train() call
    assert model.contrastive.num_update_calls == steps // interval
    assert model.contrastive.num_updates > 0 and moved(before, model._gaze_extractor().attention)


def test_sac_bootstraps_only_episodes_longer_than_the_interval():
    # env 0: 6-step episodes, labelled exactly when they end; env 1: endless, handed over every 16
    config = ContrastiveConfig(**{**SMALL.to_dict(), "sac_update_interval": 16})
    model = GazeSAC("CnnPolicy", fake_env(32, ep_length=(6, 10**9), discrete=False), contrastive=config,
                    buffer_size=64, learning_starts=10**6, policy_kwargs=TINY, seed=0)  # collection only
    pending = PendingStates()
    model.learn(2 * 48, callback=pending)
    assert pending.most <= 2 * 16
    buffer = model.contrastive.buffer
    steps, episodes = buffer.steps.numpy(), buffer.episodes.numpy()
    endless = episodes == episodes[steps == 47][0]  # the only episode that reached step 47
    np.testing.assert_array_equal(steps[endless], np.arange(48))  # three parts of 16
    assert (~endless).sum() == 48 and set(np.bincount(episodes[~endless])[np.unique(episodes[~endless])]) == {6}
    assert model._return_tracker.pending == 0


@pytest.mark.parametrize("interval, update_every, expected", [(8, 1, 8), (32, 1, 2), (8, 3, 2)])
def test_sac_contrastive_updates_follow_their_interval_in_env_steps(interval, update_every, expected):
    # train_freq=1: SB3 SAC trains after every env step; before issue 27 so did the contrastive update
    config = ContrastiveConfig(**{**SMALL.to_dict(), "sac_update_interval": interval, "update_every": update_every})
    model = GazeSAC("CnnPolicy", fake_env(32, discrete=False), contrastive=config, buffer_size=100, learning_starts=4,
                    batch_size=4, train_freq=1, policy_kwargs=TINY, seed=0)
    model.learn(64)  # interval 8: an update after the steps 8, 16, ..., 64 (SAC trains from step 5 on)
    assert model.contrastive.num_update_calls == expected


def test_messages_name_the_problem():
    class Vector(gym.Env):
        observation_space = spaces.Box(-1, 1, (3,), np.float32)
        action_space = spaces.Discrete(2)

    class Flat(Vector):
        observation_space = spaces.Box(0, 255, (32, 40), np.uint8)

    class FloatChannelLast(Vector):
        observation_space = spaces.Box(0, 1, (64, 64, 3), np.float32)

    with pytest.raises(ValueError, match="has none") as err:
        GazePPO("MlpPolicy", Vector())
    assert "normalize_images" not in str(err.value)  # a vector is not a float image
    with pytest.raises(ValueError, match=r"ReshapeObservation\(env, \(32, 40, 1\)\)"):
        GazePPO("MlpPolicy", Flat())
    with pytest.raises(ValueError, match=r"\(64, 64, 3\) looks channel-last") as err:
        GazePPO("CnnPolicy", FloatChannelLast(), policy_kwargs=dict(normalize_images=False))
    assert "too small" in str(err.value) and "transpose(2, 0, 1)" in str(err.value)


@pytest.mark.parametrize("size, encoder, why", [(64, "NatureCNN", "the 64x64 image fits NatureCNN"),
                                                (20, "PlainConv", "the 20x20 image is too small for NatureCNN")])
def test_sac_builds_the_encoder_sb3_would_where_the_image_fits_and_says_why(capsys, size, encoder, why):
    env = DummyVecEnv([lambda: ImageEnv((size, size, 3))])
    model = GazeSAC("CnnPolicy", env, verbose=1, **ALGOS[GazeSAC])
    assert type(model._gaze_extractor().backbone).__name__ == encoder
    assert f"Image encoder: {encoder} (backbone 'auto': {why}" in capsys.readouterr().out
    if encoder == "NatureCNN":  # SB3's SAC("CnnPolicy") has the same conv stack
        def convs(module):
            return [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in module.modules()
                    if isinstance(c, torch.nn.Conv2d)]
        assert convs(model._gaze_extractor().backbone) == convs(SAC("CnnPolicy", env, buffer_size=200).actor.features_extractor)
    GazeSAC("CnnPolicy", env, **ALGOS[GazeSAC])  # verbose=0: silent
    assert "Image encoder" not in capsys.readouterr().out


@pytest.mark.parametrize("algo, encoder", [("sac", "PlainConv"), ("ppo", "NatureCNN")])
def test_maniskill_presets_keep_their_own_encoder(algo, encoder):
    from gaze_rl.build import build_model
    from gaze_rl.configuration.commands import TrainConfig
    from gaze_rl.configuration.presets import load_preset
    from gaze_rl.imitation.bc import SpacesEnv

    space = spaces.Dict({"rgb": spaces.Box(0, 255, (64, 64, 3), np.uint8),
                         "state": spaces.Box(-np.inf, np.inf, (9,), np.float32)})
    env = DummyVecEnv([lambda: SpacesEnv(space, spaces.Box(-1, 1, (4,), np.float32))])
    small = dict(replay_buffer_size=64, learning_starts=0) if algo == "sac" else {}
    cfg = TrainConfig(env_id="PushCube-v1", algo=algo, method="gaze", device="cpu", **small)
    model = build_model(cfg, env, load_preset(algo, cfg.env_id), "cpu")
    assert type(model._gaze_extractor().backbone).__name__ == encoder
    assert model.backbone == ("plain" if algo == "sac" else "nature")
