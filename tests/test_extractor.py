"""Tests for gaze_rl.nets.extractor (GazeExtractor, gaze_policy_kwargs) on synthetic spaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs

from gaze_rl.configuration.methods import METHOD_NAMES as METHODS
from gaze_rl.nets.attention import GaussianGaze, NoAttention, OracleGaze, PatchAttention
from gaze_rl.nets.encoders import NatureCNN, PlainConv, make_backbone
from gaze_rl.nets.extractor import GazeExtractor, gaze_policy_kwargs

from net_inputs import batch, dict_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


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


def test_box_image_space_is_the_image():
    # SB3's CnnPolicy hands the extractor a Box: the whole observation is the image.
    space = spaces.Box(0, 255, (1, 48, 80), np.uint8)  # grayscale, non-square
    ext = GazeExtractor(space, attention="gaussian", image_features=24)
    assert ext.image_key is None and not ext.has_state and ext.features_dim == 24
    obs = torch.rand(2, 1, 48, 80)
    assert ext(obs).shape == (2, 24) and ext.map_shape == (64, 2, 6)


def test_dict_image_key_found_as_sb3_does_and_every_other_key_used():
    space = spaces.Dict({
        "pixels": spaces.Box(0, 255, (3, 64, 64), np.uint8),
        "wrist": spaces.Box(0, 255, (3, 40, 40), np.uint8),
        "pos": spaces.Box(-1, 1, (4,), np.float32),
        "mode": spaces.Discrete(3),
    })
    with pytest.raises(ValueError, match="several: pixels, wrist; pass image_key"):
        GazeExtractor(space)
    ext = GazeExtractor(space, attention="gaussian", image_key="pixels", image_features=16, state_features=8)
    assert ext.vector_keys == ["mode", "pos"] and list(ext.other_cnns) == ["wrist"]
    assert ext.features_dim == 16 + 16 + 8
    g = torch.Generator().manual_seed(0)
    raw = {"pixels": torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8),
           "wrist": torch.randint(0, 256, (2, 3, 40, 40), generator=g, dtype=torch.uint8),
           "pos": torch.randn(2, 4, generator=g), "mode": torch.tensor([0, 2])}
    obs = preprocess_obs(raw, space)
    feats = ext(obs)
    # each non-attended input moves its own part of the features (nothing is dropped)
    changed = dict(obs, mode=preprocess_obs({**raw, "mode": torch.tensor([1, 1])}, space)["mode"])
    assert not torch.allclose(feats[:, 32:], ext(changed)[:, 32:])
    changed = dict(obs, wrist=torch.rand(2, 3, 40, 40, generator=g))
    diff = (feats - ext(changed)).abs().sum(0)
    assert bool((diff[16:32] > 0).any()) and bool((diff[:16] == 0).all()) and bool((diff[32:] == 0).all())


def test_error_no_image():
    space = spaces.Dict({"state": spaces.Box(-1, 1, (4,), np.float32)})
    with pytest.raises(ValueError, match="needs an image to look at.*none"):
        GazeExtractor(space)
    with pytest.raises(ValueError, match="vectors need no gaze"):
        GazeExtractor(spaces.Box(-1, 1, (12,), np.float32))


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
        GazeExtractor(spaces.Dict({"rgb": image_space}), image_key="rgb")


def test_float_images_with_normalized_image():
    space = spaces.Box(-3.0, 3.0, (2, 64, 64), np.float32)
    with pytest.raises(ValueError, match="normalized_image=True"):
        GazeExtractor(space)
    ext = GazeExtractor(space, attention="gaussian", normalized_image=True)
    assert ext(torch.randn(2, 2, 64, 64)).shape == (2, 256)


def test_error_too_small_image():
    with pytest.raises(ValueError, match=r"24x24 are too small for the 'nature' backbone with attention.*"
                                         r"at least 44 px.*'plain' \(>= 16 px\)"):
        GazeExtractor(dict_space(24), backbone="nature", attention="gaussian")
    # without attention a 1x1 map is fine (SB3's NatureCNN does the same): 36 px
    assert GazeExtractor(dict_space(36), backbone="nature").map_shape == (64, 1, 1)
    # PlainConv keeps 24 px usable (3x3 map) but reduces 12 px to a 1x1 map: no room for a gaze
    assert GazeExtractor(dict_space(24), backbone="plain", attention="gaussian").map_shape == (64, 3, 3)
    with pytest.raises(ValueError, match="12x12 are too small for the 'plain' backbone with attention"):
        GazeExtractor(dict_space(12), backbone="plain", attention="gaussian")
    # "auto" takes NatureCNN where it fits and PlainConv below
    assert isinstance(GazeExtractor(dict_space(40), backbone="auto", attention="gaussian").backbone, PlainConv)
    assert isinstance(GazeExtractor(dict_space(44), backbone="auto", attention="gaussian").backbone, NatureCNN)


def test_error_unknown_backbone_and_attention():
    with pytest.raises(ValueError, match="unknown backbone 'resnet'.*nature, plain"):
        GazeExtractor(dict_space(64), backbone="resnet")
    with pytest.raises(ValueError, match="unknown attention kind 'fovea'"):
        GazeExtractor(dict_space(64), attention="fovea")


def test_channels_are_shape_0_as_in_sb3():
    # SB3 transposes channel-last images before the extractor; a channel-first frame stack whose
    # channel count exceeds its width (VecTransposeImage(skip=True)) is still channel-first.
    space = spaces.Box(0, 255, (50, 64, 48), np.uint8)
    ext = GazeExtractor(space, attention="gaussian")
    assert ext.backbone[0].in_channels == 50


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
                "gaze-shuffled": (GaussianGaze, False), "gaze-frozen": (GaussianGaze, True),
                "privileged": (NoAttention, False), "gaze-oracle": (OracleGaze, False)}
    assert set(METHODS) == set(expected)
    # the oracle reads the simulator's targets, an observation key only its map sees
    with_targets = spaces.Dict({**space.spaces, "gaze_target": spaces.Box(-np.inf, np.inf, (2, 4), np.float32)})
    for method, (cls, detach) in expected.items():
        kwargs = gaze_policy_kwargs(method)
        assert kwargs["features_extractor_class"] is GazeExtractor
        ext = kwargs["features_extractor_class"](with_targets if method == "gaze-oracle" else space,
                                                 **kwargs["features_extractor_kwargs"])
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


@pytest.mark.parametrize("backbone", ["nature", "plain", "drq"])
def test_backbones_run_channels_last_on_cpu_with_the_same_values(backbone):
    """The convs see channels-last input (faster on a CPU); the map comes back contiguous, equal
    to the contiguous layout's up to float rounding; the weights keep their layout."""
    net = make_backbone(backbone, 3, 64)
    seen = []
    net[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.rand(4, 3, 64, 64)
    fmap = net(x)
    assert seen == [True] and fmap.is_contiguous()
    torch.testing.assert_close(fmap, torch.nn.Sequential.forward(net, x), rtol=1e-5, atol=1e-6)
    assert all(p.is_contiguous() for p in net.parameters())
