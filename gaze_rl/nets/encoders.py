"""ManiSkill3's reference image backbones, cut before their flatten so the last feature map
(C x h x w) is exposed and attention can re-weight it.

- `NatureCNN`: the encoder of ManiSkill's `ppo_rgb.py` (Mnih et al. 2015 layout):
  8x8/4 (32) -> 4x4/2 (64) -> 3x3/1 (64); 64x4x4 for 64x64 input, 64x12x12 for 128x128.
- `PlainConv`: the encoder of ManiSkill's `sac_rgbd.py`: four 3x3 conv + max-pool stages
  (16, 32, 64, 64) and a 1x1 conv; 64x4x4 for 64x64 and 128x128 input.
- `DrQEncoder`: DrQ-v2's encoder (Yarats et al. 2021): 3x3/2 then three 3x3/1, 32 channels;
  32x25x25 for 64x64 input. A map fine enough for a fovea to select one object (a cell sees
  ~9 px of 64, against NatureCNN's 36 px at 64 px).
"""

from __future__ import annotations

import torch
from torch import nn

BACKBONES = ("nature", "plain", "drq")  # and "auto" where an image space is known (fitting_backbone)


class ChannelsLastConv(nn.Sequential):
    """A conv stack that, on a CPU, runs its input in channels-last memory layout and hands back
    a contiguous (B, C, h, w) map: the CPU conv kernels are faster that way (a GazeSAC gradient
    step with PlainConv 1.7-1.85x, NatureCNN 1.0-1.1x; batch-2 inference 1.5-2x;
    results/speed/sac-dropin-cpu2.md). The values agree with the contiguous layout's to float
    rounding (allclose, not bitwise). The weights keep their layout, so state dicts and
    optimizers are as before; layer-by-layer use (gaze_rl.nets.levels) runs `layout(x)` too, so
    its last output equals the module's. Other devices (not measured) run the layout they are
    given."""

    @staticmethod
    def layout(x: torch.Tensor) -> torch.Tensor:
        """The input in the layout the stack runs it in: channels-last on a CPU, else as given."""
        return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.layout(x)).contiguous()


class NatureCNN(ChannelsLastConv):
    """NatureCNN conv stack; output is the last ReLU'd feature map (B, 64, h, w)."""

    def __init__(self, in_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
        )


class PlainConv(ChannelsLastConv):
    """ManiSkill's sac_rgbd PlainConv stack; output (B, 64, 4, 4) for 64 or 128 px images.

    The first max-pool shrinks the image to 32 px (4x4 pooling at 128 px, as in ManiSkill;
    2x2 at 64 px), then three conv + 2x2 pool stages and a 1x1 conv.
    """

    def __init__(self, in_channels: int, image_size: int):
        first_pool = max(1, image_size // 32)
        super().__init__(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(first_pool, first_pool),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 64, 1), nn.ReLU(),
        )


class DrQEncoder(ChannelsLastConv):
    """DrQ-v2's conv stack; output (B, 32, 25, 25) for 64 px images ((size - 3) // 2 - 5 a side)."""

    def __init__(self, in_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )


def make_backbone(name: str, in_channels: int, image_size: int) -> nn.Sequential:
    """Builds a backbone by name (one of BACKBONES)."""
    if name == "nature":
        return NatureCNN(in_channels)
    if name == "plain":
        return PlainConv(in_channels, image_size)
    if name == "drq":
        return DrQEncoder(in_channels)
    raise ValueError(f"unknown backbone {name!r}; valid choices: {', '.join(BACKBONES)}")


def feature_map_shape(backbone: nn.Module, in_channels: int, height: int, width: int) -> tuple[int, int, int]:
    """(C, h, w) of the backbone's output for one image of the given size."""
    with torch.no_grad():
        out = backbone(torch.zeros(1, in_channels, height, width))
    return tuple(out.shape[1:])



def min_image_size(name: str, in_channels: int = 3, min_side: int = 1) -> int:
    """Smallest square image (px) the backbone turns into a feature map of at least
    min_side x min_side cells."""
    for size in range(2, 513):
        try:
            _, h, w = feature_map_shape(make_backbone(name, in_channels, size), in_channels, size, size)
        except RuntimeError:
            continue
        if min(h, w) >= min_side:
            return size
    raise ValueError(f"backbone {name!r} needs images larger than 512 px")


def checked_map_shape(backbone: nn.Module, name: str, in_channels: int, height: int, width: int,
                      min_side: int = 1) -> tuple[int, int, int]:
    """(C, h, w) of the backbone's output, at least min_side cells a side (attention needs 2: one
    cell leaves it nothing to choose). Too small images are a clear error naming the sizes that
    work, instead of a kernel-size error inside the first forward pass."""
    try:
        shape = feature_map_shape(backbone, in_channels, height, width)
    except RuntimeError:
        shape = None
    if shape is None or min(shape[1:]) < min_side:
        layout = channel_last_hint(in_channels, height, width)
        if layout:
            raise ValueError(f"images of {height}x{width} with {in_channels} channels are too small for the {name!r} "
                             f"backbone, and {layout}")
        other = [f"backbone {b!r} (>= {min_image_size(b, in_channels, min_side)} px)"
                 for b in BACKBONES if b != name]
        raise ValueError(
            f"images of {height}x{width} are too small for the {name!r} backbone"
            f"{' with attention' if min_side > 1 else ''}: it needs at least "
            f"{min_image_size(name, in_channels, min_side)} px a side; use larger images or "
            f"{', '.join(other)}"
        )
    return shape


def channel_last_hint(in_channels: int, height: int, width: int) -> str:
    """What to do when an image read as channel-first (C, H, W) looks channel-last (its last axis
    the smallest: (H, W, C) read as C=H channels of H x W=C pixels); "" when it does not."""
    if not width < min(in_channels, height):
        return ""
    h, w, c = in_channels, height, width
    return (f"its shape ({h}, {w}, {c}) looks channel-last (H, W, C): the gaze takes channel-first (C, H, W) images. "
            "SB3 transposes uint8 images itself (VecTransposeImage) but not float ones: make float images "
            "channel-first in the env, e.g. gymnasium.wrappers.TransformObservation(env, lambda o: o.transpose(2, 0, 1), "
            f"gymnasium.spaces.Box(low, high, ({c}, {h}, {w}), dtype))")


def fitting_backbone(in_channels: int, height: int, width: int, min_side: int = 1) -> str:
    """'auto': NatureCNN (SB3's CnnPolicy encoder, ManiSkill's ppo_rgb) where the image leaves it
    min_side cells a side, else PlainConv (which fits down to 16 px)."""
    try:
        _, h, w = feature_map_shape(make_backbone("nature", in_channels, height), in_channels, height, width)
    except RuntimeError:
        return "plain"
    return "nature" if min(h, w) >= min_side else "plain"


def backbone_choice(asked: str, in_channels: int, height: int, width: int, min_side: int = 1) -> tuple[str, str]:
    """The backbone `asked` ("auto" or a name of BACKBONES) builds for these images, and why, in
    words (what GazePPO / GazeSAC print at verbose >= 1)."""
    if asked != "auto":
        return asked, f"backbone {asked!r} as asked"
    picked = fitting_backbone(in_channels, height, width, min_side)
    if picked == "nature":
        return picked, f"backbone 'auto': the {height}x{width} image fits NatureCNN, SB3's CnnPolicy encoder"
    need = min_image_size("nature", in_channels, min_side)
    return picked, (f"backbone 'auto': the {height}x{width} image is too small for NatureCNN, SB3's CnnPolicy encoder "
                    f"(>= {need} px{' with attention' if min_side > 1 else ''}), so ManiSkill's PlainConv")
