"""ditcheck.fast_attention.polynomial: certified exp approximations (AS1 certificate) and symmetric monomial features (AS1, AS4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given, settings

from ditcheck.fast_attention.polynomial import (ExpApproximation, certified_relative_error, certify_relative_error,
                                 exp_approximation, monomial_layout, monomials, polynomial_features)
from ditcheck.properties.fast_attention import (CertificateCase, FeatureCase, certificate_cases,
                                                check_certificate_bounds_error, check_entrywise_relative_error,
                                                check_feature_rank, feature_cases)
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, ShapeError


@at_most(20)
@given(certificate_cases())
def test_certificate_bounds_dense_mp_sampling(case: CertificateCase) -> None:
    check_certificate_bounds_error(case)


def _endpoint_and_node_certificate(coefficients, radius):
    """Planted bug: 'certify' by sampling only the endpoints and the interpolation nodes."""
    g = len(coefficients) - 1
    points = [-radius, radius] + [radius * math.cos(math.pi * (i + 0.5) / (g + 1)) for i in range(g + 1)]
    p = ExpApproximation(radius, g, "chebyshev", tuple(coefficients), 0.0)
    return max(abs(float(p(np.array(s))) * math.exp(-s) - 1) for s in points)


def test_certificate_planted_sampling_bug_is_caught() -> None:
    expect_caught(lambda case: check_certificate_bounds_error(case, certify=_endpoint_and_node_certificate),
                  certificate_cases(), claim="AS1")


def test_certificate_planted_loose_bound_is_caught() -> None:
    expect_caught(lambda case: check_certificate_bounds_error(
        case, certify=lambda c, r: 2 * certified_relative_error(c, r)), certificate_cases(), claim="AS1")


def test_certificate_is_for_the_float64_coefficients_used() -> None:
    a = exp_approximation(1.0, 9)
    assert all(isinstance(c, float) for c in a.coefficients) and len(a.coefficients) == 10
    assert a.eps == certified_relative_error(a.coefficients, 1.0)
    certificate = certify_relative_error(a.coefficients, 1.0)
    assert certificate.sampled <= certificate.bound <= 1.05 * certificate.sampled
    # perturbing one coefficient by 1e-6 must show in the certificate
    perturbed = list(a.coefficients)
    perturbed[3] += 1e-6
    assert certified_relative_error(perturbed, 1.0) > 1e-7 > a.eps


def test_exp_approximation_is_cached_and_validated() -> None:
    assert exp_approximation(0.5, 4) is exp_approximation(0.5, 4)
    for kwargs, argument in (({"radius": -1.0, "degree": 3}, "radius"), ({"radius": float("nan"), "degree": 3}, "radius"),
                             ({"radius": 1.0, "degree": -1}, "degree"), ({"radius": 1.0, "degree": 2.5}, "degree"),
                             ({"radius": 1.0, "degree": 3, "kind": "pade"}, "kind")):
        with pytest.raises(InvalidArgumentError) as info:
            exp_approximation(**kwargs)
        assert info.value.argument == argument
    with pytest.raises(InvalidArgumentError):
        certified_relative_error([1.0, float("inf")], 1.0)


@settings(max_examples=min(60, settings().max_examples))
@given(feature_cases())
def test_entrywise_relative_error_within_certified_eps(case: FeatureCase) -> None:
    check_entrywise_relative_error(case)


def _wrong_weight(x, approximation, scale, *, side):
    features = polynomial_features(x, approximation, scale, side=side)
    if side == "query" and features.shape[-1] > 2:
        features = features.clone()
        features[..., 2] *= 1.5  # planted: one multinomial weight off
    return features


def _dropped_monomial(x, approximation, scale, *, side):
    features = polynomial_features(x, approximation, scale, side=side)
    return features[..., :-1] if features.shape[-1] > 1 else features


def _drop_key_column(x, approximation, scale, *, side):
    features = polynomial_features(x, approximation, scale, side=side)
    if features.shape[-1] > 1:
        features = features.clone()
        features[..., 1] = 0.0 if side == "key" else features[..., 1]
    return features


def test_entrywise_planted_wrong_multinomial_weight_is_caught() -> None:
    expect_caught(lambda case: check_entrywise_relative_error(case, features=_wrong_weight), feature_cases(),
                  claim="AS1")


def test_entrywise_planted_dropped_monomial_is_caught() -> None:
    expect_caught(lambda case: check_entrywise_relative_error(case, features=_drop_key_column), feature_cases(),
                  claim="AS1")


@settings(max_examples=min(40, settings().max_examples))
@given(feature_cases())
def test_feature_rank_is_binomial_and_reproduces_p(case: FeatureCase) -> None:
    check_feature_rank(case)


def _full_tensor_powers(x, approximation, scale, *, side):
    """Planted: full tensor powers x^(tensor j) (rank sum_j D^j) instead of symmetric monomials."""
    x = x * math.sqrt(scale)
    pieces, power = [torch.ones_like(x[..., :1])], torch.ones_like(x[..., :1])
    for j in range(1, approximation.degree + 1):
        power = (power[..., :, None] * x[..., None, :]).flatten(-2)
        c = approximation.coefficients[j]
        pieces.append(power * (math.copysign(math.sqrt(abs(c)), c) if side == "query" else math.sqrt(abs(c))))
    pieces[0] = pieces[0] * approximation.coefficients[0]
    return torch.cat(pieces, dim=-1)


def test_feature_rank_planted_tensor_powers_are_caught() -> None:
    expect_caught(lambda case: check_feature_rank(case, features=_full_tensor_powers), feature_cases(), claim="AS4")


def test_feature_rank_planted_dropped_monomial_is_caught() -> None:
    expect_caught(lambda case: check_feature_rank(case, features=_dropped_monomial), feature_cases(), claim="AS4")


def test_monomial_layout_matches_theory_ranks_and_multinomials() -> None:
    # docs/claims.md#as4: d = 4 gives ranks 5, 15, 35, 70, 126, 210 for g = 1..6
    assert [monomial_layout(4, g).rank for g in range(1, 7)] == [5, 15, 35, 70, 126, 210]
    layout = monomial_layout(3, 3)
    # multinomial weights of degree j sum to D^j (the number of ordered index tuples)
    for j in range(4):
        assert layout.multinomial[layout.degrees == j].sum() == 3**j
    x = torch.tensor([[2.0], [3.0], [5.0]], dtype=torch.float64)  # D = 3 variables, one token
    values = sorted(monomials(x, 2)[:, 0].tolist())
    assert values == sorted([1, 2, 3, 5, 4, 6, 10, 9, 15, 25])


def test_monomials_differentiable_path_equals_buffer_path() -> None:
    x = torch.randn(2, 4, 7, dtype=torch.float64)
    with torch.no_grad():
        fast = monomials(x, 3)
    slow = monomials(x.clone().requires_grad_(), 3)
    assert torch.equal(fast, slow.detach())
    assert torch.autograd.gradcheck(lambda y: monomials(y, 3), (x[:1, :, :2].clone().requires_grad_(),))


def test_features_float32_and_typed_errors() -> None:
    a = exp_approximation(0.5, 4)
    q = torch.randn(5, 3)
    assert polynomial_features(q, a, 0.5, side="query").dtype == torch.float32
    with pytest.raises(InvalidArgumentError) as info:
        polynomial_features(q, a, 0.5, side="value")
    assert info.value.argument == "side"
    with pytest.raises(DTypeError):
        polynomial_features(q.to(torch.bfloat16), a, 0.5, side="key")
    with pytest.raises(ShapeError):
        polynomial_features(torch.randn(3), a, 0.5, side="key")
    with pytest.raises(InvalidArgumentError) as info:
        polynomial_features(q, a, -1.0, side="key")
    assert info.value.argument == "scale"


def test_minimax_is_certified_and_beats_the_interpolant() -> None:
    for radius, degree in ((0.25, 2), (0.5, 4), (1.0, 5)):
        minimax = exp_approximation(radius, degree, "minimax")
        assert minimax.eps < exp_approximation(radius, degree, "chebyshev").eps
        check_certificate_bounds_error(CertificateCase(radius, degree, "minimax"))
    # degree 0: the best constant is 1/cosh(R), relative error tanh(R)
    assert math.tanh(0.5) <= exp_approximation(0.5, 0, "minimax").eps <= 1.05 * math.tanh(0.5)


def test_certificate_covers_a_peak_between_midpoints() -> None:
    """A planted polynomial whose error peaks at s = 0, a piece *boundary* at every subdivision (never a midpoint).

    P = T18 (1 + a (1 - s^2)^2) on [-1, 1], T18 the degree-18 Taylor polynomial of e^s (error ~1e-17), so
    E(s) = P(s) e^-s - 1 ~ a (1 - s^2)^2 peaks at 0 with E(0) = c_0 - 1 exactly. The midpoint samples sit at
    s = +-h and miss the peak by about 2 a h^2: a certifier that only sampled midpoints (the ``sampled``
    field) would be below the true sup, while the mean-value bound must cover it.
    """
    import mpmath

    a = 1e-3
    taylor = np.asarray(exp_approximation(1.0, 18, "taylor").coefficients)
    planted = np.polynomial.polynomial.polymul(taylor, [1.0 + a, 0.0, -2 * a, 0.0, a])
    certificate = certify_relative_error(planted.tolist(), 1.0)
    with mpmath.workdps(50):
        peak = float(abs(mpmath.mpf(float(planted[0])) - 1))  # E(0) = P(0) - 1, exactly
    assert certificate.sampled < peak <= certificate.bound
    assert certificate.bound <= 1.05 * peak  # and still tight
