"""The audit's sampler (RT1-RT4) and GP / random-feature (RF1, GP1-GP4) claims: each runs in quick mode, and each new
measurement, rate or observation catches a planted bug."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from ditcheck.diffusion import samplers
from ditcheck.audit import fit_rate, registry, run_claim
from ditcheck.audit import claims_gp, claims_samplers
from ditcheck.properties import gp as GP
from ditcheck.properties import random_feature_layer as RF
from ditcheck.properties import samplers as P
from ditcheck.gp.random_feature_layer import rf1_kernel
from ditcheck.reference import gp
from ditcheck.reference.errors import InvalidArgumentError

IDS = ("RF1", "GP1", "GP2", "GP3", "GP4", "RT1", "RT2", "RT3", "RT4")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the audit's workers
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("claim_id", IDS)
def test_claim_runs_in_quick_mode(claim_id: str) -> None:
    claim = registry()[claim_id]
    result = run_claim(claim, "quick", 0)
    assert result.verdict != "ERROR", (result.summary, result.errors)
    assert not result.errors


def test_registered_in_theory_order() -> None:
    ids = [c.id for c in claims_samplers.CLAIMS + claims_gp.CLAIMS]
    assert sorted(ids) == sorted(IDS)
    order = list(registry())
    assert [i for i in order if i in IDS] == ["RF1", "GP1", "GP2", "GP3", "GP4", "RT1", "RT2", "RT3", "RT4"]


# ---- planted bugs ----------------------------------------------------------------------------------------


def test_rt1_planted_wrong_coupling_is_violated() -> None:
    """c = 1/(e^eta - 1) instead of 1/(e^(2 eta) - 1): the eigenvalues of hess g no longer sit within L of c."""
    claim = dataclasses.replace(claims_samplers.RT1, measure=functools.partial(
        P.measure_rt1, coupling=lambda eta: 1 / math.expm1(eta)))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def _ula_kernel(potential, z, steps, step_size, generator):
    """MALA without its Metropolis test (unadjusted Langevin): not invariant, its law drifts by O(tau)."""
    for _ in range(steps):
        state = potential.evaluate(z)
        z = z - step_size * state.grad + math.sqrt(2 * step_size) * samplers._normal(z, generator)
    return z, 1.0


def test_rt2_planted_unadjusted_kernel_is_violated() -> None:
    claim = dataclasses.replace(claims_samplers.RT2, measure=functools.partial(
        P.measure_rt2_mala_invariance, kernel=_ula_kernel))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_ks_critical_value_inverts_the_p_value() -> None:
    for alpha, n in ((1e-6, 6000), (0.05, 100), (0.5 / 3, 17)):
        critical = P.ks_critical_value(alpha, n)
        assert P.ks_pvalue(critical * (1 + 1e-9), n) <= alpha <= P.ks_pvalue(critical * (1 - 1e-9), n)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        P.ks_critical_value(0.0, 10)
    with pytest.raises(InvalidArgumentError, match="n"):
        P.ks_critical_value(0.1, 0)


def test_rt3_planted_covariance_error_is_violated() -> None:
    def wrong(friction, scale, step):  # -4 instead of -3 in Var xi_z
        cov = samplers.uld_noise_covariance(friction, scale, step)
        cov[0, 0] -= scale / friction**2
        return cov

    claim = dataclasses.replace(claims_samplers.RT3, measure=functools.partial(
        P.measure_rt3_uld_covariance, covariance=wrong))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def four_term_series_covariance(friction: float, scale: float, step: float) -> np.ndarray:
    """The previous implementation: Var xi_z's bracket by a 4-term series below gamma tau = 1e-2 (truncation ~0.04 x^4)."""
    cov = samplers.uld_noise_covariance(friction, scale, step)
    x = friction * step
    if x < 1e-2:
        cov[0, 0] = scale / friction**2 * (2 * x**3 / 3 - x**4 / 2 + 7 * x**5 / 30 - x**6 / 12)
    return cov


def test_rt3_planted_truncated_series_is_violated() -> None:
    """The old 4-term series was 'exact' only under a fixed 1e-9 tolerance (7.4e-11 worst): the derived bound sees it."""
    case = P.ULDCase(1.0, 1.0, 0.009)
    assert P.measure_rt3_uld_covariance(case).ratio <= 1
    assert P.measure_rt3_uld_covariance(case, covariance=four_term_series_covariance).ratio > 1e4
    claim = dataclasses.replace(claims_samplers.RT3, measure=functools.partial(
        P.measure_rt3_uld_covariance, covariance=four_term_series_covariance))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_rt3_planted_relative_error_of_1e_minus_13_is_caught() -> None:
    """Var xi_z off by 1e-13 relative (about 450 u): beyond the derived bound at the grid's smallest gamma tau."""
    def off(friction, scale, step):
        cov = samplers.uld_noise_covariance(friction, scale, step)
        cov[0, 0] *= 1 + 1e-13
        return cov

    assert P.measure_rt3_uld_covariance(P.ULDCase(1.0, 1.0, 0.02), covariance=off).ratio > 1


def test_rt3_reference_keeps_its_digits_at_large_friction_times_step() -> None:
    """gamma tau = 100 (friction 20, step 5): the Van Loan reference at a fixed 40 digits was off by 1e3 relative."""
    closed = samplers.uld_noise_covariance(20.0, 10.0, 5.0)
    assert np.allclose(P.uld_covariance_van_loan(20.0, 10.0, 5.0), closed, rtol=1e-12, atol=0)
    assert P.measure_rt3_uld_covariance(P.ULDCase(20.0, 10.0, 5.0)).ratio <= 1


def test_rt4_planted_sampler_costing_d4_evaluations_is_inconsistent() -> None:
    """A sampler charged d^4 score evaluations per step of the real one: NFE-to-threshold grows like d^(4 + ...)."""

    def costly(oracle, name, budget, x, generator):
        result, detail = claims_samplers.sampler_bench.run_one(oracle, name, budget, x, generator)
        return dataclasses.replace(result, score_evals=result.score_evals * x.shape[1] ** 4), detail

    claim = dataclasses.replace(claims_samplers.RT4, rates=functools.partial(claims_samplers.rt4_series, run=costly))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "inconsistent"
    assert not result.fits[-1].consistent  # RTK-MALA (sample-based), claimed at most d^2


def _noise_off(relative: float, entry: int = 1):
    """A ULD transition whose velocity (entry 1) or position (entry 0) noise variance is off by ``relative``."""
    def transition(kappa, scale, step, friction):
        a, q = P.uld_transition(kappa, scale, step, friction)
        q = q.copy()
        q[entry, entry] *= 1 + relative
        return a, q
    return transition


def test_rt4_uld_exact_rates_and_a_1e_minus_3_noise_error_is_inconsistent() -> None:
    """Correct: 1/tau* exponents 1 (in 1/eps) and 1/2 (in d). Var xi_v 1e-3 too large leaves a variance bias that no step
    removes: small eps become unreachable, which contradicts RT4 outright (ERROR, the audit fails)."""
    good = claims_samplers.rt4_uld_series("quick")
    fits = [fit_rate(series) for series in good]
    assert all(f.consistent for f in fits)
    assert fits[0].exponent == pytest.approx(1.0, abs=0.05) and fits[1].exponent == pytest.approx(0.5, abs=0.1)
    with pytest.raises(claims_samplers.RT4UnreachableError, match="never reaches"):
        claims_samplers.rt4_uld_series("quick", _noise_off(1e-3))
    claim = dataclasses.replace(claims_samplers.RT4, rates=lambda mode, seed: claims_samplers.rt4_uld_series(
        mode, _noise_off(1e-3)))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "ERROR" and result.failed and "never reaches" in result.summary


def test_rt4_uld_closed_form_matches_the_orthogonal_recursion_and_the_sampler() -> None:
    """The closed form (A^K, Lyapunov) equals the step-by-step recursion at s0 = 0 and, at s0^2 = 0.25, the variance of
    samplers.rtk_uld's output (chi-square over n d squared values: |z| <= 5, false alarm ~ 6e-7)."""
    from ditcheck.diffusion.oracles import MixtureOracle
    from ditcheck.properties import sampler_rates as rates
    from ditcheck.reference.mixtures import gaussian_mixture

    grid = samplers.time_grid(7.0, 0.02, 5, "log")
    closed = rates.rtk_uld_gaussian_variance(grid, [1, 7, 40], 0.3, 1.0, 0.0)
    stepwise = [P.rtk_uld_orthogonal_variance(grid, k, 0.3, 1.0, "ddpm") for k in (1, 7, 40)]
    assert closed == pytest.approx(stepwise, rel=1e-12)
    dim, n = 4, 20000
    oracle = MixtureOracle(gaussian_mixture([1.0], np.zeros((1, dim)), 0.25 * np.eye(dim)[None]), "ou-unit")
    generator = torch.Generator().manual_seed(5)
    x = samplers.prior(oracle, n, generator=generator)
    out = samplers.rtk_uld(oracle, x, grid, inner_steps=6, step_size=0.4, friction=1.0, init="ddpm",
                           generator=generator).x
    w = float(rates.rtk_uld_gaussian_variance(grid, 6, 0.4, 1.0, 0.25))
    z = (float(out.pow(2).sum()) / w - n * dim) / math.sqrt(2 * n * dim)
    assert abs(z) <= 5
    wrong = float(rates.rtk_uld_gaussian_variance(grid, 6, 0.4, 1.0, 0.25, _noise_off(0.2)))
    assert abs((float(out.pow(2).sum()) / wrong - n * dim) / math.sqrt(2 * n * dim)) > 5  # the test has power
    tv = rates.isotropic_gaussian_tv(1.1, 1.0, 1)
    crossing = math.sqrt(math.log(1.1) / (1 - 1 / 1.1))  # 1-D by hand: 2 (Phi(r) - Phi(r / sqrt(1.1)))
    assert tv == pytest.approx(2 * (scipy.stats.norm.cdf(crossing) - scipy.stats.norm.cdf(crossing / math.sqrt(1.1))),
                               rel=1e-12)


def test_chi2_cdf_without_scipy_is_accurate_enough_for_the_tv_thresholds() -> None:
    """properties.sampler_rates.chi2_cdf (torch, so the audit runs without scipy) against scipy's chi2.cdf: below 1e-9
    absolute (1e-4 of the smallest eps RT4 uses) from d = 1 to 65536, near the mode where the TVs' CDFs are read."""
    from ditcheck.properties import sampler_rates as rates

    for dim in (1, 2, 5, 16, 40, 48, 64, 100, 1024, 16384, 65536):
        x = dim * np.geomspace(0.5, 2.0, 2001)
        assert np.max(np.abs(rates.chi2_cdf(x, dim) - scipy.stats.chi2.cdf(x, dim))) < 1e-9, dim


def test_gp2_planted_too_fast_rate_is_violated() -> None:
    """A bound (1 - 1/kappa)^(2K): twice the claimed contraction, which gradient descent does not achieve."""
    claim = dataclasses.replace(claims_gp.GP2, measure=functools.partial(
        GP.measure_gp2_unrolled, rate=lambda kappa, k: (1 - 1 / np.asarray(kappa)) ** (2 * k)))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_gp3_planted_banding_that_keeps_the_full_kernel_is_not_reproduced() -> None:
    """A banding report that ignores the band (w = H): nothing loses positive-definiteness, no error is inflated."""

    def full_band(gamma_matrix, width, *args, **kwargs):
        return gp.banding_report(gamma_matrix, gamma_matrix.shape[0] - 1, *args, **kwargs)

    claim = dataclasses.replace(claims_gp.GP3, observe=lambda mode, seed: GP.gp3_observation(report=full_band))
    assert run_claim(claim, "quick", 0).verdict == "not reproduced"


def test_gp4_planted_network_without_positions_is_not_reproduced() -> None:
    """Position embedding zeroed: attention can only use content, its lag profile is flat (contrast < 0.5)."""
    configs = [dataclasses.replace(config, position_embedding=False)
               for config in claims_gp._gp4_configs("quick", 0)]
    claim = dataclasses.replace(claims_gp.GP4, observe=lambda mode, seed: GP.gp4_observation(configs))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "not reproduced", result.summary


def _biased_kernel(x0, keys, x0_other, keys_other, scale, mean=None):
    """2 s^2 in place of s^2 (tests/test_random_feature_layer.py's planted bug): the error stalls at the bias."""
    return rf1_kernel(x0, keys, x0_other, keys_other, math.sqrt(2) * scale, mean)


def test_rf1_planted_biased_kernel_is_inconsistent() -> None:
    claim = dataclasses.replace(claims_gp.RF1, rates=lambda mode, seed: [
        RF.rf1_rate_series(RF.RateCase(heads=(64, 256, 1024, 4096), budget=2**14, seed=seed), kernel=_biased_kernel)])
    assert run_claim(claim, "quick", 0).verdict == "inconsistent"


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="mode"):
        claims_samplers.rt4_series("fast", 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="configs"):
        GP.gp4_observation([])


def test_rt1_potential_with_a_slightly_weak_coupling_is_violated() -> None:
    """Its Hessian still lands inside [c - L, c + L] at most points: the identity gap is what catches it."""
    class WeakCoupling(samplers.RTKPotential):  # planted bug: quadratic term 1.3x too weak
        def _coupling_grad(self, z):
            return super()._coupling_grad(z) / 1.3

    planted = dataclasses.replace(registry()["RT1"], measure=functools.partial(P.measure_rt1, potential=WeakCoupling))
    assert run_claim(planted, "quick", 0).verdict == "VIOLATED"


def test_rt1_coupling_off_by_1e_minus_6_is_violated_while_the_band_ratio_stays_1() -> None:
    """A coupling 1e-6 too weak: the tautological band ratio (context) stays at 1, the identity gap catches it."""
    class SlightlyWeak(samplers.RTKPotential):
        def _coupling_grad(self, z):
            return super()._coupling_grad(z) * (1 - 1e-6)

    case = claims_samplers._rt1_grid("quick")[0]
    m = P.measure_rt1(case, potential=SlightlyWeak)
    assert m.ratio > 1 and m.forms["identity gap / allowance"] > 1e3
    assert m.forms["band: max |eig - c| / L (1 by construction)"] <= 1 + 1e-5
    assert P.measure_rt1(case).ratio <= 1
    planted = dataclasses.replace(registry()["RT1"], measure=functools.partial(P.measure_rt1, potential=SlightlyWeak))
    result = run_claim(planted, "quick", 0)
    assert result.verdict == "VIOLATED" and result.kind == "exact"
