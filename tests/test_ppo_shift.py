"""GazePPO with a random shift (DrAC, Raileanu et al. 2021): the PPO ratio compares the new and
the old policy on the *same* shifted frames, so the augmentation alone never moves it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from gaze_rl import GazePPO
from gaze_rl.nets.augment import RandomShift

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

PAD = 4


class DictImageEnv(gym.Env):
    """Random 48x48 RGB frames plus a state vector and a second (unattended) image; Box actions."""

    def __init__(self):
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (48, 48, 3), np.uint8),
            "wrist": spaces.Box(0, 255, (36, 36, 1), np.uint8),
            "state": spaces.Box(-1, 1, (3,), np.float32),
        })
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._t += 1
        return self.observation_space.sample(), float(action[0]), False, self._t >= 10, {}


class SeededFakeImageEnv(FakeImageEnv):
    """SB3's FakeImageEnv (84x84x1 random frames, Discrete actions), reproducible from its seed."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.observation_space.seed(seed)
        return super().reset(seed=seed, options=options)


def box_env():
    return VecTransposeImage(DummyVecEnv([SeededFakeImageEnv]))


def dict_env():
    return VecTransposeImage(DummyVecEnv([DictImageEnv]))


def make_model(env, augment="shift", learning_rate=0.0, policy="CnnPolicy", **kwargs):
    return GazePPO(policy, env, n_steps=64, batch_size=32, n_epochs=2, learning_rate=learning_rate,
                   contrastive=None, policy_kwargs=dict(features_extractor_kwargs=dict(augment=augment)),
                   seed=0, **kwargs)


class Recorder:
    """Records, per minibatch of the update, the rollout's samples, the samples PPO got, and what
    the live policy computed on them (the frozen copy's own evaluations are left out)."""

    def __init__(self, model, monkeypatch):
        self.samples, self.evaluated, self.raw, self.indices = [], [], [], []
        policy, buffer = model.policy, model.rollout_buffer
        evaluate, shifted, get_samples = type(policy).evaluate_actions, model._shifted_samples, buffer._get_samples

        def evaluate_actions(self_, obs, actions):
            out = evaluate(self_, obs, actions)
            if self_ is policy:
                self.evaluated.append((obs, out[1].detach().clone()))
            return out

        def shifted_samples(samples, *args):
            out = shifted(samples, *args)
            self.samples.append(out)
            return out

        def raw_samples(batch_inds, *args, **kwargs):
            out = get_samples(batch_inds, *args, **kwargs)
            self.raw.append(out)
            self.indices.append(batch_inds.tolist())
            return out

        # On the class: the update's policy copy must not inherit an instance-level spy.
        monkeypatch.setattr(type(policy), "evaluate_actions", evaluate_actions)
        model._shifted_samples = shifted_samples
        buffer._get_samples = raw_samples


def image(obs):
    return obs["rgb"] if isinstance(obs, dict) else obs


@pytest.mark.parametrize("kind", ["box", "dict"])
def test_shift_alone_never_moves_the_ratio(kind, monkeypatch):
    env = box_env() if kind == "box" else dict_env()
    model = make_model(env, policy="CnnPolicy" if kind == "box" else "MultiInputPolicy")
    record = Recorder(model, monkeypatch)
    model.learn(64)
    logged = model.logger.name_to_value
    assert logged["train/approx_kl"] == 0.0
    assert logged["train/clip_fraction"] == 0.0
    assert len(record.samples) == len(record.evaluated) == 4  # 2 epochs x 2 minibatches
    for samples, (obs, log_prob) in zip(record.samples, record.evaluated):
        assert image(obs) is image(samples.observations)  # the update saw the shifted frames as given
        assert torch.equal(log_prob, samples.old_log_prob)  # ratio exactly 1
        assert torch.equal(torch.exp(log_prob - samples.old_log_prob), torch.ones_like(log_prob))
    assert all(m.active for m in model.policy.modules() if isinstance(m, RandomShift))  # restored
    assert "get" not in vars(model.rollout_buffer)  # the wrapper is gone after train()


def test_minibatches_are_exact_fresh_shifts_of_the_rollout_frames(monkeypatch):
    model = make_model(dict_env(), policy="MultiInputPolicy", learning_rate=3e-4)
    record = Recorder(model, monkeypatch)
    model.learn(128)  # two rollouts: the second train() copies a policy that has been trained
    assert len(record.raw) == len(record.samples) == len(record.evaluated) == 8
    offsets = {}  # (train() call, epoch, buffer row) -> shift
    for n, (raw, shifted) in enumerate(zip(record.raw, record.samples)):
        assert torch.equal(shifted.actions, raw.actions)
        assert torch.equal(shifted.advantages, raw.advantages) and torch.equal(shifted.returns, raw.returns)
        for key in ("wrist", "state"):  # only the attended image is shifted
            assert torch.equal(shifted.observations[key], raw.observations[key])
        frames, moved = raw.observations["rgb"], shifted.observations["rgb"]
        assert moved.dtype == frames.dtype and frames.max() > 1  # raw [0, 255] floats, before SB3's scaling
        padded = F.pad(frames, (PAD,) * 4, mode="replicate")
        h, w = frames.shape[-2:]
        for i in range(len(frames)):
            match = [(dy, dx) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)
                     if torch.equal(padded[i, :, dy:dy + h, dx:dx + w], moved[i])]
            assert match, f"row {i} is not an integer shift of its rollout frame"
            offsets[n // 4, n // 2 % 2, record.indices[n][i]] = match[0]
    assert len(set(offsets.values())) > 10  # drawn per image
    # A fresh shift per minibatch of each epoch: a frame's shift in epoch 1 is not its epoch-0 one.
    for call in (0, 1):
        same = sum(offsets[call, 0, row] == offsets[call, 1, row] for row in range(64))
        assert same < 16  # about 64 / 81 by chance
    for first in (0, 4):
        # Each train()'s first minibatch: the old policy is still the live one, so its ratio is
        # exactly 1 even with lr > 0 (the rollout's own log-probs differ: unshifted frames).
        assert torch.equal(record.evaluated[first][1], record.samples[first].old_log_prob)
        assert not torch.equal(record.samples[first].old_log_prob, record.raw[first].old_log_prob)
        # Later minibatches: old log-probs from the copy taken when train() began, not the updated policy.
        assert not torch.equal(record.evaluated[first + 3][1], record.samples[first + 3].old_log_prob)


def test_without_augment_ppo_update_is_sb3s_own():
    def spy(*args, **kwargs):
        raise AssertionError("the shifted-minibatch path must not run without augmentation")

    model = make_model(box_env(), augment="none", learning_rate=3e-4)
    model._train_on_shifted_minibatches = model._shifted_samples = spy
    assert model._random_shift() is None
    model.learn(64)
    assert model.logger.name_to_value["train/approx_kl"] > 0  # a real update ran
    # Same seed, SB3's own PPO.train: the same parameters, bit for bit.
    plain = make_model(box_env(), augment="none", learning_rate=3e-4)
    plain.train = lambda: PPO.train(plain)
    plain.learn(64)
    ours, theirs = model.policy.state_dict(), plain.policy.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
