"""Attention objectives added to behaviour cloning (../shared/method.md sections 2 and 3).

- `gaze-kl` (gaze-regularised VLA training, Gaze-VLM's code; coverage-based gaze loss):
  `lambda * KL(g || a)` with g the saliency distribution over feature-grid cells and a the
  policy's spatial attention, `F.kl_div(a.log(), g, reduction="batchmean")` (gaze is the target).
  Default lambda = 0.01 (the coverage-based gaze loss's alpha; "low" regularisation works best).
- `saliency-mse` (AutoFocus-IL / GABRIL): `lambda * MSE(g_hat(z), S)` with
  `g_hat(z) = minmax(upsample_bicubic(softmax_hw(sum_c |z_c| / beta)))` at the image's
  resolution and S the (temporally aggregated, min-max normalised) saliency map. Defaults
  lambda = 10, beta = 50 (AutoFocus-IL's CARLA settings).
- `none`: plain behaviour cloning.

The policy's attention (`PolicyAttention`), our choice where the papers have no gaze head:
- "map": the attention module's own map (the Gaussian gaze of methods foveal / gaze, the
  per-cell softmax of method patch), normalised to sum 1;
- "features": `softmax_hw(sum_c |z_c| / beta)` over the *attended* last feature map z
  (= F * A, so for a gaze policy it reflects the gaze as well; = F for the baseline);
- "auto": gaze-kl uses "map" when the policy has one, else "features"; saliency-mse uses
  "features" (AutoFocus-IL's parameter-free map).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gaze_rl.errors import ConfigError
from gaze_rl.nets.extractor import GazeExtractor
from gaze_rl.segmentation.on_target import ATTENTION_MODES, PolicyAttention, has_attention_map, policy_attention

OBJECTIVES = ("none", "gaze-kl", "saliency-mse")
DEFAULT_WEIGHTS = {"none": 0.0, "gaze-kl": 0.01, "saliency-mse": 10.0}
_TINY = 1e-12


def batch_minmax(maps: Tensor) -> Tensor:
    """Per-sample min-max normalisation of (B, H, W) maps (flat maps become 0)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(_TINY)).view_as(maps)


def saliency_map(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """`minmax(upsample_bicubic(grid))` at `size` (H, W): the policy's map at image resolution."""
    up = F.interpolate(grid[:, None], size=size, mode="bicubic", align_corners=False)[:, 0]
    return batch_minmax(up)


def gaze_kl(attention: Tensor, target: Tensor) -> Tensor:
    """KL(target || attention) averaged over the batch; both (B, h, w) distributions (sum 1).

    Same as Gaze-VLM's `F.kl_div(a.log(), g, reduction="batchmean")`: sum g (log g - log a) / B.
    """
    return F.kl_div(attention.clamp_min(_TINY).log().flatten(1), target.flatten(1), reduction="batchmean")


def saliency_mse(grid: Tensor, target: Tensor) -> Tensor:
    """MSE between `minmax(upsample_bicubic(grid))` and the (B, H, W) target saliency maps."""
    return F.mse_loss(saliency_map(grid, tuple(target.shape[-2:])), target)


def resolve_attention_mode(extractor: object, objective: str, mode: str) -> str:
    """"map" or "features" for an objective and a policy; raises when the policy lacks it."""
    if mode not in ATTENTION_MODES:
        raise ConfigError(f"unknown attention mode {mode!r}; valid choices: {', '.join(ATTENTION_MODES)}")
    if not isinstance(extractor, GazeExtractor):
        raise ConfigError(
            f"attention objectives need gaze_rl's GazeExtractor (got {type(extractor).__name__}); build the policy "
            "with gaze_policy_kwargs(...) or use --objective none"
        )
    if mode == "auto":
        return "map" if objective == "gaze-kl" and has_attention_map(extractor) else "features"
    if mode == "map" and not has_attention_map(extractor):
        raise ConfigError(
            "--attention map needs a policy with an attention map (--method patch, foveal or gaze); the baseline "
            "CNN has none: use --attention features (softmax over its feature map) or --attention auto"
        )
    return mode


class AttentionObjective:
    """One of OBJECTIVES, bound to a policy's extractor; checks at construction that the policy
    has the attention it needs.

    :param name: "none", "gaze-kl" or "saliency-mse".
    :param extractor: the policy's GazeExtractor.
    :param weight: lambda; None = DEFAULT_WEIGHTS[name].
    :param mode: "auto", "map" or "features" (see the module docstring).
    :param beta: temperature of the feature softmax (AutoFocus-IL: 50).
    """

    def __init__(self, name: str, extractor: GazeExtractor, weight: float | None = None, mode: str = "auto",
                 beta: float = 50.0):
        if name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {name!r}; valid choices: {', '.join(OBJECTIVES)}")
        if beta <= 0:
            raise ConfigError(f"beta must be > 0 (got {beta}); AutoFocus-IL uses 50")
        self.name = name
        self.weight = DEFAULT_WEIGHTS[name] if weight is None else float(weight)
        if self.weight < 0:
            raise ConfigError(f"objective weight must be >= 0 (got {self.weight})")
        self.beta = beta
        self.mode = resolve_attention_mode(extractor, name, mode) if name != "none" else "none"
        self.extractor = extractor

    @property
    def target(self) -> str | None:
        """Which saliency target the loss needs: "grid" (g), "image" (S) or None."""
        return {"none": None, "gaze-kl": "grid", "saliency-mse": "image"}[self.name]

    def attention(self, observations: dict[str, Tensor]) -> PolicyAttention:
        mode = self.mode if self.mode != "none" else ("map" if has_attention_map(self.extractor) else "features")
        return policy_attention(self.extractor, observations, mode, self.beta)

    def loss(self, attention: PolicyAttention, target: Tensor) -> Tensor:
        """The unweighted objective value for the policy's attention and the batch's target."""
        if self.name == "gaze-kl":
            return gaze_kl(attention.grid, target)
        if self.name == "saliency-mse":
            return saliency_mse(attention.grid, target)
        return attention.grid.new_zeros(())
