"""Tests for gaze_rl.nets.attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gaze_rl.nets.attention import (
    ATTENTION_KINDS,
    GaussianGaze,
    GazeParams,
    NoAttention,
    OracleGaze,
    PatchAttention,
    feature_grid,
    gaussian_maps,
    gaze_map,
    make_attention,
    normalize_map,
    params_from_raw,
)

C, H, W = 8, 7, 9


def _params(mu, sigma, rho, mix=None) -> GazeParams:
    """GazeParams for a single batch element from plain lists."""
    mu = torch.tensor([mu], dtype=torch.float32)
    k = mu.shape[1]
    mix = torch.full((1, k), 1.0 / k) if mix is None else torch.tensor([mix], dtype=torch.float32)
    return GazeParams(
        mu=mu,
        sigma=torch.tensor([sigma], dtype=torch.float32),
        rho=torch.tensor([rho], dtype=torch.float32),
        mix=mix,
    )


def test_feature_grid_layout():
    x, y = feature_grid(3, 5)
    assert x.shape == y.shape == (3, 5)
    np.testing.assert_allclose(x[0].numpy(), -1 + (2 * np.arange(5) + 1) / 5)
    np.testing.assert_allclose(y[:, 0].numpy(), [-2 / 3, 0.0, 2 / 3], rtol=1e-6)  # row 0 is the top
    x1, y1 = feature_grid(1, 1)
    assert x1.item() == 0.0 and y1.item() == 0.0


def test_gaussian_maps_matches_numpy_reference():
    rng = np.random.default_rng(0)
    b, k, h, w = 3, 2, 6, 5
    mu = rng.uniform(-1, 1, (b, k, 2))
    sigma = rng.uniform(0.15, 1.5, (b, k, 2))
    rho = rng.uniform(-0.95, 0.95, (b, k))

    out = gaussian_maps(
        torch.tensor(mu, dtype=torch.float32),
        torch.tensor(sigma, dtype=torch.float32),
        torch.tensor(rho, dtype=torch.float32),
        h,
        w,
    ).numpy()

    xs, ys = np.meshgrid(-1 + (2 * np.arange(w) + 1) / w, -1 + (2 * np.arange(h) + 1) / h)
    d_grid = np.stack([xs, ys], axis=-1)  # (h, w, 2)
    for i in range(b):
        for j in range(k):
            sx, sy = sigma[i, j]
            cov = np.array([[sx**2, rho[i, j] * sx * sy], [rho[i, j] * sx * sy, sy**2]])
            d = d_grid - mu[i, j]
            quad = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)
            np.testing.assert_allclose(out[i, j], np.exp(-0.5 * quad), atol=1e-5)


_extreme = st.one_of(
    st.sampled_from([0.0, 1e4, -1e4, 20.0, -20.0]),
    st.floats(-1e4, 1e4, width=32),
)


@settings(max_examples=60, deadline=None)
@given(
    raw=st.integers(1, 3).flatmap(
        lambda k: arrays(np.float32, st.tuples(st.integers(1, 3), st.just(k), st.just(6)), elements=_extreme)
    ),
    size=st.tuples(st.integers(2, 8), st.integers(2, 8)),
)
def test_parameterisation_always_valid(raw, size):
    sigma_floor, rho_max = 0.15, 0.95
    raw_t = torch.tensor(raw, requires_grad=True)
    p = params_from_raw(raw_t, sigma_floor, rho_max)

    sigma = p.sigma.detach().double()
    sxy = p.sigma_xy.detach().double()
    det = sigma[..., 0] ** 2 * sigma[..., 1] ** 2 - sxy**2
    assert (det > 0).all()
    assert (sigma >= sigma_floor * (1 - 1e-6)).all()
    assert (p.mu.abs() <= 1).all()
    assert (p.rho.abs() <= rho_max + 1e-6).all()
    assert torch.allclose(p.mix.sum(-1), torch.ones(raw.shape[0]))

    h, w = size
    peak = gaze_map(p, h, w, "peak")
    assert torch.isfinite(peak).all()
    assert (peak >= 0).all() and (peak <= 1).all()
    assert torch.equal(peak.flatten(1).amax(1), torch.ones(raw.shape[0]))

    total = gaze_map(p, h, w, "sum")
    assert torch.isfinite(total).all()
    assert torch.allclose(total.flatten(1).sum(1), torch.ones(raw.shape[0]), atol=1e-5)

    (peak.sum() + total.sum()).backward()
    assert torch.isfinite(raw_t.grad).all()


def test_normalize_map_modes():
    a = torch.rand(4, 5, 6) * 3
    peak = normalize_map(a, "peak")
    assert torch.equal(peak.flatten(1).amax(1), torch.ones(4))
    total = normalize_map(a, "sum")
    assert torch.allclose(total.flatten(1).sum(1), torch.ones(4))
    assert torch.isfinite(normalize_map(torch.zeros(2, 3, 3), "peak")).all()
    with pytest.raises(ValueError, match="peak"):
        normalize_map(a, "max")


def test_map_peaks_at_cell_nearest_mu():
    gen = torch.Generator().manual_seed(1)
    h, w = 11, 13
    x, y = feature_grid(h, w)
    for _ in range(20):
        mu = torch.rand(2, generator=gen) * 2 - 1
        sigma = torch.rand(2, generator=gen) + 0.15
        a = gaze_map(_params([mu.tolist()], [sigma.tolist()], [0.0]), h, w)[0]
        nearest = ((x - mu[0]) ** 2 + (y - mu[1]) ** 2).argmin()
        assert a.argmax() == nearest


def test_positive_rho_tilts_mass_to_main_diagonal():
    a = gaze_map(_params([[0.0, 0.0]], [[0.5, 0.5]], [0.8]), 9, 9)[0]
    x, y = feature_grid(9, 9)
    same_sign = a[(x * y) > 0].sum()
    opposite_sign = a[(x * y) < 0].sum()
    assert same_sign > 2 * opposite_sign
    # Negative correlation mirrors it.
    b = gaze_map(_params([[0.0, 0.0]], [[0.5, 0.5]], [-0.8]), 9, 9)[0]
    assert b[(x * y) < 0].sum() > 2 * b[(x * y) > 0].sum()


def test_initial_gaze_is_centred():
    torch.manual_seed(0)
    gaze = GaussianGaze(C, H, W, sigma_init=0.8)
    p = gaze.gaze_params(torch.randn(5, C, H, W))
    assert p.mu.shape == (5, 1, 2) and p.rho.shape == (5, 1)
    assert torch.allclose(p.mu, torch.zeros_like(p.mu), atol=0.02)
    assert torch.allclose(p.sigma, torch.full_like(p.sigma, 0.8), atol=0.02)
    assert torch.allclose(p.rho, torch.zeros_like(p.rho), atol=0.02)
    assert torch.allclose(p.mix, torch.ones_like(p.mix))


def test_initial_mixture_components_are_distinct():
    torch.manual_seed(0)
    p = GaussianGaze(C, H, W, num_gaussians=3).gaze_params(torch.randn(2, C, H, W))
    assert p.mix.shape == (2, 3)
    assert torch.allclose(p.mix, torch.full_like(p.mix, 1 / 3), atol=1e-2)
    dists = torch.cdist(p.mu[0], p.mu[0])
    assert (dists + torch.eye(3)).min() > 0.3


def _local_maxima(a: torch.Tensor) -> set[tuple[int, int]]:
    """Cells strictly greater than all 8 neighbours."""
    padded = torch.nn.functional.pad(a[None, None], (1, 1, 1, 1), value=-1.0)[0, 0]
    h, w = a.shape
    out = set()
    for i in range(h):
        for j in range(w):
            window = padded[i : i + 3, j : j + 3].flatten()
            others = torch.cat([window[:4], window[5:]])
            if (a[i, j] > others).all():
                out.add((i, j))
    return out


def test_two_gaussians_give_two_separate_maxima():
    gaze = GaussianGaze(C, 9, 9, num_gaussians=2, sigma_init=0.2)
    last = gaze.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        bias = last.bias.view(2, 6)
        bias[0, 0:2] = math.atanh(-0.5)  # (x, y) = (-0.5, -0.5): row 2, column 2
        bias[1, 0:2] = math.atanh(0.5)  # (x, y) = (0.5, 0.5): row 6, column 6
    a = gaze(torch.randn(2, C, 9, 9)).weights
    for sample in a:
        assert _local_maxima(sample) == {(2, 2), (6, 6)}


@pytest.mark.parametrize("kind", ["patch", "gaussian"])
def test_gradients_reach_head_parameters(kind):
    torch.manual_seed(0)
    module = make_attention(kind, C, H, W)
    x = torch.randn(3, C, H, W, requires_grad=True)
    out = module(x)
    (out.features.square().sum() + out.weights.square().sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_no_attention_is_identity():
    x = torch.randn(2, C, H, W)
    out = NoAttention(C, H, W)(x)
    assert torch.equal(out.features, x)
    assert torch.equal(out.weights, torch.ones(2, H, W))
    assert out.params is None


def test_patch_attention_peak_and_sum():
    x = torch.randn(4, C, H, W)
    out = PatchAttention(C, H, W)(x)
    assert out.weights.shape == (4, H, W) and out.params is None
    assert torch.equal(out.weights.flatten(1).amax(1), torch.ones(4))
    assert torch.allclose(out.features, x * out.weights[:, None])
    total = PatchAttention(C, H, W, normalize="sum")(x).weights
    assert torch.allclose(total.flatten(1).sum(1), torch.ones(4))


@pytest.mark.parametrize("normalize", ["peak", "sum"])
def test_gaussian_gaze_output(normalize):
    x = torch.randn(3, C, H, W)
    out = GaussianGaze(C, H, W, num_gaussians=2, normalize=normalize)(x)
    assert out.features.shape == x.shape and out.weights.shape == (3, H, W)
    assert torch.allclose(out.features, x * out.weights[:, None])
    assert out.params is not None and out.params.sigma_xy.shape == (3, 2)
    reduce = out.weights.flatten(1).amax(1) if normalize == "peak" else out.weights.flatten(1).sum(1)
    assert torch.allclose(reduce, torch.ones(3))


def test_make_attention_builds_each_kind_and_forwards_kwargs():
    types = {"none": NoAttention, "patch": PatchAttention, "gaussian": GaussianGaze, "oracle": OracleGaze}
    for kind in ATTENTION_KINDS:
        assert isinstance(make_attention(kind, C, H, W), types[kind])
    gaze = make_attention("gaussian", C, H, W, num_gaussians=3, sigma_floor=0.1, sigma_init=0.5, normalize="sum")
    assert (gaze.num_gaussians, gaze.sigma_floor, gaze.sigma_init, gaze.normalize) == (3, 0.1, 0.5, "sum")
    assert make_attention("patch", C, H, W, normalize="sum").normalize == "sum"


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: make_attention("fovea", C, H, W), "gaussian"),
        (lambda: GaussianGaze(C, H, W, num_gaussians=0), "num_gaussians"),
        (lambda: GaussianGaze(C, H, W, sigma_floor=0.0), "sigma_floor"),
        (lambda: GaussianGaze(C, H, W, sigma_floor=0.3, sigma_init=0.3), "sigma_init"),
        (lambda: GaussianGaze(C, H, W, rho_max=1.0), "rho_max"),
        (lambda: GaussianGaze(C, H, W, rho_max=0.0), "rho_max"),
        (lambda: GaussianGaze(C, H, W, normalize="softmax"), "normalize"),
        (lambda: PatchAttention(C, H, W, normalize="softmax"), "normalize"),
        (lambda: GaussianGaze(C, 1, W), "too small"),
        (lambda: PatchAttention(C, H, 1), "too small"),
    ],
)
def test_construction_validation(build, key):
    with pytest.raises(ValueError, match=key):
        build()


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_forward_rejects_bad_input(kind):
    module = make_attention(kind, C, H, W)
    targets = (torch.zeros(2, 1, 4),) if kind == "oracle" else ()  # the oracle's simulator targets
    with pytest.raises(ValueError, match="4-D"):
        module(torch.randn(C, H, W), *targets)
    with pytest.raises(ValueError, match="built for"):
        module(torch.randn(2, C + 1, H, W), *targets)
    with pytest.raises(ValueError, match="built for"):
        module(torch.randn(2, C, H, W + 1), *targets)


def test_sigma_can_grow_as_well_as_shrink():
    """Nothing in the parameterisation caps sigma from above: an objective that wants a wider
    gaze gets one, far beyond the initial 0.8 (and one that wants a narrower gaze, down to the floor)."""
    for sign, check in ((-1.0, lambda s: s > 2.0), (1.0, lambda s: s < 0.2)):
        torch.manual_seed(0)
        gaze = GaussianGaze(8, 4, 4)
        optimizer = torch.optim.Adam(gaze.parameters(), lr=0.05)
        features = torch.rand(16, 8, 4, 4)
        for _ in range(100):
            loss = sign * gaze.gaze_params(features).sigma.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert check(gaze.gaze_params(features).sigma.mean().item())
