"""Samplers: properties of the reverse-transition-kernel samplers and discretisations (RT1, RT2, RT3, LD5, CF3, ULA).

Each property takes the implementation under check (ditcheck.diffusion.samplers by default) so a test can plant a
bug. Statistical properties state their false-alarm rate: the probability that a correct implementation
fails one drawn case (seeds are fixed by the case, so a given case either passes or fails for good).

* RT1 (exact algebra, checked numerically): at the points drawn, the Hessian of the sampler's RTK potential
  g (autograd of its gradient) equals c I - hess log p_s to a derived rounding allowance, and c = 2L at RT1's eta;
  the band [c - L, c + L] (L = max ||hess log p_s|| over the points) and condition number <= 3 follow.
* RT2 (invariance): start N chains at exact draws of the RTK target (a Gaussian mixture in closed form),
  run the MALA kernel, Kolmogorov-Smirnov test of every coordinate marginal against its exact CDF,
  Bonferroni over coordinates; false-alarm rate RT2_ALPHA per case.
* RT3 (exact): the ULD noise covariance equals the Van Loan integral int_0^tau e^(A r) Q e^(A^T r) dr
  (mpmath expm at 40 + 2 gamma tau / ln 10 digits) and is positive semidefinite. And the whole RTK-ULD sampler on the orthogonal
  complement of a latent mixture, where every segment is linear-Gaussian, has exactly the variance of
  :func:`rtk_uld_orthogonal_variance` (chi-square test, false alarm ~ 6e-7): this pins the scale u, the
  friction, the step, the RTK potential's coupling and the DDPM start, and with them the O(tau) bias of the
  frozen-gradient step (1.32 sigma^2 at u kappa = 1, gamma = 1, tau = 0.5: see :func:`uld_stationary_covariance`).
* LD5 (bound): the recursion's final variance is <= e (T0 + mu); and the Euler-Maruyama sampler's
  orthogonal component has exactly the recursion's variance (chi-square test, false alarm ~ 6e-7).
* CF3 (rate): log-log slope of TV(p_0, p_t0) (exact quadrature) in t0 is >= 1/2 - 0.05 (TV = O(sqrt t0)).
* ULA (rate): the stationary variance bias of unadjusted Langevin on a Gaussian is linear in the step:
  fitted slope in [0.85, 1.4] (the exact bias is x/(1 - x), x = h/(2 s^2): slope 1.124 over the steps used).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import torch
from hypothesis import strategies as st

from ditcheck import bounds

from ditcheck.diffusion import samplers
from ditcheck.diffusion.oracles import MixtureOracle
from ditcheck.reference import distances, formats, mixtures
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.mixtures import LatentMixture, gaussian_mixture

from .measurement import Measurement
from .mixtures import SamplerMixtureCase, sampler_mixture_cases
from .strategies import orthonormal_columns, seeds, spd_matrix
from .violation import require

__all__ = [
    "RT2_ALPHA", "LD5_Z", "SamplerMixtureCase", "sampler_mixture_cases", "RT1Case", "rt1_cases", "rt1_identity_allowance",
    "rt1_coupling_allowance", "measure_rt1",
    "check_rt1", "RT2Case", "rt2_cases", "rtk_posterior", "ks_pvalue", "ks_critical_value",
    "measure_rt2_mala_invariance", "check_rt2_mala_invariance",
    "ULDCase", "uld_cases", "uld_covariance_van_loan", "uld_covariance_error_bound", "LIBM_ROUNDOFFS", "measure_rt3_uld_covariance", "check_rt3_uld_covariance",
    "uld_transition", "uld_stationary_covariance", "rtk_uld_orthogonal_variance", "RTKULDCase", "rtk_uld_cases",
    "check_rt3_rtk_uld_orthogonal",
    "LD5Case", "ld5_cases", "LD5_ROUNDING", "measure_ld5_bound", "check_ld5_bound", "LD5SamplerCase",
    "ld5_sampler_cases", "check_ld5_sampler",
    "CF3Case", "cf3_cases", "cf3_slope", "check_cf3_early_stopping",
    "ULACase", "ula_cases", "GaussianPotential", "ula_bias_slope", "check_ula_bias_linear",
]

RT2_ALPHA = 1e-6  # false-alarm rate of one RT2 case (Bonferroni over coordinates)
LD5_Z = 5.0  # two-sided normal threshold of the chi-square test: false alarm ~ 5.7e-7


# ----------------------------------------------------------------------------------------
# Cases


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log(low), math.log(high)).map(math.exp)


# ----------------------------------------------------------------------------------------
# RT1


@dataclass(frozen=True)
class RT1Case:
    target: SamplerMixtureCase
    time: float  # s, the end of the segment (OU-unit)
    points_seed: int


@st.composite
def rt1_cases(draw: st.DrawFn) -> RT1Case:
    return RT1Case(draw(sampler_mixture_cases()), draw(_log_uniform(0.01, 2.0)), draw(seeds()))


def _hessian_log_density(oracle: MixtureOracle, z: torch.Tensor, t: float) -> torch.Tensor:
    """[N, d, d] Hessians of log p_t at the rows of z by autograd of the oracle's score (rows independent)."""
    z = z.clone().requires_grad_(True)
    score = oracle.score(z, t)
    rows = [torch.autograd.grad(score[:, j].sum(), z, retain_graph=True)[0] for j in range(z.shape[1])]
    return torch.stack(rows, dim=1).detach()


def rt1_identity_allowance(s: float, eta: float, coupling: float, lipschitz: float) -> float:
    """A-priori float64 bound on max ||hess g - (c I - hess log p_s)||_2 when both Hessians are autograd of the same score.

    The score's derivative enters both sides through the same oracle code (bit-identical), so only the diagonal c
    differs: the potential forms a = e^-t / e^-s with t = s + eta rounded (relative (2 LIBM_ROUNDOFFS + 1 + t) u),
    v = 1 - a^2 (relative a^2 (2 eps_a + u)/v + u: cancellation when eta is small), c = a^2/v, and autograd's
    three roundings; the comparator c = 1/expm1(2 eta) errs by (LIBM_ROUNDOFFS + 1) u; the subtraction c - H_jj
    on each side by u (c + L).
    """
    unit = formats.FLOAT64.unit_roundoff
    eps_a = (2 * LIBM_ROUNDOFFS + 1 + (s + eta)) * unit
    a2 = math.exp(-2 * eta)
    eps_v = a2 * (2 * eps_a + unit) / -math.expm1(-2 * eta) + unit
    eps_c = 2 * eps_a + unit + eps_v + unit + 3 * unit + (LIBM_ROUNDOFFS + 1) * unit
    return (eps_c * coupling + 2 * unit * (coupling + lipschitz)) * (1 + 1e-6)


def rt1_coupling_allowance(eta: float) -> float:
    """A-priori relative bound on |c / 2L - 1| for c = bounds.rt1_coupling(bounds.rt1_segment(L)) in float64:
    eta = log1p(1/(2L))/2 errs by (LIBM_ROUNDOFFS + 2) u, expm1(2 eta) amplifies that by at most 1 + 2 eta and adds
    LIBM_ROUNDOFFS u, and the reciprocal u."""
    unit = formats.FLOAT64.unit_roundoff
    return ((LIBM_ROUNDOFFS + 2) * (1 + 2 * eta) + LIBM_ROUNDOFFS + 1) * unit * (1 + 1e-6)


def measure_rt1(case: RT1Case, coupling: Callable[[float], float] = bounds.rt1_coupling,
                segment: Callable[[float], float] = bounds.rt1_segment,
                potential: type = samplers.RTKPotential) -> Measurement:
    """RT1 (Huang et al. 2024, Lemma 3.1; docs/claims.md#rt1): the identity hess g = c I - hess log p_s, to rounding.

    RT1's band [c - L, c + L] for the eigenvalues of hess g, and its condition number <= 3 at eta = RT1's segment,
    follow from that identity (Weyl) with L = ||hess log p_s||; measured at the case's 64 points (autograd of the
    sampler's potential and of the oracle's score), the band ratio max |eig(hess g) - c| / L is 1 by construction
    (L is the max over the same points), so it is only context. The verdict rests on the identity gap:
    observed = max_points ||hess g - (c I - hess log p_s)||_2 / (c + L), limit = rt1_identity_allowance / (c + L);
    and on c = 2L at RT1's eta (|c/2L - 1| within rt1_coupling_allowance): when that ratio is the larger one,
    observed is scaled to carry it (observed / limit = |c/2L - 1| / its allowance).
    ``forms``: the identity gap / its allowance, |c/2L - 1| / its allowance, the band ratio (context),
    condition / 3 and the deviation over the oracle's curvature(s), the L the samplers use (for a mixture it bounds
    only the concave part of the Hessian, so it may exceed 1: the sampler's step size rule is then not
    guaranteed by RT1).
    """
    mixture = case.target.mixture()
    oracle = MixtureOracle(mixture, "ou-unit")
    s = case.time
    x0 = torch.as_tensor(mixtures.sample(mixture, 64, case.points_seed))
    noise = torch.as_tensor(np.random.default_rng(case.points_seed + 1).standard_normal(x0.shape))
    alpha, sigma = math.exp(-s), math.sqrt(-math.expm1(-2 * s))
    z = alpha * x0 + 1.5 * sigma * noise  # reaches into the tails of p_s
    hessian = _hessian_log_density(oracle, z, s)
    lipschitz = float(torch.linalg.matrix_norm(hessian, ord=2).max())
    eta = segment(lipschitz)
    c = coupling(eta)
    x = alpha * x0[:1] * math.exp(-eta) + math.sqrt(-math.expm1(-2 * eta)) * noise[:1]
    g = potential(oracle, x.expand(z.shape[0], -1).clone(), torch.tensor(s + eta, dtype=torch.float64),
                  torch.tensor(s, dtype=torch.float64))
    zz = z.clone().requires_grad_(True)
    grad = g.evaluate(zz).grad
    hess_g = torch.stack([torch.autograd.grad(grad[:, j].sum(), zz, retain_graph=True)[0]
                          for j in range(z.shape[1])], dim=1).detach()
    eigenvalues = torch.linalg.eigvalsh((hess_g + hess_g.transpose(1, 2)) / 2)
    low, high = float(eigenvalues.min()), float(eigenvalues.max())
    deviation = max(abs(high - c), abs(low - c))
    condition = high / low if low > 0 else math.inf
    identity = torch.eye(z.shape[1], dtype=hess_g.dtype)
    gap = float(torch.linalg.matrix_norm(hess_g - (c * identity - hessian), ord=2).max())
    allowance = rt1_identity_allowance(s, eta, c, lipschitz)
    coupling_ratio = abs(c / (2 * lipschitz) - 1) / rt1_coupling_allowance(eta)
    scale = c + lipschitz
    observed, limit = gap / scale, allowance / scale
    if coupling_ratio > gap / allowance:
        observed = coupling_ratio * limit
    return Measurement(observed, limit, case,
                       forms={"identity gap / allowance": gap / allowance,
                              "|c/2L - 1| / allowance": coupling_ratio,
                              "band: max |eig - c| / L (1 by construction)": deviation / lipschitz,
                              "condition / 3": condition / 3,
                              "vs oracle curvature": deviation / oracle.curvature(s)})


def check_rt1(case: RT1Case, coupling: Callable[[float], float] = bounds.rt1_coupling,
              segment: Callable[[float], float] = bounds.rt1_segment,
              potential: type = samplers.RTKPotential) -> None:
    """RT1: hess g = c I - hess log p_s to rounding, c = 2L at RT1's eta (measure_rt1), and hence eigenvalues of
    hess g in [c - L, c + L] and condition number <= 3 (checked too, with the same rounding allowance)."""
    m = measure_rt1(case, coupling, segment, potential)
    require(m.forms["|c/2L - 1| / allowance"] <= 1, "RT1", "at RT1's eta the coupling c must equal 2L",
            ratio_to_allowance=m.forms["|c/2L - 1| / allowance"], case=case)
    require(m.ratio <= 1, "RT1", "hess g differs from c I - hess log p_s beyond rounding",
            gap_to_allowance=m.forms["identity gap / allowance"], case=case)
    require(m.forms["condition / 3"] <= 1 + 1e-9, "RT1", "condition number of g at RT1's eta must be <= 3",
            condition_number=3 * m.forms["condition / 3"], case=case)


# ----------------------------------------------------------------------------------------
# RT2


@dataclass(frozen=True)
class RT2Case:
    target: SamplerMixtureCase
    time: float  # s (OU-unit); the segment is s + eta -> s
    eta: float
    step_scale: float  # MALA step tau = step_scale / (c + L), L = oracle curvature at s
    x_seed: int
    chain_seed: int
    chains: int = 6000
    steps: int = 8


@st.composite
def rt2_cases(draw: st.DrawFn) -> RT2Case:
    return RT2Case(draw(sampler_mixture_cases(max_dim=2, max_components=2)), draw(_log_uniform(0.05, 1.0)),
                   draw(_log_uniform(0.1, 1.0)), draw(st.sampled_from([0.5, 1.0, 2.0])), draw(seeds()),
                   draw(st.integers(0, 2**31 - 1)))


def rtk_posterior(mixture: LatentMixture, x: np.ndarray, t: float, s: float) -> LatentMixture:
    """The exact RTK target p(z | x_t = x) propto p_s(z) N(x; a z, (1 - a^2) I), a = e^-(t - s) (OU-unit), as a mixture.

    Component k of p_s = N(m_k, C_k): posterior precision C_k^-1 + (a^2/v) I, mean P^-1 (C_k^-1 m_k + a x / v),
    weight propto w_k N(x; a m_k, a^2 C_k + v I).
    """
    diffused = mixtures.diffuse(mixture, s, "ou-unit")
    a = math.exp(-(t - s))
    v = -math.expm1(-2 * (t - s))
    dim = mixture.ambient_dim
    eye = np.eye(dim)
    means = diffused.means @ diffused.basis.T
    covs = diffused.basis @ diffused.covariances @ diffused.basis.T
    post_means, post_covs, log_w = [], [], []
    for w, m, c in zip(diffused.weights / diffused.weights.sum(), means, covs):
        precision = np.linalg.inv(c) + (a * a / v) * eye
        cov = np.linalg.inv(precision)
        post_covs.append((cov + cov.T) / 2)
        post_means.append(cov @ (np.linalg.solve(c, m) + a * x / v))
        marginal = a * a * c + v * eye
        offset = x - a * m
        log_w.append(math.log(w) - 0.5 * (offset @ np.linalg.solve(marginal, offset)
                                          + np.linalg.slogdet(2 * np.pi * marginal)[1]))
    log_w = np.array(log_w)
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    weights = np.maximum(weights, 1e-300)
    weights /= math.fsum(weights)
    return gaussian_mixture(weights, np.array(post_means), np.array(post_covs))


def ks_pvalue(statistic: float, n: int) -> float:
    """Asymptotic Kolmogorov p-value with Stephens' correction: Q((sqrt(n) + 0.12 + 0.11/sqrt(n)) D)."""
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * statistic
    if lam < 0.2:
        return 1.0
    return max(0.0, min(1.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))))


def _ks_statistic(values: np.ndarray, weights: np.ndarray, means: np.ndarray, sds: np.ndarray) -> float:
    x = np.sort(values)
    erfc = np.frompyfunc(math.erfc, 1, 1)
    cdf = (0.5 * erfc(-(x[:, None] - means[None]) / (sds[None] * math.sqrt(2.0))).astype(np.float64)) @ weights
    n = x.size
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


MalaKernel = Callable[[Any, torch.Tensor, int, float, torch.Generator], tuple[torch.Tensor, float]]


def ks_critical_value(alpha: float, n: int) -> float:
    """The KS statistic D at which ks_pvalue(D, n) = alpha (bisection; ks_pvalue decreases in D)."""
    if not 0 < alpha < 1:
        raise InvalidArgumentError("alpha", "a false-alarm rate in (0, 1)", repr(alpha))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError("n", "a positive sample size", repr(n))
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if ks_pvalue(mid, n) > alpha else (low, mid)
    return high


def measure_rt2_mala_invariance(case: RT2Case, kernel: MalaKernel = samplers.mala,
                                alpha: float = RT2_ALPHA) -> Measurement:
    """RT2 (Huang et al. 2024, RTK-MALA; docs/claims.md#rt2): max KS statistic over coordinates vs its critical value.

    N chains start at exact draws of the RTK target (a Gaussian mixture, rtk_posterior) and run the MALA
    kernel; each coordinate's marginal is compared with its exact CDF. limit = the KS critical value at the
    false-alarm rate alpha / d (Bonferroni over the d coordinates), so observed / limit > 1 has probability
    <= alpha for a correct kernel. ``forms``: the acceptance rate (reported, not held to anything).
    """
    mixture = case.target.mixture()
    oracle = MixtureOracle(mixture, "ou-unit")
    s, t = case.time, case.time + case.eta
    x_np = math.exp(-t) * mixtures.sample(mixture, 1, case.x_seed)[0] + math.sqrt(-math.expm1(-2 * t)) * (
        np.random.default_rng(case.x_seed).standard_normal(mixture.ambient_dim))
    posterior = rtk_posterior(mixture, x_np, t, s)
    z0 = torch.as_tensor(mixtures.sample(posterior, case.chains, case.chain_seed))
    x = torch.as_tensor(x_np).expand(case.chains, -1).clone()
    potential = samplers.RTKPotential(oracle, x, torch.tensor(t, dtype=torch.float64),
                                      torch.tensor(s, dtype=torch.float64))
    tau = case.step_scale / (float(potential.coupling) + oracle.curvature(s))
    generator = torch.Generator().manual_seed(case.chain_seed)
    z, acceptance = kernel(potential, z0, case.steps, tau, generator)
    weights = posterior.weights / posterior.weights.sum()
    dim = mixture.ambient_dim
    statistics = [_ks_statistic(z[:, j].numpy(), weights, posterior.means[:, j],
                                np.sqrt(posterior.covariances[:, j, j])) for j in range(dim)]
    return Measurement(max(statistics), ks_critical_value(alpha / dim, case.chains), case,
                       forms={"acceptance": float(acceptance)})


def check_rt2_mala_invariance(case: RT2Case, kernel: MalaKernel = samplers.mala) -> float:
    """RT2: MALA started at the exact RTK target stays at it (KS per coordinate, false alarm RT2_ALPHA;
    measure_rt2_mala_invariance). Returns the acceptance."""
    m = measure_rt2_mala_invariance(case, kernel)
    require(m.ratio <= 1, "RT2", "MALA does not leave the RTK target invariant (KS test)", ks=m.observed,
            critical_value=m.limit, acceptance=m.forms["acceptance"], case=case)
    return m.forms["acceptance"]


# ----------------------------------------------------------------------------------------
# RT3


@dataclass(frozen=True)
class ULDCase:
    friction: float
    scale: float
    step: float


@st.composite
def uld_cases(draw: st.DrawFn) -> ULDCase:
    return ULDCase(draw(_log_uniform(0.05, 20.0)), draw(_log_uniform(1e-3, 10.0)), draw(_log_uniform(1e-4, 5.0)))


def uld_covariance_van_loan(friction: float, scale: float, step: float, digits: int = 40) -> np.ndarray:
    """Cov of (z, v) noise of one exact step, int_0^tau e^(A r) Q e^(A^T r) dr, by Van Loan's block exponential (mpmath).

    A = [[0, 1], [0, -gamma]], Q = diag(0, 2 gamma u); expm([[-A, Q], [0, A^T]] tau) = [[., G], [0, F]],
    Cov = F^T G (Van Loan 1978, Thm. 1). G holds terms of size e^(gamma tau) that cancel in F^T G (whose entries
    are O(u tau)), so ``digits`` is raised by 2 gamma tau / ln 10: at a fixed 40 digits gamma tau = 100 (friction 20,
    step 5, inside uld_cases' box) gave a reference off by 1e3 relative, found by the audit's grid.
    """
    with mpmath.workdps(digits + math.ceil(2 * friction * step / math.log(10))):
        g, u, tau = mpmath.mpf(friction), mpmath.mpf(scale), mpmath.mpf(step)
        block = mpmath.matrix([[0, -1, 0, 0], [0, g, 0, 2 * g * u], [0, 0, 0, 0], [0, 0, 1, -g]]) * tau
        e = mpmath.expm(block)
        f = e[2:4, 2:4]
        cov = f.T * e[0:2, 2:4]
        return np.array([[float(cov[i, j]) for j in range(2)] for i in range(2)])


#: assumed accuracy of libm's exp and expm1, in units of the unit roundoff u = 2^-53 (1 ulp; glibc documents <= 1 ulp)
LIBM_ROUNDOFFS = 2
#: relative accuracy of the Van Loan reference (mpmath at >= 40 digits after the cancellation it works around)
RT3_REFERENCE_ERROR = 1e-30


def uld_covariance_error_bound(friction: float, scale: float, step: float) -> np.ndarray:
    """A-priori relative error bound of each entry of samplers.uld_noise_covariance (float64), first order in u = 2^-53.

    Derived from the implementation: x = gamma tau is rounded once (relative u; the entries' log-derivatives in x are
    at most 1 (Var xi_v), 2 (Cov, through (1 - e^-x)^2) and 3 (Var xi_z, through x^3 at small x)); each exp/expm1
    call errs by at most LIBM_ROUNDOFFS u; each product, quotient and sum by u (Higham's gamma_k = k u/(1 - k u)).
    Var xi_z's bracket 2x - 3 + 4e^-x - e^-2x is, below samplers.ULD_SERIES_BELOW, a Horner sum of
    samplers.ULD_SERIES_TERMS - 2 terms: truncation <= the first omitted term over the sum's lower bound
    x^3 (2/3 - x/2) (an alternating series with decreasing terms), rounding <= gamma_{2k} sum |c_n| x^n / sum; above,
    the closed form's absolute error <= (gamma_4 + LIBM_ROUNDOFFS u) (2x + 4(1 - e^-x) + (1 - e^-2x)), relative to its
    value (the cancellation factor, at most 55 at x = 1/2). Plus u for rounding the reference to float64 and
    RT3_REFERENCE_ERROR for the reference itself; the 1e-6
    relative margin covers evaluating this bound itself in float64.
    """
    unit = formats.FLOAT64.unit_roundoff
    libm = LIBM_ROUNDOFFS
    x = friction * step
    var_v = bounds.gamma(1 + libm + 1, unit)
    cov = bounds.gamma(2 + 2 * libm + 1 + 2, unit)
    if x < samplers.ULD_SERIES_BELOW:
        terms = samplers.ULD_SERIES_TERMS
        omitted = terms + 1
        lower = x**3 * (2 / 3 - x / 2)
        truncation = (2.0**omitted - 4) / math.factorial(omitted) * x**omitted / lower
        magnitude = sum((2.0**n - 4) / math.factorial(n) * x**n for n in range(3, terms + 1))
        inner = truncation + bounds.gamma(2 * (terms - 2) + 3, unit) * magnitude / lower
    else:
        e1, e2 = -math.expm1(-x), -math.expm1(-2 * x)
        value = 2 * x - 4 * e1 + e2
        inner = (bounds.gamma(4, unit) + libm * unit) * (2 * x + 4 * e1 + e2) / value
    var_z = bounds.gamma(3 + 3, unit) + inner
    # the reference is rounded to float64 once (relative u)
    return np.array([[var_z, cov], [cov, var_v]]) * (1 + 1e-6) + unit + RT3_REFERENCE_ERROR


def measure_rt3_uld_covariance(case: ULDCase,
                               covariance: Callable[[float, float, float], np.ndarray] = samplers.uld_noise_covariance,
                               bound: Callable[[float, float, float], np.ndarray] = uld_covariance_error_bound
                               ) -> Measurement:
    """RT3 (Huang et al. 2024, RTK-ULD step; docs/claims.md#rt3): the closed-form ULD noise covariance vs Van Loan's integral.

    Every entry is positive, so each is compared relatively: observed = |C - C_VanLoan|_ij / C_VanLoan_ij and limit =
    its a-priori rounding bound (``bound``, uld_covariance_error_bound) at the entry where their ratio is largest.
    ``forms``: the PSD deficit max(0, -det C / (C_11 C_22)) / 1e-12 (inf when a diagonal entry is not positive).
    """
    closed = covariance(case.friction, case.scale, case.step)
    exact = uld_covariance_van_loan(case.friction, case.scale, case.step)
    errors = np.abs(closed - exact) / np.abs(exact)
    limits = bound(case.friction, case.scale, case.step)
    worst = np.unravel_index(int(np.argmax(errors / limits)), errors.shape)
    diagonal = closed[0, 0] * closed[1, 1]
    det = diagonal - closed[0, 1] ** 2
    deficit = math.inf if not (closed[0, 0] > 0 and closed[1, 1] > 0) else max(0.0, -det / diagonal) / 1e-12
    return Measurement(float(errors[worst]), float(limits[worst]), case, forms={"PSD deficit / 1e-12": float(deficit)})


def check_rt3_uld_covariance(case: ULDCase,
                             covariance: Callable[[float, float, float], np.ndarray] = samplers.uld_noise_covariance
                             ) -> None:
    """RT3: the closed-form ULD noise covariance equals the Van Loan integral to its rounding bound and is PSD
    (measure_rt3_uld_covariance)."""
    m = measure_rt3_uld_covariance(case, covariance)
    require(m.ratio <= 1, "RT3", "ULD noise covariance differs from the Van Loan integral",
            relative_error=m.observed, tolerance=m.limit, case=case)
    require(m.forms["PSD deficit / 1e-12"] <= 1, "RT3", "ULD noise covariance must be positive semidefinite",
            deficit=m.forms["PSD deficit / 1e-12"] * 1e-12, case=case)


def uld_transition(kappa: float, scale: float, step: float, friction: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, Q) of one samplers.uld step on g(z) = kappa z^2 / 2 per coordinate: (z', v') = A (z, v) + N(0, Q).

    From samplers.uld's update with grad = kappa z: z' = (1 - u k2 kappa) z + k1 v, v' = -u k1 kappa z + e v,
    e = e^(-gamma tau), k1 = (1 - e)/gamma, k2 = (tau - k1)/gamma; Q = samplers.uld_noise_covariance.
    """
    e = math.exp(-friction * step)
    k1 = -math.expm1(-friction * step) / friction
    k2 = (step - k1) / friction
    a = np.array([[1 - scale * k2 * kappa, k1], [-scale * k1 * kappa, e]])
    return a, samplers.uld_noise_covariance(friction, scale, step)


def uld_stationary_covariance(kappa: float, scale: float, step: float, friction: float) -> np.ndarray:
    """Stationary covariance of (z, v) of the discrete exact-OU ULD chain on kappa z^2/2: S = A S A^T + Q (Lyapunov).

    The continuous dynamics leave N(0, 1/kappa) x N(0, u) invariant; the chain (gradient frozen over a step)
    does not: kappa S_zz - 1 is O(tau), e.g. 0.3245 at u kappa = 1, gamma = 1, tau = 0.5, 0.142 at tau = 0.25.
    """
    a, q = uld_transition(kappa, scale, step, friction)
    if np.max(np.abs(np.linalg.eigvals(a))) >= 1:
        raise InvalidArgumentError("step", f"a stable ULD step for kappa = {kappa!r}, u = {scale!r}", repr(step))
    return np.linalg.solve(np.eye(4) - np.kron(a, a), q.reshape(-1)).reshape(2, 2)


def rtk_uld_orthogonal_variance(times: Any, inner_steps: int, step: float, friction: float, init: str = "x") -> float:
    """Exact variance of one orthogonal coordinate after samplers.rtk_uld on a latent mixture (OU-unit, prior N(0, 1)).

    Off the latent subspace p_s is N(0, sigma_s^2) per coordinate, so segment t -> s targets
    g(z) = z^2/(2 sigma_s^2) + (x - a z)^2/(2 v), a = e^-(t - s), v = 1 - a^2: kappa = 1/sigma_s^2 + c, c = a^2/v,
    grad g = kappa z - (a/v) x. The sampler's scale is u = 1/(c + L) with L = oracle.curvature(s) = 1/sigma_s^2
    (the orthogonal curvature dominates for a latent mixture), so u kappa = 1. The start is z = x, or the DDPM
    step z = (a sigma_s^2/sigma_t^2) x + N(0, b sigma_s^2/sigma_t^2), b = sigma_t^2 - a^2 sigma_s^2 (the Tweedie
    estimate of the orthogonal part is 0). The velocity starts at N(0, u). The joint covariance of (x, z, v)
    is propagated exactly through every step.
    """
    if init not in ("x", "ddpm"):
        raise InvalidArgumentError("init", "'x' or 'ddpm'", repr(init))
    grid = [float(t) for t in torch.as_tensor(times, dtype=torch.float64).reshape(-1)]
    variance = 1.0
    for t, s in zip(grid[:-1], grid[1:]):
        sigma2_t, sigma2_s = -math.expm1(-2 * t), -math.expm1(-2 * s)
        a = math.exp(-(t - s))
        v = -math.expm1(-2 * (t - s))
        c = a * a / v
        kappa = 1 / sigma2_s + c
        u = 1 / (c + 1 / sigma2_s)
        if init == "ddpm":
            gain, noise = a * sigma2_s / sigma2_t, (sigma2_t - a * a * sigma2_s) * sigma2_s / sigma2_t
        else:
            gain, noise = 1.0, 0.0
        cov = np.array([[variance, gain * variance, 0.0], [gain * variance, gain * gain * variance + noise, 0.0],
                        [0.0, 0.0, u]])
        a2, q2 = uld_transition(kappa, u, step, friction)
        transition = np.zeros((3, 3))
        transition[0, 0] = 1.0
        transition[1:, 1:] = a2
        # grad g = kappa (z - (a / (v kappa)) x): x's column is z's gradient part times -a/(v kappa)
        transition[1:, 0] = -(a2[:, 0] - [1.0, 0.0]) * a / (v * kappa)
        noise_cov = np.zeros((3, 3))
        noise_cov[1:, 1:] = q2
        for _ in range(inner_steps):
            cov = transition @ cov @ transition.T + noise_cov
        variance = float(cov[1, 1])
    return variance


@dataclass(frozen=True)
class RTKULDCase:
    ambient: int
    latent: int
    seed: int
    segments: int
    inner_steps: int
    step: float
    friction: float
    init: str
    samples: int = 1000  # n (D - d0) >= 1000 squared norms: 5 sd of the variance estimate is 22%


@st.composite
def rtk_uld_cases(draw: st.DrawFn) -> RTKULDCase:
    ambient = draw(st.integers(2, 6))
    return RTKULDCase(ambient, draw(st.integers(1, ambient - 1)), draw(seeds()), draw(st.integers(1, 3)),
                      draw(st.integers(1, 8)), draw(st.sampled_from([0.1, 0.25, 0.5, 1.0])),
                      draw(st.sampled_from([0.5, 1.0, 2.0])), draw(st.sampled_from(["x", "ddpm"])))


def check_rt3_rtk_uld_orthogonal(case: RTKULDCase, sampler: Sampler | None = None) -> float:
    """RT3: RTK-ULD's orthogonal component has the exact variance w (rtk_uld_orthogonal_variance):
    sum ||y||^2 / w ~ chi^2(n (D - d0)), |z| <= LD5_Z (false alarm ~ 6e-7). Returns w / sigma_{t_end}^2."""
    sampler = samplers.rtk_uld if sampler is None else sampler
    rng = np.random.default_rng(case.seed)
    basis = orthonormal_columns(case.ambient, case.latent, case.seed)
    mixture = LatentMixture(basis, [0.5, 0.5], rng.standard_normal((2, case.latent)),
                            np.stack([spd_matrix(case.latent, rng, 4.0, 0.5) for _ in range(2)]))
    oracle = MixtureOracle(mixture, "ou-unit")
    generator = torch.Generator().manual_seed(case.seed % 2**31)
    x = samplers.prior(oracle, case.samples, generator=generator)
    grid = samplers.time_grid(5.0, 0.05, case.segments, "log")
    out = sampler(oracle, x, grid, inner_steps=case.inner_steps, step_size=case.step, friction=case.friction,
                  init=case.init, generator=generator).x
    b = torch.as_tensor(basis)
    residual = out - (out @ b) @ b.T
    w = rtk_uld_orthogonal_variance(grid, case.inner_steps, case.step, case.friction, case.init)
    dof = case.samples * (case.ambient - case.latent)
    statistic = float(residual.pow(2).sum()) / w
    z = (statistic - dof) / math.sqrt(2 * dof)
    require(abs(z) <= LD5_Z, "RT3", "RTK-ULD's orthogonal variance differs from the exact linear-Gaussian recursion",
            z_score=z, empirical_variance=statistic * w / dof, exact=w)
    return w / -math.expm1(-2 * float(grid[-1]))


# ----------------------------------------------------------------------------------------
# LD5


@dataclass(frozen=True)
class LD5Case:
    T: float  # noqa: N815
    T0: float  # noqa: N815
    steps: int

    @property
    def mu(self) -> float:
        return (self.T - self.T0) / self.steps


@st.composite
def ld5_cases(draw: st.DrawFn) -> LD5Case:
    T = draw(st.floats(1.01, 12.0))  # noqa: N806
    T0 = draw(_log_uniform(1e-3, 0.9))  # noqa: N806
    low = math.ceil((T - T0) / (1 - T0))  # mu = (T - T0)/K <= 1 - T0
    return LD5Case(T, T0, draw(st.integers(low, max(low, 2000))))


LD5_ROUNDING = 1e-12  # relative allowance for the K-step float64 recursion (K <= ~1e4 steps, ~4 u each)


def measure_ld5_bound(case: LD5Case,
                      variance: Callable[[float, float, float], float] = bounds.ld5_orthogonal_variance,
                      bound: Callable[[float, float], float] = bounds.ld5_bound) -> Measurement:
    """LD5 (Hu et al. 2024, orthogonal-variance lemma): v_K <= e (T0 + mu), v_{k+1} = v_k (1 + mu(1/2 - 1/sigma_k^2))^2 + mu.

    observed = the final variance beyond the rounding allowance LD5_ROUNDING * bound, limit = e (T0 + mu)."""
    observed = variance(case.T, case.T0, case.mu)
    limit = bound(case.T0, case.mu)
    return Measurement(max(observed - LD5_ROUNDING * limit, 0.0), limit, case)


def check_ld5_bound(case: LD5Case, variance: Callable[[float, float, float], float] = bounds.ld5_orthogonal_variance,
                    bound: Callable[[float, float], float] = bounds.ld5_bound) -> float:
    """LD5: the orthogonal variance after the recursion is <= e (T0 + mu) (measure_ld5_bound); returns observed / bound."""
    m = measure_ld5_bound(case, variance, bound)
    require(m.ratio <= 1, "LD5", "orthogonal variance exceeds e (T0 + mu)",
            variance=m.observed + LD5_ROUNDING * m.limit, bound=m.limit, T=case.T, T0=case.T0, mu=case.mu)
    return m.ratio


@dataclass(frozen=True)
class LD5SamplerCase:
    ambient: int
    latent: int
    seed: int
    T: float  # noqa: N815
    T0: float  # noqa: N815
    steps: int
    samples: int = 2000


@st.composite
def ld5_sampler_cases(draw: st.DrawFn) -> LD5SamplerCase:
    ambient = draw(st.integers(2, 6))
    return LD5SamplerCase(ambient, draw(st.integers(1, ambient - 1)), draw(seeds()), draw(st.floats(1.5, 6.0)),
                          draw(_log_uniform(0.01, 0.5)), draw(st.integers(10, 40)))


Sampler = Callable[..., samplers.SampleResult]


def check_ld5_sampler(case: LD5SamplerCase, sampler: Sampler = samplers.euler_maruyama) -> None:
    """LD5: Euler-Maruyama's orthogonal component has the recursion's variance v: sum ||y||^2 / v ~ chi^2(n (D - d0))."""
    rng = np.random.default_rng(case.seed)
    basis = orthonormal_columns(case.ambient, case.latent, case.seed)
    mixture = LatentMixture(basis, [1.0], rng.standard_normal((1, case.latent)),
                            spd_matrix(case.latent, rng, 4.0, 0.5)[None])
    oracle = MixtureOracle(mixture, "ou-half")
    generator = torch.Generator().manual_seed(case.seed % 2**31)
    x = samplers.prior(oracle, case.samples, generator=generator)
    grid = samplers.time_grid(case.T, case.T0, case.steps)
    mu = (case.T - case.T0) / case.steps
    out = sampler(oracle, x, grid, generator=generator).x
    b = torch.as_tensor(basis)
    residual = out - (out @ b) @ b.T
    v = bounds.ld5_orthogonal_variance(case.T, case.T0, mu)
    dof = case.samples * (case.ambient - case.latent)
    statistic = float(residual.pow(2).sum()) / v
    z = (statistic - dof) / math.sqrt(2 * dof)
    require(abs(z) <= LD5_Z, "LD5", "orthogonal variance of the sampler differs from LD5's recursion",
            z_score=z, empirical_variance=statistic * v / dof, recursion=v)


# ----------------------------------------------------------------------------------------
# CF3


@dataclass(frozen=True)
class CF3Case:
    target: SamplerMixtureCase
    t_low: float
    t_high: float
    points: int = 5


@st.composite
def cf3_cases(draw: st.DrawFn) -> CF3Case:
    target = draw(sampler_mixture_cases(max_dim=1))
    low = draw(_log_uniform(1e-4, 1e-3))
    return CF3Case(target, low, low * draw(st.sampled_from([30.0, 100.0])))


EarlyStopped = Callable[[LatentMixture, float], LatentMixture]


def _diffuse_ou_half(mixture: LatentMixture, t0: float) -> LatentMixture:
    return mixtures.diffuse(mixture, t0, "ou-half")


def cf3_slope(case: CF3Case, law: EarlyStopped = _diffuse_ou_half) -> tuple[float, np.ndarray, np.ndarray]:
    """(fitted slope of log TV(p_0, p_t0) against log t0, times, TVs), TV exact (reference quadrature, tolerance 1e-12)."""
    mixture = case.target.mixture()
    times = np.geomspace(case.t_low, case.t_high, case.points)
    tvs = np.array([distances.tv_mixture_1d(mixture, law(mixture, float(t)), tolerance=1e-12).value for t in times])
    slope = float(np.polyfit(np.log(times), np.log(tvs), 1)[0])
    return slope, times, tvs


def check_cf3_early_stopping(case: CF3Case, law: EarlyStopped = _diffuse_ou_half) -> float:
    """CF3 (Fu et al. 2024; docs/claims.md#cf3): TV(P, P_t0) = O(sqrt(t0)): fitted slope >= 0.45. Returns the slope."""
    slope, times, tvs = cf3_slope(case, law)
    require(slope >= 0.45, "CF3", "early-stopping gap shrinks slower than sqrt(t0)", slope=slope,
            times=times.tolist(), tv=tvs.tolist())
    return slope


# ----------------------------------------------------------------------------------------
# ULA bias


@dataclass(frozen=True)
class ULACase:
    dim: int
    seed: int
    values: int = 200_000  # chains * dim: relative variance noise sqrt(2 / values) = 0.0032

    @property
    def chains(self) -> int:
        return math.ceil(self.values / self.dim)


@st.composite
def ula_cases(draw: st.DrawFn) -> ULACase:
    return ULACase(draw(st.integers(1, 4)), draw(seeds()))


class GaussianPotential:
    """g(z) = sum_j z_j^2 / (2 s_j^2): the potential of N(0, diag(s^2))."""

    def __init__(self, variances: torch.Tensor):
        self.variances = variances

    def evaluate(self, z: torch.Tensor) -> samplers.PotentialState:
        return samplers.PotentialState((z * z / (2 * self.variances)).sum(-1), z / self.variances)

    def difference(self, z_new: torch.Tensor, new: samplers.PotentialState, z_old: torch.Tensor,
                   old: samplers.PotentialState) -> torch.Tensor:
        return new.value - old.value


UlaKernel = Callable[[Any, torch.Tensor, int, float, torch.Generator], torch.Tensor]
ULA_STEPS = (0.1, 0.2, 0.4)  # in units of s^2 (bias 0.053 at the smallest: 16 noise sd)
ULA_SLOPE = (0.85, 1.4)  # exact slope 1.124 over ULA_STEPS; the fit's noise sd is ~0.045: a 6-sd window


def ula_bias_slope(case: ULACase, kernel: UlaKernel = samplers.ula) -> tuple[float, list[float]]:
    """(slope of log |relative variance bias| against log h, the biases) on N(0, s^2 I): chains start at the target, run 4 s^2/h steps.

    Isotropic (s drawn from [0.5, 2]): the rate is scale invariant, and one variance keeps every
    coordinate's bias at its largest relative to the Monte Carlo noise.
    """
    rng = np.random.default_rng(case.seed)
    variance = float(np.exp(rng.uniform(math.log(0.5), math.log(2.0))))
    variances = torch.full((case.dim,), variance, dtype=torch.float64)
    potential = GaussianPotential(variances)
    generator = torch.Generator().manual_seed(case.seed % 2**31)
    biases = []
    for factor in ULA_STEPS:
        h = factor * variance
        z0 = torch.randn((case.chains, case.dim), generator=generator, dtype=torch.float64) * math.sqrt(variance)
        # the start's variance decays like (1 - h/s^2)^(2 steps) <= e^-8: 3e-4 of the bias at the smallest step
        z = kernel(potential, z0, math.ceil(4 / factor), h, generator)
        biases.append(float(z.pow(2).mean() / variance - 1))
    magnitudes = np.abs(np.array(biases))
    slope = float(np.polyfit(np.log(ULA_STEPS), np.log(np.maximum(magnitudes, 1e-12)), 1)[0])
    return slope, biases


def check_ula_bias_linear(case: ULACase, kernel: UlaKernel = samplers.ula) -> float:
    """ULA's stationary bias is linear in the step: fitted slope in ULA_SLOPE (false alarm < 1e-8). Returns the slope."""
    slope, biases = ula_bias_slope(case, kernel)
    require(ULA_SLOPE[0] <= slope <= ULA_SLOPE[1], "ULA", "unadjusted Langevin bias is not linear in the step size",
            slope=slope, biases=biases, steps=list(ULA_STEPS))
    return slope
