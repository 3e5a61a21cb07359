"""Distances between Gaussians and Gaussian mixtures: KL and W2 in closed form, TV by bounded quadrature.

* kl_gaussian, w2_gaussian: generic (float64, mp, arb). W2 uses
  tr((S2^1/2 S1 S2^1/2)^1/2) = sum_i sqrt(lambda_i(L2^T S1 L2)), S2 = L2 L2^T (the two matrices are
  orthogonally similar: S2^1/2 = L2 Q with Q orthogonal), so no matrix square root is formed; in arb the
  eigenvalues are certified enclosures (flint acb_mat.eig).
* sqrtm_spd: float64 principal square root by eigh, for callers that need the matrix itself.
* tv_mixture_1d, tv_mixture_2d: TV = 1/2 int |p - q| with a stated error bound (TotalVariation(value,
  error_bound)); float64. The bound is rigorous for the float64 mixture parameters up to the stated
  rounding assumption (libm exp/erf/erfc within 1 ulp); see _tv_adaptive for its parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .errors import InvalidArgumentError, NotPositiveDefiniteError, ShapeError
from .linalg import (EPS, check_positive_semidefinite, cholesky, log_det_from_cholesky, nonnegative_part,
                     positive_definite_report, solve_lower, symmetric_eigenvalues)
from .mixtures import LatentMixture
from .precision import Precision, reference_function

__all__ = ["kl_gaussian", "w2_gaussian", "sqrtm_spd", "TotalVariation", "tv_mixture_1d", "tv_mixture_2d"]


# ----------------------------------------------------------------------------------------
# Gaussians in closed form


def _check_gaussian_pair(xp: Precision, m1: Any, s1: Any, m2: Any, s2: Any) -> int:
    n = np.shape(m1)[0] if np.ndim(m1) == 1 else -1
    if n < 1:
        raise ShapeError("m1", "a non-empty 1-D mean", str(np.shape(m1)))
    if np.shape(m2) != (n,):
        raise ShapeError("m2", f"shape {(n,)} like m1", str(np.shape(m2)))
    for name, matrix in (("S1", s1), ("S2", s2)):
        if np.shape(matrix) != (n, n):
            raise ShapeError(name, f"shape {(n, n)}", str(np.shape(matrix)))
    return n


@reference_function(arrays=("m1", "S1", "m2", "S2"))
def kl_gaussian(xp: Precision, m1: Any, S1: Any, m2: Any, S2: Any) -> Any:  # noqa: N803 (matrix names)
    """KL(N(m1, S1) || N(m2, S2)) = 1/2 [tr(S2^-1 S1) + (m2-m1)^T S2^-1 (m2-m1) - n + log(det S2 / det S1)] (Kullback 1959)."""
    n = _check_gaussian_pair(xp, m1, S1, m2, S2)
    for name, matrix in (("S1", S1), ("S2", S2)):
        check_positive_semidefinite(xp.to_float(matrix), name, definite=True)
    lower1 = cholesky(xp, S1, "S1")
    lower2 = cholesky(xp, S2, "S2")
    whitened = solve_lower(xp, lower2, np.transpose(lower1))  # row j: L2^-1 (column j of L1)
    trace = xp.sum(whitened * whitened)
    offset = solve_lower(xp, lower2, m2 - m1)
    return (trace + xp.sum(offset * offset) - n + log_det_from_cholesky(xp, lower2)
            - log_det_from_cholesky(xp, lower1)) / 2


@reference_function(arrays=("m1", "S1", "m2", "S2"))
def w2_gaussian(xp: Precision, m1: Any, S1: Any, m2: Any, S2: Any, squared: bool = False) -> Any:  # noqa: N803
    """W2(N(m1,S1), N(m2,S2))^2 = ||m1-m2||^2 + tr S1 + tr S2 - 2 tr((S2^1/2 S1 S2^1/2)^1/2) (Dowson & Landau 1982; Givens & Shortt 1984).

    Returns W2, or W2^2 with ``squared``. One covariance must be positive definite (it is factorised),
    the other may be semidefinite. float64 accuracy: eigvalsh of M = L2^T S1 L2 has absolute error
    about n eps ||S1|| ||S2|| and sqrt amplifies it by 1/(2 sqrt(lambda)), so W2^2 is accurate to roughly
    n eps (tr S1 + tr S2 + ||S1|| ||S2|| / sqrt(lambda_min(M))) absolutely; near W2 = 0 this floor makes
    float64 W2 about sqrt(n eps tr S) (~1e-8), not 0. mp and arb push the floor down with the precision.
    """
    _check_gaussian_pair(xp, m1, S1, m2, S2)
    check_positive_semidefinite(xp.to_float(S1), "S1")
    check_positive_semidefinite(xp.to_float(S2), "S2")
    if not positive_definite_report(xp.to_float(S2), "S2").positive_definite:
        if not positive_definite_report(xp.to_float(S1), "S1").positive_definite:
            raise NotPositiveDefiniteError("S2", "S1 or S2 positive definite (one of them is factorised)",
                                           "both only semidefinite")
        S1, S2 = S2, S1  # W2 is symmetric; factorise the definite one
    lower2 = cholesky(xp, S2, "S2")
    middle = xp.matmul(np.transpose(lower2), xp.matmul(S1, lower2))
    root_trace = xp.sum(xp.sqrt(nonnegative_part(xp, symmetric_eigenvalues(xp, middle))))
    difference = m1 - m2
    trace = xp.sum(np.diagonal(S1)) + xp.sum(np.diagonal(S2))
    squared_distance = nonnegative_part(xp, xp.sum(difference * difference) + trace - 2 * root_trace)
    return squared_distance if squared else xp.sqrt(squared_distance)


def sqrtm_spd(matrix: Any) -> np.ndarray:
    """Principal square root V diag(sqrt(lambda)) V^T of a symmetric PSD float64 matrix (eigh).

    Accuracy: eigh is backward stable (error ~ n eps ||S||), the square root's Frechet derivative has
    norm 1/(2 sqrt(lambda_min)), so ||X - S^1/2||_2 <~ c n eps (||S||_2 / sqrt(lambda_min) + ||S^1/2||_2):
    relative error ~ n eps sqrt(kappa(S)). Negative rounding-level eigenvalues are clipped to 0.
    """
    s = np.asarray(matrix, dtype=np.float64)
    check_positive_semidefinite(s, "matrix")
    values, vectors = np.linalg.eigh(s)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    return (root + root.T) / 2


# ----------------------------------------------------------------------------------------
# Total variation with an error bound

Density = Callable[[np.ndarray], np.ndarray]
# sup over r >= rho of (r^4 + 6 r^2 + 3) e^(-r^2/2) is attained at max(rho, FOURTH_PROFILE_TURN): the
# profile decreases where r^4 + 2 r^2 - 9 >= 0, i.e. r^2 >= sqrt(10) - 1.
FOURTH_PROFILE_TURN = math.sqrt(math.sqrt(10.0) - 1.0)
SQRT3 = math.sqrt(3.0)
HESSIAN_PROFILE_PEAK = 2 * math.exp(-1.5)  # max of (r^2 - 1) e^(-r^2/2), at r = sqrt(3)
GAUSS_NODE = 1 / (2 * math.sqrt(3.0))  # 2-point Gauss-Legendre nodes c +- a/(2 sqrt 3) on a side a
TAIL_RADIUS = 12.0  # standard deviations: normal tail mass erfc(12/sqrt 2)/2 ~ 1.8e-33 per side


class TotalVariation(NamedTuple):
    """TV(p, q) = 1/2 int |p - q| and a bound on |value - TV| (for the float64 parameters)."""

    value: float
    error_bound: float


def _erfc(z: np.ndarray) -> np.ndarray:
    return np.asarray(np.frompyfunc(math.erfc, 1, 1)(z), dtype=np.float64)


@dataclass(frozen=True)
class _Gaussians:
    """A signed combination f = sum_k w_k phi_k of full-rank Gaussians in R^m (float64), with derivative bounds.

    For phi = peak exp(-r^2/2), r^2 = (x - mu)^T P (x - mu), P = S^-1, along a unit vector u with
    w = u^T P (x - mu), v = u^T P u (so |w| <= sqrt(v) r): D_u phi = -w phi and
    D_u^4 phi = (w^4 - 6 v w^2 + 3 v^2) phi. Hence ||grad phi|| <= peak lambda_min(S)^-1/2 r e^(-r^2/2)
    and |d^4 phi / dx_j^4| <= peak P_jj^2 (r^4 + 6 r^2 + 3) e^(-r^2/2); over a box,
    r >= dist(mu, box) / sqrt(lambda_max(S)). Bounds for f use |w_k|; so does ``absolute`` (sum |w_k| phi_k >= |f|).
    The Hessian: hess phi = phi P^1/2 (z z^T - I) P^1/2 with ||z|| = r, so ||hess phi||_2 <= peak
    lambda_min(S)^-1 max(r^2 - 1, 1) e^(-r^2/2).
    """

    weights: np.ndarray  # [K], signed
    means: np.ndarray  # [K, m]
    precisions: np.ndarray  # [K, m, m]
    peak: np.ndarray  # [K] (2 pi)^(-m/2) det(S)^(-1/2)
    lambda_min: np.ndarray  # [K]
    lambda_max: np.ndarray  # [K]
    stddev: np.ndarray  # [K, m] sqrt(S_jj)

    @staticmethod
    def _parameters(mixture: LatentMixture, dim: int, argument: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if mixture.ambient_dim != dim or mixture.latent_dim != dim:
            raise ShapeError(argument, f"a full-rank mixture in R^{dim} (ambient_dim == latent_dim == {dim})",
                             f"ambient_dim {mixture.ambient_dim}, latent_dim {mixture.latent_dim}")
        b = mixture.basis
        covariances = b @ mixture.covariances @ b.T
        covariances = (covariances + np.swapaxes(covariances, -1, -2)) / 2
        check_positive_semidefinite(covariances, argument, definite=True)
        return mixture.weights / mixture.weights.sum(), mixture.means @ b.T, covariances

    @classmethod
    def difference(cls, p: LatentMixture, q: LatentMixture | None, dim: int) -> _Gaussians:
        """p - q (or p alone) with components of equal mean and covariance merged, so that equal parts cancel exactly."""
        weights, means, covariances = cls._parameters(p, dim, "p")
        if q is not None:
            q_weights, q_means, q_covariances = cls._parameters(q, dim, "q")
            weights = np.concatenate([weights, -q_weights])
            means = np.concatenate([means, q_means])
            covariances = np.concatenate([covariances, q_covariances])
        merged: dict[bytes, int] = {}
        keep_weights: list[float] = []
        keep: list[int] = []
        for k in range(weights.size):
            key = means[k].tobytes() + covariances[k].tobytes()
            if key in merged:
                keep_weights[merged[key]] += weights[k]
            else:
                merged[key] = len(keep)
                keep.append(k)
                keep_weights.append(float(weights[k]))
        signed = np.array(keep_weights)
        nonzero = signed != 0
        index = np.array(keep)[nonzero] if nonzero.any() else np.array(keep[:1])
        signed = signed[nonzero] if nonzero.any() else np.zeros(1)
        covariances = covariances[index]
        values = np.linalg.eigvalsh(covariances)
        return cls(signed, means[index], np.linalg.inv(covariances),
                   (2 * np.pi) ** (-dim / 2) / np.sqrt(np.prod(values, axis=-1)), values[:, 0], values[:, -1],
                   np.sqrt(np.diagonal(covariances, axis1=-2, axis2=-1)))

    def density(self, points: np.ndarray, absolute: bool = False) -> np.ndarray:
        offsets = points[:, None, :] - self.means[None]
        r2 = np.einsum("nki,kij,nkj->nk", offsets, self.precisions, offsets)
        weights = np.abs(self.weights) if absolute else self.weights
        return np.exp(-r2 / 2) @ (weights * self.peak)

    def _radius(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Lower bound [n, K] on the Mahalanobis radius r over each box.

        The larger of dist(mu, box) / sqrt(lambda_max(S)) and r(c) - (||a|| / 2) / sqrt(lambda_min(S))
        (triangle inequality in the P-norm, c the centre, a the sides): the second is tight for small boxes far out.
        """
        gap = np.maximum(np.maximum(lo[:, None, :] - self.means[None], self.means[None] - hi[:, None, :]), 0.0)
        euclidean = np.linalg.norm(gap, axis=-1) / np.sqrt(self.lambda_max)
        offsets = (lo + hi)[:, None, :] / 2 - self.means[None]
        centre_radius = np.sqrt(np.einsum("nki,kij,nkj->nk", offsets, self.precisions, offsets))
        reach = np.linalg.norm(hi - lo, axis=-1)[:, None] / 2
        return np.maximum(euclidean, centre_radius - reach / np.sqrt(self.lambda_min))

    def gradient_bound(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """sup over each box of ||grad f|| (r e^(-r^2/2) decreases for r >= 1)."""
        r = np.maximum(self._radius(lo, hi), 1.0)
        return (r * np.exp(-r * r / 2)) @ (np.abs(self.weights) * self.peak / np.sqrt(self.lambda_min))

    def gradient_at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(||grad f(x)|| at each point, a bound on its float64 rounding): grad f = -sum_k w_k phi_k P_k (x - mu_k).

        Exact evaluation keeps the cancellation between components of p and q that the |w| bounds lose.
        """
        offsets = points[:, None, :] - self.means[None]
        directions = np.einsum("kij,nkj->nki", self.precisions, offsets)
        scaled = np.exp(-np.sum(offsets * directions, axis=-1) / 2) * (self.weights * self.peak)  # [n, K]
        gradient = -np.einsum("nk,nki->ni", scaled, directions)
        magnitude = np.einsum("nk,nk->n", np.abs(scaled), np.linalg.norm(directions, axis=-1))
        rounding = 16 * (self.weights.size + points.shape[1]) * EPS * magnitude
        return np.linalg.norm(gradient, axis=-1), rounding

    def hessian_bound(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """sup over each box of ||hess f||_2: hess phi = phi P^1/2 (z z^T - I) P^1/2, so <= peak lambda_min^-1 max(r^2 - 1, 1) e^(-r^2/2)."""
        r = self._radius(lo, hi)
        profile = np.where(r >= SQRT3, (r * r - 1) * np.exp(-r * r / 2),
                           np.maximum(np.exp(-r * r / 2), HESSIAN_PROFILE_PEAK))
        return profile @ (np.abs(self.weights) * self.peak / self.lambda_min)

    def lipschitz_bound(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """sup over each box of ||grad f||: the smaller of gradient_bound and ||grad f(c)|| + sup ||hess f|| ||a|| / 2."""
        at_centre, rounding = self.gradient_at((lo + hi) / 2)
        reach = np.linalg.norm(hi - lo, axis=-1) / 2
        return np.minimum(self.gradient_bound(lo, hi), at_centre + rounding + self.hessian_bound(lo, hi) * reach)

    def fourth_derivative_bound(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """[n, m]: sup over each box of |d^4 f / dx_j^4| for each axis j."""
        r = np.maximum(self._radius(lo, hi), FOURTH_PROFILE_TURN)
        profile = (r**4 + 6 * r * r + 3) * np.exp(-r * r / 2)  # [n, K]
        axis_scale = np.diagonal(self.precisions, axis1=-2, axis2=-1) ** 2  # [K, m]
        return profile @ ((np.abs(self.weights) * self.peak)[:, None] * axis_scale)

    def interval_mass(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-D only: (int f, int sum |w| phi, magnitude of the erf/erfc terms for rounding) over each [lo, hi]."""
        scale = self.stddev[None, :, 0] * math.sqrt(2.0)
        a = (lo[:, None] - self.means[None, :, 0]) / scale
        b = (hi[:, None] - self.means[None, :, 0]) / scale
        # erfc on the side away from the mean avoids cancellation in the tails
        upper = a >= 0
        lower = b <= 0
        near, far = np.where(upper, a, np.where(lower, -b, 0.0)), np.where(upper, b, np.where(lower, -a, 0.0))
        tail_near, tail_far = _erfc(near), _erfc(far)
        middle = ~(upper | lower)
        inner = np.where(middle, 2.0 - _erfc(np.where(middle, -a, 0.0)) - _erfc(np.where(middle, b, 0.0)), 0.0)
        mass = np.where(middle, inner, tail_near - tail_far) / 2
        magnitude = np.where(middle, 2.0, tail_near + tail_far) / 2
        absolute = np.abs(self.weights)
        return mass @ self.weights, mass @ absolute, magnitude @ absolute

    def tail_mass(self, lo: np.ndarray, hi: np.ndarray) -> float:
        """Upper bound on int |f| outside the box [lo, hi] (union bound over coordinates, exact normal tails)."""
        below = (self.means - lo[None]) / (self.stddev * math.sqrt(2.0))
        above = (hi[None] - self.means) / (self.stddev * math.sqrt(2.0))
        return float(np.abs(self.weights) @ np.sum(_erfc(below) + _erfc(above), axis=-1) / 2)

    def box(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        return (np.min(self.means - radius * self.stddev, axis=0), np.max(self.means + radius * self.stddev, axis=0))


@dataclass(frozen=True)
class _CallableDensity:
    """A user density q (vectorised on [n, m] points, integrating to 1) with global derivative bounds."""

    function: Density
    gradient: float  # sup ||grad q||_2
    fourth: float  # max_j sup |d^4 q / dx_j^4|

    def density(self, points: np.ndarray) -> np.ndarray:
        values = np.asarray(self.function(points), dtype=np.float64)
        if values.shape != (points.shape[0],):
            raise ShapeError("q", f"a density returning shape {(points.shape[0],)}", str(values.shape))
        if not np.all(np.isfinite(values)):
            raise InvalidArgumentError("q", "a density returning finite values")
        return values


def _gauss_nodes(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 2^m tensor 2-point Gauss-Legendre nodes of each box, [2^m * n, m] (equal weights volume / 2^m)."""
    centre, sides = (lo + hi) / 2, hi - lo
    signs = np.array(list(np.ndindex(*(2,) * lo.shape[1]))) * 2 - 1  # [2^m, m]
    return (centre[None] + signs[:, None, :] * GAUSS_NODE * sides[None]).reshape(-1, lo.shape[1])


def _split(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each box halved along every axis: 2^m children per box."""
    middle = (lo + hi) / 2
    upper_half = [np.array(corner, dtype=bool) for corner in np.ndindex(*(2,) * lo.shape[1])]
    return (np.concatenate([np.where(pick, middle, lo) for pick in upper_half]),
            np.concatenate([np.where(pick, hi, middle) for pick in upper_half]))


def _tv_adaptive(f: _Gaussians, q: _CallableDensity | None, dim: int, tolerance: float, initial_cells: int,
                 max_cells: int, domain: tuple[np.ndarray, np.ndarray] | None) -> TotalVariation:
    """TV = 1/2 int |g| over boxes refined where the per-box error bound is largest; g = f (= p - q) or f - q (callable q).

    On a box with centre c, sides a_j, volume v, L >= sup ||grad g||, M_j >= sup |d^4 g / dx_j^4|:

    * g has no zero in the box when |g(c)| > L ||a|| / 2 ("definite" box); there int |g| = |int g|.
    * definite box: |tensor 2-point Gauss-Legendre sum| with error <= v sum_j a_j^4 M_j / 4320 (the 1-D
      rule's error is (b - a)^5 g^(4)(xi) / 4320; applied axis by axis, since the rule's weights are
      positive and sum to the side).
    * other boxes: midpoint v |g(c)| with error <= L v sqrt(||a||^2 / 12) (Lipschitz, then Jensen).
    * every box: the error is also <= max(int_box |g|, estimate) <= max(A(box), estimate), A the mass of
      sum |w_k| phi_k (+ q), bounded by its Gauss sum plus the Gauss error; this keeps far-out boxes, where
      the derivative bounds are loose, from dominating.
    * 1-D, two mixtures: exact interval masses give int g, so the error is 0 on a definite box and
      <= min(L a^2 / 2, A(box)) otherwise.
    * outside the domain (TAIL_RADIUS standard deviations around every component, joined with ``domain``)
      the error is <= the tail mass of sum |w_k| phi_k, plus for a callable q, Q(outside) <= 1 - Q(inside)
      with Q(inside) from the Gauss sums and their bound.
    * rounding (libm within 1 ulp): 8 eps (sum of erf/erfc magnitudes) for exact masses, or
      32 (K + dim + 1) eps A for quadrature values.

    error_bound is half the sum of these. Boxes whose bound exceeds their share tolerance / (2 count) are
    split in 2^dim until the bound meets ``tolerance`` or ``max_cells`` would be exceeded (the returned
    bound is then larger than ``tolerance``; it is never hidden). Equal components of p and q cancel in f
    exactly; laws that differ only slightly everywhere still need boxes small enough for |p - q| to beat
    the derivative bounds of p and q, so their bounds converge slowly.
    """
    exact_masses = dim == 1 and q is None
    lo, hi = f.box(TAIL_RADIUS)
    if domain is not None:
        lo, hi = np.minimum(lo, domain[0]), np.maximum(hi, domain[1])
    edges = [np.linspace(lo[j], hi[j], initial_cells + 1) for j in range(dim)]
    cells_lo = np.stack(np.meshgrid(*[e[:-1] for e in edges], indexing="ij"), -1).reshape(-1, dim)
    cells_hi = np.stack(np.meshgrid(*[e[1:] for e in edges], indexing="ij"), -1).reshape(-1, dim)
    components = f.weights.size + dim + 1

    def evaluate(box_lo: np.ndarray, box_hi: np.ndarray) -> list[np.ndarray]:
        sides = box_hi - box_lo
        volume = np.prod(sides, axis=-1)
        side2 = np.sum(sides * sides, axis=-1)
        centre = (box_lo + box_hi) / 2
        nodes = _gauss_nodes(box_lo, box_hi)
        lipschitz = f.lipschitz_bound(box_lo, box_hi)
        fourth = f.fourth_derivative_bound(box_lo, box_hi)
        g_c = f.density(centre)
        g_gauss = f.density(nodes).reshape(2**dim, -1).mean(axis=0) * volume
        absolute_gauss = f.density(nodes, absolute=True).reshape(2**dim, -1).mean(axis=0) * volume
        q_gauss = q_error = np.zeros_like(volume)
        if q is not None:
            lipschitz = lipschitz + q.gradient
            fourth = fourth + q.fourth
            g_c = g_c - q.density(centre)
            q_gauss = q.density(nodes).reshape(2**dim, -1).mean(axis=0) * volume
            q_error = volume * np.sum(sides**4, axis=-1) * q.fourth / 4320
            g_gauss = g_gauss - q_gauss
            absolute_gauss = absolute_gauss + q_gauss
        definite = np.abs(g_c) > lipschitz * np.sqrt(side2) / 2
        midpoint_error = lipschitz * volume * np.sqrt(side2 / 12)
        gauss_error = volume * np.sum(sides**4 * fourth, axis=-1) / 4320
        if exact_masses:
            signed, absolute, magnitude = f.interval_mass(box_lo[:, 0], box_hi[:, 0])
            estimate = np.abs(signed)
            error = np.where(definite, 0.0, np.minimum(lipschitz * side2 / 2, absolute))
            rounding = 8 * EPS * magnitude
        else:
            estimate = np.where(definite, np.abs(g_gauss), volume * np.abs(g_c))
            mass_error = np.maximum(absolute_gauss + gauss_error, estimate)
            error = np.minimum(np.where(definite, np.minimum(gauss_error, midpoint_error), midpoint_error),
                               mass_error)
            rounding = 32 * components * EPS * absolute_gauss
        return [estimate, error, rounding, q_gauss, q_error]

    values = evaluate(cells_lo, cells_hi)
    fixed = f.tail_mass(lo, hi) + 8 * EPS
    while True:
        estimate, error, rounding, q_inside, q_inside_error = values
        q_outside = 0.0 if q is None else max(0.0, 1.0 - (np.sum(q_inside) - np.sum(q_inside_error)))
        total = np.sum(error) + np.sum(rounding) + fixed + q_outside
        refine = error + q_inside_error > tolerance / (2 * error.size)
        refined = int(np.sum(refine))
        if total <= tolerance or refined == 0 or error.size + (2**dim - 1) * refined > max_cells:
            return TotalVariation(float(np.sum(estimate) / 2), float(total / 2))
        child_lo, child_hi = _split(cells_lo[refine], cells_hi[refine])
        keep = ~refine
        cells_lo = np.concatenate([cells_lo[keep], child_lo])
        cells_hi = np.concatenate([cells_hi[keep], child_hi])
        values = [np.concatenate([old[keep], new]) for old, new in zip(values, evaluate(child_lo, child_hi))]


def _callable_argument(q: Any, derivative_bounds: Any) -> _CallableDensity | None:
    if isinstance(q, LatentMixture):
        if derivative_bounds is not None:
            raise InvalidArgumentError("derivative_bounds", "None when q is a mixture (its bounds are computed)")
        return None
    if callable(q):
        if derivative_bounds is None or len(derivative_bounds) != 2 or not all(
                isinstance(b, (int, float)) and math.isfinite(b) and b >= 0 for b in derivative_bounds):
            raise InvalidArgumentError("derivative_bounds", "(sup ||grad q||, max_j sup |d^4 q / dx_j^4|), finite "
                                       "and >= 0, for a callable density q", repr(derivative_bounds))
        return _CallableDensity(q, float(derivative_bounds[0]), float(derivative_bounds[1]))
    raise InvalidArgumentError("q", "a LatentMixture or a vectorised density callable", type(q).__name__)


def _check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise InvalidArgumentError("tolerance", "a target error bound in (0, 1)", repr(tolerance))
    return float(tolerance)


def _check_domain(domain: Any, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    if domain is None:
        return None
    box = np.asarray(domain, dtype=np.float64)
    if box.shape != (2, dim) or not np.all(np.isfinite(box)) or not np.all(box[0] < box[1]):
        raise InvalidArgumentError("domain", f"finite [[lower corner], [upper corner]] of shape (2, {dim})",
                                   repr(domain))
    return box[0], box[1]


def _tv(p: Any, q: Any, dim: int, tolerance: float, derivative_bounds: Any, domain: Any, initial_cells: int,
        max_cells: int) -> TotalVariation:
    if not isinstance(p, LatentMixture):
        raise InvalidArgumentError("p", "a LatentMixture", type(p).__name__)
    callable_q = _callable_argument(q, derivative_bounds)
    f = _Gaussians.difference(p, None if callable_q else q, dim)
    return _tv_adaptive(f, callable_q, dim, _check_tolerance(tolerance), initial_cells, max_cells,
                        _check_domain(domain, dim))


def tv_mixture_1d(p: LatentMixture, q: LatentMixture | Density, *, tolerance: float = 1e-10,
                  derivative_bounds: tuple[float, float] | None = None, domain: Any = None,
                  max_cells: int = 200_000) -> TotalVariation:
    """TV(p, q) = 1/2 int_R |p - q| for a 1-D mixture p and a 1-D mixture or density callable q, with an error bound.

    Two mixtures: exact interval masses (erf/erfc) on an adaptive partition; the only quadrature error is
    on intervals where p - q may change sign. A callable q (points [n, 1] -> densities [n], integrating
    to 1) needs ``derivative_bounds`` = (sup |q'|, sup |q''''|) and uses Gauss-Legendre/midpoint rules;
    ``domain`` ([[lo], [hi]]) widens the integration box to where q lives (q's mass outside it enters
    the bound). See _tv_adaptive for every term of the bound.
    """
    return _tv(p, q, 1, tolerance, derivative_bounds, domain, 512, max_cells)


def tv_mixture_2d(p: LatentMixture, q: LatentMixture | Density, *, tolerance: float = 1e-6,
                  derivative_bounds: tuple[float, float] | None = None, domain: Any = None,
                  max_cells: int = 2_000_000) -> TotalVariation:
    """TV(p, q) = 1/2 int_R^2 |p - q| for a 2-D mixture p and a 2-D mixture or density callable q, with an error bound.

    Tensor Gauss-Legendre (where p - q provably keeps its sign) and midpoint rules on an adaptive partition
    into rectangles, with per-box bounds from the Gaussian components' derivatives, or the global
    ``derivative_bounds`` = (sup ||grad q||, max_j sup |d^4 q / dx_j^4|) of a callable q (points [n, 2] ->
    densities [n], integrating to 1). ``domain`` as in tv_mixture_1d. See _tv_adaptive.
    """
    return _tv(p, q, 2, tolerance, derivative_bounds, domain, 64, max_cells)
