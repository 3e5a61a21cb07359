"""Distances (reference/distances.py): KL, W2 identities, TV against known answers; planted bugs; bad input."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings

from ditcheck.properties.distances import (GaussianPairCase, TVCase, check_kl, check_tv_known_answer, check_w2,
                                           gaussian_pair_cases, tv_cases)
from ditcheck.reference.distances import (TotalVariation, kl_gaussian, sqrtm_spd, tv_mixture_1d, tv_mixture_2d,
                                          w2_gaussian)
from ditcheck.reference.errors import InvalidArgumentError, NonFiniteError, NotPositiveDefiniteError, ShapeError
from ditcheck.reference.mixtures import LatentMixture, gaussian_mixture
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.precision import BallArray

from helpers import expect_caught


@given(gaussian_pair_cases())
def test_kl_identities(case: GaussianPairCase) -> None:
    check_kl(case)


@given(gaussian_pair_cases())
def test_w2_identities(case: GaussianPairCase) -> None:
    check_w2(case)


def _contains(balls: BallArray, value) -> bool:
    """Ball containment for scalar results (BallArray.contains needs arrays: 0-d conversion returns bare scalars)."""
    return bool(BallArray(np.reshape(balls.balls, -1)).contains(np.reshape(np.asarray(value, dtype=object), -1)).all())


@given(gaussian_pair_cases(max_dim=3))
def test_kl_and_w2_arb_contain_mp(case: GaussianPairCase) -> None:
    m1, s1, m2, s2 = case.build()
    for fn in (kl_gaussian, w2_gaussian):
        balls = fn(m1, s1, m2, s2, precision="arb:128")
        with mpmath.workdps(60):
            assert _contains(balls, fn(m1, s1, m2, s2, precision="mp:60"))
        assert balls.max_rad() <= 1e-25 * (1 + abs(float(balls.mid)))
    assert _contains(kl_gaussian(m1, s1, m1, s1, precision="arb:128"), np.zeros(1))


@given(tv_cases(dim=1))
def test_tv_1d_known_answer(case: TVCase) -> None:
    check_tv_known_answer(case)


@given(tv_cases(dim=2))
@settings(deadline=None)  # adaptive 2-D quadrature: up to ~0.3 s for nearly equal laws, even outside the ci profile
def test_tv_2d_known_answer(case: TVCase) -> None:
    check_tv_known_answer(case)


def test_sqrtm_spd_squares_back_within_its_documented_accuracy() -> None:
    rng = np.random.default_rng(0)
    for condition in (1.0, 1e3, 1e8):
        q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
        s = (q * np.geomspace(1.0, condition, 5)) @ q.T
        s = (s + s.T) / 2
        root = sqrtm_spd(s)
        assert np.linalg.norm(root @ root - s, 2) <= 64 * 5 * U * np.linalg.norm(s, 2) * math.sqrt(condition)


def test_tv_is_symmetric_and_matches_scipy_quadrature_for_multimodal_mixtures() -> None:
    integrate = pytest.importorskip("scipy.integrate")
    p = gaussian_mixture([0.3, 0.7], [[-1.0], [2.0]], [[[0.5]], [[1.5]]])
    q = gaussian_mixture([0.6, 0.1, 0.3], [[-0.5], [0.0], [3.0]], [[[1.0]], [[0.05]], [[0.7]]])
    forward, backward = tv_mixture_1d(p, q), tv_mixture_1d(q, p)
    assert abs(forward.value - backward.value) <= forward.error_bound + backward.error_bound

    def density(m, x):
        return sum(w * math.exp(-(x - mu[0]) ** 2 / (2 * s[0, 0])) / math.sqrt(2 * math.pi * s[0, 0])
                   for w, mu, s in zip(m.weights, m.means, m.covariances))

    reference, quad_error = integrate.quad(lambda x: abs(density(p, x) - density(q, x)) / 2, -30, 30, limit=400,
                                           points=[-1.0, 0.0, 2.0, 3.0], epsabs=1e-13)
    assert abs(forward.value - reference) <= forward.error_bound + 10 * quad_error + 1e-12


def test_tv_2d_of_rotated_products_equals_the_1d_tv() -> None:
    """TV(R (p1 x N(0,1)), R (q1 x N(0,1))) = TV(p1, q1): a multimodal 2-D case with an independent 1-D answer."""
    angle = 0.7
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def lifted(weights, centres, variances):
        return LatentMixture(rotation, weights, [[c, 0.0] for c in centres], [np.diag([v, 1.0]) for v in variances])

    p1 = gaussian_mixture([0.3, 0.7], [[-1.0], [2.0]], [[[0.5]], [[1.5]]])
    q1 = gaussian_mixture([0.6, 0.4], [[-0.5], [3.0]], [[[1.0]], [[0.7]]])
    exact = tv_mixture_1d(p1, q1)
    result = tv_mixture_2d(lifted([0.3, 0.7], [-1.0, 2.0], [0.5, 1.5]), lifted([0.6, 0.4], [-0.5, 3.0], [1.0, 0.7]),
                           tolerance=1e-4)
    assert result.error_bound <= 1e-4
    assert abs(result.value - exact.value) <= result.error_bound + exact.error_bound


# ---- planted bugs -------------------------------------------------------------------------------


def test_planted_kl_with_swapped_covariances_in_the_trace_is_caught() -> None:
    def swapped(m1, s1, m2, s2, precision="float64"):
        n = m1.size
        return 0.5 * (np.trace(np.linalg.solve(s1, s2)) + (m2 - m1) @ np.linalg.solve(s2, m2 - m1) - n
                      + np.linalg.slogdet(s2)[1] - np.linalg.slogdet(s1)[1])

    expect_caught(lambda case: check_kl(case, kl=swapped), gaussian_pair_cases(), claim="KL")


def test_planted_w2_with_commuting_square_roots_is_caught() -> None:
    def commuting(m1, s1, m2, s2, squared=False, precision="float64"):
        value = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm_spd(s1) @ sqrtm_spd(s2))
        return value if squared else math.sqrt(max(value, 0.0))

    expect_caught(lambda case: check_w2(case, w2=commuting), gaussian_pair_cases(), claim="W2")


def test_planted_tv_without_the_half_is_caught() -> None:
    def unnormalised(p, q, **options):
        result = tv_mixture_1d(p, q, **options)
        return TotalVariation(2 * result.value, result.error_bound)

    expect_caught(lambda case: check_tv_known_answer(case, tv=unnormalised), tv_cases(dim=1), claim="TV")


# ---- bad input ----------------------------------------------------------------------------------


def test_gaussian_distance_bad_input() -> None:
    m, s = np.zeros(2), np.eye(2)
    with pytest.raises(NotPositiveDefiniteError, match="S2"):
        kl_gaussian(m, s, m, np.diag([1.0, -1.0]))
    with pytest.raises(NotPositiveDefiniteError, match="S1"):
        kl_gaussian(m, np.array([[1.0, 0.2], [0.1, 1.0]]), m, s)
    with pytest.raises(ShapeError, match="m2"):
        w2_gaussian(m, s, np.zeros(3), s)
    with pytest.raises(ShapeError, match="S1"):
        w2_gaussian(m, np.eye(3), m, s)
    with pytest.raises(NonFiniteError):
        w2_gaussian(np.array([np.nan, 0.0]), s, m, s)
    with pytest.raises(NotPositiveDefiniteError):
        w2_gaussian(m, np.zeros((2, 2)), m, np.zeros((2, 2)))  # one covariance must be definite
    assert float(w2_gaussian(m, np.zeros((2, 2)), m, s, squared=True)) == pytest.approx(2.0, rel=4 * U)


def test_tv_bad_input() -> None:
    p1 = gaussian_mixture([1.0], [[0.0]], [[[1.0]]])
    p2 = gaussian_mixture([1.0], [[0.0, 0.0]], [np.eye(2)])
    with pytest.raises(ShapeError, match="'q'"):
        tv_mixture_1d(p1, p2)
    with pytest.raises(InvalidArgumentError, match="derivative_bounds"):
        tv_mixture_1d(p1, lambda x: np.ones(x.shape[0]))
    with pytest.raises(InvalidArgumentError, match="tolerance"):
        tv_mixture_1d(p1, p1, tolerance=0.0)
    with pytest.raises(InvalidArgumentError, match="domain"):
        tv_mixture_2d(p2, lambda x: np.ones(x.shape[0]), derivative_bounds=(1.0, 1.0), domain=[[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(InvalidArgumentError, match="'p'"):
        tv_mixture_1d("p", p1)
    singular = gaussian_mixture([1.0], [[0.0, 0.0]], [np.diag([1.0, 0.0])])
    with pytest.raises(NotPositiveDefiniteError):
        tv_mixture_2d(singular, p2)  # TV needs densities
