"""Layer-wise access to a conv backbone, and multi-level feature fusion (DeepVision-VLA for CNNs).

DeepVision-VLA finds that a policy's sensitivity to task-relevant visual tokens
fades with depth and injects a vision expert's multi-level features into the deep layers. A
CNN policy's counterpart: pool the earlier conv layers' maps to the last map's grid, weight
them with the same attention map, and give them to the policy head next to the last map.

A "conv layer" here is a conv and the activation after it; its output is that activation's
output (before any pooling). Both gaze_rl backbones (NatureCNN, PlainConv) end with an
activation, so the last layer's output is exactly the backbone's output.

Running the backbone module by module (`layer_outputs`) computes the same numbers as calling
it, and keeps its parameter names (and therefore checkpoints) as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaze_rl.nets.encoders import ChannelsLastConv

# Modules whose output counts as a conv layer's output.
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh)


def layer_indices(backbone: nn.Sequential) -> list[int]:
    """Indices, in the Sequential, of the activations that end each conv layer."""
    indices = [i for i, module in enumerate(backbone) if isinstance(module, ACTIVATIONS)]
    if not indices or indices[-1] != len(backbone) - 1:
        raise ValueError(
            f"{type(backbone).__name__} must be an nn.Sequential of conv layers that ends with an activation "
            "(as NatureCNN and PlainConv do) for layer-wise features"
        )
    return indices


def layer_outputs(backbone: nn.Sequential, images: Tensor) -> list[Tensor]:
    """Outputs of every conv layer, shallow to deep (contiguous); the last one equals
    `backbone(images)`, in the memory layout the backbone runs in (ChannelsLastConv.layout)."""
    wanted = set(layer_indices(backbone))
    outputs = []
    x = ChannelsLastConv.layout(images) if isinstance(backbone, ChannelsLastConv) else images
    for i, module in enumerate(backbone):
        x = module(x)  # calling the module keeps forward hooks working (gaze_rl.analysis uses them)
        if i in wanted:
            outputs.append(x.contiguous())
    return outputs


def layer_shapes(backbone: nn.Sequential, in_channels: int, height: int, width: int) -> list[tuple[int, int, int]]:
    """(C, h, w) of every conv layer's output for one image of the given size."""
    with torch.no_grad():
        outs = layer_outputs(backbone, torch.zeros(1, in_channels, height, width))
    return [tuple(o.shape[1:]) for o in outs]


def energy(activations: Tensor) -> Tensor:
    """Activation energy `sum_c |a_c|`: (B, C, h, w) -> (B, h, w)."""
    return activations.abs().sum(dim=1)


def mean_pool_to_grid(maps: Tensor, height: int, width: int) -> Tensor:
    """Adaptive average pooling of (B, C, H, W) or (B, H, W) maps to (.., height, width) (its twin for
    pixel masks, an exact area sum: gaze_rl.segmentation.targets.sum_pool_to_grid)."""
    if maps.dim() == 3:
        return F.adaptive_avg_pool2d(maps[:, None], (height, width))[:, 0]
    return F.adaptive_avg_pool2d(maps, (height, width))


def fuse_levels(shallow: list[Tensor], attended: Tensor, weights: Tensor) -> Tensor:
    """Multi-level features: each shallow map pooled to the attended map's grid and weighted by
    the same attention map, concatenated along channels before the attended last map.

    :param shallow: earlier conv layers' outputs, (B, C_l, H_l, W_l) each.
    :param attended: the attended last map F * A, (B, C, h, w).
    :param weights: the attention map A, (B, h, w).
    :return: (B, sum_l C_l + C, h, w).
    """
    h, w = attended.shape[-2:]
    pooled = [mean_pool_to_grid(level, h, w) * weights[:, None] for level in shallow]
    return torch.cat([*pooled, attended], dim=1)
