"""`GazeExtractor`: SB3 features extractor = backbone -> spatial attention -> linear, plus a
state MLP, concatenated (ManiSkill's ppo_rgb layout with attention inserted on the last map).

Two options bring DeepVision-VLA's ideas to it, both off by default (then the
network, its parameter names and its outputs are exactly the plain layout's):
- `prune_top_k`: the linear head sees only the K highest-scoring cells (gaze_rl.nets.pruning);
- `multi_level`: earlier conv layers, pooled to the last grid and attended, join the last map
  (gaze_rl.nets.levels).

Works in plain SB3: `PPO("CnnPolicy", env, policy_kwargs=gaze_policy_kwargs("foveal"))` (Box
images) or `PPO("MultiInputPolicy", ...)` (Dict observations).
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from gaze_rl.configuration.methods import method_spec
from gaze_rl.envs.task_objects import GAZE_TARGET_KEY
from gaze_rl.nets.attention import AttentionOutput, GaussianGaze, NoAttention, OracleGaze, make_attention, reweight
from gaze_rl.nets.augment import make_augment
from gaze_rl.nets.encoders import backbone_choice, channel_last_hint, checked_map_shape, make_backbone
from gaze_rl.nets.levels import energy, fuse_levels, layer_outputs, layer_shapes, mean_pool_to_grid
from gaze_rl.nets.pruning import check_prune_source, check_top_k, prune_cells, pruned_features_dim


class GazeExtractor(BaseFeaturesExtractor):
    """Image backbone with attention on its last feature map, plus an MLP on the other inputs.

    Takes what SB3's `CnnPolicy` and `MultiInputPolicy` take: a Box image, or a Dict whose image
    keys are found as SB3's `CombinedExtractor` finds them (`is_image_space`). The gaze looks at
    one image (`image_key`); further images get SB3's NatureCNN, as in `CombinedExtractor`; every
    non-image key is flattened, concatenated and goes through one MLP (ManiSkill's state MLP).

    :param observation_space: Box image or Dict space. Images are channel-first, as SB3
        algorithms pass them (they transpose channel-last env images with VecTransposeImage);
        the channel count is shape[0], as in SB3's NatureCNN (frame stacks, grayscale, RGBD).
    :param backbone: "nature" (ManiSkill ppo_rgb), "plain" (ManiSkill sac_rgbd), "drq" (DrQ-v2's
        encoder: a 25x25 map at 64 px, and a LayerNorm + tanh trunk as DrQ-v2 has), or "auto":
        "nature" where the image leaves it room (>= 44 px with attention), else "plain".
    :param attention: "none", "patch", "gaussian" or "oracle" (see gaze_rl.nets.attention; the
        oracle reads the observation key "gaze_target", which no MLP ever sees).
    :param attention_kwargs: options of the attention module (num_gaussians, sigma_floor, ...).
    :param image_features: width of the linear layer after the attended map.
    :param state_features: width of the MLP on the non-image inputs (ignored without any).
    :param detach_attention: stop RL gradients at the attention map, so that only the
        contrastive loss trains the gaze head (the paper's optimisation split); the encoder
        still gets RL gradients through the attended features.
    :param image_key: Dict key of the attended image; None = "rgb" if that is an image, else
        the only image key.
    :param prune_top_k: keep only this many cells of the (multi-level) attended map for the
        head, ranked by `prune_source`; None keeps every cell (no pruning).
    :param prune_source: "attention" (the gaze / patch map; the baseline has none and uses
        "shallow") or "shallow" (first conv layer's activation energy pooled to the grid).
    :param multi_level: concatenate the earlier conv layers, pooled to the last grid and
        weighted by the same attention map, with the attended last map.
    :param normalized_image: images are already floats (policy `normalize_images=False`): skip
        the uint8 / [0, 255] checks, as SB3's NatureCNN does. GazePPO / GazeSAC set it for you.
    :param augment: image augmentation applied in training mode only ("none" or "shift": DrQ /
        RAD random shift, gaze_rl.nets.augment); SB3 trains in training mode and acts in eval mode.
    :param features_dim: SB3's NatureCNN name for `image_features`, and `cnn_output_dim` is
        CombinedExtractor's: SB3 users' `CnnPolicy` / `MultiInputPolicy` kwargs carry over.
    """

    def __init__(
        self,
        observation_space: spaces.Box | spaces.Dict,
        backbone: str = "nature",
        attention: str = "none",
        attention_kwargs: dict[str, Any] | None = None,
        image_features: int = 256,
        state_features: int = 256,
        detach_attention: bool = False,
        image_key: str | None = None,
        prune_top_k: int | None = None,
        prune_source: str = "attention",
        multi_level: bool = False,
        normalized_image: bool = False,
        augment: str = "none",
        features_dim: int | None = None,
        cnn_output_dim: int | None = None,
    ):
        image_features = next((d for d in (features_dim, cnn_output_dim) if d is not None), image_features)
        self.image_key = find_image_key(observation_space, image_key, normalized_image)
        image_space = observation_space if self.image_key is None else observation_space[self.image_key]
        in_channels, height, width = image_space.shape
        # The oracle gaze's targets are privileged: they reach the policy only through the gaze map.
        others = {} if self.image_key is None else {k: s for k, s in observation_space.spaces.items()
                                                     if k not in (self.image_key, GAZE_TARGET_KEY)}
        if attention == "oracle" and (self.image_key is None or GAZE_TARGET_KEY not in observation_space.spaces):
            raise ValueError(f"the oracle gaze needs the observation key {GAZE_TARGET_KEY!r} (the simulator's object "
                             "positions): build the env with gaze_targets=True (gaze-rl train --method gaze-oracle does)")
        other_images = [k for k, s in others.items() if is_image_space(s, normalized_image=normalized_image)]
        # Non-image inputs in the space's order: one flat vector for the MLP.
        self.vector_keys = [k for k in others if k not in other_images]
        state_dim = sum(get_flattened_obs_dim(others[k]) for k in self.vector_keys)
        super().__init__(observation_space, 1)  # the width is known once every part is built

        self.detach_attention = detach_attention
        self.augment = make_augment(augment)
        min_side = 1 if attention == "none" else 2
        # backbone_reason: which backbone "auto" picked and why (GazePPO / GazeSAC print it)
        backbone, self.backbone_reason = backbone_choice(backbone, in_channels, height, width, min_side)
        self.backbone = make_backbone(backbone, in_channels, height)
        self.map_shape = checked_map_shape(self.backbone, backbone, in_channels, height, width, min_side)
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
        # DrQ-v2's trunk (LayerNorm + tanh) keeps its large flattened map (20k features at 64 px) in scale.
        trunk: list[nn.Module] = [nn.LayerNorm(image_features), nn.Tanh()] if backbone == "drq" else [nn.ReLU()]
        self.image_fc = nn.Sequential(nn.Flatten(), nn.Linear(head_in, image_features), *trunk)
        self.state_fc = nn.Sequential(nn.Linear(state_dim, state_features), nn.ReLU()) if self.vector_keys else None
        # Further images: SB3's NatureCNN each, exactly as CombinedExtractor does.
        self.other_cnns = nn.ModuleDict({
            k: NatureCNN(others[k], features_dim=image_features, normalized_image=normalized_image) for k in other_images
        }) if other_images else None
        self._features_dim = image_features * (1 + len(other_images)) + (state_features if self.vector_keys else 0)

    @property
    def has_state(self) -> bool:
        """True when the observations have non-image inputs (they go through `state_fc`)."""
        return self.state_fc is not None

    def image(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The attended image out of a batch of observations (a Box batch is the image)."""
        return observations if self.image_key is None else observations[self.image_key]

    @property
    def has_gaze(self) -> bool:
        """True when the attention is the Gaussian gaze (methods foveal and gaze)."""
        return isinstance(self.attention, GaussianGaze)

    def feature_map(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone output F (B, C, h, w) for preprocessed observations (as SB3 preprocesses them)."""
        return self.backbone(self.image(observations))

    @property
    def residual(self) -> bool:
        """True when the map re-weights by 1 + A (emphasis) rather than A."""
        return bool(getattr(self.attention, "residual", False))

    def attend_map(self, fmap: torch.Tensor, observations: torch.Tensor | dict[str, torch.Tensor]) -> AttentionOutput:
        """The attention module on a feature map of these observations (the oracle reads their targets)."""
        if isinstance(self.attention, OracleGaze):
            return self.attention(fmap, observations[GAZE_TARGET_KEY])
        return self.attention(fmap)

    def attend(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> AttentionOutput:
        """Attention output (attended features, map A, gaze parameters) for observations."""
        return self.attend_map(self.feature_map(observations), observations)

    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        image = self.augment(self.image(observations))
        if self.multi_level or (self.prune_top_k is not None and self.prune_source == "shallow"):
            levels = layer_outputs(self.backbone, image)
        else:
            levels = [self.backbone(image)]
        fmap = levels[-1]
        if self.detach_attention:
            weights = self.attend_map(fmap.detach(), observations).weights.detach()
            attended = reweight(fmap, weights, self.residual)
        else:
            out = self.attend_map(fmap, observations)
            attended, weights = out.features, out.weights
        if self.multi_level:
            attended = fuse_levels(levels[:-1], attended, weights)
        if self.prune_top_k is not None:
            if self.prune_source == "attention":
                scores = weights
            else:
                scores = mean_pool_to_grid(energy(levels[0]), *self.map_shape[1:])
            attended = prune_cells(attended, scores, self.prune_top_k)
        parts = [self.image_fc(attended)]
        if self.other_cnns is not None:
            parts.extend(cnn(observations[k]) for k, cnn in self.other_cnns.items())
        if self.state_fc is not None:
            vector = torch.cat([observations[k].flatten(1) for k in self.vector_keys], dim=1)
            parts.append(self.state_fc(vector))
        return torch.cat(parts, dim=1)


def find_image_key(observation_space: spaces.Space, image_key: str | None, normalized_image: bool) -> str | None:
    """The key of the image the gaze looks at (None for a Box image); raises naming the fix."""
    float_hint = (" Float images need normalized_image=True (SB3: policy_kwargs normalize_images=False)"
                  if not normalized_image else "")
    if isinstance(observation_space, spaces.Box):
        if image_key is not None:
            raise ValueError(f"image_key={image_key!r} was given but the observation space is a Box, not a Dict")
        if not is_image_space(observation_space, normalized_image=normalized_image):
            shape = observation_space.shape
            if len(shape) != 3:
                raise ValueError(f"GazeExtractor needs image observations (C, H, W) (got {observation_space}); vectors "
                                 "need no gaze (SB3's MlpPolicy and its default extractor)")
            layout = channel_last_hint(*shape)
            raise ValueError(f"GazeExtractor needs image observations (C, H, W) uint8 in [0, 255] (got "
                             f"{observation_space}).{float_hint}{'; and ' + layout if layout else ''}")
        return None
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(f"GazeExtractor needs a Box image or a Dict observation space (got {observation_space})")
    images = [k for k, s in observation_space.spaces.items() if is_image_space(s, normalized_image=normalized_image)]
    if image_key is None:
        image_key = "rgb" if "rgb" in images else (images[0] if len(images) == 1 else None)
        if image_key is None:
            raise ValueError(
                f"GazeExtractor needs an image to look at; the Dict space has "
                f"{'several: ' + ', '.join(images) + '; pass image_key=...' if images else 'none'} "
                f"(keys: {', '.join(observation_space.spaces)}).{float_hint}")
    elif image_key not in images:
        raise ValueError(f"observation {image_key!r} is not an image (got {observation_space.spaces.get(image_key)}); "
                         f"GazeExtractor needs (C, H, W) uint8 images in [0, 255].{float_hint}")
    return image_key


def gaze_policy_kwargs(
    method: str = "foveal",
    backbone: str = "nature",
    attention_kwargs: dict[str, Any] | None = None,
    **extractor_kwargs: Any,
) -> dict[str, Any]:
    """`policy_kwargs` that put a GazeExtractor into any SB3 policy.

    `method` is a name of gaze_rl.configuration.methods.METHODS. "gaze" builds the same network as "foveal":
    its contrastive loss (and whether RL gradients reach the gaze head) belongs to GazePPO /
    GazeSAC. "gaze-frozen" stops RL gradients at the gaze map, so the gaze keeps its initial vignette.
    """
    spec = method_spec(method)
    kwargs: dict[str, Any] = dict(backbone=backbone, attention=spec.attention, attention_kwargs=attention_kwargs or {})
    if spec.gaze_trained_by == "nothing":
        kwargs["detach_attention"] = True
    kwargs.update(extractor_kwargs)
    return dict(features_extractor_class=GazeExtractor, features_extractor_kwargs=kwargs)
