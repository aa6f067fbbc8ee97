"""Tests for gaze_rl.contrastive.losses."""

import math

import pytest
import torch

from gaze_rl.contrastive.losses import cosine_distance, spread_regularizer, triplet_loss


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_cosine_distance_known_angles():
    a = torch.tensor([unit(0), unit(0), unit(0), [3.0, 0.0]])
    b = torch.tensor([unit(0), unit(90), unit(180), [0.0, 0.5]])
    assert torch.allclose(cosine_distance(a, b), torch.tensor([0.0, 1.0, 2.0, 1.0]), atol=1e-6)
    # Scale invariant.
    assert torch.allclose(cosine_distance(a * 7, b * 0.1), cosine_distance(a, b), atol=1e-6)


def test_cosine_distance_zero_vector_is_finite():
    a = torch.zeros(2, 3, requires_grad=True)
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d = cosine_distance(a, b)
    assert torch.allclose(d, torch.ones(2))
    d.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_cosine_distance_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        cosine_distance(torch.zeros(2, 3), torch.zeros(2, 4))


def test_triplet_loss_hand_values():
    # Triplet 1: d(a,p) = 1 - cos 60 = 0.5, d(a,n) = 1 - cos 90 = 1 -> max(0, 0.5 - 1 + 0.2) = 0
    # Triplet 2: d(a,p) = 1 - cos 90 = 1, d(a,n) = 1 - cos 60 = 0.5 -> 1 - 0.5 + 0.2 = 0.7
    # Triplet 3: p = n at 45 deg -> loss = margin = 0.2
    a = torch.tensor([unit(0), unit(0), unit(10)])
    p = torch.tensor([unit(60), unit(90), unit(55)])
    n = torch.tensor([unit(90), unit(60), unit(55)])
    assert triplet_loss(a, p, n, margin=0.2).item() == pytest.approx((0.0 + 0.7 + 0.2) / 3, abs=1e-6)
    # Triplet 1 alone: d(a,p) - d(a,n) + margin = -0.5 + 0.6 = 0.1 with margin 0.6.
    assert triplet_loss(a[:1], p[:1], n[:1], margin=0.6).item() == pytest.approx(0.1, abs=1e-6)


def test_triplet_loss_hinge_is_zero_when_satisfied():
    a = torch.tensor([unit(0)], requires_grad=True)
    p = torch.tensor([unit(10)])
    n = torch.tensor([unit(120)])  # d(a,n) - d(a,p) ~ 1.48 > margin
    loss = triplet_loss(a, p, n, margin=0.5)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_triplet_loss_gradient_pulls_positive_and_pushes_negative():
    a = torch.tensor([unit(0)])
    p = torch.tensor([unit(80)], requires_grad=True)
    n = torch.tensor([unit(40)], requires_grad=True)
    triplet_loss(a, p, n).backward()
    # Descending the loss rotates p towards a (angle decreases) and n away from it.
    tangent_p = torch.tensor(unit(80 + 90))
    tangent_n = torch.tensor(unit(40 + 90))
    assert (p.grad[0] @ tangent_p) > 0  # -grad points to smaller angle
    assert (n.grad[0] @ tangent_n) < 0


def test_triplet_loss_flattens_feature_maps():
    gen = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(4, 3, 2, 2, generator=gen) for _ in range(3))
    assert torch.allclose(triplet_loss(a, p, n), triplet_loss(a.flatten(1), p.flatten(1), n.flatten(1)))


def test_triplet_loss_empty_is_connected_zero():
    features = torch.randn(5, 8, requires_grad=True)
    idx = torch.empty(0, dtype=torch.int64)
    loss = triplet_loss(features[idx], features[idx], features[idx])
    assert loss.shape == () and loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_triplet_loss_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        triplet_loss(x, x, x, margin=-0.1)
    with pytest.raises(ValueError, match="share one shape"):
        triplet_loss(x, x, torch.zeros(3, 3))


def test_spread_regularizer_zero_at_target():
    sigma = torch.full((4, 3, 2), 0.45)
    assert spread_regularizer(sigma).item() == pytest.approx(0.0, abs=1e-10)
    assert spread_regularizer(torch.full((5, 2), 0.2), target=0.2).item() == pytest.approx(0.0, abs=1e-10)


def test_spread_regularizer_hand_value():
    # Sample 1: (ln 2)^2 + (ln 0.5)^2 = 2 ln^2 2; sample 2: (ln e)^2 + 0 = 1.
    sigma = torch.tensor([[0.9, 0.225], [0.45 * math.e, 0.45]])
    expected = (2 * math.log(2) ** 2 + 1.0) / 2
    assert spread_regularizer(sigma).item() == pytest.approx(expected, rel=1e-5)


def test_spread_regularizer_gradient_points_to_target():
    sigma = torch.tensor([[0.1, 0.9], [0.45, 2.0]], requires_grad=True)
    spread_regularizer(sigma).backward()
    # Gradient descent moves sigma towards 0.45: grad < 0 below target, > 0 above, 0 at it.
    assert sigma.grad[0, 0] < 0 and sigma.grad[0, 1] > 0 and sigma.grad[1, 1] > 0
    assert sigma.grad[1, 0] == pytest.approx(0.0, abs=1e-5)  # float32 rounding of 0.45
    with torch.no_grad():
        stepped = sigma - 0.01 * sigma.grad
    assert spread_regularizer(stepped) < spread_regularizer(sigma.detach())


def test_spread_regularizer_zero_sigma_is_finite():
    sigma = torch.zeros(3, 2, requires_grad=True)
    loss = spread_regularizer(sigma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(sigma.grad).all()


def test_spread_regularizer_validation():
    with pytest.raises(ValueError, match="target must be > 0"):
        spread_regularizer(torch.ones(2, 2), target=0.0)
    with pytest.raises(ValueError, match=r"sigma must have shape \(\.\.\., 2\)"):
        spread_regularizer(torch.ones(2, 3))
