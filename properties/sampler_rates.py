"""RT4 measured as stated: score evaluations RTK-ULD needs to reach TV eps, exactly, on Gaussian targets of every d.

RT4 (Huang et al. 2024) claims RTK-ULD reaches TV eps in O~(d^(1/2) eps^-1) score evaluations. On a Gaussian target
p_0 = N(0, s0^2 I_d) (OU-unit) every step of samplers.rtk_uld with init="ddpm" is linear-Gaussian and acts on each
coordinate alike, so its output is exactly N(0, w I_d), w from :func:`rtk_uld_gaussian_variance`, and its TV to the
exact p_{t_end} = N(0, V I_d) is the closed form :func:`isotropic_gaussian_tv` (chi-square CDFs): no Monte Carlo, no
metric proxy, and the target's difficulty per coordinate does not change with d (nothing is renormalised). The NFE
to reach eps is minimised over the sampler's knobs (inner steps K on a grid, step tau on a grid; 5 segments, the
paper's, each 1 DDPM start + K ULD steps = K + 1 score evaluations), as a complexity bound assumes a tuned step.
Each coordinate's variance bias is O(tau) (the frozen-gradient step), and TV ~ sqrt(d) |w/V - 1| for small bias, so
the rate to expect is NFE ~ sqrt(d) / eps up to the log(1/eps) of the inner chain's convergence: RT4's exponents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ditcheck.diffusion import samplers
from ditcheck.reference.errors import InvalidArgumentError

from .samplers import uld_transition

__all__ = ["rtk_uld_gaussian_variance", "chi2_cdf", "isotropic_gaussian_tv", "isotropic_gaussian_tvs", "RT4Grid", "RT4_GRID",
           "rtk_uld_tv", "nfe_to_tv", "target_variance_at", "Transition"]


def target_variance_at(time: float, target_variance: float) -> float:
    """Per-coordinate variance of p_t for p_0 = N(0, s0^2 I) under OU-unit: e^(-2t) s0^2 + 1 - e^(-2t)."""
    return math.exp(-2 * time) * target_variance - math.expm1(-2 * time)


def rtk_uld_gaussian_variance(times: Sequence[float], inner_steps: int | Sequence[int], step: float, friction: float,
                              target_variance: float,
                              transition: Callable[[float, float, float, float], tuple[np.ndarray, np.ndarray]]
                              = uld_transition) -> np.ndarray:
    """Exact per-coordinate output variance of samplers.rtk_uld(init="ddpm") on p_0 = N(0, s0^2 I) from x_T ~ N(0, I),
    for one or several inner-step counts K at once (an array shaped like ``inner_steps``).

    Segment t -> s, a = e^-(t - s), v = 1 - a^2, V_r = target_variance_at(r, s0^2): the DDPM start is
    z = gain x + N(0, b sigma_s^2/sigma_t^2) with the exact score -x/V_t (samplers.ddpm); g(z) = z^2/(2 V_s) +
    (x - a z)^2/(2 v), grad g = kappa z - (a/v) x, kappa = 1/V_s + a^2/v; the scale u = 1/(c + L) with
    L = oracle.curvature(s) = 1/V_s, so u kappa = 1; the velocity starts at N(0, u). With x fixed the ULD chain
    (z, v)' = A (z, v) + beta x + N(0, Q) (properties.samplers.uld_transition) has the fixed point m x,
    m = (I - A)^-1 beta, and its deviation from it contracts by A: K steps are applied in closed form
    (A^K and the Lyapunov solution S = A S A^T + Q), so any K costs the same.
    """
    counts = np.asarray(inner_steps, dtype=np.int64)
    if counts.size == 0 or counts.min() < 1 or step <= 0 or friction <= 0 or target_variance < 0:
        raise InvalidArgumentError("inner_steps", "inner_steps >= 1, step > 0, friction > 0, target_variance >= 0",
                                   repr((inner_steps, step, friction, target_variance)))
    flat = counts.reshape(-1)
    grid = [float(t) for t in times]
    var_x = np.ones(flat.shape)
    for t, s in zip(grid[:-1], grid[1:]):
        sigma2_t, sigma2_s = -math.expm1(-2 * t), -math.expm1(-2 * s)
        alpha_t, alpha_s = math.exp(-t), math.exp(-s)
        a = alpha_t / alpha_s
        v = -math.expm1(-2 * (t - s))
        big_t, big_s = target_variance_at(t, target_variance), target_variance_at(s, target_variance)
        b = sigma2_t - a * a * sigma2_s
        shrink = (1 - sigma2_t / big_t) / alpha_t  # x0_hat = shrink x
        gain = alpha_s * b / sigma2_t * shrink + a * sigma2_s / sigma2_t
        start_noise = b * sigma2_s / sigma2_t
        c = a * a / v
        kappa = 1 / big_s + c
        u = 1 / (c + 1 / big_s)
        transition_matrix, noise = transition(kappa, u, step, friction)
        beta = -(transition_matrix[:, 0] - np.array([1.0, 0.0])) * a / (v * kappa)  # x's column: grad g's x part
        fixed = np.linalg.solve(np.eye(2) - transition_matrix, beta)
        stationary = np.linalg.solve(np.eye(4) - np.kron(transition_matrix, transition_matrix),
                                     noise.reshape(-1)).reshape(2, 2)
        # (z, v) at the start: z = gain x + noise, v ~ N(0, u) independent of x; per K: [n, 2, 2] and [n, 2]
        cov_zv = np.zeros((flat.size, 2, 2))
        cov_zv[:, 0, 0] = gain * gain * var_x + start_noise
        cov_zv[:, 1, 1] = u
        cross = np.stack([gain * var_x, np.zeros_like(var_x)], axis=-1)  # Cov((z, v), x)
        dev_cov = (cov_zv - cross[:, :, None] * fixed[None, None, :] - fixed[None, :, None] * cross[:, None, :]
                   + var_x[:, None, None] * np.outer(fixed, fixed)[None])
        dev_cross = cross - fixed[None] * var_x[:, None]
        power = np.stack([np.linalg.matrix_power(transition_matrix, int(k)) for k in flat])
        dev_cov = power @ (dev_cov - stationary) @ power.transpose(0, 2, 1) + stationary
        dev_cross = np.einsum("nij,nj->ni", power, dev_cross)
        var_x = dev_cov[:, 0, 0] + 2 * fixed[0] * dev_cross[:, 0] + fixed[0] ** 2 * var_x
    return var_x.reshape(counts.shape)


def chi2_cdf(x: np.ndarray | float, dim: int) -> np.ndarray:
    """P(chi2_dim <= x) = P(dim/2, x/2), the regularised lower incomplete gamma function (torch.special.gammainc,
    Cephes' igam in float64), so the audit needs no scipy at run time.

    Its absolute error is ~1e-16 for d <= 40 and at most 3.8e-10 above (measured against scipy's chi2.cdf, itself
    1e-16 from mpmath: torch's large-a branch is less accurate than scipy's Temme expansion). The audit only compares
    TVs (differences of two such values) with thresholds eps >= 1e-5, so an error below 1e-9 can flip a "TV <= eps"
    decision only for a TV within 1e-4 eps of the threshold (tests/test_audit_samplers_gp.py holds the error below
    1e-9 up to d = 65536)."""
    values = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return torch.special.gammainc(torch.full_like(values, dim / 2), values / 2).numpy()


def isotropic_gaussian_tv(first: float, second: float, dim: int) -> float:
    """TV(N(0, first I_d), N(0, second I_d)): the densities cross at ||x||^2 = r2 = d ln(w/v) / (1/v - 1/w) (w > v),
    so TV = P(chi2_d <= r2 / v) - P(chi2_d <= r2 / w)."""
    low, high = sorted((float(first), float(second)))
    if not low > 0:
        raise InvalidArgumentError("first", "positive variances", repr((first, second)))
    if high == low:
        return 0.0
    ratio = high / low
    r2 = dim * math.log(ratio) / (1 / low - 1 / high)
    return float(chi2_cdf(r2 / low, dim) - chi2_cdf(r2 / high, dim))


@dataclass(frozen=True)
class RT4Grid:
    """The RT4 experiment: OU-unit from T_START to T_END in ``segments`` log-spaced segments, target N(0, s0^2 I),
    friction 1, the step tau searched over ``steps`` and the inner steps K over ``inner``."""

    start: float = 7.0
    end: float = 0.02
    segments: int = 5
    target_variance: float = 0.25
    friction: float = 1.0
    steps: tuple[float, ...] = tuple(float(v) for v in np.geomspace(1e-5, 0.5, 48))
    inner: tuple[int, ...] = tuple(sorted({int(round(v)) for v in np.geomspace(1, 1e7, 160)}))

    def times(self) -> list[float]:
        return [float(t) for t in samplers.time_grid(self.start, self.end, self.segments, "log")]


RT4_GRID = RT4Grid()


def rtk_uld_tv(dim: int, inner_steps: int, step: float, grid: RT4Grid = RT4_GRID) -> float:
    """Exact TV(p_{t_end}, law of samplers.rtk_uld's output) on the d-dimensional Gaussian target of ``grid``."""
    w = float(rtk_uld_gaussian_variance(grid.times(), inner_steps, step, grid.friction, grid.target_variance))
    return isotropic_gaussian_tv(w, target_variance_at(grid.end, grid.target_variance), dim)


Transition = Callable[[float, float, float, float], tuple[np.ndarray, np.ndarray]]


def nfe_to_tv(eps: float, dim: int, grid: RT4Grid = RT4_GRID, transition: Transition = uld_transition
              ) -> tuple[int, float, int]:
    """(fewest score evaluations segments (K + 1) after which TV stays <= eps, that tau, that K) over the grid;
    (inf, nan, 0) when no (tau, K) of the grid reaches and keeps eps.

    "Stays": TV <= eps at K and at every larger K of the grid for the same tau (a mixing-time definition). The
    bare first K with TV <= eps would credit lucky cancellations: an unconverged chain's start error (negative)
    crossing the step's bias (positive, about tau/2 of the variance) gives isolated (tau, K) with tiny TV that
    running longer destroys. The per-coordinate variances are computed once per grid and reused for every d, eps.
    """
    if not 0 < eps < 1:
        raise InvalidArgumentError("eps", "a total variation in (0, 1)", repr(eps))
    variances = _variance_table(grid, transition)  # [steps, inner]
    tv = isotropic_gaussian_tvs(variances, target_variance_at(grid.end, grid.target_variance), dim)
    # below[i, j]: TV <= eps at inner[j] and at every larger inner count (reverse cumulative all)
    below = np.flip(np.logical_and.accumulate(np.flip(tv <= eps, axis=1), axis=1), axis=1)
    inner = np.asarray(grid.inner)
    nfe = np.where(below, grid.segments * (inner[None, :] + 1), np.iinfo(np.int64).max)
    index = np.unravel_index(int(np.argmin(nfe)), nfe.shape)
    if not below[index]:
        return math.inf, math.nan, 0  # type: ignore[return-value]
    return int(nfe[index]), grid.steps[index[0]], int(inner[index[1]])


def isotropic_gaussian_tvs(first: np.ndarray, second: float, dim: int) -> np.ndarray:
    """:func:`isotropic_gaussian_tv` over an array of first variances (vectorised)."""
    first = np.asarray(first, dtype=np.float64)
    low, high = np.minimum(first, second), np.maximum(first, second)
    equal = high == low
    ratio = np.where(equal, 2.0, high / low)
    r2 = dim * np.log(ratio) / np.where(equal, 1.0, 1 / low - 1 / high)
    return np.where(equal, 0.0, chi2_cdf(r2 / low, dim) - chi2_cdf(r2 / high, dim))


_TABLES: dict[tuple[RT4Grid, Transition], np.ndarray] = {}


def _variance_table(grid: RT4Grid, transition: Transition = uld_transition) -> np.ndarray:
    key = (grid, transition)
    if key not in _TABLES:
        times = grid.times()
        _TABLES[key] = np.stack([rtk_uld_gaussian_variance(times, grid.inner, step, grid.friction,
                                                           grid.target_variance, transition)
                                 for step in grid.steps])
    return _TABLES[key]
