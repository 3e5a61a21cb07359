"""Audit registry entries LD1-LD5, CF1-CF4 (ditcheck.audit.claims_diffusion): they run, and planted bugs are caught."""

from __future__ import annotations

import dataclasses
import functools
import math

import mpmath
import numpy as np
import pytest
import torch

from ditcheck.audit import claims_diffusion, registry, run_claim
from ditcheck.models.dit import LatentScoreNetwork
from ditcheck.properties import conditional
from ditcheck.properties import mixtures as mix
from ditcheck.properties import samplers as smp
from ditcheck.properties import torch_dit
from ditcheck.reference import mixtures
from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.schedules import sigma2 as schedule_sigma2

IDS = ("LD1", "LD2", "LD3", "LD4", "LD5", "LD9", "CF1", "CF2", "CF3", "CF4")


def test_registered_in_theory_order() -> None:
    claims = registry()
    assert all(cid in claims for cid in IDS)
    assert [c.id for c in claims_diffusion.CLAIMS] == list(IDS)


@pytest.mark.parametrize("cid", IDS)
def test_claim_runs_in_quick_mode(cid: str) -> None:
    result = run_claim(registry()[cid], "quick", 0)
    assert result.verdict != "ERROR", result.errors
    assert not result.errors
    expected = {"exact": "holds (statistical)" if result.statistical else "exact to rounding",
                "rate": "consistent", "not checkable": "not checkable"}
    if result.kind in expected:
        assert result.verdict == expected[result.kind], result.summary
    else:
        assert result.verdict.startswith(("holds", "loose")), result.summary


def test_quick_runs_are_deterministic() -> None:
    for cid in ("LD5", "CF1", "CF3"):
        first, second = (run_claim(registry()[cid], "quick", 3) for _ in range(2))
        assert first.summary == second.summary


def test_not_checkable_tables() -> None:
    ld3 = claims_diffusion.ld3_sizes()
    assert len(ld3) == 12 and all(row["vacuous"] for row in ld3)
    row = next(r for r in ld3 if r["eps"] == 0.01 and r["L"] == 8)
    assert row["log10 blocks K ~ eps^(-2L)"] == pytest.approx(32.0)
    ld4 = {(r["eps"], r["L"]): r for r in claims_diffusion.ld4_sizes()}
    assert ld4[(0.1, 1)]["log10 2^((1/eps)^(2L))"] == pytest.approx(100 * math.log10(2))
    cf4 = claims_diffusion.cf4_exponents()
    assert cf4[0]["score error exponent -2b/(d+dy+2b)"] == pytest.approx(-0.4)


# ---- planted bugs: each new measurement catches one ---------------------------------------------


def _claim(cid: str):
    return registry()[cid]


def test_ld1_planted_orthogonal_term_over_sigma_is_violated() -> None:
    def wrong(mixture, x, t, schedule="ou-half", precision="float64"):
        on, orth = mixtures.ld1_decomposition(mixture, x, t, schedule, precision=precision)
        sigma2 = np.broadcast_to(np.asarray(schedule_sigma2(t, schedule)),
                                 (x.shape[0],))[:, None]
        return on, orth * np.sqrt(sigma2)  # -(I - BB^T) x / sigma instead of / sigma^2

    claim = dataclasses.replace(_claim("LD1"), measure=functools.partial(mix.measure_ld1, decomposition=wrong))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


class SigmaNotVariance(LatentScoreNetwork):
    """Planted: divides by sigma_t (Hu et al.'s sigma(t) is the variance; misread as a standard deviation)."""

    def sigma2(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return torch.sqrt(super().sigma2(t, batch))


def test_ld2_planted_sigma_for_variance_is_violated() -> None:
    claim = dataclasses.replace(_claim("LD2"), measure=functools.partial(torch_dit.measure_torch_ld2,
                                                                         score_network=SigmaNotVariance))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "VIOLATED"
    assert result.forms["score with f = q"] > 1


def test_ld5_planted_smaller_bound_is_violated() -> None:
    def half(T0, mu):  # noqa: N803 - planted: the bound without its factor e, halved
        return 0.5 * (T0 + mu)

    claim = dataclasses.replace(_claim("LD5"), measure=functools.partial(smp.measure_ld5_bound, bound=half))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def _ld5_variance_mp(T: float, T0: float, steps: int) -> mpmath.mpf:  # noqa: N803
    """LD5's final variance from its closed form, independently of the recursion code: Euler-Maruyama on
    dy = (1/2 - 1/sigma^2(T - k mu)) y dt + dB gives y_K = prod_k a_k y_0 + sum_j sqrt(mu) xi_j prod_{k > j} a_k with
    a_k = 1 + mu (1/2 - 1/sigma_k^2), sigma_k^2 = 1 - e^-(T - k mu) (Hu et al.'s sigma(t) is the variance), so
    v_K = prod_k a_k^2 + mu sum_j prod_{k > j} a_k^2 (v_0 = 1); 50 digits."""
    with mpmath.workdps(50):
        mu = (mpmath.mpf(T) - mpmath.mpf(T0)) / steps
        factors = [(1 + mu * (mpmath.mpf(1) / 2 - 1 / -mpmath.expm1(-(mpmath.mpf(T) - k * mu)))) ** 2
                   for k in range(steps)]
        total = mpmath.fprod(factors)
        for j in range(steps):
            total += mu * mpmath.fprod(factors[j + 1:])
        return total


@pytest.mark.parametrize("case", [smp.LD5Case(6.0, 1e-4, 8), smp.LD5Case(11.906, 1e-3, 12), smp.LD5Case(1.01, 0.98, 2)])
def test_ld5_measure_equals_the_closed_form(case: smp.LD5Case) -> None:
    """observed + the rounding allowance is the closed-form variance (to 1e-12); the limit is e (T0 + mu)."""
    m = smp.measure_ld5_bound(case)
    exact = float(_ld5_variance_mp(case.T, case.T0, case.steps))
    assert m.observed + smp.LD5_ROUNDING * m.limit == pytest.approx(exact, rel=1e-12)
    assert m.limit == pytest.approx(math.e * (case.T0 + case.mu), rel=1e-15)
    one_step = (1 + case.mu * (0.5 - 1 / -math.expm1(-case.T))) ** 2 + case.mu  # K = 1 by hand
    assert float(_ld5_variance_mp(case.T, case.T - case.mu, 1)) == pytest.approx(one_step, rel=1e-14)


def sd_used_as_variance(T: float, T0: float, mu: float) -> float:  # noqa: N803
    """Planted: the recursion with sigma_k = sqrt(1 - e^-t) where Hu et al.'s sigma^2(t) (the variance) belongs."""
    v = 1.0
    for k in range(round((T - T0) / mu)):
        v = v * (1 + mu * (0.5 - 1 / math.sqrt(-math.expm1(-(T - k * mu))))) ** 2 + mu
    return v


def test_ld5_planted_sd_used_as_variance_is_violated() -> None:
    claim = dataclasses.replace(_claim("LD5"), measure=functools.partial(smp.measure_ld5_bound,
                                                                         variance=sd_used_as_variance))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "VIOLATED" and result.max_ratio > 10


def test_ld1_planted_1e_minus_3_relative_score_error_is_violated() -> None:
    """The latent part of LD1's decomposition 1e-3 too large (a 1e-3 relative error in the latent score)."""
    def off(mixture, x, t, schedule="ou-half", **kwargs):
        on, orth = mixtures.ld1_decomposition(mixture, x, t, schedule, **kwargs)
        return np.asarray(on) * (1 + 1e-3), orth

    claim = dataclasses.replace(_claim("LD1"), measure=functools.partial(mix.measure_ld1, decomposition=off))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "VIOLATED" and result.max_ratio > 1e3


def test_cf1_planted_unmasked_optimal_score_is_violated() -> None:
    def ignores_the_mask(mixture, schedule="ou-half"):
        def s(x, t, labels):
            return mixtures.conditional_score(mixture, x, np.where(labels < 0, 0, labels), t, schedule)
        return s

    claim = dataclasses.replace(_claim("CF1"), measure=functools.partial(conditional.measure_cf1, optimal=ignores_the_mask))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def _wrong_centre(alpha: float, sigma2: float, c2: float) -> tuple[float, float]:
    """Planted: centre alpha x instead of alpha x/(alpha^2 + C2 sigma^2)."""
    return alpha, sigma2 / (alpha * alpha + c2 * sigma2)


def test_cf2_planted_wrong_centre_is_violated() -> None:
    wrong = functools.partial(mixtures.cf2_decomposition, smoothing=_wrong_centre)
    claim = dataclasses.replace(_claim("CF2"), measure=functools.partial(conditional.measure_cf2, decomposition=wrong))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"
    with pytest.raises(Exception, match="CF2"):
        conditional.check_cf2(claim.grid("quick")[1], decomposition=wrong)


def test_cf2_planted_variance_sigma_instead_of_sigma2_is_violated() -> None:
    def wrong(alpha, sigma2, c2):
        return alpha / (alpha * alpha + c2 * sigma2), math.sqrt(sigma2) / (alpha * alpha + c2 * sigma2)

    bad = functools.partial(mixtures.cf2_decomposition, smoothing=wrong)
    claim = dataclasses.replace(_claim("CF2"), measure=functools.partial(conditional.measure_cf2, decomposition=bad))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_cf2_quadrature_error_is_stated_and_small() -> None:
    case = conditional.CF2Case(conditional.cf2_mixture(2, 3, 1, 3.0, 10.0), 0.99, 1e-3, 2, 2, 3.0)
    terms = mixtures.cf2_decomposition(case.mixture, case.x, case.time, case.c2)
    assert terms.quadrature_error.shape == (2,) and np.all(terms.quadrature_error < 1e-10)
    conditional.check_cf2(case)


def test_cf2_bad_input() -> None:
    mixture = mixtures.gaussian_mixture([1.0], [[0.0]], [[[0.5]]])
    with pytest.raises(InvalidArgumentError, match="c2"):
        mixtures.cf2_decomposition(mixture, np.zeros((1, 1)), 0.5, 2.0)  # C2 >= 1/lambda_max = 2
    with pytest.raises(ShapeError, match="mixture"):
        big = mixtures.gaussian_mixture([1.0], [[0.0, 0.0, 0.0]], [np.eye(3)])
        mixtures.cf2_decomposition(big, np.zeros((1, 3)), 0.5, 0.5)


def test_cf3_planted_variance_floor_is_inconsistent() -> None:
    def floor(mixture, t0):  # planted: a variance floor of 1e-2 that early stopping never removes
        diffused = mixtures.diffuse(mixture, t0, "ou-half")
        return mixtures.gaussian_mixture(diffused.weights, diffused.means, diffused.covariances + 1e-2)

    claim = dataclasses.replace(_claim("CF3"), rates=functools.partial(claims_diffusion.cf3_rates, law=floor))
    assert run_claim(claim, "quick", 0).verdict == "inconsistent"


def _variance_as_sd(t: float) -> tuple[float, float]:
    """Planted: the OU-half variance 1 - e^-t used as the noise's standard deviation (Hu et al. write sigma for it)."""
    return math.exp(-t / 2), -math.expm1(-t)


def _root_of_sd(t: float) -> tuple[float, float]:
    """Planted: the noise standard deviation's square root taken once more, (1 - e^-t)^(1/4)."""
    return math.exp(-t / 2), (-math.expm1(-t)) ** 0.25


@pytest.mark.parametrize("forward, slope", [(_variance_as_sd, 1.0), (_root_of_sd, 0.25)])
def test_cf3_planted_wrong_noise_scale_shows_another_exponent(forward, slope) -> None:
    """On the jump target TV ~ sigma: a wrong noise scale moves the exponent off 1/2 (the smooth targets cannot see it)."""
    claim = dataclasses.replace(_claim("CF3"), rates=functools.partial(claims_diffusion.cf3_rates, forward=forward))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "inconsistent"
    jump = result.fits[0]
    assert "jump target" in jump.label and not jump.consistent and jump.exponent == pytest.approx(slope, abs=0.07)
    assert all(f.consistent for f in result.fits[1:])  # the smooth targets pass either way


def test_cf3_jump_target_attains_sqrt_t0() -> None:
    """TV over its leading term sigma sum h_j / sqrt(2 pi) tends to 1 (0.3 Uniform[0, 0.5] + N(0, 1))."""
    from ditcheck.properties import early_stopping

    target = claims_diffusion.CF3_JUMP_TARGETS[1]
    ratios = [early_stopping.early_stopping_tv(target, t) / early_stopping.jump_tv_leading_term(target, t)
              for t in (1e-6, 1e-4)]
    assert abs(ratios[0] - 1) < 0.01 and abs(ratios[0] - 1) < abs(ratios[1] - 1)
    with pytest.raises(InvalidArgumentError, match="t0"):
        early_stopping.early_stopping_tv(target, 0.0)
    with pytest.raises(InvalidArgumentError, match="high"):
        early_stopping.JumpTarget(0.5, 1.0, 1.0)


@pytest.mark.parametrize("target", claims_diffusion.CF3_JUMP_TARGETS, ids=["mixture", "uniform+normal"])
def test_cf3_tv_quadrature_matches_quadpack(target) -> None:
    """The scipy-free quadrature (Gauss-Legendre bisection between the jumps and the crossings of p and p_t0) equals
    scipy's QUADPACK on the same pieces to 1e-14 (both ask for 1e-14 absolute, 1e-12 relative), at every t0 CF3 uses."""
    from scipy import integrate

    from ditcheck.properties import early_stopping

    for t0 in (1e-5, 1e-3, 0.1, 1.0):
        def difference(x, t0=t0):
            return early_stopping.jump_target_density(target, x) - early_stopping.early_stopped_density(target, t0, x)

        alpha, sigma = early_stopping.ou_half(t0)
        edges = np.linspace(min(target.low, *target.means) - 60, max(target.high, *target.means) + 60, 241)
        edges = sorted([*edges, target.low, target.high, alpha * target.low, alpha * target.high])
        edges = sorted([*edges, *early_stopping.sign_changes(difference, edges)])
        quadpack = math.fsum(integrate.quad(lambda x: abs(float(difference(np.array([x]))[0])), a, b, epsabs=1e-14,
                                            epsrel=1e-12, limit=200)[0] for a, b in zip(edges[:-1], edges[1:]) if b > a)
        assert early_stopping.early_stopping_tv(target, t0) == pytest.approx(quadpack / 2, rel=0, abs=1e-14), t0


def test_adaptive_quadrature_without_the_crossings_misses_a_kink() -> None:
    """Planted: |p - p_t0| integrated without the crossings as edges (the first version): a kink 6e-4 inside a panel
    sits before the first Gauss node of the panel and of its halves alike, they agree and the error (1.4e-6) passes."""
    from ditcheck.properties import early_stopping

    target, t0 = early_stopping.JumpTarget(0.5, -1.0, 1.0, (0.5, 0.5), (-2.0, 1.5), (0.3, 0.8)), 1.0

    def gap(x):
        return np.abs(early_stopping.jump_target_density(target, x) - early_stopping.early_stopped_density(target, t0, x))

    edges = [1.6, 2.1966508549539334]
    planted = early_stopping.adaptive_gauss_legendre(gap, edges)
    fixed = early_stopping.adaptive_gauss_legendre(gap, sorted([*edges, *early_stopping.sign_changes(
        lambda x: early_stopping.jump_target_density(target, x) - early_stopping.early_stopped_density(target, t0, x),
        edges)]))
    assert abs(planted - fixed) > 1e-6


def test_ld1_planted_zero_tolerance_is_violated() -> None:
    def none(case, on, orth, full):  # planted: no rounding allowance at all
        return np.zeros((case.points, 1))

    claim = dataclasses.replace(_claim("LD1"), measure=functools.partial(mix.measure_ld1, tolerance=none))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def _centred_pca(samples: np.ndarray, latent: int) -> np.ndarray:
    """Planted: PCA of centred samples (the covariance) instead of the uncentred second moment: rank d0 - 1 at n = d0."""
    left, _, _ = np.linalg.svd((samples - samples.mean(axis=0)).T, full_matrices=False)
    return left[:, :latent]


def _float32_svd(samples: np.ndarray, latent: int) -> np.ndarray:
    """Planted: the SVD in float32 (errors ~1e-7, far beyond the float64 bound)."""
    left, _, _ = np.linalg.svd(samples.T.astype(np.float32), full_matrices=False)
    return left[:, :latent]


@pytest.mark.parametrize("learn", [_centred_pca, _float32_svd])
def test_ld9_planted_subspace_learners_are_violated(learn) -> None:
    from ditcheck.properties import recovery

    case = recovery.RecoveryCase(8, 3, 3, 1)
    assert recovery.measure_subspace_recovery(case).ratio <= 1
    assert recovery.measure_subspace_recovery(case, learn).ratio > 10
    claim = dataclasses.replace(_claim("LD9"), measure=functools.partial(recovery.measure_subspace_recovery,
                                                                         learn=learn))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_ld9_bad_cases_name_the_argument() -> None:
    from ditcheck.properties import recovery

    with pytest.raises(InvalidArgumentError, match="samples"):
        recovery.RecoveryCase(8, 3, 2, 0)
    with pytest.raises(InvalidArgumentError, match="latent"):
        recovery.RecoveryCase(3, 4, 10, 0)
