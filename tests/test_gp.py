"""Gaussian-process sequences (reference/gp.py): GP1, GP2's kappa, GP3 banding, kernel PSD checks; planted bugs; bad input."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from hypothesis import given

from ditcheck.properties.gp import (BandingCase, GPCase, banding_cases, check_gp1, check_gp2_condition_number,
                                    check_gp2_step_size, check_gp3_banding, gp_cases)
from ditcheck.reference import gp
from ditcheck.reference.errors import (InvalidArgumentError, NonFiniteError, NotPositiveDefiniteError, PrecisionError,
                                       ShapeError, TimeOutOfRangeError)
from ditcheck.reference.linalg import certify_positive_definite
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.schedules import alpha, sigma2

from helpers import expect_caught


@given(gp_cases())
def test_gp1_kronecker_score_equals_dense_and_solves_the_system(case: GPCase) -> None:
    check_gp1(case)


@given(gp_cases())
def test_gp2_condition_number_formula(case: GPCase) -> None:
    check_gp2_condition_number(case)


@given(gp_cases())
def test_gp2_step_size_is_one_over_lambda_max(case: GPCase) -> None:
    check_gp2_step_size(case)


def test_planted_step_size_without_the_noise_term_is_caught() -> None:
    """h = 1 / (alpha^2 lmax(Gamma) lmax(Sigma)): lambda_max of A_t without its sigma_t^2 I."""

    def without_noise(t, gamma, sigma_matrix, schedule="ou-half"):
        a2 = float(alpha(np.float64(t), schedule)) ** 2
        return 1 / (a2 * np.linalg.eigvalsh(gamma)[-1] * np.linalg.eigvalsh(sigma_matrix)[-1])

    expect_caught(lambda case: check_gp2_step_size(case, step_size=without_noise), gp_cases(), claim="GP2")


@given(banding_cases())
def test_gp3_banding_checks_positive_definiteness(case: BandingCase) -> None:
    check_gp3_banding(case)


@given(gp_cases(max_frames=4, max_dim=2))
def test_dense_score_arb_contains_mp_and_the_float64_kronecker_score(case: GPCase) -> None:
    args = (case.x[:1], case.time, case.gamma, case.sigma_matrix, case.schedule)
    balls = gp.gp_score_dense(*args, precision="arb:128")
    with mpmath.workdps(60):
        assert balls.contains(gp.gp_score_dense(*args, precision="mp:60")).all()
    assert np.all(balls.rad <= 1e-25 * (1 + np.abs(balls.mid)))
    kappa = np.linalg.cond(case.operator())
    fast = gp.gp_score(*args)
    n = case.frames * case.dim
    assert balls.within(fast, 8 * n * U * kappa * np.linalg.norm(balls.mid)).all()


@pytest.mark.parametrize("kind, parameters", [
    ("exponential", {"length_scale": 0.3}), ("exponential", {"length_scale": 20.0}),
    ("squared-exponential", {"length_scale": 0.5}), ("squared-exponential", {"length_scale": 1.0}),
    ("polynomial", {"nu": 0.01}), ("polynomial", {"nu": 0.5}), ("polynomial", {"nu": 4.0}),
])
def test_kernels_are_certifiably_positive_definite(kind: str, parameters: dict[str, float]) -> None:
    """The module docstring's derivations (AR(1) / Bochner / Polya): arb Cholesky proves PD at H = 32."""
    assert certify_positive_definite(gp.gamma_matrix(32, kind, **parameters))


def test_slow_squared_exponential_is_psd_but_not_resolvable_and_negative_nu_is_rejected() -> None:
    wide = gp.gamma_matrix(32, "squared-exponential", length_scale=10.0)  # accepted as PSD
    assert np.linalg.eigvalsh(wide)[0] < 1e-12
    with pytest.raises(NotPositiveDefiniteError) as info:
        gp.gamma_matrix(4, "polynomial", nu=-0.5)  # c_1 > c_0: never PSD
    assert info.value.argument == "nu"
    assert np.array_equal(gp.gamma_matrix(3, "polynomial", nu=0.0), np.ones((3, 3)))  # PSD, rank 1


def test_samples_have_the_kronecker_covariance() -> None:
    gamma = gp.gamma_matrix(3, "exponential", length_scale=2.0)
    sigma_matrix = np.array([[1.0, 0.3], [0.3, 0.5]])
    x = gp.sample_gp(gamma, sigma_matrix, 100_000, seed=4).reshape(100_000, -1)
    expected = np.kron(gamma, sigma_matrix)
    standard_error = np.sqrt((expected**2 + np.outer(np.diag(expected), np.diag(expected))) / x.shape[0])
    assert np.all(np.abs(x.T @ x / x.shape[0] - expected) <= 5 * standard_error)


def test_banding_report_for_an_indefinite_band() -> None:
    gamma = gp.gamma_matrix(16, "squared-exponential", length_scale=1.5)
    x = gp.sample_gp(gamma, np.eye(1), 50, seed=0)
    report = gp.banding_report(gamma, 3, np.eye(1), 0.05, x)
    assert report.status == "indefinite" and report.lambda_min < 0
    # sigma_t^2 = 0.0488 still dominates alpha^2 lambda_min, so the banded "score" exists but is far off
    assert report.a_t_lambda_min > 0 and report.score_relative_error > 0.1
    assert gp.banding_report(gamma, 15).kernel_relative_error == 0.0
    tighter = gp.banding_report(gamma, 3, np.eye(1), 0.01, x)
    assert tighter.a_t_lambda_min < 0 and tighter.score_relative_error is None
    with pytest.raises(NotPositiveDefiniteError) as info:
        gp.banded(gamma, 3)
    assert info.value.argument == "width"


def test_scipy_cross_check_of_the_score() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    gamma = gp.gamma_matrix(5, "polynomial", nu=1.5)
    sigma_matrix = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.7]])
    x = gp.sample_gp(gamma, sigma_matrix, 2, seed=1)
    t = np.array([0.3, 2.0])
    a2, s2 = alpha(t) ** 2, sigma2(t)
    for n in range(2):
        operator = a2[n] * np.kron(gamma, sigma_matrix) + s2[n] * np.eye(15)
        expected = -linalg.cho_solve(linalg.cho_factor(operator), x[n].ravel()).reshape(5, 3)
        assert np.allclose(gp.gp_score(x, t, gamma, sigma_matrix)[n], expected, rtol=1e-12, atol=1e-12)


# ---- planted bugs -------------------------------------------------------------------------------


def test_planted_transposed_kronecker_factor_is_caught() -> None:
    def transposed(x, t, gamma, sigma_matrix, schedule="ou-half"):
        a2 = float(alpha(np.array([t]), schedule)[0]) ** 2
        operator = a2 * np.kron(sigma_matrix, gamma) + float(sigma2(np.array([t]), schedule)[0]) * np.eye(x[0].size)
        return -np.linalg.solve(operator, x.reshape(x.shape[0], -1).T).T.reshape(x.shape)

    expect_caught(lambda case: check_gp1(case, kronecker=transposed), gp_cases(), claim="GP1")


def test_planted_condition_number_with_alpha_instead_of_alpha_squared_is_caught() -> None:
    def wrong(t, gamma, sigma_matrix, schedule="ou-half"):
        a, s2 = alpha(np.array([t]), schedule)[0], sigma2(np.array([t]), schedule)[0]
        g, s = np.linalg.eigvalsh(gamma), np.linalg.eigvalsh(sigma_matrix)
        return (a * g[-1] * s[-1] + s2) / (a * g[0] * s[0] + s2)

    expect_caught(lambda case: check_gp2_condition_number(case, condition=wrong), gp_cases(), claim="GP2")


def test_planted_banding_without_positive_definiteness_check_is_caught() -> None:
    def unchecked(gamma, width):
        return gp.banded(gamma, width, require_positive_definite=False)

    expect_caught(lambda case: check_gp3_banding(case, banded=unchecked), banding_cases(), claim="GP3")


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, argument", [
    (lambda: gp.gamma_matrix(4, "matern", length_scale=1.0), InvalidArgumentError, "kind"),
    (lambda: gp.gamma_matrix(4, "exponential", length_scale=-1.0), InvalidArgumentError, "length_scale"),
    (lambda: gp.gamma_matrix(4, "exponential"), InvalidArgumentError, "length_scale"),
    (lambda: gp.gamma_matrix(4, "exponential", length_scale=1.0, nu=2.0), InvalidArgumentError, "nu"),
    (lambda: gp.gamma_matrix(0, "polynomial", nu=1.0), InvalidArgumentError, "H"),
    (lambda: gp.gp_score(np.zeros((3, 2)), 0.5, np.eye(4), np.eye(2)), ShapeError, "x"),
    (lambda: gp.gp_score(np.zeros((4, 2)), 0.5, np.eye(4), np.array([[1.0, 0.1], [0.0, 1.0]])),
     NotPositiveDefiniteError, "sigma_matrix"),
    (lambda: gp.gp_score(np.zeros((2, 2)), 0.5, np.array([[1.0, 2.0], [2.0, 1.0]]), np.eye(2)),
     NotPositiveDefiniteError, "gamma"),
    (lambda: gp.gp_score(np.zeros((2, 2)), -0.5, np.eye(2), np.eye(2)), TimeOutOfRangeError, "t"),
    (lambda: gp.gp_score(np.full((2, 2), np.nan), 0.5, np.eye(2), np.eye(2)), NonFiniteError, "x"),
    (lambda: gp.gp_score(np.zeros((2, 2)), 0.5, np.eye(2), np.eye(2), precision="mp:30"), PrecisionError, "precision"),
    (lambda: gp.banded(np.eye(3), -1), InvalidArgumentError, "width"),
    (lambda: gp.sample_gp(np.eye(2), np.eye(2), 0, 1), InvalidArgumentError, "n"),
])
def test_bad_input_raises_typed_errors(call, error: type, argument: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert info.value.argument == argument


def test_gp_score_accepts_single_sequences_and_per_sequence_times() -> None:
    gamma = gp.gamma_matrix(3, "exponential", length_scale=1.0)
    x = gp.sample_gp(gamma, np.eye(2), 2, seed=0)
    both = gp.gp_score(x, np.array([0.5, 1.5]), gamma, np.eye(2))
    assert np.allclose(gp.gp_score(x[1], 1.5, gamma, np.eye(2)), both[1], rtol=0, atol=1e-15)
    with pytest.raises(ShapeError):
        gp.gp_score(x, np.array([0.5, 1.0, 1.5]), gamma, np.eye(2))


def test_planted_alpha_shared_by_both_solvers_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A coefficient bug in the helper both GP solvers use: they still agree, the independent residual does not."""
    original = gp.coefficients

    def shrunk(*args, **kwargs):
        schedule, a, s2 = original(*args, **kwargs)
        return schedule, a * 0.9, s2

    monkeypatch.setattr(gp, "coefficients", shrunk)
    expect_caught(check_gp1, gp_cases(), claim="GP1")
