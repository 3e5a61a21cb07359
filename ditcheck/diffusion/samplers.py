"""Diffusion samplers with counted score and energy evaluations: DDPM, DDIM, probability-flow ODE, RTK-MALA, RTK-ULD.

One signature for all (k-diffusion style)::

    sampler(oracle, x, times, *, generator=None, **options) -> SampleResult

``oracle`` answers score(x, t) (and log_density(x, t) for MALA; ditcheck.diffusion.oracles), ``x`` [N, D] are
draws at times[0] (usually :func:`prior`, N(0, I)), ``times`` a decreasing grid ending at the early-stopping
time t_end > 0 (:func:`time_grid`, :func:`rtk_grid`, :func:`rtk_adaptive_grid`). The result holds the samples at times[-1], which
follow p_{t_end} for an exact sampler, and the numbers of batched score and energy evaluations (NFE).
Schedules are variance preserving (oracles.TorchSchedule): x_t = alpha_t x_0 + sigma_t z, sigma^2 = 1 - alpha^2.

* :func:`ddpm`: ancestral sampling from the Gaussian posterior q(x_s | x_t, x0_hat), x0_hat by Tweedie
  (Ho et al. 2020, eq. 6-7, on an arbitrary grid).
* :func:`ddim`: Song, Meng, Ermon 2021, eq. 12; eta = 0 deterministic, eta = 1 equals ddpm.
* :func:`pf_euler`, :func:`pf_heun`: the probability-flow ODE dx/dt = f(t) (x + grad log p_t) (Song et al. 2021,
  eq. 13, with g^2 = -2 f for a VP schedule); Heun is Karras et al. 2022, Alg. 1 (2 evaluations per step).
* :func:`euler_maruyama`: the reverse SDE dx = f (x + 2 grad log p_t) dt + g dW in reverse time (LD5's sampler).
* :func:`flow_euler`, :func:`flow_heun`, :func:`flow_sde`: flow matching (ditcheck.diffusion.flow oracles answer
  velocity(x, t)); grids from :func:`flow_grid` run from t = 1 (noise) down to t_end >= 0.
* :func:`rtk_mala`, :func:`rtk_uld`: reverse transition kernels (Huang et al. 2024, arXiv 2405.16387): each
  segment t -> s samples p(z | x) propto exp(-g(z)),
  g(z) = -log p_s(z) + ||x - a z||^2 / (2 (1 - a^2)), a = alpha_t / alpha_s (= e^-eta for OU-unit),
  by MALA (RT2) or underdamped Langevin with the exact-OU step (RT3), started at z = x (or, with
  ``init="ddpm"``, at one DDPM step from x). :func:`rtk_grid` gives uniform segments, :func:`rtk_adaptive_grid`
  RT1's segment lengths from the oracle's curvature.

RT1 (verified here, not copied): the Hessian of g is -hess log p_s + c I with c = a^2 / (1 - a^2) =
1 / (e^(2 eta) - 1) for OU-unit, so with the score L-Lipschitz g is (c - L)-strongly convex and
(c + L)-smooth. c = 2L  <=>  e^(2 eta) = 1 + 1/(2L)  <=>  eta = 1/2 ln(1 + 1/(2L)), and then
(c + L)/(c - L) = 3L/L = 3. Checked symbolically above and numerically in properties/samplers.py
(check_rt1) with exact mixture Hessians.

Energies for MALA. The Metropolis-Hastings ratio needs g(z) - g(z'), hence log p_s(z) - log p_s(z'), which a
score-only model does not give. ``energy_nodes=None`` uses the oracle's exact log density. With
``energy_nodes=m`` the difference is the line integral of the score, log p(z') - log p(z) =
int_0^1 s(z + u (z' - z)) . (z' - z) du, by m-point Gauss-Legendre (m extra score evaluations per step):
the chain is then only approximately invariant (quadrature error O(||z' - z||^(2m+1)) times derivatives
of the score), which is what a score-only model must accept, or it must be trained to output energies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from ditcheck.bounds import rt1_segment
from ditcheck.reference.errors import InvalidArgumentError, ShapeError

from .flow import FlowOracle, velocity_to_score
from .oracles import Oracle

__all__ = [
    "SampleResult", "prior", "time_grid", "rtk_grid", "rtk_adaptive_grid",
    "ddpm", "ddim", "pf_euler", "pf_heun", "euler_maruyama", "rtk_mala", "rtk_uld", "SAMPLERS",
    "uld_noise_covariance", "ULD_SERIES_BELOW", "ULD_SERIES_TERMS", "uld_position_series",
    "PotentialState", "RTKPotential", "mala", "uld", "ula",
    "flow_grid", "flow_euler", "flow_heun", "flow_sde", "FLOW_SAMPLERS",
]


@dataclass(frozen=True)
class SampleResult:
    """Samples at the end of the grid and the evaluations spent (batched calls; one call = one NFE)."""

    x: torch.Tensor
    score_evals: int
    energy_evals: int
    acceptance: float | None = None  # mean MALA acceptance over segments and steps

    @property
    def evaluations(self) -> int:
        """score + energy evaluations."""
        return self.score_evals + self.energy_evals


def _generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    if generator is None:
        return torch.Generator(device=device).manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise InvalidArgumentError("generator", "a torch.Generator or None", type(generator).__name__)
    return generator


def _normal(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def prior(oracle: Oracle, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of N(0, I_D), the limit law of every VP schedule (the error e^(-T)-small for OU at time T)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError("n", "a positive integer", repr(n))
    gen = _generator(generator, oracle.device)
    return torch.randn((n, oracle.dim), generator=gen, dtype=oracle.dtype, device=oracle.device)


def time_grid(t_start: float, t_end: float, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """Decreasing grid t_start = t_0 > ... > t_steps = t_end > 0: "uniform" in t or "log" (geometric)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError("steps", "a positive integer", repr(steps))
    if not (math.isfinite(t_start) and math.isfinite(t_end) and 0 < t_end < t_start):
        raise InvalidArgumentError("t_end", f"0 < t_end < t_start = {t_start!r}", repr(t_end))
    if spacing == "uniform":
        return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    if spacing == "log":
        return torch.logspace(math.log10(t_start), math.log10(t_end), steps + 1, dtype=torch.float64)
    raise InvalidArgumentError("spacing", "'uniform' or 'log'", repr(spacing))


def rtk_grid(t_end: float, segments: int, eta: float) -> torch.Tensor:
    """RTK grid t_k = T - k eta, k = 0..segments, T = t_end + segments * eta (Huang et al. 2024, sec. 3)."""
    if not (math.isfinite(eta) and eta > 0):
        raise InvalidArgumentError("eta", "a positive segment length", repr(eta))
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise InvalidArgumentError("segments", "a positive integer", repr(segments))
    return time_grid(t_end + segments * eta, t_end, segments, "uniform")


def rtk_adaptive_grid(oracle: Oracle, t_start: float, t_end: float, *, factor: float = 1.0) -> torch.Tensor:
    """RT1's grid: from s = t_end up, segments eta = factor * rt1_segment(L(s)), L(s) = oracle.curvature(s), until t_start.

    With factor 1 each segment's g has condition number <= 3 when L(s) bounds the score's Lipschitz constant
    (exact for Gaussians; for mixtures oracle.curvature bounds the concave part only). The last segment is
    stretched to end exactly at t_start.
    """
    if not (math.isfinite(factor) and factor > 0):
        raise InvalidArgumentError("factor", "a positive multiple of RT1's segment", repr(factor))
    if not (math.isfinite(t_start) and 0 < t_end < t_start):
        raise InvalidArgumentError("t_end", f"0 < t_end < t_start = {t_start!r}", repr(t_end))
    times = [t_end]
    while times[-1] < t_start:
        curvature = oracle.curvature(times[-1])
        if curvature is None:
            raise InvalidArgumentError("oracle", "an oracle with a known curvature (oracle.curvature)",
                                       type(oracle).__name__)
        times.append(times[-1] + factor * rt1_segment(curvature))
    times[-1] = t_start
    if len(times) > 2 and times[-1] - times[-2] < 1e-12:
        times.pop(-2)
    return torch.tensor(times[::-1], dtype=torch.float64)


def _check_inputs(oracle: Oracle, x: torch.Tensor, times: Any) -> torch.Tensor:
    if not isinstance(oracle, Oracle):
        raise InvalidArgumentError("oracle", "a ditcheck.diffusion.oracles.Oracle", type(oracle).__name__)
    if isinstance(oracle, FlowOracle):
        # a flow oracle answers score() too, but on its interpolant (sigma^2 != 1 - alpha^2): these samplers' VP
        # formulas would run silently on the wrong path
        raise InvalidArgumentError("oracle", "a variance-preserving oracle (ditcheck.diffusion.oracles); a flow "
                                   "oracle goes to flow_euler, flow_heun or flow_sde", type(oracle).__name__)
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != oracle.dim:
        raise ShapeError("x", f"a tensor of shape [N, {oracle.dim}]", str(getattr(x, "shape", type(x))))
    grid = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if grid.numel() < 2 or not bool(torch.all(grid[1:] < grid[:-1])):
        raise InvalidArgumentError("times", "a strictly decreasing grid of at least 2 times", repr(grid.tolist()))
    oracle.schedule.check(grid, "times")
    return grid


def _coefficients(oracle: Oracle, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.to(dtype=like.dtype, device=like.device)
    return oracle.schedule.alpha(t), oracle.schedule.sigma2(t)


def _result(oracle: Oracle, start: tuple[int, int], x: torch.Tensor, acceptance: float | None = None) -> SampleResult:
    return SampleResult(x, oracle.score_evals - start[0], oracle.energy_evals - start[1], acceptance)


# ----------------------------------------------------------------------------------------
# DDPM, DDIM, probability flow, reverse SDE


def ddim(oracle: Oracle, x: torch.Tensor, times: Any, *, eta: float = 0.0,
         generator: torch.Generator | None = None) -> SampleResult:
    """DDIM (Song, Meng, Ermon 2021, eq. 12): x_s = alpha_s x0_hat + sqrt(sigma_s^2 - s_eta^2) eps_hat + s_eta z.

    eps_hat = -sigma_t score, x0_hat = (x_t - sigma_t eps_hat) / alpha_t,
    s_eta = eta sqrt(sigma_s^2 / sigma_t^2) sqrt(1 - alpha_t^2 / alpha_s^2); one score evaluation per step.
    """
    grid = _check_inputs(oracle, x, times)
    if not (math.isfinite(eta) and 0 <= eta <= 1):
        raise InvalidArgumentError("eta", "a DDIM eta in [0, 1]", repr(eta))
    gen = _generator(generator, x.device)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        alpha_t, sigma2_t = _coefficients(oracle, t, x)
        alpha_s, sigma2_s = _coefficients(oracle, s, x)
        eps = -torch.sqrt(sigma2_t) * oracle.score(x, t)
        x0 = (x - torch.sqrt(sigma2_t) * eps) / alpha_t
        noise_sd = eta * torch.sqrt(sigma2_s / sigma2_t * (1 - alpha_t**2 / alpha_s**2))
        x = alpha_s * x0 + torch.sqrt(torch.clamp(sigma2_s - noise_sd**2, min=0)) * eps
        if eta > 0:
            x = x + noise_sd * _normal(x, gen)
    return _result(oracle, start, x)


def ddpm(oracle: Oracle, x: torch.Tensor, times: Any, *, generator: torch.Generator | None = None) -> SampleResult:
    """DDPM ancestral (Ho et al. 2020, eq. 6-7): x_s ~ q(x_s | x_t, x0_hat), x0_hat = (x_t + sigma_t^2 score)/alpha_t.

    With a = alpha_t/alpha_s and b = sigma_t^2 - a^2 sigma_s^2 (the variance of the step t <- s):
    mean = (alpha_s b / sigma_t^2) x0_hat + (a sigma_s^2 / sigma_t^2) x_t, variance b sigma_s^2 / sigma_t^2.
    """
    grid = _check_inputs(oracle, x, times)
    gen = _generator(generator, x.device)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        alpha_t, sigma2_t = _coefficients(oracle, t, x)
        alpha_s, sigma2_s = _coefficients(oracle, s, x)
        a = alpha_t / alpha_s
        b = sigma2_t - a * a * sigma2_s
        x0 = (x + sigma2_t * oracle.score(x, t)) / alpha_t
        mean = alpha_s * b / sigma2_t * x0 + a * sigma2_s / sigma2_t * x
        x = mean + torch.sqrt(b * sigma2_s / sigma2_t) * _normal(x, gen)
    return _result(oracle, start, x)


def _pf_velocity(oracle: Oracle, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx/dt = f(t) (x + grad log p_t(x)) (probability-flow ODE of a VP schedule)."""
    f = oracle.schedule.drift(t.to(dtype=x.dtype, device=x.device))
    return f * (x + oracle.score(x, t))


def pf_euler(oracle: Oracle, x: torch.Tensor, times: Any, *, generator: torch.Generator | None = None) -> SampleResult:
    """Probability-flow ODE by Euler: x_s = x_t + (s - t) f(t) (x_t + score(x_t, t)); one evaluation per step."""
    grid = _check_inputs(oracle, x, times)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        x = x + (s - t).to(x.dtype) * _pf_velocity(oracle, x, t)
    return _result(oracle, start, x)


def pf_heun(oracle: Oracle, x: torch.Tensor, times: Any, *, generator: torch.Generator | None = None) -> SampleResult:
    """Probability-flow ODE by Heun's method (Karras et al. 2022, Alg. 1): two evaluations per step."""
    grid = _check_inputs(oracle, x, times)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        h = (s - t).to(x.dtype)
        d_t = _pf_velocity(oracle, x, t)
        guess = x + h * d_t
        x = x + h * (d_t + _pf_velocity(oracle, guess, s)) / 2
    return _result(oracle, start, x)


def euler_maruyama(oracle: Oracle, x: torch.Tensor, times: Any, *,
                   generator: torch.Generator | None = None) -> SampleResult:
    """Reverse SDE by Euler-Maruyama: x_s = x_t - h f(t) (x_t + 2 score(x_t, t)) + sqrt(-2 f(t) h) z, h = t - s.

    For OU-half (f = -1/2) this is LD5's discretisation: on the orthogonal complement of a latent subspace
    y_s = y_t (1 + h (1/2 - 1/sigma_t^2)) + sqrt(h) z.
    """
    grid = _check_inputs(oracle, x, times)
    gen = _generator(generator, x.device)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        h = (t - s).to(x.dtype)
        f = oracle.schedule.drift(t.to(dtype=x.dtype, device=x.device))
        x = x - h * f * (x + 2 * oracle.score(x, t)) + torch.sqrt(-2 * f * h) * _normal(x, gen)
    return _result(oracle, start, x)


# ----------------------------------------------------------------------------------------
# RT3: the exact-OU step (RT1 and LD5 constants live in ditcheck.bounds)


#: below this gamma tau, Var xi_z's 2x - 3 + 4e^-x - e^-2x (which cancels to O(x^3)) is summed as its Taylor series
ULD_SERIES_BELOW = 0.5
#: the series' last power: its first omitted term (2^20 - 4)/20! x^20 is <= 2^-54 times the sum for x < 1/2
#: (the series alternates with decreasing terms there, and the sum is >= x^3 (2/3 - x/2)), so truncation is below
#: half an ulp; the closed form above 1/2 loses at most a factor 55 (its terms over its value) to cancellation.
ULD_SERIES_TERMS = 19


def uld_position_series(x: float, terms: int = ULD_SERIES_TERMS) -> float:
    """2x - 3 + 4 e^-x - e^-2x = sum_{n=3..terms} (-1)^(n+1) (2^n - 4) x^n / n!, by Horner (no cancellation for x >= 0)."""
    total = 0.0
    for n in range(terms, 2, -1):
        total = total * x + (-1) ** (n + 1) * (2.0**n - 4.0) / math.factorial(n)
    return total * x * x * x


def uld_noise_covariance(friction: float, scale: float, step: float) -> np.ndarray:
    """RT3 (Huang et al. 2024, App. ULD step; docs/claims.md#rt3): covariance of (xi_z, xi_v) of one exact-OU step.

    Var xi_v = u (1 - e^(-2 gamma tau)), Var xi_z = (u/gamma^2)(2 gamma tau - 3 + 4 e^(-gamma tau) - e^(-2 gamma tau)),
    Cov = (u/gamma)(1 - 2 e^(-gamma tau) + e^(-2 gamma tau)). Derived from xi_v = sqrt(2 gamma u) int_0^tau
    e^(-gamma (tau - r)) dB_r and xi_z = int_0^tau xi_v(r) dr (Ito isometry); expm1 keeps small gamma tau accurate.
    """
    for name, value in (("friction", friction), ("scale", scale), ("step", step)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidArgumentError(name, "a positive finite number", repr(value))
    x = friction * step
    e1 = -math.expm1(-x)  # 1 - e^-x
    var_v = scale * -math.expm1(-2 * x)
    # 2x - 3 + 4 e^-x - e^-2x = 2x - 4 (1 - e^-x) + (1 - e^-2x); its Taylor series below ULD_SERIES_BELOW avoids the
    # cancellation (to a truncation error below half an ulp: ULD_SERIES_TERMS)
    if x < ULD_SERIES_BELOW:
        inner = uld_position_series(x)
    else:
        inner = 2 * x - 4 * e1 - math.expm1(-2 * x)
    var_z = scale / friction**2 * inner
    cov = scale / friction * e1 * e1
    return np.array([[var_z, cov], [cov, var_v]])


# ----------------------------------------------------------------------------------------
# Reverse transition kernels


class PotentialState(NamedTuple):
    """A point's energy g (None when only differences are available) and gradient grad g."""

    value: torch.Tensor | None
    grad: torch.Tensor


class Potential(Protocol):
    def evaluate(self, z: torch.Tensor) -> PotentialState: ...

    def difference(self, z_new: torch.Tensor, new: PotentialState, z_old: torch.Tensor,
                   old: PotentialState) -> torch.Tensor: ...


_GAUSS_LEGENDRE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _gauss_legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    """m nodes and weights on [0, 1]."""
    if m not in _GAUSS_LEGENDRE:
        nodes, weights = np.polynomial.legendre.leggauss(m)
        _GAUSS_LEGENDRE[m] = ((nodes + 1) / 2, weights / 2)
    return _GAUSS_LEGENDRE[m]


class RTKPotential:
    """g(z) = -log p_s(z) + ||x - a z||^2 / (2 (1 - a^2)), a = alpha_t / alpha_s: the RTK target of one segment t -> s.

    ``energy_nodes=None``: exact values from the oracle's log density; m: g differences by the m-point
    Gauss-Legendre line integral of the score (module docstring).
    """

    def __init__(self, oracle: Oracle, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                 energy_nodes: int | None = None):
        alpha_t, _ = _coefficients(oracle, t, x)
        alpha_s, _ = _coefficients(oracle, s, x)
        self.oracle, self.x, self.s = oracle, x, s
        self.a = alpha_t / alpha_s
        self.variance = 1 - self.a**2
        self.coupling = self.a**2 / self.variance  # RT1's c
        self.energy_nodes = energy_nodes
        if energy_nodes is None and not oracle.has_energy:
            raise InvalidArgumentError("energy_nodes", "a number of line-integral nodes for a score-only oracle",
                                       "None")

    def _quadratic(self, z: torch.Tensor) -> torch.Tensor:
        return (self.x - self.a * z).pow(2).sum(-1) / (2 * self.variance)

    def _coupling_grad(self, z: torch.Tensor) -> torch.Tensor:
        return -self.a * (self.x - self.a * z) / self.variance

    def evaluate(self, z: torch.Tensor) -> PotentialState:
        if self.energy_nodes is None:
            both = getattr(self.oracle, "log_density_and_score", None)
            if both is not None:
                log_p, score = both(z, self.s)
            else:
                log_p, score = self.oracle.log_density(z, self.s), self.oracle.score(z, self.s)
            return PotentialState(-log_p + self._quadratic(z), -score + self._coupling_grad(z))
        return PotentialState(None, -self.oracle.score(z, self.s) + self._coupling_grad(z))

    def difference(self, z_new: torch.Tensor, new: PotentialState, z_old: torch.Tensor,
                   old: PotentialState) -> torch.Tensor:
        """g(z_new) - g(z_old), [N]."""
        if new.value is not None and old.value is not None:
            return new.value - old.value
        nodes, weights = _gauss_legendre(self.energy_nodes or 1)
        step = z_new - z_old
        log_ratio = torch.zeros(z_new.shape[0], dtype=z_new.dtype, device=z_new.device)
        for node, weight in zip(nodes, weights):
            log_ratio = log_ratio + float(weight) * (self.oracle.score(z_old + float(node) * step, self.s)
                                                     * step).sum(-1)
        return -log_ratio + self._quadratic(z_new) - self._quadratic(z_old)


def mala(potential: Potential, z: torch.Tensor, steps: int, step_size: float,
         generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """RT2 (Huang et al. 2024, Alg. 2; docs/claims.md#rt2): MALA on exp(-g), one accept/reject per row.

    Proposal z' = z - tau grad g(z) + sqrt(2 tau) xi; accept with probability
    min(1, exp(g(z) - g(z') + ||z' - z + tau grad g(z)||^2/(4 tau) - ||z - z' + tau grad g(z')||^2/(4 tau))).
    Returns (z, mean acceptance rate).
    """
    state = potential.evaluate(z)
    accepted = 0.0
    for _ in range(steps):
        proposal = z - step_size * state.grad + math.sqrt(2 * step_size) * _normal(z, generator)
        new = potential.evaluate(proposal)
        forward = (proposal - z + step_size * state.grad).pow(2).sum(-1) / (4 * step_size)
        backward = (z - proposal + step_size * new.grad).pow(2).sum(-1) / (4 * step_size)
        log_ratio = -potential.difference(proposal, new, z, state) + forward - backward
        uniform = torch.rand(z.shape[0], generator=generator, dtype=z.dtype, device=z.device)
        accept = torch.log(uniform) < log_ratio
        z = torch.where(accept[:, None], proposal, z)
        value = None if state.value is None else torch.where(accept, new.value, state.value)
        state = PotentialState(value, torch.where(accept[:, None], new.grad, state.grad))
        accepted += float(accept.to(z.dtype).mean())
    return z, accepted / max(steps, 1)


def uld(potential: Potential, z: torch.Tensor, steps: int, step_size: float, friction: float, scale: float,
        generator: torch.Generator, covariance: Callable[[float, float, float], np.ndarray] = uld_noise_covariance,
        v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RT3: underdamped Langevin dz = v dt, dv = -gamma v dt - u grad g(z) dt + sqrt(2 gamma u) dB, exact OU step.

    With the gradient frozen at z_k over a step tau, e = e^(-gamma tau):
    v' = e v - u (1 - e)/gamma grad + xi_v, z' = z + (1 - e)/gamma v - u (tau - (1 - e)/gamma)/gamma grad + xi_z,
    (xi_z, xi_v) ~ N(0, uld_noise_covariance(gamma, u, tau)) per coordinate. The continuous dynamics leave
    exp(-g(z) - |v|^2/(2u)) invariant; the chain, with the gradient frozen, does so only up to O(tau): on a
    Gaussian with u kappa = 1, gamma = 1 its variance is 1.32, 1.14, 1.05 x 1/kappa at tau = 0.5, 0.25, 0.1
    (ditcheck.properties.samplers.uld_stationary_covariance). v starts from N(0, u I) unless given. Returns (z, v);
    one gradient per step.
    """
    cov = covariance(friction, scale, step_size)
    lower = np.linalg.cholesky(cov)
    l11, l21, l22 = (float(lower[0, 0]), float(lower[1, 0]), float(lower[1, 1]))
    e = math.exp(-friction * step_size)
    k1 = -math.expm1(-friction * step_size) / friction  # (1 - e)/gamma
    k2 = (step_size - k1) / friction
    if v is None:
        v = math.sqrt(scale) * _normal(z, generator)
    grad = potential.evaluate(z).grad
    for step in range(steps):
        n1, n2 = _normal(z, generator), _normal(z, generator)
        z, v = (z + k1 * v - scale * k2 * grad + l11 * n1,
                e * v - scale * k1 * grad + l21 * n1 + l22 * n2)
        if step + 1 < steps:
            grad = potential.evaluate(z).grad
    return z, v


def ula(potential: Potential, z: torch.Tensor, steps: int, step_size: float,
        generator: torch.Generator) -> torch.Tensor:
    """Unadjusted Langevin z' = z - h grad g(z) + sqrt(2 h) xi: biased, the bias O(h) (the check of its slope lives in properties)."""
    for _ in range(steps):
        z = z - step_size * potential.evaluate(z).grad + math.sqrt(2 * step_size) * _normal(z, generator)
    return z


def _segments(oracle: Oracle, x: torch.Tensor, times: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    grid = _check_inputs(oracle, x, times)
    return list(zip(grid[:-1], grid[1:]))


def _initial(oracle: Oracle, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, init: str,
             generator: torch.Generator) -> torch.Tensor:
    """Start of the inner chain: x itself (Huang et al.), or one DDPM ancestral step t -> s (one score evaluation).

    The start does not change what the inner chain targets (p(z | x) is invariant for MALA; ULD's bias is
    its own), only how far it has to travel: the DDPM step puts z near p(z | x) at once.
    """
    if init == "x":
        return x
    if init == "ddpm":
        return ddpm(oracle, x, torch.stack([t, s]), generator=generator).x
    raise InvalidArgumentError("init", "'x' or 'ddpm'", repr(init))


def _smoothness(potential: RTKPotential, lipschitz: float | None) -> float:
    """c + L, RT1's smoothness of g. L: given, else the oracle's curvature at s, else c/2 (RT1's regime c = 2L)."""
    c = float(potential.coupling)
    if lipschitz is None:
        lipschitz = potential.oracle.curvature(float(potential.s))
    return c + (c / 2 if lipschitz is None else lipschitz)


def rtk_mala(oracle: Oracle, x: torch.Tensor, times: Any, *, inner_steps: int = 10, step_scale: float = 0.5,
             lipschitz: float | None = None, energy_nodes: int | None = None, init: str = "x",
             generator: torch.Generator | None = None) -> SampleResult:
    """RTK-MALA (Huang et al. 2024, Alg. 1 with MALA inner loop): per segment, ``inner_steps`` MALA steps on g.

    The chain starts at z = x (``init="x"``) or at one DDPM step from x (``init="ddpm"``, one more score
    evaluation per segment). MALA step tau = step_scale / (c + L) (RT1's smoothness; L defaults to
    oracle.curvature(s)). Per segment inner_steps + 1 score and energy evaluations (exact energies), or
    inner_steps (1 + energy_nodes) + 1 score evaluations (line integrals); plus 1 score evaluation for init="ddpm".
    """
    gen = _generator(generator, x.device)
    start = oracle.counts()
    rates = []
    for t, s in _segments(oracle, x, times):
        potential = RTKPotential(oracle, x, t, s, energy_nodes)
        z = _initial(oracle, x, t, s, init, gen)
        x, rate = mala(potential, z, inner_steps, step_scale / _smoothness(potential, lipschitz), gen)
        rates.append(rate)
    return _result(oracle, start, x, float(np.mean(rates)))


def rtk_uld(oracle: Oracle, x: torch.Tensor, times: Any, *, inner_steps: int = 10, step_size: float = 0.5,
            friction: float = 1.0, lipschitz: float | None = None, init: str = "x",
            generator: torch.Generator | None = None) -> SampleResult:
    """RTK-ULD (Huang et al. 2024, Alg. 1 with the ULD inner loop): per segment ``inner_steps`` exact-OU ULD steps on g.

    Scale u = 1/(c + L), so u grad g has Lipschitz constant <= 1; step tau and friction gamma in that unit.
    The result keeps the step's O(tau) bias (see :func:`uld`; about tau/2 relative variance in the stiffest
    directions), so more inner steps at a fixed tau converge to a biased law: shrink tau to shrink the error.
    One score evaluation per inner step (plus one per segment with ``init="ddpm"``; see rtk_mala).
    """
    gen = _generator(generator, x.device)
    start = oracle.counts()
    for t, s in _segments(oracle, x, times):
        potential = RTKPotential(oracle, x, t, s, energy_nodes=1)  # ULD needs gradients only: no energies
        z = _initial(oracle, x, t, s, init, gen)
        x, _ = uld(potential, z, inner_steps, step_size, friction, 1.0 / _smoothness(potential, lipschitz), gen)
    return _result(oracle, start, x)


SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "ddpm": ddpm, "ddim": ddim, "pf-euler": pf_euler, "pf-heun": pf_heun, "euler-maruyama": euler_maruyama,
    "rtk-mala": rtk_mala, "rtk-uld": rtk_uld,
}


# ----------------------------------------------------------------------------------------
# Flow matching: the ODE dx/dt = v(x, t) from t = t_start (noise) down to t_end >= 0 (ditcheck.reference.flow)


def flow_grid(steps: int, t_start: float = 1.0, t_end: float = 0.0) -> torch.Tensor:
    """Uniform decreasing grid t_start = t_0 > ... > t_steps = t_end >= 0 for a flow sampler (t_end = 0 allowed)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError("steps", "a positive integer", repr(steps))
    if not (math.isfinite(t_start) and math.isfinite(t_end) and 0 <= t_end < t_start):
        raise InvalidArgumentError("t_end", f"0 <= t_end < t_start = {t_start!r}", repr(t_end))
    return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)


def _check_flow_inputs(oracle: FlowOracle, x: torch.Tensor, times: Any) -> torch.Tensor:
    """The grid as float64; it may end at t = 0 (the velocity is never evaluated there)."""
    if not isinstance(oracle, FlowOracle):
        raise InvalidArgumentError("oracle", "a ditcheck.diffusion.flow.FlowOracle (a velocity oracle)",
                                   type(oracle).__name__)
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != oracle.dim:
        raise ShapeError("x", f"a tensor of shape [N, {oracle.dim}]", str(getattr(x, "shape", type(x))))
    grid = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if grid.numel() < 2 or not bool(torch.all(grid[1:] < grid[:-1])):
        raise InvalidArgumentError("times", "a strictly decreasing grid of at least 2 times", repr(grid.tolist()))
    oracle.interpolant.check(grid, "times", allow_zero=True)
    return grid


def flow_euler(oracle: FlowOracle, x: torch.Tensor, times: Any, *,
               generator: torch.Generator | None = None) -> SampleResult:
    """Euler on the flow ODE: x_s = x_t + (s - t) v(x_t, t) (diffusers FlowMatchEulerDiscreteScheduler); 1 NFE per step."""
    grid = _check_flow_inputs(oracle, x, times)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        x = x + (s - t).to(x.dtype) * oracle.velocity(x, t)
    return _result(oracle, start, x)


def flow_heun(oracle: FlowOracle, x: torch.Tensor, times: Any, *,
              generator: torch.Generator | None = None) -> SampleResult:
    """Heun (Karras et al. 2022, Alg. 1) on the flow ODE: 2 NFE per step, Euler on a last step to t = 0 (v undefined there)."""
    grid = _check_flow_inputs(oracle, x, times)
    start = oracle.counts()
    for t, s in zip(grid[:-1], grid[1:]):
        h = (s - t).to(x.dtype)
        d_t = oracle.velocity(x, t)
        guess = x + h * d_t
        x = guess if float(s) == 0.0 else x + h * (d_t + oracle.velocity(guess, s)) / 2
    return _result(oracle, start, x)


def flow_sde(oracle: FlowOracle, x: torch.Tensor, times: Any, *, noise: float = 1.0,
             generator: torch.Generator | None = None) -> SampleResult:
    """Stochastic flow sampler: Euler-Maruyama of the reverse SDE dx = [v - (g_t^2 / 2) score] dt + g_t dW (t decreasing).

    For any g the forward SDE dx = [v + (g^2/2) score] dt + g dW has the path's marginals p_t (its Fokker-Planck
    equation reduces to the continuity equation of v); its time reversal is the SDE above (Albergo et al. 2023,
    sec. 2.4; SiT). Here g_t^2 = 2 noise sigma_t^2, so (g^2/2) score = -noise sigma_t E[eps | x] stays bounded as
    sigma_t -> 0; the score comes from the same velocity evaluation (velocity_to_score): 1 NFE per step.
    ``noise = 0`` is flow_euler.
    """
    grid = _check_flow_inputs(oracle, x, times)
    if not (math.isfinite(noise) and noise >= 0):
        raise InvalidArgumentError("noise", "a non-negative finite diffusion scale", repr(noise))
    gen = _generator(generator, x.device)
    start = oracle.counts()
    path = oracle.interpolant
    for t, s in zip(grid[:-1], grid[1:]):
        h = (t - s).to(x.dtype)
        tt = t.to(dtype=x.dtype, device=x.device)
        v = oracle.velocity(x, t)
        g2 = 2 * noise * path.sigma2(tt)
        drift = v - g2 / 2 * velocity_to_score(path, v, x, tt)
        x = x - h * drift + torch.sqrt(g2 * h) * _normal(x, gen)
    return _result(oracle, start, x)


FLOW_SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "flow-euler": flow_euler, "flow-heun": flow_heun, "flow-sde": flow_sde,
}
