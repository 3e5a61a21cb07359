"""PF1: FAVOR+ positive orthogonal random features (rate at small R, error estimate, stabilisation)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given

from ditcheck.properties.random_features import (FEATURE_GRID, FavorCase, check_favor_error_estimate,
                                                 check_favor_rate, error_profile, favor_cases)
from ditcheck.fast_attention.random_features import favor_attention, positive_random_features, random_projection
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError


@at_most(8)
@given(favor_cases())
def test_pf1_relative_error_decays_like_m_to_the_minus_half(case: FavorCase) -> None:
    check_favor_rate(case)


def test_pf1_rate_catches_features_without_the_norm_term() -> None:
    """Without -|x|^2/2, E phi(q).phi(k) = exp(q.k + |q|^2/2 + |k|^2/2): a bias that does not decay in m."""

    def buggy(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        return torch.exp(x @ projection.mT) / math.sqrt(projection.shape[-2])

    expect_caught(lambda case: check_favor_rate(case, buggy), favor_cases(), claim="PF1", max_examples=10)


@at_most(6)
@given(favor_cases())
def test_pf1_error_estimate_is_calibrated_at_small_r(case: FavorCase) -> None:
    check_favor_error_estimate(case)


def test_pf1_estimate_catches_an_overconfident_estimate() -> None:
    def buggy(*args, **kwargs):
        out, estimate = favor_attention(*args, **kwargs)
        return out, estimate / 10

    expect_caught(lambda case: check_favor_error_estimate(case, buggy), favor_cases(), claim="PF1", max_examples=10)


def test_pf1_estimate_catches_a_biased_output() -> None:
    """A doubled logit scale (e.g. scale applied to q and to k instead of sqrt(scale)) biases the output."""

    def buggy(q, k, v, *, scale, **kwargs):
        return favor_attention(q, k, v, scale=2 * scale, **kwargs)

    expect_caught(lambda case: check_favor_error_estimate(case, buggy),
                  favor_cases(radii=(0.5,)), claim="PF1", max_examples=10)


def test_pf1_large_r_is_reported_not_asserted(record_property) -> None:
    """The slope and error at R up to 8 are measured and recorded (PF1: variance grows like exp(|q + k|^2))."""
    rows = error_profile((0.5, 2.0, 8.0), tokens=16, dim=4)
    for row in rows:
        record_property(f"PF1 R={row['radius']}", row)
        assert all(math.isfinite(value) for value in row.values())
    # the error at the largest m grows with R (reported numbers must mean what they say)
    key = f"rel_error_m{FEATURE_GRID[-1]}"
    assert rows[0][key] < rows[-1][key]


def test_favor_stabilisation_does_not_change_the_estimate() -> None:
    """Shifting by maxima cancels: same output as the unstabilised formula (float64, moderate logits)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    scale = 0.3
    out, _ = favor_attention(q, k, v, num_features=64, seed=3, scale=scale, chunk_size=5)
    w = random_projection(64, 5, seed=3)
    phi_q, phi_k = (positive_random_features(x * math.sqrt(scale), w) for x in (q, k))
    plain = (phi_q @ (phi_k.mT @ v)) / (phi_q @ phi_k.sum(-2)[..., None])
    assert torch.allclose(out, plain, rtol=1e-12, atol=1e-14)


def test_favor_stays_finite_at_large_logits_in_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 32, 8, generator=gen) for _ in range(3))
    out, estimate = favor_attention(q * 30, k * 30, v, num_features=128, seed=0)
    assert torch.isfinite(out).all() and torch.isfinite(estimate).all()
    assert out.dtype == torch.float32 and out.shape == v.shape


def test_favor_converges_to_exact_attention() -> None:
    gen = torch.Generator().manual_seed(2)
    q, k, v = (0.5 * torch.randn(1, 1, 24, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    exact = torch.softmax(q @ k.mT / 2, -1) @ v
    errors = [float((favor_attention(q, k, v, num_features=m, seed=5)[0] - exact).abs().max()) for m in (16, 4096)]
    assert errors[1] < errors[0] / 4


def test_favor_is_seeded_and_differentiable() -> None:
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    a, _ = favor_attention(q, k, v, num_features=8, seed=1)
    b, _ = favor_attention(q, k, v, num_features=8, seed=1)
    c, _ = favor_attention(q, k, v, num_features=8, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.autograd.gradcheck(
        lambda q, k, v: favor_attention(q, k, v, num_features=8, seed=1, chunk_size=3)[0], (q, k, v))


def test_orthogonal_projection_rows_are_orthogonal_within_blocks() -> None:
    w = random_projection(10, 4, seed=0)
    for block in (w[:4], w[4:8]):
        gram = block @ block.T
        assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros(4, 4, dtype=torch.float64),
                              atol=1e-12)
    assert not torch.equal(random_projection(8, 4, seed=0, orthogonal=False), w[:8])


def test_favor_bad_input_raises_typed_errors() -> None:
    q = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError) as info:
        favor_attention(q, q, q, num_features=8, seed=0, scale=-1.0)
    assert info.value.argument == "scale"
    with pytest.raises(InvalidArgumentError) as info:
        favor_attention(q, q, q, num_features=0, seed=0)
    assert info.value.argument == "num_features"
    with pytest.raises(ShapeError) as info:
        favor_attention(q, q[:, :2], q, num_features=8, seed=0)
    assert info.value.argument == "k"
    with pytest.raises(DTypeError) as info:
        favor_attention(q, q.float(), q, num_features=8, seed=0)
    assert info.value.argument == "k"
    with pytest.raises(NonFiniteError) as info:
        favor_attention(q, q, q.clone().fill_(math.inf), num_features=8, seed=0)
    assert info.value.argument == "v"
