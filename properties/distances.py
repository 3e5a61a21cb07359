"""Distances between distributions: strategies for Gaussian pairs and known-answer TV cases, and the KL, W2 and
TV properties (claims KL, W2, TV in docs/claims.md).

Every property takes the implementation under check as an argument (the reference by default); cases are
frozen dataclasses whose repr rebuilds the input. float64 tolerances are a-priori rounding bounds, written
next to each check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ditcheck.reference import distances, mixtures
from ditcheck.reference.precision import UNIT_ROUNDOFF as U

from .strategies import seeds, spd_matrix
from .violation import require

__all__ = [
    "PAIR_STRUCTURES",
    "GaussianPairCase",
    "gaussian_pair_cases",
    "check_kl",
    "check_w2",
    "TVCase",
    "tv_cases",
    "TVFunction",
    "check_tv_known_answer",
]


# ----------------------------------------------------------------------------------------
# Distances


PAIR_STRUCTURES = ("general", "diagonal", "block")


@dataclass(frozen=True)
class GaussianPairCase:
    """Two Gaussians N(m1, S1), N(m2, S2) in R^n.

    ``structure``: "general" SPD covariances, "diagonal", or "block" (a general 2 x 2 block, then a diagonal;
    n >= 2), for which KL and W2 split into a 2-D part and 1-D parts with independent closed forms.
    """

    dim: int
    seed: int
    structure: str = "general"
    condition: float = 10.0

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        m1, m2 = rng.standard_normal(self.dim), rng.standard_normal(self.dim)
        covariances = []
        for _ in range(2):
            if self.structure == "general":
                covariances.append(spd_matrix(self.dim, rng, self.condition))
                continue
            s = np.diag(np.exp(rng.uniform(0, math.log(self.condition), self.dim)))
            if self.structure == "block":
                s[:2, :2] = spd_matrix(2, rng, self.condition)
            covariances.append(s)
        return m1, covariances[0], m2, covariances[1]


@st.composite
def gaussian_pair_cases(draw: st.DrawFn, max_dim: int = 4) -> GaussianPairCase:
    dim = draw(st.integers(1, max_dim))
    structure = draw(st.sampled_from(PAIR_STRUCTURES if dim >= 2 else PAIR_STRUCTURES[:2]))
    return GaussianPairCase(dim, draw(seeds()), structure, draw(st.sampled_from([1.0, 10.0, 100.0])))


def _kl_1d(m1: float, v1: float, m2: float, v2: float) -> float:
    """KL(N(m1, v1) || N(m2, v2)) = log(s2/s1) + (v1 + (m1 - m2)^2)/(2 v2) - 1/2."""
    return 0.5 * math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5


def _trace_sqrt_2x2(m: np.ndarray) -> float:
    """tr sqrt(M) for a 2 x 2 SPD M: sqrt(tr M + 2 sqrt(det M)) (square the trace of the root; Levinger 1980)."""
    return math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))


def check_kl(case: GaussianPairCase, kl: Callable[..., Any] = distances.kl_gaussian) -> None:
    """KL: 0 at equality, >= 0, and additive over independent blocks: the sum of 1-D KLs for diagonal
    covariances; for "block" pairs the 2-D KL of the leading block (from ``kl`` in 2-D) plus 1-D KLs.

    float64 tolerance 64 n u kappa (1 + |terms|): tr(S2^-1 S1), the Mahalanobis term and the log-determinants
    are each computed with relative error ~ n u kappa and cancel against n.
    """
    m1, s1, m2, s2 = case.build()
    n = case.dim
    kappa = max(np.linalg.cond(s1), np.linalg.cond(s2))
    value = float(kl(m1, s1, m2, s2))
    same = float(kl(m1, s1, m1, s1))
    terms = n + abs(value) + abs(math.log(np.linalg.det(s1))) + abs(math.log(np.linalg.det(s2)))
    tolerance = 64 * n * U * kappa * (1 + terms)
    require(abs(same) <= tolerance, "KL", "KL(N, N) != 0", value=same, case=case)
    require(value >= -tolerance, "KL", "KL < 0", value=value, case=case)
    if case.structure == "general":
        return
    first = 2 if case.structure == "block" else 0
    expected = sum(_kl_1d(m1[i], s1[i, i], m2[i], s2[i, i]) for i in range(first, n))
    if first:
        expected += float(kl(m1[:2], s1[:2, :2], m2[:2], s2[:2, :2]))
    require(abs(value - expected) <= 2 * tolerance, "KL", "KL is not additive over independent blocks",
            value=value, expected=expected, case=case)


def check_w2(case: GaussianPairCase, w2: Callable[..., Any] = distances.w2_gaussian) -> None:
    """W2: ~0 at equality, symmetric, and closed forms without matrix roots where they exist.

    1-D parts: (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2. A 2 x 2 block (structure "block", or n = 2):
    tr((S2^1/2 S1 S2^1/2)^1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)). Tolerance on W2^2:
    64 n u kappa (tr S1 + tr S2 + ||m1 - m2||^2) (eigenvalues of L2^T S1 L2 to n u ||S1|| ||S2||, square
    roots amplified by sqrt(kappa)).
    """
    m1, s1, m2, s2 = case.build()
    n = case.dim
    kappa = max(np.linalg.cond(s1), np.linalg.cond(s2))
    squared = float(w2(m1, s1, m2, s2, squared=True))
    scale = np.trace(s1) + np.trace(s2) + float(np.sum((m1 - m2) ** 2))
    tolerance = 64 * n * U * kappa * scale
    same = float(w2(m1, s1, m1, s1, squared=True))
    require(abs(same) <= tolerance, "W2", "W2(N, N)^2 != 0", value=same, case=case)
    swapped = float(w2(m2, s2, m1, s1, squared=True))
    require(abs(squared - swapped) <= 2 * tolerance, "W2", "W2 is not symmetric", forward=squared,
            backward=swapped, case=case)
    block = 2 if case.structure == "block" or (case.structure == "general" and n == 2) else 0
    if case.structure == "general" and not block:
        return
    expected = float(np.sum((m1 - m2) ** 2)) + sum(
        (math.sqrt(s1[i, i]) - math.sqrt(s2[i, i])) ** 2 for i in range(block, n))
    if block:
        expected += float(np.trace(s1[:2, :2]) + np.trace(s2[:2, :2]) - 2 * _trace_sqrt_2x2(s1[:2, :2] @ s2[:2, :2]))
    require(abs(squared - expected) <= 2 * tolerance, "W2", "W2^2 != closed form", value=squared,
            expected=expected, case=case)


@dataclass(frozen=True)
class TVCase:
    """Two Gaussians with one shared covariance (TV = erf(delta / (2 sqrt 2)), delta the Mahalanobis distance).

    Wrapped as mixtures: p has one component; q is either the same law split into two identical
    components with weights (w, 1 - w) (still the same density), or a density callable (``callable_q``, 1-D).
    """

    dim: int
    separation: float
    scale: float
    seed: int
    split: float = 1.0
    callable_q: bool = False

    def build(self) -> tuple[mixtures.LatentMixture, Any, float, dict[str, Any]]:
        """(p, q, exact TV, extra keyword arguments for the TV function: derivative bounds and domain of a callable q)."""
        rng = np.random.default_rng(self.seed)
        covariance = spd_matrix(self.dim, rng, 4.0, self.scale**2) if self.dim > 1 else np.array([[self.scale**2]])
        direction = rng.standard_normal(self.dim)
        whitened = direction / math.sqrt(direction @ np.linalg.solve(covariance, direction))
        shift = self.separation * whitened
        centre = rng.standard_normal(self.dim)
        p = mixtures.gaussian_mixture([1.0], [centre], [covariance])
        exact = math.erf(self.separation / (2 * math.sqrt(2)))
        other = centre + shift
        if self.callable_q:
            s = self.scale

            def q_density(points: np.ndarray) -> np.ndarray:
                return np.exp(-((points[:, 0] - other[0]) / s) ** 2 / 2) / (s * math.sqrt(2 * math.pi))

            # sup |phi'| = e^-1/2 / (s^2 sqrt(2 pi)); sup |phi''''| = 3 / (s^5 sqrt(2 pi)) (He_4(0) = 3)
            bounds = (math.exp(-0.5) / (s * s * math.sqrt(2 * math.pi)), 3 / (s**5 * math.sqrt(2 * math.pi)))
            domain = [[other[0] - 12 * s], [other[0] + 12 * s]]
            return p, q_density, exact, {"derivative_bounds": bounds, "domain": domain}
        weights = [self.split, 1 - self.split] if self.split < 1 else [1.0]
        q = mixtures.gaussian_mixture(weights, [other] * len(weights), [covariance] * len(weights))
        return p, q, exact, {}


@st.composite
def tv_cases(draw: st.DrawFn, dim: int = 1, allow_callable: bool = True) -> TVCase:
    """Known-answer TV cases: separations from 0 to 6 Mahalanobis units, scales 0.1..10."""
    separation = draw(st.one_of(st.just(0.0), st.floats(0.01, 6.0)))
    return TVCase(dim, separation, draw(st.sampled_from([0.1, 1.0, 10.0])), draw(seeds()),
                  draw(st.sampled_from([1.0, 0.3])), allow_callable and dim == 1 and draw(st.booleans()))


TVFunction = Callable[..., distances.TotalVariation]


def check_tv_known_answer(case: TVCase, tv: TVFunction | None = None, tolerance: float | None = None) -> None:
    """TV between equal-covariance Gaussians equals erf(delta / (2 sqrt 2)) within the stated error bound.

    The stated bound must also be useful: <= the requested tolerance (the exact value itself is erf to
    ~1 ulp, 4 u added). Default tolerances: 1e-9 for two 1-D mixtures (exact interval masses), 1e-4 for a
    1-D callable (only global derivative bounds: first-order convergence where p ~ q), 1e-3 in 2-D
    (keeps an example near 0.1 s; the bound converges like the number of boxes^-1 along p = q).
    """
    tv = tv or (distances.tv_mixture_1d if case.dim == 1 else distances.tv_mixture_2d)
    tolerance = tolerance or (1e-3 if case.dim == 2 else 1e-4 if case.callable_q else 1e-9)
    p, q, exact, extra = case.build()
    result = tv(p, q, tolerance=tolerance, **extra)
    require(abs(result.value - exact) <= result.error_bound + 4 * U, "TV",
            "TV quadrature outside its stated error bound", value=result.value, exact=exact,
            error_bound=result.error_bound, case=case)
    require(result.error_bound <= tolerance, "TV", "TV error bound not reached", error_bound=result.error_bound,
            tolerance=tolerance, case=case)
