"""Tests for gaze_rl.nets.extractor (GazeExtractor, gaze_policy_kwargs) on synthetic spaces."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs

from gaze_rl.nets.attention import GaussianGaze, NoAttention, PatchAttention
from gaze_rl.nets.encoders import NatureCNN, PlainConv
from gaze_rl.methods import METHOD_NAMES as METHODS
from gaze_rl.nets.extractor import GazeExtractor, gaze_policy_kwargs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

STATE_DIM = 5


def dict_space(size: int = 64, channels: int = 3, state: bool = True, channel_first: bool = True) -> spaces.Dict:
    shape = (channels, size, size) if channel_first else (size, size, channels)
    parts = {"rgb": spaces.Box(0, 255, shape, np.uint8)}
    if state:
        parts["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
    return spaces.Dict(parts)


def batch(space: spaces.Dict, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Preprocessed (float, images in [0, 1]) observations, as SB3 feeds the extractor."""
    g = torch.Generator().manual_seed(seed)
    raw = {"rgb": torch.randint(0, 256, (n, *space["rgb"].shape), generator=g, dtype=torch.uint8)}
    if "state" in space.spaces:
        raw["state"] = torch.randn(n, *space["state"].shape, generator=g)
    return preprocess_obs(raw, space, normalize_images=True)


@pytest.mark.parametrize(
    "backbone, size, map_shape, cls",
    [
        ("nature", 64, (64, 4, 4), NatureCNN),
        ("nature", 128, (64, 12, 12), NatureCNN),
        # ManiSkill sac_rgbd's PlainConv (16, 32, 64, 64 channels; first pool brings the image to 32 px)
        ("plain", 64, (64, 4, 4), PlainConv),
        ("plain", 128, (64, 4, 4), PlainConv),
    ],
)
def test_feature_map_shapes(backbone, size, map_shape, cls):
    space = dict_space(size)
    ext = GazeExtractor(space, backbone=backbone, attention="gaussian", image_features=32, state_features=16)
    assert isinstance(ext.backbone, cls)
    assert ext.map_shape == map_shape
    obs = batch(space, n=3)
    fmap = ext.feature_map(obs)
    assert tuple(fmap.shape) == (3, *map_shape)
    assert bool((fmap >= 0).all())  # last layer is a ReLU
    out = ext.attend(obs)
    assert tuple(out.features.shape) == (3, *map_shape)
    assert tuple(out.weights.shape) == (3, *map_shape[1:])
    feats = ext(obs)
    assert ext.features_dim == 32 + 16
    assert tuple(feats.shape) == (3, 48)
    assert torch.isfinite(feats).all()


def test_output_dim_default_widths_and_state_part():
    space = dict_space(64)
    ext = GazeExtractor(space)
    assert ext.features_dim == 256 + 256
    obs = batch(space, n=2)
    feats = ext(obs)
    assert feats.shape == (2, 512)
    # the state part depends on the state only, the image part on the image only
    obs2 = {"rgb": obs["rgb"], "state": obs["state"] + 1.0}
    feats2 = ext(obs2)
    torch.testing.assert_close(feats[:, :256], feats2[:, :256])
    assert not torch.allclose(feats[:, 256:], feats2[:, 256:])


def test_rgb_only_space():
    space = dict_space(64, state=False)
    ext = GazeExtractor(space, attention="gaussian", image_features=40)
    assert not ext.has_state and ext.state_fc is None
    assert ext.features_dim == 40
    assert ext(batch(space, n=2)).shape == (2, 40)


def test_attention_kinds_and_has_gaze():
    space = dict_space(64)
    assert isinstance(GazeExtractor(space, attention="none").attention, NoAttention)
    assert isinstance(GazeExtractor(space, attention="patch").attention, PatchAttention)
    ext = GazeExtractor(space, attention="gaussian", attention_kwargs=dict(num_gaussians=2, hidden=8))
    assert isinstance(ext.attention, GaussianGaze) and ext.has_gaze
    assert ext.attention.num_gaussians == 2
    assert not GazeExtractor(space, attention="patch").has_gaze
    # "none" leaves the backbone output unchanged
    ext = GazeExtractor(space, attention="none")
    obs = batch(space)
    torch.testing.assert_close(ext.attend(obs).features, ext.feature_map(obs))


def test_error_not_a_dict_space():
    with pytest.raises(ValueError, match="Dict observation space"):
        GazeExtractor(spaces.Box(0, 255, (3, 64, 64), np.uint8))


def test_error_missing_image_key():
    space = spaces.Dict({"state": spaces.Box(-1, 1, (4,), np.float32)})
    with pytest.raises(ValueError, match="'rgb'"):
        GazeExtractor(space)


@pytest.mark.parametrize(
    "image_space",
    [
        spaces.Box(0.0, 1.0, (3, 64, 64), np.float32),  # float, not uint8
        spaces.Box(0, 255, (64, 64), np.uint8),  # 2-D
        spaces.Box(-1, 1, (12,), np.float32),  # a vector
    ],
)
def test_error_not_an_image(image_space):
    with pytest.raises(ValueError, match="not an image"):
        GazeExtractor(spaces.Dict({"rgb": image_space}))


def test_error_too_small_image():
    with pytest.raises(ValueError, match=r"24x24 are too small.*'nature'.*>= 64"):
        GazeExtractor(dict_space(24), backbone="nature", attention="gaussian")
    # PlainConv keeps 24 px usable (3x3 map) but reduces 12 px to a 1x1 map: no room for a gaze
    assert GazeExtractor(dict_space(24), backbone="plain", attention="gaussian").map_shape == (64, 3, 3)
    with pytest.raises(ValueError, match="too small for spatial attention"):
        GazeExtractor(dict_space(12), backbone="plain", attention="gaussian")


def test_error_unknown_backbone_and_attention():
    with pytest.raises(ValueError, match="unknown backbone 'resnet'.*nature, plain"):
        GazeExtractor(dict_space(64), backbone="resnet")
    with pytest.raises(ValueError, match="unknown attention kind 'fovea'"):
        GazeExtractor(dict_space(64), attention="fovea")


def test_channel_last_space_is_handled_or_clearly_rejected():
    space = dict_space(64, channel_first=False)
    try:
        ext = GazeExtractor(space, attention="gaussian")
    except ValueError as err:
        assert re.search(r"channel[- ]?(first|last)|transpose", str(err), re.IGNORECASE), str(err)
    else:
        assert ext.map_shape == (64, 4, 4)


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def _has_grad(module: torch.nn.Module) -> bool:
    return any(g is not None and bool(g.abs().sum() > 0) for g in _grads(module))


@pytest.mark.parametrize("backbone", ["nature", "plain"])
def test_detach_attention_blocks_rl_gradients_to_gaze_only(backbone):
    torch.manual_seed(0)
    space = dict_space(64)
    ext = GazeExtractor(space, backbone=backbone, attention="gaussian", detach_attention=True)
    obs = batch(space, n=4)
    loss = ext(obs).square().mean()  # stand-in for any RL loss on the features
    loss.backward()
    assert all(g is None or bool((g == 0).all()) for g in _grads(ext.attention))
    assert _has_grad(ext.backbone)
    assert _has_grad(ext.image_fc) and _has_grad(ext.state_fc)
    # the detached forward still applies the gaze map: same features as the attached one
    ext.detach_attention = False
    with torch.no_grad():
        attached = ext(obs)
    ext.detach_attention = True
    with torch.no_grad():
        detached = ext(obs)
    torch.testing.assert_close(attached, detached)


def test_attached_attention_gets_rl_gradients():
    torch.manual_seed(0)
    space = dict_space(64)
    ext = GazeExtractor(space, attention="gaussian", detach_attention=False)
    ext(batch(space, n=4)).square().mean().backward()
    assert _has_grad(ext.attention)
    assert _has_grad(ext.backbone)
    # every gaze parameter tensor receives a gradient
    assert all(g is not None for g in _grads(ext.attention))


def test_gaze_policy_kwargs_per_method():
    space = dict_space(64)
    # "gaze" builds the same network as "foveal": GazePPO / GazeSAC decide about detaching
    expected = {"baseline": (NoAttention, False), "patch": (PatchAttention, False),
                "foveal": (GaussianGaze, False), "gaze": (GaussianGaze, False),
                "gaze-shuffled": (GaussianGaze, False), "gaze-frozen": (GaussianGaze, True)}
    assert set(METHODS) == set(expected)
    for method, (cls, detach) in expected.items():
        kwargs = gaze_policy_kwargs(method)
        assert kwargs["features_extractor_class"] is GazeExtractor
        ext = kwargs["features_extractor_class"](space, **kwargs["features_extractor_kwargs"])
        assert isinstance(ext.attention, cls), method
        assert ext.detach_attention is detach, method
        assert isinstance(ext.backbone, NatureCNN)
    kwargs = gaze_policy_kwargs("foveal", backbone="plain", attention_kwargs={"num_gaussians": 3}, image_features=8)
    ext = GazeExtractor(space, **kwargs["features_extractor_kwargs"])
    assert isinstance(ext.backbone, PlainConv) and ext.attention.num_gaussians == 3 and ext.features_dim == 8 + 256
    # explicit extractor kwargs win over the method's defaults
    kwargs = gaze_policy_kwargs("foveal", detach_attention=True, attention="patch")
    assert kwargs["features_extractor_kwargs"]["detach_attention"] is True
    assert kwargs["features_extractor_kwargs"]["attention"] == "patch"


def test_gaze_policy_kwargs_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'fovea'.*baseline, patch, foveal, gaze"):
        gaze_policy_kwargs("fovea")


@pytest.mark.parametrize("backbone, size", [("nature", 64), ("plain", 64), ("nature", 128)])
def test_gaze_starts_centred_in_sb3_policy_with_ortho_init(backbone, size):
    torch.manual_seed(0)
    space = dict_space(size)
    policy = MultiInputActorCriticPolicy(
        space, spaces.Box(-1, 1, (3,), np.float32), lr_schedule=lambda _: 3e-4,
        ortho_init=True, **gaze_policy_kwargs("foveal", backbone=backbone),
    )
    ext = policy.features_extractor
    assert isinstance(ext, GazeExtractor) and ext.has_gaze
    with torch.no_grad():
        params = ext.attend(batch(space, n=8)).params
    gaze = ext.attention
    np.testing.assert_allclose(params.mu.numpy(), 0.0, atol=0.02)
    np.testing.assert_allclose(params.sigma.numpy(), gaze.sigma_init, atol=0.02)
    np.testing.assert_allclose(params.rho.numpy(), 0.0, atol=0.02)
    # ... and ortho_init did run on the rest of the extractor (so the check above is meaningful):
    # the orthogonal init zeroes Linear biases, which PyTorch's default init does not
    assert bool((ext.image_fc[1].bias == 0).all())
