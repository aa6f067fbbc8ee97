"""GazePPO / GazeSAC as drop-ins for SB3's PPO / SAC on the image envs an SB3 user has:
`CnnPolicy` on Box images (channel-first and channel-last, grayscale, non-square, frame
stacks, floats) and `MultiInputPolicy` on a Dict whose image is not called "rgb"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from gaze_rl import ContrastiveConfig, GazePPO, GazeSAC
from gaze_rl.nets.extractor import GazeExtractor
from image_envs import ImageEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

SMALL = ContrastiveConfig(k=4, num_anchors=8, projection_dim=16, key_dim=32)
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
