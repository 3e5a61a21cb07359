"""Samplers and oracles: exact oracles vs the reference, sampler identities and convergence, RT1-RT3, LD5, CF3, ULA.

Statistical checks use fixed seeds; their false-alarm rates are stated at each check (properties/samplers.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ditcheck import bounds

from ditcheck.diffusion import metrics, samplers
from ditcheck.diffusion.oracles import GaussianOracle, MixtureOracle, ModelOracle, TorchSchedule, gp_oracle
from ditcheck.properties import samplers as P
from ditcheck.properties.mixtures import mixture_specs
from ditcheck.properties.strategies import orthonormal_columns
from ditcheck.reference import gp, mixtures, schedules
from ditcheck.reference.errors import InvalidArgumentError, ShapeError, TimeOutOfRangeError
from helpers import at_most, expect_caught


def _mixture_2d() -> mixtures.LatentMixture:
    return mixtures.gaussian_mixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [np.eye(2) * 0.3, np.diag([0.5, 0.2])])


# ----------------------------------------------------------------------------------------
# Oracles


@pytest.mark.parametrize("schedule", ["ou-half", "ou-unit", "vp-linear"])
def test_torch_schedule_matches_reference(schedule):
    t = np.array([1e-4, 0.01, 0.3, 0.9])
    sched = TorchSchedule(schedule)
    tt = torch.as_tensor(t)
    np.testing.assert_allclose(sched.alpha(tt).numpy(), schedules.alpha(t, schedule), rtol=1e-14)
    np.testing.assert_allclose(sched.sigma2(tt).numpy(), schedules.sigma2(t, schedule), rtol=1e-13)
    # f = d log alpha / dt against a central difference
    h = 1e-6
    numeric = (np.log(schedules.alpha(t + h, schedule)) - np.log(schedules.alpha(t, schedule))) / h
    np.testing.assert_allclose(sched.drift(tt).numpy(), numeric, rtol=1e-4, atol=1e-6)


@given(spec=mixture_specs(), t=st.floats(0.01, 3.0), per_row=st.booleans())
@at_most(40)
def test_mixture_oracle_matches_reference(spec, t, per_row):
    mixture = spec.build()
    oracle = MixtureOracle(mixture, "ou-unit")
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((5, mixture.ambient_dim))
    times = t * (1 + rng.random(5)) if per_row else t
    score = oracle.score(torch.as_tensor(x), times).numpy()
    log_p = oracle.log_density(torch.as_tensor(x), times).numpy()
    expected_score = mixtures.score(mixture, x, times, "ou-unit")
    expected_log = mixtures.log_density(mixture, x, times, "ou-unit")
    # the oracle takes B^T B = I; the reference uses the exact Gram matrix (|B^T B - I| <= 1e-10 accepted)
    scale = 1 + np.abs(expected_score).max() + np.abs(x).max() / float(np.min(schedules.sigma2(times, "ou-unit")))
    np.testing.assert_allclose(score, expected_score, atol=1e-9 * scale)
    np.testing.assert_allclose(log_p, expected_log, atol=1e-9 * (1 + np.abs(expected_log).max()))
    both = oracle.log_density_and_score(torch.as_tensor(x), times)
    np.testing.assert_allclose(both[1].numpy(), score, rtol=1e-14, atol=1e-14)
    assert oracle.counts() == (2, 2)


def test_mixture_oracle_dtype_and_autograd():
    mixture = _mixture_2d()
    oracle = MixtureOracle(mixture, "ou-unit", dtype=torch.float32)
    x = torch.randn(7, 2, dtype=torch.float32)
    assert oracle.score(x, 0.5).dtype == torch.float32
    oracle64 = MixtureOracle(mixture, "ou-unit")
    z = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(oracle64.log_density(z, 0.5).sum(), z)
    np.testing.assert_allclose(grad.numpy(), oracle64.score(z.detach(), 0.5).numpy(), atol=1e-13)


def test_gaussian_oracle_closed_form_and_curvature():
    mean, cov = np.array([0.5, -1.0]), np.array([[0.6, 0.2], [0.2, 0.3]])
    oracle = GaussianOracle(mean, cov, "ou-unit")
    t = 0.4
    alpha, sigma2 = math.exp(-t), -math.expm1(-2 * t)
    c_t = alpha**2 * cov + sigma2 * np.eye(2)
    x = np.random.default_rng(2).standard_normal((5, 2))
    expected = -np.linalg.solve(c_t, (x - alpha * mean).T).T
    np.testing.assert_allclose(oracle.score(torch.as_tensor(x), t).numpy(), expected, rtol=1e-12, atol=1e-13)
    assert oracle.curvature(t) == pytest.approx(1 / np.linalg.eigvalsh(c_t)[0], rel=1e-12)


def test_gp_oracle_matches_gp1():
    gamma = gp.gamma_matrix(5, "exponential", length_scale=2.0)
    sigma_matrix = np.array([[1.0, 0.3], [0.3, 0.5]])
    oracle = gp_oracle(gamma, sigma_matrix, "ou-half")
    x = np.random.default_rng(0).standard_normal((4, 5, 2))
    got = oracle.score(torch.as_tensor(x.reshape(4, -1)), 0.7).numpy().reshape(4, 5, 2)
    np.testing.assert_allclose(got, gp.gp_score(x, 0.7, gamma, sigma_matrix, "ou-half"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("parameterisation", ["eps", "x0", "v", "score"])
def test_model_oracle_converts_every_parameterisation(parameterisation):
    mixture = _mixture_2d()
    exact = MixtureOracle(mixture, "vp-linear")
    sched = TorchSchedule("vp-linear")

    def model(x, t):  # the exact model in the stated parameterisation (t per row)
        alpha, sigma = sched.alpha(t)[:, None], sched.sigma2(t).sqrt()[:, None]
        score = exact.score(x, t)
        eps = -sigma * score
        x0 = (x - sigma * eps) / alpha
        return {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": score}[parameterisation]

    oracle = ModelOracle(model, 2, parameterisation, "vp-linear")
    x = torch.randn(6, 2, dtype=torch.float64)
    np.testing.assert_allclose(oracle.score(x, 0.4).numpy(), exact.score(x, 0.4).numpy(), rtol=1e-10, atol=1e-10)
    with pytest.raises(InvalidArgumentError) as info:
        oracle.log_density(x, 0.4)
    assert info.value.argument == "oracle"


def test_oracle_bad_input():
    oracle = MixtureOracle(_mixture_2d())
    with pytest.raises(ShapeError):
        oracle.score(torch.zeros(3, 5, dtype=torch.float64), 0.5)
    with pytest.raises(TimeOutOfRangeError):
        oracle.score(torch.zeros(3, 2, dtype=torch.float64), 0.0)
    with pytest.raises(InvalidArgumentError) as info:
        TorchSchedule("ddpm")
    assert info.value.argument == "schedule"
    with pytest.raises(InvalidArgumentError) as info:
        ModelOracle(lambda x, t: x, 2, "epsilon")
    assert info.value.argument == "parameterisation"
    with pytest.raises(InvalidArgumentError) as info:
        samplers.ddpm(oracle, torch.zeros(3, 2, dtype=torch.float64), [0.1, 0.5])
    assert info.value.argument == "times"
    with pytest.raises(InvalidArgumentError) as info:
        samplers.ddim(oracle, torch.zeros(3, 2, dtype=torch.float64), [0.5, 0.1], eta=2.0)
    assert info.value.argument == "eta"
    with pytest.raises(InvalidArgumentError) as info:
        samplers.rtk_mala(ModelOracle(lambda x, t: x, 2, "eps"), torch.zeros(3, 2, dtype=torch.float64), [0.5, 0.1])
    assert info.value.argument == "energy_nodes"
    for call, argument in ((lambda: samplers.rtk_grid(0.1, 0, 0.2), "segments"),
                           (lambda: bounds.ld5_orthogonal_variance(1.0, 2.0, 0.1), "T"),
                           (lambda: bounds.ld5_orthogonal_variance(2.0, 0.1, -1.0), "mu")):
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert info.value.argument == argument


# ----------------------------------------------------------------------------------------
# Samplers


def test_ddim_with_eta_one_is_ddpm():
    """Song et al. 2021: DDIM's eta = 1 is DDPM ancestral sampling (same noise draws: equal to rounding)."""
    oracle = MixtureOracle(_mixture_2d())
    grid = samplers.time_grid(3.0, 0.05, 12)
    x = samplers.prior(oracle, 50, generator=torch.Generator().manual_seed(1))
    a = samplers.ddpm(oracle, x, grid, generator=torch.Generator().manual_seed(2))
    b = samplers.ddim(oracle, x, grid, eta=1.0, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(a.x.numpy(), b.x.numpy(), rtol=1e-12, atol=1e-12)
    assert a.score_evals == b.score_evals == 12 and a.energy_evals == 0


@pytest.mark.parametrize("name, steps, tolerance, tv_tolerance", [
    ("ddpm", 200, 0.06, 0.06), ("ddim", 100, 0.05, 0.06), ("pf-euler", 200, 0.06, 0.06), ("pf-heun", 30, 0.05, 0.06),
    ("euler-maruyama", 200, 0.08, 0.07), ("rtk-mala", 10, 0.05, 0.06), ("rtk-uld", 10, 0.1, 0.09)])
def test_samplers_reach_the_target(name, steps, tolerance, tv_tolerance):
    """Each sampler with exact scores lands near p_{t_end}: W2 of fitted Gaussians (Monte Carlo floor ~0.02 at n = 8000),
    binned TV (noise floor 0.035 at n = 8000, 20 x 20 bins). RTK-ULD's exact-OU step keeps an O(tau) bias."""
    mixture = _mixture_2d()
    oracle = MixtureOracle(mixture)
    t_end = 0.05
    generator = torch.Generator().manual_seed(0)
    x = samplers.prior(oracle, 8000, generator=generator)
    if name.startswith("rtk"):
        # RT1's segments (twice as long: 20 segments), ``steps`` inner steps per segment
        grid = samplers.rtk_adaptive_grid(oracle, 7.0, t_end, factor=2.0)
        result = samplers.SAMPLERS[name](oracle, x, grid, inner_steps=steps, generator=generator)
    else:
        result = samplers.SAMPLERS[name](oracle, x, samplers.time_grid(7.0, t_end, steps, "log"), generator=generator)
    target = mixtures.diffuse(mixture, t_end, "ou-unit")
    assert metrics.w2_fitted_gaussian(result.x, target) < tolerance
    assert metrics.tv_binned(result.x, target, bins=20).value < tv_tolerance


def test_rtk_mala_counts_and_line_integral_energies():
    """Exact energies: inner + 1 score and energy calls per segment. Score-only (3-node line integrals) agrees closely."""
    mixture = _mixture_2d()
    oracle = MixtureOracle(mixture)
    x = samplers.prior(oracle, 3000, generator=torch.Generator().manual_seed(5))
    grid = samplers.time_grid(7.0, 0.05, 5, "log")
    exact = samplers.rtk_mala(oracle, x, grid, inner_steps=20, init="ddpm", generator=torch.Generator().manual_seed(6))
    assert (exact.score_evals, exact.energy_evals) == (5 * 22, 5 * 21)
    line = samplers.rtk_mala(oracle, x, grid, inner_steps=20, energy_nodes=3, init="ddpm",
                             generator=torch.Generator().manual_seed(6))
    assert (line.score_evals, line.energy_evals) == (5 * (2 + 20 * 4), 0)  # start, z0, then 1 + 3 nodes per step
    assert abs(line.acceptance - exact.acceptance) < 0.02
    target = mixtures.diffuse(mixture, 0.05, "ou-unit")
    assert metrics.w2_fitted_gaussian(line.x, target) < 0.05


# ----------------------------------------------------------------------------------------
# RT1


@given(P.rt1_cases())
@at_most(15)
def test_rt1_property(case):
    P.check_rt1(case)


def test_rt1_constants():
    lipschitz = 3.7
    eta = bounds.rt1_segment(lipschitz)
    constants = bounds.rt1_constants(eta, lipschitz)
    assert constants.coupling == pytest.approx(2 * lipschitz, rel=1e-14)
    assert constants.condition_number == pytest.approx(3.0, rel=1e-14)
    with pytest.raises(InvalidArgumentError):
        bounds.rt1_segment(0.0)


def test_rt1_catches_wrong_coupling():
    expect_caught(lambda c: P.check_rt1(c, coupling=lambda eta: 1 / math.expm1(eta)), P.rt1_cases(), claim="RT1")


def test_rt1_catches_wrong_potential_curvature():
    class HalfCoupling(samplers.RTKPotential):  # planted bug: coupling gradient a (x - a z)/(2 v)
        def _coupling_grad(self, z):
            return super()._coupling_grad(z) / 2

    expect_caught(lambda c: P.check_rt1(c, potential=HalfCoupling), P.rt1_cases(), claim="RT1")


# ----------------------------------------------------------------------------------------
# RT2 (false alarm RT2_ALPHA = 1e-6 per case)


@given(P.rt2_cases())
@at_most(12)
def test_rt2_mala_invariance(case):
    P.check_rt2_mala_invariance(case)


def _mala_variant(proposal_variance_factor: float, batch_accept: bool):
    """A copy of samplers.mala with one planted bug."""

    def kernel(potential, z, steps, step_size, generator):
        state = potential.evaluate(z)
        for _ in range(steps):
            proposal = z - step_size * state.grad + math.sqrt(2 * step_size) * samplers._normal(z, generator)
            new = potential.evaluate(proposal)
            denominator = 4 * step_size * proposal_variance_factor
            forward = (proposal - z + step_size * state.grad).pow(2).sum(-1) / denominator
            backward = (z - proposal + step_size * new.grad).pow(2).sum(-1) / denominator
            log_ratio = -potential.difference(proposal, new, z, state) + forward - backward
            uniform = torch.rand(z.shape[0], generator=generator, dtype=z.dtype)
            accept = torch.log(uniform) < log_ratio
            if batch_accept:
                accept = accept[:1].expand(z.shape[0])
            z = torch.where(accept[:, None], proposal, z)
            state = samplers.PotentialState(torch.where(accept, new.value, state.value),
                                            torch.where(accept[:, None], new.grad, state.grad))
        return z, 0.0

    return kernel


def test_rt2_correct_copy_passes():
    """The copy used for planted bugs is itself invariant when unmodified (so the bugs below are the only change)."""
    P.check_rt2_mala_invariance(P.RT2Case(P.SamplerMixtureCase(2, 2, 7), 0.2, 0.5, 1.0, 1, 2),
                                kernel=_mala_variant(1.0, False))


def test_rt2_catches_wrong_proposal_variance():
    expect_caught(lambda c: P.check_rt2_mala_invariance(c, kernel=_mala_variant(0.5, False)), P.rt2_cases(),
                  claim="RT2")


def test_rt2_catches_one_accept_for_the_batch():
    expect_caught(lambda c: P.check_rt2_mala_invariance(c, kernel=_mala_variant(1.0, True)), P.rt2_cases(),
                  claim="RT2")


# ----------------------------------------------------------------------------------------
# RT3


@given(P.uld_cases())
@at_most(30)
def test_rt3_uld_covariance(case):
    P.check_rt3_uld_covariance(case)


def test_rt3_catches_covariance_error():
    def wrong(friction, scale, step):  # planted bug: -4 instead of -3 in Var xi_z
        cov = samplers.uld_noise_covariance(friction, scale, step)
        cov[0, 0] -= scale / friction**2
        return cov

    expect_caught(lambda c: P.check_rt3_uld_covariance(c, covariance=wrong), P.uld_cases(), claim="RT3")


def test_rt3_catches_missing_cross_covariance():
    def wrong(friction, scale, step):
        cov = samplers.uld_noise_covariance(friction, scale, step)
        return np.diag(np.diag(cov))

    expect_caught(lambda c: P.check_rt3_uld_covariance(c, covariance=wrong), P.uld_cases(), claim="RT3")


def _uld_lyapunov_reference(kappa: float, scale: float, step: float, friction: float) -> np.ndarray:
    """The stationary covariance of the ULD chain on kappa z^2 / 2, built independently of the implementation: the
    exact-OU step with the gradient frozen at the step's start, v' = e v - u k1 kappa z + xi_v,
    z' = z + k1 v - u k2 kappa z + xi_z (e = e^(-gamma tau), k1 = int_0^tau e^(-gamma r) dr, k2 = int_0^tau k1(r) dr,
    integrated here by mpmath quadrature), the noise covariance from the Van Loan block exponential (mpmath), and
    S = A S A^T + Q solved by scipy's discrete Lyapunov solver."""
    import mpmath
    from scipy.linalg import solve_discrete_lyapunov

    with mpmath.workdps(40):
        k1 = float(mpmath.quad(lambda r: mpmath.exp(-friction * r), [0, step]))
        k2 = float(mpmath.quad(lambda r: (1 - mpmath.exp(-friction * r)) / friction, [0, step]))
    a = np.array([[1 - scale * k2 * kappa, k1], [-scale * k1 * kappa, math.exp(-friction * step)]])
    return solve_discrete_lyapunov(a, P.uld_covariance_van_loan(friction, scale, step))


def test_uld_stationary_on_gaussian():
    """Exact-OU ULD on N(0, s^2 I) settles at the discrete chain's own stationary law (Lyapunov), not at N(0, s^2): the
    implementation's uld_stationary_covariance equals the independently built Lyapunov solution (1.3245 s^2 for z at
    u kappa = 1, gamma = 1, tau = 0.5), and the sampler's variances match it. 100000 squared values: 5 sd = 3%."""
    variances = torch.full((2,), 0.7, dtype=torch.float64)
    potential = P.GaussianPotential(variances)
    generator = torch.Generator().manual_seed(3)
    z0 = torch.randn(50000, 2, generator=generator, dtype=torch.float64) * math.sqrt(0.7)
    # spectral radius 0.835 per step: after 80 steps the start's offset has decayed by 6e-7
    z, v = samplers.uld(potential, z0, 80, 0.5, 1.0, 0.7, generator)
    exact = P.uld_stationary_covariance(1 / 0.7, 0.7, 0.5, 1.0)
    reference = _uld_lyapunov_reference(1 / 0.7, 0.7, 0.5, 1.0)
    assert exact == pytest.approx(reference, rel=1e-12)
    assert reference[0, 0] / 0.7 == pytest.approx(1.3245, abs=1e-4)
    for kappa, scale, step, friction in ((2.0, 0.5, 0.05, 1.0), (1.0, 0.3, 1.5, 3.0), (4.0, 0.1, 0.2, 0.2)):
        assert P.uld_stationary_covariance(kappa, scale, step, friction) == pytest.approx(
            _uld_lyapunov_reference(kappa, scale, step, friction), rel=1e-10)
    assert float(z.pow(2).mean()) / exact[0, 0] == pytest.approx(1.0, abs=0.03)
    assert float(v.pow(2).mean()) / exact[1, 1] == pytest.approx(1.0, abs=0.03)


def test_uld_stationary_bias_is_linear_in_the_step():
    """The frozen-gradient step's variance bias kappa S_zz - 1 ~ tau/2 (u kappa = 1, gamma = 1): slope 1 in tau."""
    steps = np.array([0.0125, 0.025, 0.05])
    biases = np.array([P.uld_stationary_covariance(2.0, 0.5, tau, 1.0)[0, 0] * 2.0 - 1 for tau in steps])
    assert np.polyfit(np.log(steps), np.log(biases), 1)[0] == pytest.approx(1.0, abs=0.02)
    assert biases[0] / steps[0] == pytest.approx(0.5, abs=0.01)


@given(P.rtk_uld_cases())
@at_most(30)
def test_rt3_rtk_uld_orthogonal(case):
    P.check_rt3_rtk_uld_orthogonal(case)


def _rtk_uld_variant(covariance=samplers.uld_noise_covariance, scale_factor=1.0):
    """samplers.rtk_uld with one planted bug (its noise covariance or its scale u)."""

    def sampler(oracle, x, times, *, inner_steps, step_size, friction, init, generator):
        for t, s in samplers._segments(oracle, x, times):
            potential = samplers.RTKPotential(oracle, x, t, s, energy_nodes=1)
            z = samplers._initial(oracle, x, t, s, init, generator)
            scale = scale_factor / samplers._smoothness(potential, None)
            x, _ = samplers.uld(potential, z, inner_steps, step_size, friction, scale, generator, covariance=covariance)
        return samplers.SampleResult(x, 0, 0)

    return sampler


def test_rt3_rtk_uld_correct_copy_passes():
    P.check_rt3_rtk_uld_orthogonal(P.RTKULDCase(4, 2, 1, 3, 8, 0.5, 1.0, "ddpm"), sampler=_rtk_uld_variant())


def test_rt3_rtk_uld_catches_missing_cross_covariance():
    def wrong(friction, scale, step):
        return np.diag(np.diag(samplers.uld_noise_covariance(friction, scale, step)))

    expect_caught(lambda c: P.check_rt3_rtk_uld_orthogonal(c, sampler=_rtk_uld_variant(covariance=wrong)),
                  P.rtk_uld_cases(), claim="RT3")


def test_rt3_rtk_uld_catches_wrong_scale():
    """u = 1/(2 (c + L)): the continuous dynamics keep their target, the discrete chain's bias changes."""
    expect_caught(lambda c: P.check_rt3_rtk_uld_orthogonal(c, sampler=_rtk_uld_variant(scale_factor=0.5)),
                  P.rtk_uld_cases(), claim="RT3")


# ----------------------------------------------------------------------------------------
# LD5


@given(P.ld5_cases())
def test_ld5_bound(case):
    P.check_ld5_bound(case)


def test_ld5_catches_wrong_recursion():
    def wrong(T, T0, mu):  # noqa: N803; planted bug: the noise term counted twice per step
        return bounds.ld5_orthogonal_variance(T, T0, mu) + (T - T0)

    expect_caught(lambda c: P.check_ld5_bound(c, variance=wrong), P.ld5_cases(), claim="LD5")


@given(P.ld5_sampler_cases())
@at_most(10)
def test_ld5_sampler(case):
    P.check_ld5_sampler(case)


def test_ld5_sampler_catches_wrong_noise():
    def wrong(oracle, x, times, *, generator=None):  # planted bug: noise sqrt(2 h) instead of sqrt(-2 f h)
        grid = torch.as_tensor(times, dtype=torch.float64)
        for t, s in zip(grid[:-1], grid[1:]):
            h = float(t - s)
            x = x + h / 2 * (x + 2 * oracle.score(x, t)) + math.sqrt(2 * h) * samplers._normal(x, generator)
        return samplers.SampleResult(x, 0, 0)

    expect_caught(lambda c: P.check_ld5_sampler(c, sampler=wrong), P.ld5_sampler_cases(), claim="LD5",
                  max_examples=5)


def test_subspace_error_of_the_sampler_matches_ld5():
    basis = orthonormal_columns(8, 2, 0)
    mixture = mixtures.LatentMixture(basis, [1.0], [[0.5, -0.5]], [np.eye(2) * 0.5])
    oracle = MixtureOracle(mixture, "ou-half")
    x = samplers.prior(oracle, 3000, generator=torch.Generator().manual_seed(0))
    out = samplers.euler_maruyama(oracle, x, samplers.time_grid(4.0, 0.1, 39), generator=torch.Generator().manual_seed(1))
    errors = metrics.subspace_error(out.x, basis)
    v = bounds.ld5_orthogonal_variance(4.0, 0.1, 0.1)
    assert v <= bounds.ld5_bound(0.1, 0.1)
    # E ||y||^2 = 6 v; the mean over 3000 draws has relative sd sqrt(2/18000) ~ 0.011
    assert float(errors.pow(2).mean()) / (6 * v) == pytest.approx(1.0, abs=0.05)


# ----------------------------------------------------------------------------------------
# CF3, ULA


@given(P.cf3_cases())
@at_most(6)
def test_cf3_early_stopping(case):
    P.check_cf3_early_stopping(case)


def test_cf3_catches_a_law_that_does_not_converge():
    def floor(mixture, t0):  # planted bug: a variance floor of 1e-2 that early stopping never removes
        diffused = mixtures.diffuse(mixture, t0, "ou-half")
        return mixtures.gaussian_mixture(diffused.weights, diffused.means, diffused.covariances + 1e-2)

    expect_caught(lambda c: P.check_cf3_early_stopping(c, law=floor), P.cf3_cases(), claim="CF3", max_examples=5)


@given(P.ula_cases())
@at_most(2)
def test_ula_bias_linear(case):
    P.check_ula_bias_linear(case)


def test_ula_catches_wrong_noise():
    def wrong(potential, z, steps, step_size, generator):  # planted bug: noise sqrt(h), not sqrt(2 h)
        for _ in range(steps):
            z = z - step_size * potential.evaluate(z).grad + math.sqrt(step_size) * samplers._normal(z, generator)
        return z

    expect_caught(lambda c: P.check_ula_bias_linear(c, kernel=wrong), P.ula_cases(), claim="ULA", max_examples=3)


# ----------------------------------------------------------------------------------------
# Warm start and the benchmark


def test_rtk_ddpm_start_costs_one_evaluation_per_segment():
    oracle = MixtureOracle(_mixture_2d())
    x = samplers.prior(oracle, 500, generator=torch.Generator().manual_seed(0))
    grid = samplers.time_grid(7.0, 0.05, 5, "log")
    result = samplers.rtk_uld(oracle, x, grid, inner_steps=4, init="ddpm", generator=torch.Generator().manual_seed(1))
    assert result.score_evals == 5 * (4 + 1)
    with pytest.raises(InvalidArgumentError) as info:
        samplers.rtk_mala(oracle, x, grid, init="zero")
    assert info.value.argument == "init"


def test_bench_samplers_runs_and_reports(tmp_path, capsys):
    import argparse

    from ditcheck.bench import samplers as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    plot = tmp_path / "samplers.png"
    out = tmp_path / "samplers.json"
    args = parser.parse_args(["--quick", "--samples", "100", "--budgets", "12", "--json", str(out)]
                             + (["--plot", str(plot)] if _has_matplotlib() else []))
    assert bench.run(args) == 0
    printed = capsys.readouterr().out
    assert "rtk-mala" in printed and "NFE 12" in printed and "fitted exponent in d" in printed
    import json

    payload = json.loads(out.read_text())
    assert {m["sampler"] for m in payload["measurements"]} == set(bench.SAMPLER_NAMES)
    assert all(m["score_evals"] <= 12 for m in payload["measurements"])
    if _has_matplotlib():
        assert plot.stat().st_size > 0
    assert bench.nfe_to_reach([(10, 0.5), (100, 0.05)], 0.5) == 10
    assert bench.nfe_to_reach([(10, 0.5), (100, 0.05)], 0.158113883) == pytest.approx(10**1.5, rel=1e-6)
    assert bench.nfe_to_reach([(10, 0.5)], 0.1) == math.inf
    # RTK-ULD's step shrinks with the budget (its O(tau) bias, not the chain length, sets its error floor)
    oracle = MixtureOracle(_mixture_2d())
    x = samplers.prior(oracle, 10)
    details = [bench.run_one(oracle, "rtk-uld", budget, x, torch.Generator().manual_seed(0))[1] for budget in (50, 200)]
    assert details == ["5 x 9, tau 0.5", "5 x 39, tau 0.26"]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
