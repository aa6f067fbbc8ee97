"""`GazeExtractor`: SB3 features extractor = backbone -> spatial attention -> linear, plus a
state MLP, concatenated (ManiSkill's ppo_rgb layout with attention inserted on the last map).

Two options bring DeepVision-VLA's ideas (seeds/003) to it, both off by default (then the
network, its parameter names and its outputs are exactly the plain layout's):
- `prune_top_k`: the linear head sees only the K highest-scoring cells (gaze_rl.nets.pruning);
- `multi_level`: earlier conv layers, pooled to the last grid and attended, join the last map
  (gaze_rl.nets.levels).

Works in plain SB3: `PPO("MultiInputPolicy", env, policy_kwargs=gaze_policy_kwargs("foveal"))`.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from gaze_rl.methods import METHODS as METHOD_TABLE
from gaze_rl.methods import method_spec
from gaze_rl.nets.attention import AttentionOutput, GaussianGaze, NoAttention, make_attention
from gaze_rl.nets.encoders import feature_map_shape, make_backbone
from gaze_rl.nets.levels import energy, fuse_levels, layer_outputs, layer_shapes, pool_to_grid
from gaze_rl.nets.pruning import check_prune_source, check_top_k, prune_cells, pruned_features_dim

# Method name -> attention kind inside the extractor, from the method table. "gaze" is
# "foveal" plus the return-guided contrastive loss, which lives in GazePPO / GazeSAC.
METHOD_ATTENTION = {name: spec.attention for name, spec in METHOD_TABLE.items()}


class GazeExtractor(BaseFeaturesExtractor):
    """Image backbone with attention on its last feature map, plus an optional state MLP.

    :param observation_space: Dict space with a channel-first uint8 image under `image_key`
        (SB3 algorithms transpose channel-last env images themselves) and optionally a flat
        vector under `state_key`.
    :param backbone: "nature" (ManiSkill ppo_rgb) or "plain" (ManiSkill sac_rgbd).
    :param attention: "none", "patch" or "gaussian" (see gaze_rl.nets.attention).
    :param attention_kwargs: options of the attention module (num_gaussians, sigma_floor, ...).
    :param image_features: width of the linear layer after the attended map.
    :param state_features: width of the state MLP (ignored without a state key).
    :param detach_attention: stop RL gradients at the attention map, so that only the
        contrastive loss trains the gaze head (the paper's optimisation split); the encoder
        still gets RL gradients through the attended features.
    :param prune_top_k: keep only this many cells of the (multi-level) attended map for the
        head, ranked by `prune_source`; None keeps every cell (no pruning).
    :param prune_source: "attention" (the gaze / patch map; the baseline has none and uses
        "shallow") or "shallow" (first conv layer's activation energy pooled to the grid).
    :param multi_level: concatenate the earlier conv layers, pooled to the last grid and
        weighted by the same attention map, with the attended last map.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        backbone: str = "nature",
        attention: str = "none",
        attention_kwargs: dict[str, Any] | None = None,
        image_features: int = 256,
        state_features: int = 256,
        detach_attention: bool = False,
        image_key: str = "rgb",
        state_key: str = "state",
        prune_top_k: int | None = None,
        prune_source: str = "attention",
        multi_level: bool = False,
    ):
        if not isinstance(observation_space, spaces.Dict) or image_key not in observation_space.spaces:
            raise ValueError(
                f"GazeExtractor needs a Dict observation space with an image under {image_key!r} "
                f"(got {observation_space}); build the env with gaze_rl.make_vec_env"
            )
        image_space = observation_space[image_key]
        if not is_image_space(image_space, check_channels=False) or len(image_space.shape) != 3:
            raise ValueError(
                f"observation {image_key!r} is not an image (got {image_space}); GazeExtractor needs "
                "uint8 images of shape (C, H, W)"
            )
        if not is_image_space_channels_first(image_space):
            raise ValueError(
                f"observation {image_key!r} is channel-last {image_space.shape}; GazeExtractor takes "
                "channel-first (C, H, W) images. SB3 algorithms transpose them for you (VecTransposeImage); "
                "when building the extractor yourself, pass the transposed space"
            )
        in_channels, height, width = image_space.shape
        has_state = state_key in observation_space.spaces
        state_dim = int(observation_space[state_key].shape[0]) if has_state else 0
        super().__init__(observation_space, image_features + (state_features if has_state else 0))

        self.image_key, self.state_key, self.has_state = image_key, state_key, has_state
        self.detach_attention = detach_attention
        self.backbone = make_backbone(backbone, in_channels, height)
        try:
            self.map_shape = feature_map_shape(self.backbone, in_channels, height, width)
        except RuntimeError as err:
            raise ValueError(
                f"images of {height}x{width} are too small for the {backbone!r} backbone ({err}); "
                "use image_size >= 64"
            ) from None
        channels, h, w = self.map_shape
        check_prune_source(prune_source)
        if prune_top_k is not None:
            check_top_k(prune_top_k, h, w)
        self.attention = make_attention(attention, channels, h, w, **(attention_kwargs or {}))
        self.prune_top_k, self.multi_level = prune_top_k, multi_level
        # Without an attention map (baseline) the only ranking there is is the shallow one.
        self.prune_source = "shallow" if isinstance(self.attention, NoAttention) else prune_source
        if multi_level:  # channels of every conv layer, all on the last grid
            channels = sum(shape[0] for shape in layer_shapes(self.backbone, in_channels, height, width))
        head_in = channels * h * w if prune_top_k is None else pruned_features_dim(channels, prune_top_k)
        self.image_fc = nn.Sequential(nn.Flatten(), nn.Linear(head_in, image_features), nn.ReLU())
        self.state_fc = nn.Sequential(nn.Linear(state_dim, state_features), nn.ReLU()) if has_state else None

    @property
    def has_gaze(self) -> bool:
        """True when the attention is the Gaussian gaze (methods foveal and gaze)."""
        return isinstance(self.attention, GaussianGaze)

    def feature_map(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone output F (B, C, h, w) for preprocessed (float, [0, 1]) observations."""
        return self.backbone(observations[self.image_key])

    def attend(self, observations: dict[str, torch.Tensor]) -> AttentionOutput:
        """Attention output (attended features, map A, gaze parameters) for observations."""
        return self.attention(self.feature_map(observations))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.multi_level or (self.prune_top_k is not None and self.prune_source == "shallow"):
            levels = layer_outputs(self.backbone, observations[self.image_key])
        else:
            levels = [self.feature_map(observations)]
        fmap = levels[-1]
        if self.detach_attention:
            weights = self.attention(fmap.detach()).weights.detach()
            attended = fmap * weights[:, None]
        else:
            out = self.attention(fmap)
            attended, weights = out.features, out.weights
        if self.multi_level:
            attended = fuse_levels(levels[:-1], attended, weights)
        if self.prune_top_k is not None:
            if self.prune_source == "attention":
                scores = weights
            else:
                scores = pool_to_grid(energy(levels[0]), *self.map_shape[1:])
            attended = prune_cells(attended, scores, self.prune_top_k)
        parts = [self.image_fc(attended)]
        if self.state_fc is not None:
            parts.append(self.state_fc(observations[self.state_key]))
        return torch.cat(parts, dim=1)


def gaze_policy_kwargs(
    method: str = "foveal",
    backbone: str = "nature",
    attention_kwargs: dict[str, Any] | None = None,
    **extractor_kwargs: Any,
) -> dict[str, Any]:
    """`policy_kwargs` that put a GazeExtractor into any SB3 policy.

    `method` is a name of gaze_rl.methods.METHODS. "gaze" builds the same network as "foveal":
    its contrastive loss (and whether RL gradients reach the gaze head) belongs to GazePPO /
    GazeSAC. "gaze-frozen" stops RL gradients at the gaze map, so the gaze keeps its initial vignette.
    """
    spec = method_spec(method)
    kwargs: dict[str, Any] = dict(backbone=backbone, attention=spec.attention, attention_kwargs=attention_kwargs or {})
    if spec.gaze_trained_by == "nothing":
        kwargs["detach_attention"] = True
    kwargs.update(extractor_kwargs)
    return dict(features_extractor_class=GazeExtractor, features_extractor_kwargs=kwargs)
