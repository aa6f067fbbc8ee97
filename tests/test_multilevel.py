"""Tests for layer-wise backbone access and multi-level features (gaze_rl.nets.levels and
GazeExtractor's multi_level option), and that every new option leaves the default network as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaze_rl.nets.attention import make_attention
from gaze_rl.nets.encoders import NatureCNN, PlainConv, feature_map_shape, make_backbone
from gaze_rl.nets.extractor import GazeExtractor
from gaze_rl.nets.levels import fuse_levels, layer_indices, layer_outputs, layer_shapes

from net_inputs import batch, dict_space, head_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.mark.parametrize("backbone, size, shapes", [
    (NatureCNN(3), 64, [(32, 15, 15), (64, 6, 6), (64, 4, 4)]),
    (NatureCNN(3), 128, [(32, 31, 31), (64, 14, 14), (64, 12, 12)]),
    (PlainConv(3, 64), 64, [(16, 64, 64), (32, 32, 32), (64, 16, 16), (64, 8, 8), (64, 4, 4)]),
])
def test_layer_outputs_shapes_and_last_equals_backbone(backbone, size, shapes):
    torch.manual_seed(0)
    x = torch.rand(2, 3, size, size)
    outs = layer_outputs(backbone, x)
    assert [tuple(o.shape[1:]) for o in outs] == shapes == layer_shapes(backbone, 3, size, size)
    assert torch.equal(outs[-1], backbone(x))


def test_layer_indices_needs_a_trailing_activation():
    with pytest.raises(ValueError, match="ends with an activation"):
        layer_indices(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3)))


@pytest.mark.parametrize("backbone, size, channels, cells", [
    ("nature", 64, 32 + 64 + 64, 16), ("nature", 128, 32 + 64 + 64, 144), ("plain", 64, 16 + 32 + 64 + 64 + 64, 16),
])
@pytest.mark.parametrize("attention", ["none", "gaussian"])
def test_multi_level_shapes_and_parameter_names(backbone, size, channels, cells, attention):
    torch.manual_seed(0)
    space = dict_space(size)
    plain = GazeExtractor(space, backbone=backbone, attention=attention)
    multi = GazeExtractor(space, backbone=backbone, attention=attention, multi_level=True)
    assert multi.image_fc[1].in_features == channels * cells
    assert multi.features_dim == plain.features_dim == 512
    # same parameter names (so the backbone's names stay NatureCNN's / PlainConv's); only the head is wider
    assert list(plain.state_dict()) == list(multi.state_dict())
    assert [k for k, v in plain.state_dict().items() if v.shape != multi.state_dict()[k].shape] == ["image_fc.1.weight"]
    assert multi(batch(space, n=3)).shape == (3, 512)
    pruned = GazeExtractor(space, backbone=backbone, attention=attention, multi_level=True, prune_top_k=4)
    assert pruned.image_fc[1].in_features == 4 * (channels + 2)
    assert pruned(batch(space, n=3)).shape == (3, 512)


def test_fuse_levels_pools_and_weights_every_level():
    torch.manual_seed(0)
    shallow = [torch.rand(2, 3, 8, 8), torch.rand(2, 5, 6, 6)]
    attended = torch.rand(2, 4, 4, 4)
    weights = torch.rand(2, 4, 4)
    fused = fuse_levels(shallow, attended, weights)
    assert fused.shape == (2, 3 + 5 + 4, 4, 4)
    # 8 -> 4 is exact 2x2 averaging
    np.testing.assert_allclose(fused[:, :3].numpy(),
                               (shallow[0].view(2, 3, 4, 2, 4, 2).mean((3, 5)) * weights[:, None]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(fused[:, 3:8].numpy(),
                               (F.adaptive_avg_pool2d(shallow[1], 4) * weights[:, None]).numpy(), rtol=1e-6)
    assert torch.equal(fused[:, 8:], attended)


def test_multi_level_extractor_feeds_the_fused_map_and_trains_shallow_layers_through_it():
    torch.manual_seed(0)
    space = dict_space(64)
    obs = batch(space, n=3)
    ext = GazeExtractor(space, attention="gaussian", multi_level=True, detach_attention=True)
    with torch.no_grad():
        levels = layer_outputs(ext.backbone, obs["rgb"])
        out = ext.attend(obs)
        expected = fuse_levels(levels[:-1], out.features, out.weights)
        seen = head_input(ext, obs)
    torch.testing.assert_close(seen["x"], expected)
    # conv1's output reaches the head directly: its gradient exists even if the deeper path is cut
    saved = {}

    def keep(_m, _inp, o):
        o.retain_grad()
        saved["a"] = o

    ext.backbone[1].register_forward_hook(keep)
    ext(obs).square().mean().backward()
    assert saved["a"].grad is not None and bool(saved["a"].grad.abs().sum() > 0)


def plain_layout(backbone: str, size: int, attention: str) -> dict[str, torch.Tensor]:
    """The state dict of the layout checkpoints and reference curves were made with, built by hand
    from gaze_rl's parts in its order (backbone, attention, image head, state MLP): what
    GazeExtractor(space, backbone, attention) must be when no option is given."""
    backbone_net = make_backbone(backbone, 3, size)
    channels, h, w = feature_map_shape(backbone_net, 3, size, size)
    layout = nn.Module()
    layout.backbone = backbone_net
    layout.attention = make_attention(attention, channels, h, w)
    layout.image_fc = nn.Sequential(nn.Flatten(), nn.Linear(channels * h * w, 256), nn.ReLU())
    layout.state_fc = nn.Sequential(nn.Linear(5, 256), nn.ReLU())
    return layout.state_dict()


@pytest.mark.parametrize("backbone, size", [("nature", 64), ("nature", 128), ("plain", 64)])
@pytest.mark.parametrize("attention, detach", [("none", False), ("patch", False), ("gaussian", False), ("gaussian", True)])
def test_default_network_is_the_plain_layout_bit_for_bit(backbone, size, attention, detach):
    """Options off (by default or spelled out): the parameters (names, shapes, initial values from
    the same seed) of the hand-built plain layout, so no option adds a layer or draws a random
    number when it is off, and the exact outputs of plain backbone -> attention -> linear."""
    space = dict_space(size)
    torch.manual_seed(0)
    expected = plain_layout(backbone, size, attention)
    torch.manual_seed(0)
    default = GazeExtractor(space, backbone=backbone, attention=attention, detach_attention=detach)
    torch.manual_seed(0)
    explicit = GazeExtractor(space, backbone=backbone, attention=attention, detach_attention=detach,
                             prune_top_k=None, prune_source="shallow", multi_level=False)
    for network in (default, explicit):
        state = network.state_dict()
        assert list(state) == list(expected)
        for key, value in expected.items():
            assert torch.equal(state[key], value), key
    obs = batch(space, n=3)
    with torch.no_grad():
        by_hand = torch.cat([default.image_fc(default.attention(default.backbone(obs["rgb"])).features),
                             default.state_fc(obs["state"])], dim=1)
        assert torch.equal(default(obs), by_hand)
        assert torch.equal(explicit(obs), by_hand)
