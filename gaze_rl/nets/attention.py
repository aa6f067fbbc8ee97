"""Spatial attention over CNN feature maps ("Gaze on the Prize", arXiv 2510.08442).

An attention module takes a feature map ``F`` of shape ``(B, C, h, w)`` and
re-weights it element-wise with a spatial map ``A`` of shape ``(B, h, w)``:
``features = F * A[:, None]``. Three kinds are provided:

* ``"none"``: ``A = 1`` everywhere (the plain-CNN baseline).
* ``"patch"``: one free logit per cell, softmax over cells (the paper's
  unconstrained ablation).
* ``"gaussian"``: a foveal gaze, i.e. a mixture of ``K`` anisotropic 2-D
  Gaussians whose means, scales and correlations are predicted from ``F``.
* ``"oracle"``: the same map with one Gaussian per task object, placed by the simulator
  (an upper bound: what a perfectly placed fovea gives; it reads the observation's targets).

Every map-making kind takes ``residual``: ``features = F * (1 + A)`` instead of ``F * A``, so
the fovea adds emphasis without deleting the periphery (``A = 0`` leaves ``F`` unchanged).

Coordinates live in ``[-1, 1]``: ``x`` runs along columns (left to right) and
``y`` along rows (top to bottom, row 0 is ``y = -1``). Every kind uses the same
scale convention by default ("peak": the map's maximum is exactly 1), so
features keep their magnitude at the attended location.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaze_rl.nets.gaze_shape import check_gaze_shape, check_normalize_mode

ATTENTION_KINDS = ("none", "patch", "gaussian", "oracle")

# Number of raw head outputs per Gaussian: (mu_x, mu_y, sigma_x, sigma_y, rho, mix).
_RAW_PER_GAUSSIAN = 6
# Radius of the circle on which the initial means of a K > 1 mixture are spread.
_INIT_SPREAD = 0.3
_EPS = 1e-12


@dataclass
class GazeParams:
    """Parameters of a mixture of ``K`` 2-D Gaussians, one row per batch element.

    :param mu: ``(B, K, 2)`` means ``(mu_x, mu_y)`` in ``[-1, 1]``.
    :param sigma: ``(B, K, 2)`` standard deviations ``(sigma_x, sigma_y)``,
        each ``>= sigma_floor``.
    :param rho: ``(B, K)`` correlation coefficients in ``[-rho_max, rho_max]``.
    :param mix: ``(B, K)`` mixture weights (softmax over ``K``, sum to 1).
    """

    mu: Tensor
    sigma: Tensor
    rho: Tensor
    mix: Tensor

    @property
    def sigma_xy(self) -> Tensor:
        """Off-diagonal covariance ``rho * sigma_x * sigma_y``, shape ``(B, K)``."""
        return self.rho * self.sigma[..., 0] * self.sigma[..., 1]


@dataclass
class AttentionOutput:
    """Result of an attention module.

    :param features: re-weighted feature map ``F * A[:, None]``, ``(B, C, h, w)``.
    :param weights: attention map ``A``, ``(B, h, w)``.
    :param params: Gaussian parameters for the ``"gaussian"`` kind, else ``None``.
    """

    features: Tensor
    weights: Tensor
    params: GazeParams | None


def feature_grid(
    height: int,
    width: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Cell-centre coordinates of an ``height x width`` feature map in ``[-1, 1]``.

    ``[-1, 1]`` spans the whole image (edge to edge), so cell ``i`` of ``n`` sits at
    ``-1 + (2i + 1) / n`` (e.g. -0.75, -0.25, 0.25, 0.75 for n = 4), the centre of the image
    region it covers; a gaze at ``mu`` therefore points at image pixel ``(mu + 1) / 2 * size``.
    Rows run top to bottom (row 0 has the smallest ``y``).

    :return: ``(x, y)``, each of shape ``(height, width)``.
    """

    def axis(n: int) -> Tensor:
        return -1.0 + (2.0 * torch.arange(n, device=device, dtype=dtype or torch.float32) + 1.0) / n

    y, x = torch.meshgrid(axis(height), axis(width), indexing="ij")
    return x, y


def _gaussian_log_maps(mu: Tensor, sigma: Tensor, rho: Tensor, height: int, width: int) -> Tensor:
    """Log of :func:`gaussian_maps`, shape ``(B, K, h, w)``."""
    x, y = feature_grid(height, width, device=mu.device, dtype=mu.dtype)
    # Broadcast (B, K, 1, 1) parameters against the (h, w) grid.
    dx = (x - mu[..., 0, None, None]) / sigma[..., 0, None, None]
    dy = (y - mu[..., 1, None, None]) / sigma[..., 1, None, None]
    r = rho[..., None, None]
    m = dx.square() + dy.square() - 2.0 * r * dx * dy
    # (1 - r)(1 + r) is more accurate than 1 - r^2 when |rho| is close to 1.
    return -m / (2.0 * (1.0 - r) * (1.0 + r))


def gaussian_maps(mu: Tensor, sigma: Tensor, rho: Tensor, height: int, width: int) -> Tensor:
    """Un-normalised anisotropic Gaussians evaluated on the feature grid.

    With ``dx = x - mu_x`` and ``dy = y - mu_y``::

        m = (dx / sx)^2 + (dy / sy)^2 - 2 * rho * dx * dy / (sx * sy)
        g = exp(-m / (2 * (1 - rho^2)))

    so ``g = 1`` at the mean.

    :param mu: ``(B, K, 2)`` means ``(mu_x, mu_y)``.
    :param sigma: ``(B, K, 2)`` standard deviations ``(sigma_x, sigma_y)``, > 0.
    :param rho: ``(B, K)`` correlations, ``|rho| < 1``.
    :return: ``(B, K, height, width)`` maps with values in ``[0, 1]``.
    """
    return _gaussian_log_maps(mu, sigma, rho, height, width).exp()


def normalize_map(a: Tensor, mode: str) -> Tensor:
    """Normalise a non-negative attention map per sample.

    :param a: ``(B, h, w)`` map with ``a >= 0``.
    :param mode: ``"peak"`` divides by the per-sample maximum (peak exactly 1);
        ``"sum"`` divides by the per-sample sum (sums to 1).
    :return: normalised map of the same shape.
    """
    check_normalize_mode(mode)
    flat = a.flatten(1)
    scale = flat.amax(dim=1) if mode == "peak" else flat.sum(dim=1)
    return a / scale.clamp_min(_EPS)[:, None, None]


def params_from_raw(raw: Tensor, sigma_floor: float, rho_max: float) -> GazeParams:
    """Map unconstrained head outputs to valid Gaussian parameters.

    The transform gives a positive definite covariance for *every* finite input:
    ``mu = tanh(r_mu)``, ``sigma = softplus(r_sigma) + sigma_floor``,
    ``rho = rho_max * tanh(r_rho)`` (so ``|rho| <= rho_max < 1``) and
    ``mix = softmax_K(r_mix)``.

    :param raw: ``(B, K, 6)`` raw values ``(r_mux, r_muy, r_sx, r_sy, r_rho, r_mix)``.
    :param sigma_floor: minimum standard deviation, > 0.
    :param rho_max: maximum absolute correlation, in ``(0, 1)``.
    """
    return GazeParams(
        mu=torch.tanh(raw[..., 0:2]),
        sigma=F.softplus(raw[..., 2:4]) + sigma_floor,
        rho=rho_max * torch.tanh(raw[..., 4]),
        mix=torch.softmax(raw[..., 5], dim=-1),
    )


def gaze_map(params: GazeParams, height: int, width: int, normalize: str = "peak") -> Tensor:
    """Normalised mixture map ``normalize_map(sum_k mix_k * g_k, normalize)``.

    Evaluated in log space: with a narrow Gaussian centred between far-apart
    cells every ``g_k`` can underflow to 0 in float32, which would leave an
    all-zero map; log-sum-exp followed by the normalisation avoids that.

    :return: ``(B, height, width)`` map (peak 1 for ``"peak"``, sum 1 for ``"sum"``).
    """
    check_normalize_mode(normalize)
    log_g = _gaussian_log_maps(params.mu, params.sigma, params.rho, height, width)
    # Clamping keeps log finite (and its gradient free of 0 * inf) when a weight underflows.
    log_mix = params.mix.clamp_min(torch.finfo(params.mix.dtype).tiny).log()
    log_a = torch.logsumexp(log_g + log_mix[..., None, None], dim=1).flatten(1)
    if normalize == "peak":
        a = (log_a - log_a.amax(dim=1, keepdim=True)).exp()
    else:
        a = torch.softmax(log_a, dim=1)
    return a.view(-1, height, width)


def _check_spatial_size(height: int, width: int) -> None:
    if height < 2 or width < 2:
        raise ValueError(
            f"feature map too small for spatial attention (got {height}x{width}, need at least 2x2): "
            "use larger images or an encoder with less downsampling"
        )


def _check_input(feature_map: Tensor, shape: tuple[int, int, int]) -> None:
    if feature_map.dim() != 4:
        raise ValueError(
            f"expected a 4-D feature map (B, C, h, w), got shape {tuple(feature_map.shape)}; "
            "add a batch dimension with unsqueeze(0)"
        )
    if tuple(feature_map.shape[1:]) != shape:
        raise ValueError(
            f"feature map has (C, h, w) = {tuple(feature_map.shape[1:])} but the attention module "
            f"was built for {shape}; construct it with the encoder's output shape"
        )


def reweight(feature_map: Tensor, weights: Tensor, residual: bool) -> Tensor:
    """``F * A`` (the paper's gaze), or ``F * (1 + A)`` with ``residual`` (emphasis, no deletion)."""
    return feature_map * (1.0 + weights[:, None] if residual else weights[:, None])


class NoAttention(nn.Module):
    """Baseline without attention: ``A = 1`` and the features pass through unchanged."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.shape = (channels, height, width)

    def forward(self, feature_map: Tensor) -> AttentionOutput:
        """Return the input features with an all-ones attention map."""
        _check_input(feature_map, self.shape)
        weights = feature_map.new_ones(feature_map.shape[0], *self.shape[1:])
        return AttentionOutput(features=feature_map, weights=weights, params=None)


class PatchAttention(nn.Module):
    """Unconstrained per-cell attention (the paper's ablation).

    A 1x1 convolution gives one logit per cell, ``A`` is the softmax over the
    ``h * w`` cells, then rescaled with :func:`normalize_map` (default
    ``"peak"``, i.e. ``exp(l - max l)``) so all kinds share one scale convention.
    """

    def __init__(self, channels: int, height: int, width: int, normalize: str = "peak", residual: bool = False) -> None:
        super().__init__()
        _check_spatial_size(height, width)
        check_normalize_mode(normalize)
        self.shape = (channels, height, width)
        self.normalize = normalize
        self.residual = residual
        self.logits = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, feature_map: Tensor) -> AttentionOutput:
        """Compute per-cell attention and re-weight the features."""
        _check_input(feature_map, self.shape)
        logits = self.logits(feature_map).flatten(1)
        weights = normalize_map(torch.softmax(logits, dim=1).view(-1, *self.shape[1:]), self.normalize)
        return AttentionOutput(features=reweight(feature_map, weights, self.residual), weights=weights, params=None)


class _GazeOutput(nn.Module):
    """Linear output layer of the gaze head. Deliberately not an ``nn.Linear``: SB3 policies
    re-initialise every Linear/Conv2d of the features extractor (``ortho_init``), which would
    replace the centred starting gaze with a random one."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class GaussianGaze(nn.Module):
    """Foveal gaze: a mixture of ``K`` anisotropic Gaussians predicted from the features.

    Head: ``Conv2d(C, 16, 1) -> ReLU -> Flatten -> Linear(16*h*w, hidden) -> ReLU
    -> Linear(hidden, 6*K)``; the raw outputs go through :func:`params_from_raw`
    and the map is :func:`gaze_map`.

    At initialisation the gaze looks at the centre (``mu = 0``; for ``K > 1``
    the means are spread on a small circle so the components can separate)
    with ``rho = 0`` and ``sigma = sigma_init`` in both axes.

    :param channels: number of feature channels ``C``.
    :param height: feature map height ``h`` (>= 2).
    :param width: feature map width ``w`` (>= 2).
    :param num_gaussians: number of mixture components ``K`` (paper: 1).
    :param sigma_floor: minimum standard deviation in grid units (the grid spans 2).
    :param sigma_init: initial standard deviation, > ``sigma_floor``.
    :param rho_max: bound on the absolute correlation, in ``(0, 1)``.
    :param normalize: ``"peak"`` (max 1) or ``"sum"`` (sum 1).
    :param hidden: hidden width of the head's MLP.
    :param residual: re-weight by ``1 + A`` instead of ``A`` (:func:`reweight`).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        num_gaussians: int = 1,
        sigma_floor: float = 0.15,
        sigma_init: float = 0.8,
        rho_max: float = 0.95,
        normalize: str = "peak",
        hidden: int = 64,
        residual: bool = False,
    ) -> None:
        super().__init__()
        _check_spatial_size(height, width)
        check_gaze_shape(num_gaussians, sigma_floor, sigma_init, rho_max, normalize)
        self.shape = (channels, height, width)
        self.residual = residual
        self.num_gaussians = num_gaussians
        self.sigma_floor = sigma_floor
        self.sigma_init = sigma_init
        self.rho_max = rho_max
        self.normalize = normalize

        last = _GazeOutput(hidden, _RAW_PER_GAUSSIAN * num_gaussians)
        self.head = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * height * width, hidden),
            nn.ReLU(),
            last,
        )
        self._init_last_layer(last)

    def _init_last_layer(self, last: _GazeOutput) -> None:
        """Start from a fixed, input-independent gaze; tiny weights keep gradients flowing."""
        nn.init.normal_(last.weight, std=1e-3)
        k = self.num_gaussians
        if k == 1:
            mu0 = torch.zeros(1, 2)
        else:
            angle = 2.0 * math.pi * torch.arange(k, dtype=torch.float32) / k
            mu0 = _INIT_SPREAD * torch.stack([angle.cos(), angle.sin()], dim=1)
        # Inverse softplus, written stably: softplus^-1(s) = s + log(-expm1(-s)).
        s = torch.tensor(self.sigma_init - self.sigma_floor, dtype=torch.float32)
        r_sigma = s + torch.log(-torch.expm1(-s))
        bias = torch.zeros(k, _RAW_PER_GAUSSIAN)
        bias[:, 0:2] = torch.atanh(mu0)
        bias[:, 2:4] = r_sigma
        # r_rho = 0 gives rho = 0; equal r_mix gives uniform mixture weights.
        with torch.no_grad():
            last.bias.copy_(bias.flatten())

    def params_from_raw(self, raw: Tensor) -> GazeParams:
        """Apply this module's parameterisation to raw head outputs ``(B, K, 6)``."""
        return params_from_raw(raw, self.sigma_floor, self.rho_max)

    def gaze_params(self, feature_map: Tensor) -> GazeParams:
        """Predict the Gaussian parameters for a ``(B, C, h, w)`` feature map."""
        _check_input(feature_map, self.shape)
        raw = self.head(feature_map).view(-1, self.num_gaussians, _RAW_PER_GAUSSIAN)
        return self.params_from_raw(raw)

    def forward(self, feature_map: Tensor) -> AttentionOutput:
        """Predict the gaze and re-weight the features with its map."""
        params = self.gaze_params(feature_map)
        weights = gaze_map(params, self.shape[1], self.shape[2], self.normalize)
        return AttentionOutput(features=reweight(feature_map, weights, self.residual), weights=weights, params=params)


class OracleGaze(nn.Module):
    """A gaze placed by the simulator: one Gaussian per task object, no parameters, no learning.

    The observation carries the targets (gaze_rl.envs.task_objects.GazeTargetObservation:
    ``(B, K, 4)`` = mu_x, mu_y, sigma_x, sigma_y in grid units); the map is the same
    equal-weight, uncorrelated mixture :func:`gaze_map` draws for the learned gaze, so a learned
    gaze that found the objects would give exactly this map. Sigmas below ``sigma_floor`` are
    raised to it (a map narrower than a cell would sample a single cell centre or none).

    :param sigma_floor: smallest sigma in grid units; default half a cell of the coarser axis.
    :param normalize: ``"peak"`` or ``"sum"``; :param residual: as for the learned gaze.
    """

    def __init__(self, channels: int, height: int, width: int, sigma_floor: float | None = None,
                 normalize: str = "peak", residual: bool = False) -> None:
        super().__init__()
        _check_spatial_size(height, width)
        check_normalize_mode(normalize)
        self.shape = (channels, height, width)
        self.sigma_floor = sigma_floor if sigma_floor is not None else 1.0 / min(height, width)
        self.normalize = normalize
        self.residual = residual

    def gaze_params(self, targets: Tensor) -> GazeParams:
        """Mixture parameters for ``(B, K, 4)`` targets."""
        if targets.dim() != 3 or targets.shape[-1] != 4:
            raise ValueError(f"oracle gaze targets must be (B, K, 4) = mu_x, mu_y, sigma_x, sigma_y (got "
                             f"{tuple(targets.shape)}); build the env with gaze_targets=True")
        targets = targets.float()
        batch, k = targets.shape[:2]
        return GazeParams(mu=targets[..., :2].clamp(-1.0, 1.0), sigma=targets[..., 2:].clamp_min(self.sigma_floor),
                          rho=targets.new_zeros(batch, k), mix=targets.new_full((batch, k), 1.0 / k))

    def forward(self, feature_map: Tensor, targets: Tensor) -> AttentionOutput:
        """Re-weight the features with the map of the given targets."""
        _check_input(feature_map, self.shape)
        params = self.gaze_params(targets.to(feature_map.device))
        weights = gaze_map(params, self.shape[1], self.shape[2], self.normalize).to(feature_map.dtype)
        return AttentionOutput(features=reweight(feature_map, weights, self.residual), weights=weights, params=params)


def make_attention(kind: str, channels: int, height: int, width: int, **kwargs) -> nn.Module:
    """Build an attention module by name.

    :param kind: one of :data:`ATTENTION_KINDS`.
    :param kwargs: forwarded to the constructor (``"gaussian"``: ``num_gaussians``,
        ``sigma_floor``, ``sigma_init``, ``rho_max``, ``normalize``, ``hidden``, ``residual``;
        ``"patch"``: ``normalize``, ``residual``; ``"oracle"``: ``sigma_floor``, ``normalize``,
        ``residual``; ``"none"``: nothing).
    """
    classes: dict[str, type[nn.Module]] = {
        "none": NoAttention,
        "patch": PatchAttention,
        "gaussian": GaussianGaze,
        "oracle": OracleGaze,
    }
    if kind not in classes:
        raise ValueError(f"unknown attention kind {kind!r}; valid kinds are {ATTENTION_KINDS}")
    return classes[kind](channels, height, width, **kwargs)
