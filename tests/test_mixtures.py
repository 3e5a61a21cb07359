"""Latent Gaussian mixtures (reference/mixtures.py): LD1, LD2, score = grad log p, Tweedie, CFG, CF1; planted bugs; bad input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.properties.conditional import cf1_cases, check_cf1, check_cfg, conditional_cases
from ditcheck.properties.mixtures import (CERTIFIED_FUNCTIONS, MixtureCase, MixtureSpec, check_certified_contains_mp,
                                          check_ld1, check_ld2, check_score_is_gradient, check_tweedie, mixture_cases,
                                          mixture_specs)
from ditcheck.properties.schedules import schedule_times
from ditcheck.properties.strategies import exact_orthonormal_columns, seeds
from ditcheck.reference import mixtures
from ditcheck.reference.errors import (InvalidArgumentError, NonFiniteError, NotOrthonormalError,
                                       NotPositiveDefiniteError, ShapeError, TimeOutOfRangeError)
from ditcheck.reference.mixtures import (ConditionalMixture, LatentMixture, conditional_score, cfg_score, diffuse,
                                         dsm_loss, gaussian_mixture, latent_score, ld1_decomposition, log_density,
                                         score)
from ditcheck.reference.schedules import coefficients
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.precision import Arb, BallArray
from ditcheck.reference.schedules import alpha as schedule_alpha
from ditcheck.reference.schedules import sigma2 as schedule_sigma2

from helpers import expect_caught

float64_cases = mixture_cases()
exact_cases = mixture_cases(exact_basis=True, max_points=3)

#: (property, precision, its cases): LD1 and LD2 hold in exact arithmetic only for an exactly orthonormal B, so
#: their ball and mp checks draw exact bases; Tweedie holds for any given B, so its balls see QR bases too
IN_EACH_PRECISION = [
    pytest.param(check_ld1, "float64", float64_cases, id="ld1-float64"),
    pytest.param(check_ld1, "arb:128", exact_cases, id="ld1-arb-balls-overlap"),
    pytest.param(check_ld1, "mp:60", exact_cases, id="ld1-mp"),
    pytest.param(check_ld2, "float64", float64_cases, id="ld2-float64"),
    pytest.param(check_ld2, "arb:128", exact_cases, id="ld2-arb-balls-overlap"),
    pytest.param(check_tweedie, "float64", float64_cases, id="tweedie-float64"),
    pytest.param(check_tweedie, "arb:128", mixture_cases(max_points=3), id="tweedie-arb-qr-bases"),
]


@pytest.mark.parametrize("check, precision, cases", IN_EACH_PRECISION)
@given(data=st.data())
def test_property_holds_in_each_precision(check: Callable[..., None], precision: str,
                                          cases: st.SearchStrategy[MixtureCase], data: st.DataObject) -> None:
    check(data.draw(cases, label="case"), precision=precision)


# ---- score, Tweedie, certification ---------------------------------------------------------------


@given(mixture_cases(max_points=3))
def test_score_is_gradient_of_log_density(case: MixtureCase) -> None:
    check_score_is_gradient(case)


@pytest.mark.parametrize("name", CERTIFIED_FUNCTIONS)
@given(case=mixture_cases(max_points=2))
def test_arb_contains_mp(name: str, case: MixtureCase) -> None:
    check_certified_contains_mp(case, name)


@given(float64_cases)
def test_log_density_matches_dense_gaussian_mixture(case: MixtureCase) -> None:
    """Independent O(D^3) route: slogdet and solve with alpha^2 B S_k B^T + sigma^2 I, log-sum-exp over k."""
    m, x = case.mixture, case.x
    alpha, sigma2 = case.coefficients()
    out = np.empty(case.points)
    for n in range(case.points):
        logs = []
        for k in range(m.n_components):
            cov = alpha[n, 0] ** 2 * m.basis @ m.covariances[k] @ m.basis.T + sigma2[n, 0] * np.eye(m.ambient_dim)
            diff = x[n] - alpha[n, 0] * m.basis @ m.means[k]
            logs.append(np.log(m.weights[k]) - 0.5 * (diff @ np.linalg.solve(cov, diff) + np.linalg.slogdet(cov)[1]
                                                       + m.ambient_dim * np.log(2 * np.pi)))
        out[n] = np.logaddexp.reduce(logs)
    kappa = np.max(case.condition()) / np.min(sigma2) * (1 + np.max(alpha) ** 2)
    tolerance = 64 * m.ambient_dim * U * kappa * (1 + np.abs(out) + np.sum(x * x, axis=1))
    assert np.all(np.abs(log_density(m, x, case.t, case.schedule) - out) <= tolerance)


@given(mixture_specs(max_ambient=3, max_latent=3), schedule_times(("ou-half", "ou-unit")), st.floats(0.01, 2.0),
       seeds())
def test_diffusion_semigroup_for_full_rank_mixtures(spec: MixtureSpec, first: tuple[str, float], extra: float,
                                                     seed: int) -> None:
    """docs/claims.md#ground-truth-gaussian-mixtures: a mixture stays a mixture; OU diffusion for t1 then t2 is diffusion for t1 + t2."""
    schedule, t1 = first
    latent = spec.build()
    full = LatentMixture(np.eye(spec.latent), latent.weights, latent.means, latent.covariances)
    x = np.random.default_rng(seed).standard_normal((3, spec.latent))
    direct = log_density(full, x, t1 + extra, schedule)
    composed = log_density(diffuse(full, t1, schedule), x, extra, schedule)
    assert np.allclose(direct, composed, rtol=0, atol=1e3 * U * (1 + np.max(np.abs(direct))) / (1 - np.exp(-extra)))


def test_sample_moments_match_the_mixture() -> None:
    m = MixtureSpec(4, 2, 3, seed=5, basis_seed=6).build()
    x = mixtures.sample(m, 200_000, seed=1)
    mean = m.basis @ (m.weights @ m.means)
    latent_second = np.einsum("k,kij->ij", m.weights, m.covariances + m.means[:, :, None] * m.means[:, None, :])
    covariance = m.basis @ (latent_second - np.outer(m.weights @ m.means, m.weights @ m.means)) @ m.basis.T
    standard_error = np.sqrt(np.diag(covariance) / x.shape[0])
    assert np.all(np.abs(x.mean(axis=0) - mean) <= 5 * standard_error)
    assert np.allclose(np.cov(x.T), covariance, atol=0.03)
    assert np.allclose(x - x @ m.basis @ m.basis.T, 0, atol=1e-12)  # samples lie in range(B)


def test_scipy_cross_check_of_log_density() -> None:
    stats = pytest.importorskip("scipy.stats")
    m = MixtureSpec(3, 3, 2, seed=11, basis_seed=12).build()
    x = np.random.default_rng(0).standard_normal((5, 3))
    t, a = 0.4, np.exp(-0.2)
    expected = np.log(sum(w * stats.multivariate_normal(a * m.basis @ mu, a * a * m.basis @ s @ m.basis.T
                                                        + (1 - np.exp(-t)) * np.eye(3)).pdf(x)
                          for w, mu, s in zip(m.weights, m.means, m.covariances)))
    assert np.allclose(log_density(m, x, t), expected, rtol=1e-12, atol=0)


def test_marginal_score_is_the_score_of_the_pooled_mixture() -> None:
    classes = tuple(MixtureSpec(4, 2, 2, seed=s, basis_seed=3).build() for s in (1, 2))
    pi = np.array([0.25, 0.75])
    cm = ConditionalMixture(classes, pi)
    pooled = LatentMixture(classes[0].basis, np.concatenate([p * c.weights for p, c in zip(pi, classes)]),
                           np.concatenate([c.means for c in classes]), np.concatenate([c.covariances for c in classes]))
    x = np.random.default_rng(0).standard_normal((4, 4))
    assert np.allclose(mixtures.marginal_score(cm, x, 0.3), score(pooled, x, 0.3), rtol=1e-12, atol=1e-12)
    labels = np.array([0, 1, -1, 1])
    got = conditional_score(cm, x, labels, 0.3)
    for row, label in enumerate(labels):
        target = pooled if label < 0 else classes[label]
        assert np.allclose(got[row], score(target, x[row:row + 1], 0.3)[0], rtol=1e-13, atol=1e-13)


def test_guidance_scale_conversion_round_trips() -> None:
    assert mixtures.diffusers_scale_from_guidance(3.0) == 4.0
    assert mixtures.guidance_from_diffusers_scale(mixtures.diffusers_scale_from_guidance(0.75)) == 0.75


# ---- CFG and CF1 --------------------------------------------------------------------------------


@given(conditional_cases())
def test_cfg_convention(case) -> None:
    check_cfg(case)


@given(cf1_cases())
def test_cf1_denoising_score_matching_identity(case) -> None:
    check_cf1(case)


# ---- planted bugs -------------------------------------------------------------------------------


def _per_row(values: np.ndarray, count: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values), (count,))[:, None]


def test_planted_orthogonal_term_with_sigma_instead_of_sigma_squared_is_caught() -> None:
    def wrong(mixture, x, t, schedule="ou-half", precision="float64"):
        on, orth = ld1_decomposition(mixture, x, t, schedule, precision=precision)
        return on, orth * np.sqrt(_per_row(schedule_sigma2(t, schedule), x.shape[0]))  # -(I - BB^T) x / sigma

    expect_caught(lambda case: check_ld1(case, decomposition=wrong), float64_cases, claim="LD1")


def test_planted_denoiser_with_sigma_is_caught() -> None:
    def factory(mixture, schedule):
        def q(xp, h, t):
            _, _, sigma2 = coefficients(xp, t, schedule, np.shape(h)[0])
            return xp.sqrt(sigma2)[:, None] * latent_score.generic(xp, mixture, h, t, schedule) + h
        return q

    expect_caught(lambda case: check_ld2(case, denoiser=factory), float64_cases, claim="LD2")


def test_planted_score_error_of_one_part_in_ten_million_is_caught() -> None:
    def slightly_off(mixture, x, t, schedule="ou-half", precision="float64"):
        return score(mixture, x, t, schedule, precision=precision) * (1 + 1e-7)

    expect_caught(lambda case: check_score_is_gradient(case, score=slightly_off), mixture_cases(max_points=2),
                  claim="score-gradient", max_examples=10)


def test_planted_tweedie_with_one_minus_alpha_is_caught() -> None:
    def wrong(mixture, x, t, schedule="ou-half", precision="float64"):
        a = _per_row(schedule_alpha(t, schedule), x.shape[0])
        return (x + (1 - a) * score(mixture, x, t, schedule)) / a  # sigma^2 taken as 1 - alpha

    expect_caught(lambda case: check_tweedie(case, from_score=wrong), float64_cases, claim="Tweedie")


def test_planted_cfg_sign_error_is_caught() -> None:
    def wrong(mixture, x, labels, t, guidance, schedule="ou-half"):
        cond = conditional_score(mixture, x, labels, t, schedule)
        return (1 + guidance) * cond + guidance * mixtures.marginal_score(mixture, x, t, schedule)

    expect_caught(lambda case: check_cfg(case, cfg=wrong), conditional_cases(), claim="CFG")


def test_planted_unmasked_optimal_score_is_caught() -> None:
    def ignores_the_mask(mixture, schedule="ou-half"):
        def s(x, t, labels):
            return conditional_score(mixture, x, np.where(labels < 0, 0, labels), t, schedule)
        return s

    expect_caught(lambda case: check_cf1(case, optimal=ignores_the_mask), cf1_cases(draws=2000), claim="CF1",
                  max_examples=20)


def test_planted_time_convention_in_the_optimal_score_is_caught() -> None:
    def ou_unit_time(mixture, schedule="ou-half"):
        return mixtures.optimal_score_function(mixture, "ou-unit")

    expect_caught(lambda case: check_cf1(case, optimal=ou_unit_time), cf1_cases(draws=2000), claim="CF1",
                  max_examples=20)


def test_planted_float64_inside_arb_is_caught() -> None:
    def float64_balls(mixture, x, t, schedule="ou-half", precision="float64"):
        values = log_density(mixture, x, t, schedule)
        with Arb(128).context():
            return BallArray(Arb(128).asarray(values))  # zero-radius balls around rounded values

    expect_caught(lambda case: check_certified_contains_mp(case, "log_density", fn=float64_balls),
                  mixture_cases(max_points=2), claim="REF-arb", max_examples=5)


# ---- bad input ----------------------------------------------------------------------------------


def _parts() -> dict[str, np.ndarray]:
    m = MixtureSpec(4, 2, 2, seed=1, basis_seed=2).build()
    return {"basis": m.basis, "weights": m.weights, "means": m.means, "covariances": m.covariances}


@pytest.mark.parametrize("field, value, error", [
    ("basis", np.ones((4, 2)), NotOrthonormalError),
    ("basis", np.eye(4)[:2], ShapeError),  # [2, 4]: more columns than rows
    ("weights", np.array([0.5, 0.6]), InvalidArgumentError),
    ("weights", np.array([1.5, -0.5]), InvalidArgumentError),
    ("means", np.zeros((3, 2)), ShapeError),
    ("means", np.array([[np.nan, 0.0], [0.0, 0.0]]), NonFiniteError),
    ("covariances", np.array([[[1.0, 0.5], [0.4, 1.0]]] * 2), NotPositiveDefiniteError),
    ("covariances", np.array([[[1.0, 2.0], [2.0, 1.0]]] * 2), NotPositiveDefiniteError),
])
def test_invalid_mixtures_raise_typed_errors(field: str, value: np.ndarray, error: type) -> None:
    parts = _parts() | {field: value}
    with pytest.raises(error) as info:
        LatentMixture(**parts)
    assert info.value.argument == field


def test_invalid_evaluation_arguments() -> None:
    m = LatentMixture(**_parts())
    x = np.zeros((2, 4))
    with pytest.raises(ShapeError, match="'x'"):
        score(m, np.zeros((2, 3)), 0.5)
    with pytest.raises(NonFiniteError):
        log_density(m, np.full((2, 4), np.inf), 0.5)
    with pytest.raises(TimeOutOfRangeError):
        score(m, x, -0.1)
    with pytest.raises(TimeOutOfRangeError):
        score(m, x, 0.0)
    with pytest.raises(TimeOutOfRangeError):
        score(m, x, 1.5, "vp-linear")
    with pytest.raises(ShapeError, match="'t'"):
        score(m, x, np.ones(3))
    with pytest.raises(ShapeError, match="'h'"):
        latent_score(m, x, 0.5)
    with pytest.raises(InvalidArgumentError, match="mixture"):
        score("not a mixture", x, 0.5)
    with pytest.raises(ShapeError):
        diffuse(m, 0.5)  # d0 < D: the diffused law is not of latent form


def test_invalid_conditional_arguments() -> None:
    a = LatentMixture(**_parts())
    other = LatentMixture(**(_parts() | {"basis": exact_orthonormal_columns(4, 2, 0)}))
    with pytest.raises(InvalidArgumentError, match="classes"):
        ConditionalMixture((a, other), np.array([0.5, 0.5]))
    with pytest.raises(ShapeError, match="class_probabilities"):
        ConditionalMixture((a, a), np.array([1.0]))
    cm = ConditionalMixture((a, a), np.array([0.5, 0.5]))
    x = np.zeros((2, 4))
    with pytest.raises(InvalidArgumentError, match="labels"):
        conditional_score(cm, x, np.array([0, 2]), 0.5)
    with pytest.raises(InvalidArgumentError, match="labels"):
        cfg_score(cm, x, np.array([0, -1]), 0.5, 1.0)  # guidance needs a class, not the dropped label
    with pytest.raises(InvalidArgumentError, match="guidance"):
        cfg_score(cm, x, np.array([0, 1]), 0.5, float("nan"))
    with pytest.raises(TimeOutOfRangeError):
        dsm_loss(mixtures.optimal_score_function(cm), cm, [0.0, 1.0], 10, 0)
    with pytest.raises(InvalidArgumentError, match="'n'"):
        dsm_loss(mixtures.optimal_score_function(cm), cm, [1.0], 0, 0)
    with pytest.raises(InvalidArgumentError, match="drop_probability"):
        dsm_loss(mixtures.optimal_score_function(cm), cm, [1.0], 10, 0, drop_probability=1.5)
    with pytest.raises(ShapeError, match="score_fn"):
        dsm_loss(lambda x, t, y: x[:, :1], cm, [1.0], 10, 0)


def test_gaussian_mixture_helper_and_singular_covariances() -> None:
    g = gaussian_mixture([1.0], [[0.0, 0.0]], [np.diag([1.0, 0.0])])  # singular S is allowed
    assert np.isfinite(log_density(g, np.zeros((1, 2)), 0.1)).all()


def test_ld2_score_needs_one_time_per_point() -> None:
    from ditcheck.reference.latent import ld2_score

    basis = np.eye(3)[:, :2]
    with pytest.raises(ShapeError) as info:
        ld2_score(np.ones((4, 3)), np.array([0.5, 1.0]), basis, lambda xp, h, t: h)
    assert info.value.argument == "t"
