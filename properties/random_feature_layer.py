"""RF1 properties: random-feature attention's infinite-head kernel, its M^-1/2 rate, key-permutation invariance.

Claim RF1 (docs/claims.md#rf1; Fu, Guo, Bai, Mei 2023, marked "verify"): ditcheck.gp.random_feature_layer derives the kernel;
here it is checked three ways: against the formula written literally (C_ij built as d x d matrices), against
a Monte Carlo average over many heads (a statistical test: 7 standard errors), and by the fitted rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from ditcheck.gp.random_feature_layer import (RandomFeatureAttention, monte_carlo_kernel_error, random_query_key_matrices,
                                           rf1_features, rf1_kernel, sphere_sequences)
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.rounding import BOUND_INFLATION, EXP_RELATIVE_ERROR, gamma

from .measurement import RateSeries
from .strategies import seeds
from .violation import require

__all__ = [
    "RF1Case",
    "rf1_cases",
    "literal_rf1_kernel",
    "check_rf1_kernel_formula",
    "check_rf1_monte_carlo",
    "check_rf1_permutation",
    "RateCase",
    "rf1_rate_series",
    "check_rf1_rate",
]

#: Standard errors allowed between the Monte Carlo Gram and the kernel. For a Gaussian mean a 7-sigma
#: excursion has probability 2.6e-12 per entry; the per-head products are lognormal-tailed (exponent
#: variance <= 4 s^2 <= 1.44 on the unit sphere), so the sample standard error is slightly optimistic.
MONTE_CARLO_SIGMAS = 7.0


@dataclass(frozen=True)
class RF1Case:
    """B sequences of N keys in R^d on the unit sphere, s and W0 = b I, a seed (repr rebuilds the case)."""

    sequences: int
    keys: int
    dim: int
    scale: float
    mean_scale: float
    seed: int

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return sphere_sequences(self.sequences, self.keys, self.dim, self.seed)

    @property
    def mean(self) -> np.ndarray:
        return self.mean_scale * np.eye(self.dim)


@st.composite
def rf1_cases(draw: st.DrawFn, max_keys: int = 6, max_dim: int = 5) -> RF1Case:
    """RF1 cases: 1-4 sequences, 1-max_keys keys, d <= max_dim, s in [0.05, 0.6], W0 = 0 or b I, |b| <= 1.5."""
    mean_scale = draw(st.one_of(st.just(0.0), st.floats(-1.5, 1.5)))
    return RF1Case(draw(st.integers(1, 4)), draw(st.integers(1, max_keys)), draw(st.integers(1, max_dim)),
                   draw(st.floats(0.05, 0.6)), mean_scale, draw(seeds()))


def literal_rf1_kernel(x0: np.ndarray, keys: np.ndarray, x0_other: np.ndarray, keys_other: np.ndarray, scale: float,
                       mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RF1's formula (docs/claims.md#rf1) term by term with C_ij = x0 x_i^T + x0' x'_j^T as d x d matrices: (K, sum of |terms|)."""
    c = x0[:, None, None, None, :, None] * keys[:, :, None, None, None, :] \
        + x0_other[None, None, :, None, :, None] * keys_other[None, None, :, :, None, :]  # [B, N, B', N', d, d]
    exponent = np.sum(mean * c, axis=(-2, -1)) + scale**2 * np.sum(c * c, axis=(-2, -1)) / 2
    inner = np.einsum("bnc,emc->bnem", keys, keys_other)
    terms = np.exp(exponent) * inner / (keys.shape[1] * keys_other.shape[1])
    return terms.sum(axis=(1, 3)), np.abs(terms).sum(axis=(1, 3))


def check_rf1_kernel_formula(case: RF1Case, kernel: Callable[..., np.ndarray] = rf1_kernel) -> None:
    """RF1: the expanded kernel equals the literal formula to rounding.

    Both sum N N' terms exp(e) <x_i, x'_j>; each exponent has absolute error <= (4 d^2 + 8) u |e|-scale (a sum of
    O(d^2) products of numbers <= |W0|, |C| bounded by the inputs), i.e. relative error <= (4 d^2 + 8) u (1 + |e|)
    on exp; so |K - K_literal| <= 2 ((4 d^2 + 8) u (1 + e_max) + (N N' + d + 4) u) sum |terms|.
    """
    x0, keys = case.data()
    expected, magnitude = literal_rf1_kernel(x0, keys, x0, keys, case.scale, case.mean)
    actual = kernel(x0, keys, x0, keys, case.scale, case.mean)
    d, n = case.dim, case.keys
    e_max = abs(case.mean_scale) * 2 + case.scale**2 * 4  # |<W0, C>| <= 2 |b|, ||C||_F^2 <= 4 on the unit sphere
    tolerance = 2 * ((4 * d * d + 8) * U * (1 + e_max) + (n * n + d + 4) * U) * magnitude
    gap = np.abs(actual - expected)
    require(np.all(gap <= tolerance), "RF1", "expanded kernel != the literal formula", worst=float(gap.max()),
            tolerance=float(tolerance.max()), case=case)


def check_rf1_monte_carlo(case: RF1Case, kernel: Callable[..., np.ndarray] = rf1_kernel, heads: int = 16384) -> None:
    """RF1: the M-head Gram (1/M) sum_m <phi_m(X), phi_m(X')> lies within 7 standard errors of the kernel."""
    x0, keys = case.data()
    weights = random_query_key_matrices(heads, case.dim, case.scale, case.mean, seed=case.seed ^ 0x5EED)
    phi = rf1_features(x0, keys, weights)
    products = np.einsum("bmd,cmd->bcm", phi, phi)
    estimate = products.mean(axis=-1)
    standard_error = products.std(axis=-1, ddof=1) / math.sqrt(heads)
    exact = kernel(x0, keys, x0, keys, case.scale, case.mean)
    gap = np.abs(estimate - exact)
    allowed = MONTE_CARLO_SIGMAS * standard_error + 1e-12 * np.abs(exact)
    require(np.all(gap <= allowed), "RF1", "Monte Carlo Gram does not converge to the closed-form kernel",
            worst_sigmas=float(np.max(gap / np.maximum(standard_error, 1e-300))), case=case)


def check_rf1_permutation(case: RF1Case, model: Callable[..., Any] = RandomFeatureAttention, heads: int = 64) -> None:
    """RF1: permuting the keys changes neither the layer's output nor the kernel (beyond reordering a sum).

    Rounding (first order; BOUND_INFLATION covers the rest): a logit x0^T W x_i (<= d^2 products) errs by
    <= gamma_{d^2+2} |x0|^T |W| |x_i| absolutely, so its exp by that plus EXP_RELATIVE_ERROR relatively; the
    layer then sums N keys (and divides by N) and M d head-channel products. Each of the two computations is
    within (logit + exp + gamma_{N+1+Md}) sum_{m,i,c} exp(l_mi) |x_ic| |v_mc| / N of the exact output, so they
    differ by at most twice that. The kernel: each exponent (<= d^2 + 6 roundings of terms whose absolute sum
    is <= 2 |b| + 4 s^2 on the unit sphere) plus exp, then a sum of N N' terms: twice
    (gamma_{d^2+6} (2 |b| + 4 s^2) + EXP_RELATIVE_ERROR + gamma_{N N'+3}) sum |terms|.
    """
    x0, keys = case.data()
    rng = np.random.default_rng(case.seed)
    weights = random_query_key_matrices(heads, case.dim, case.scale, case.mean, seed=case.seed)
    layer = model(weights, dtype=torch.float64)
    with torch.no_grad():
        layer.values.copy_(torch.as_tensor(rng.standard_normal((heads, case.dim))))
    order = rng.permutation(case.keys)
    q, k = torch.as_tensor(x0), torch.as_tensor(keys)
    with torch.no_grad():
        out, permuted = layer(q, k), layer(q, k[:, order])
    d, n = case.dim, case.keys
    logits = np.einsum("ba,mac,bnc->bmn", x0, weights, keys)
    logit_size = np.einsum("ba,mac,bnc->bmn", np.abs(x0), np.abs(weights), np.abs(keys)).max()
    values = np.abs(layer.values.detach().numpy())
    magnitude = np.einsum("bmn,bnc,mc->b", np.exp(logits), np.abs(keys), values) / n
    relative = gamma(d * d + 2) * logit_size + EXP_RELATIVE_ERROR + gamma(n + 1 + heads * d)
    allowed = 2 * relative * magnitude * BOUND_INFLATION
    gap = np.abs((out - permuted).numpy())
    require(np.all(gap <= allowed), "RF1", "layer output changes when the keys are permuted", gap=gap.tolist(),
            allowed=allowed.tolist(), order=order.tolist(), case=case)
    _, magnitude_k = literal_rf1_kernel(x0, keys, x0, keys, case.scale, case.mean)
    moved = rf1_kernel(x0, keys[:, order], x0, keys, case.scale, case.mean)
    original = rf1_kernel(x0, keys, x0, keys, case.scale, case.mean)
    exponent_size = 2 * abs(case.mean_scale) + 4 * case.scale**2
    bound = 2 * (gamma(d * d + 6) * exponent_size + EXP_RELATIVE_ERROR + gamma(n * n + 3)) * magnitude_k \
        * BOUND_INFLATION
    require(np.all(np.abs(moved - original) <= bound), "RF1", "kernel changes when the keys are permuted",
            gap=float(np.abs(moved - original).max()), case=case)


@dataclass(frozen=True)
class RateCase:
    """Monte Carlo rate experiment: head counts, heads drawn per count, s, b and seed of monte_carlo_kernel_error."""

    heads: tuple[int, ...] = (64, 256, 1024, 4096)
    budget: int = 2**14
    scale: float = 0.5
    mean_scale: float = 0.0
    seed: int = 0


def check_rf1_rate(case: RateCase, kernel: Callable[..., np.ndarray] = rf1_kernel,
                   low: float = -0.7, high: float = -0.3) -> float:
    """RF1 (rate): the fitted slope of log RMS ||K_M - K||_F / ||K||_F vs log M lies in [low, high] around -1/2.

    The default window +-0.2 is at least 5 standard deviations of the fitted slope at the default RateCase
    (measured over seeds 0-11: mean -0.52, sd 0.034, for b = 0 and b = 1); a kernel with 2 s^2 in place of
    s^2 (the planted bug) gives -0.003: the Monte Carlo error then stalls at the bias.
    """
    errors, slope = monte_carlo_kernel_error(case.heads, budget=case.budget, scale=case.scale,
                                             mean_scale=case.mean_scale, seed=case.seed, kernel=kernel)
    require(low <= slope <= high, "RF1", "Monte Carlo error does not decay like M^-1/2", slope=slope,
            errors=errors.tolist(), case=case)
    return slope


#: RF1's stated rate and the allowance added to the fit's interval (see rf1_rate_series).
RF1_EXPONENT = -0.5
RF1_TOLERANCE = 0.05


def rf1_rate_series(case: RateCase, kernel: Callable[..., np.ndarray] = rf1_kernel,
                    tolerance: float = RF1_TOLERANCE) -> RateSeries:
    """RF1 (Fu, Guo, Bai, Mei 2023; docs/claims.md#rf1): RMS ||K_M - K||_F / ||K||_F against M, claimed exponent -1/2 ("equal").

    E ||K_M - K||_F^2 = (1/M) sum Var(per-head product) exactly (an average of M i.i.d. unbiased heads), so the
    RMS error is C M^-1/2 with no pre-asymptotic term; ``tolerance`` (0.05) only covers the small downward bias of
    a square root of a mean over few draws at the largest M (4 draws of M heads each).
    """
    errors, _ = monte_carlo_kernel_error(case.heads, budget=case.budget, scale=case.scale,
                                         mean_scale=case.mean_scale, seed=case.seed, kernel=kernel)
    w0 = "0" if case.mean_scale == 0 else f"{case.mean_scale:g} I"
    return RateSeries(f"RF1 Gram error vs heads M (W0 = {w0}, s = {case.scale:g})", [float(m) for m in case.heads],
                      [float(e) for e in errors], RF1_EXPONENT, "equal", tolerance, "heads M",
                      "RMS ||K_M - K||_F / ||K||_F")
