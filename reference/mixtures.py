"""Gaussian mixtures in a linear latent subspace and their forward-diffused laws (Hu et al. 2024; Fu et al. 2024).

Data x = B h with B [D, d0] orthonormal and h ~ sum_k w_k N(mu_k, S_k) in R^{d0}. Under
x_t = alpha_t x + sigma_t z (any schedule of reference.schedules) the law of x_t is the
full-rank mixture sum_k w_k N(alpha B mu_k, alpha^2 B S_k B^T + sigma^2 I_D) (docs/claims.md#ground-truth-gaussian-mixtures),
and the latent law p^h_t of alpha h + sigma z is sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I).

Exactness and the basis. Inputs are read as exact binary numbers, and a float64 B is
orthonormal only up to rounding. ``log_density``, ``score`` and the posterior means are the
exact quantities of the law above for the B actually given: with G = B^T B, P = B G^-1 B^T
the orthogonal projector onto range(B), c = G^-1 B^T x and r = x - B c = (I - P) x,

    C_k = sigma^2 I + B A_k B^T (A_k = alpha^2 S_k) satisfies C_k B = B (sigma^2 I + A_k G), hence
    C_k^-1 v = (I - P) v / sigma^2 + B G^-1 M_k^-1 G^-1 B^T v,   M_k = A_k + sigma^2 G^-1,
    v^T C_k^-1 v = ||(I - P) v||^2 / sigma^2 + (G^-1 B^T v)^T M_k^-1 (G^-1 B^T v),
    det C_k = sigma^(2 (D - d0)) det G det M_k       (Sylvester: det(sigma^2 I + B A B^T)).

So log p_t(x) = log q(c) - ||r||^2 / (2 sigma^2) - (D - d0)/2 log(2 pi sigma^2) - log det(G)/2 and
grad log p_t(x) = B G^-1 grad log q(c) - r / sigma^2, where q = sum_k w_k N(alpha mu_k, M_k) in R^{d0}.
Cost: O(N D d0 + d0^3 + N K d0^3) per call, never a D x D matrix. With G = I (an exactly
orthonormal B) this is LD1 term by term; ``ld1_decomposition`` evaluates LD1's two terms
literally with B^T and B B^T, so in ball arithmetic the two agree exactly only for exactly
orthonormal B (e.g. signed permutations of Hadamard-type columns with entries +-1/2).

Mixture weights are used as w_k / sum(w) (the normalisation is exact in every precision);
construction requires |sum(w) - 1| <= 1e-12.

Precisions: log_density, score, latent_log_density, latent_score, ld1_decomposition,
denoiser_q, the posterior means, conditional/marginal/CFG scores run in float64, mp and
arb (general S_k; the d0 x d0 Cholesky factorisations are done in the working precision).
Sampling, the DSM Monte Carlo loss and its closed-form companion are float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import formats
from .errors import InvalidArgumentError, ShapeError
from .latent import LatentFunction, check_orthonormal
from .linalg import (check_positive_semidefinite, cho_solve, cholesky, identity, inverse_from_cholesky,
                     log_det_from_cholesky, psd_square_root_factor, solve_lower, solve_lower_transposed)
from .precision import FLOAT64, Precision, as_float64_array, reference_function, require_positive_int
from .schedules import Schedule, check_times, coefficients, get_schedule

__all__ = [
    "LatentMixture",
    "ConditionalMixture",
    "MonteCarloEstimate",
    "NULL_LABEL",
    "gaussian_mixture",
    "sample",
    "diffuse",
    "log_density",
    "score",
    "latent_log_density",
    "latent_score",
    "ld1_decomposition",
    "denoiser_q",
    "denoiser_q_function",
    "posterior_mean_x0",
    "posterior_mean_x0_closed_form",
    "conditional_score",
    "marginal_score",
    "cfg_score",
    "guidance_from_diffusers_scale",
    "diffusers_scale_from_guidance",
    "optimal_score_function",
    "dsm_loss",
    "affine_perturbation_energy",
    "CF2Terms",
    "cf2_smoothing",
    "cf2_decomposition",
]

NULL_LABEL = -1  # the dropped condition (tau = empty in Fu et al.; DiT's index num_classes)
WEIGHT_SUM_TOLERANCE = 1e-12


# ----------------------------------------------------------------------------------------
# Mixture objects


def _probability_vector(values: Any, argument: str) -> np.ndarray:
    p = as_float64_array(values, argument)
    if p.ndim != 1 or p.size == 0:
        raise ShapeError(argument, "a non-empty 1-D array", str(p.shape))
    if np.any(p <= 0):
        raise InvalidArgumentError(argument, "strictly positive entries", f"min {float(p.min())!r}")
    total = math.fsum(p)
    if not abs(total - 1.0) <= WEIGHT_SUM_TOLERANCE:
        raise InvalidArgumentError(argument, f"entries summing to 1 (within {WEIGHT_SUM_TOLERANCE:g})",
                                   f"sum {total!r}")
    return p


def _read_only(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class LatentMixture:
    """x = B h, h ~ sum_k w_k N(mu_k, S_k): basis [D, d0] orthonormal, weights [K], means [K, d0], covariances [K, d0, d0].

    Covariances must be exactly symmetric and positive semidefinite (a singular S_k is allowed:
    the diffused covariance alpha^2 S_k + sigma^2 I is positive definite for t > 0).
    """

    basis: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def __post_init__(self) -> None:
        basis = as_float64_array(self.basis, "basis")
        check_orthonormal(basis, "basis")
        if basis.shape[1] == 0:
            raise ShapeError("basis", "at least one column", str(basis.shape))
        weights = _probability_vector(self.weights, "weights")
        shape = (weights.size, basis.shape[1])
        means = as_float64_array(self.means, "means")
        if means.shape != shape:
            raise ShapeError("means", f"shape [K, d0] = {shape}", str(means.shape))
        covariances = as_float64_array(self.covariances, "covariances")
        if covariances.shape != shape + shape[1:]:
            raise ShapeError("covariances", f"shape [K, d0, d0] = {shape + shape[1:]}", str(covariances.shape))
        check_positive_semidefinite(covariances, "covariances")
        for name, value in (("basis", basis), ("weights", weights), ("means", means), ("covariances", covariances)):
            object.__setattr__(self, name, _read_only(value))

    @property
    def ambient_dim(self) -> int:
        return self.basis.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.basis.shape[1]

    @property
    def n_components(self) -> int:
        return self.weights.size


def gaussian_mixture(weights: Any, means: Any, covariances: Any) -> LatentMixture:
    """A full-dimensional mixture sum_k w_k N(m_k, S_k) in R^m, as a LatentMixture with B = I_m."""
    means = as_float64_array(means, "means")
    if means.ndim != 2:
        raise ShapeError("means", "shape [K, m]", str(means.shape))
    return LatentMixture(np.eye(means.shape[1]), weights, means, covariances)


@dataclass(frozen=True, eq=False)
class ConditionalMixture:
    """Class-conditional latent mixtures p(x | y) = classes[y] sharing one basis, with class probabilities pi_y.

    The unconditional law is sum_y pi_y p(x | y); label NULL_LABEL (-1) selects it.
    """

    classes: tuple[LatentMixture, ...]
    class_probabilities: np.ndarray

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        if not classes or not all(isinstance(m, LatentMixture) for m in classes):
            raise InvalidArgumentError("classes", "a non-empty sequence of LatentMixture",
                                       repr([type(m).__name__ for m in classes]))
        if not all(np.array_equal(m.basis, classes[0].basis) for m in classes):
            raise InvalidArgumentError("classes", "class mixtures sharing one basis (identical float64 B)")
        probabilities = _probability_vector(self.class_probabilities, "class_probabilities")
        if probabilities.size != len(classes):
            raise ShapeError("class_probabilities", f"one entry per class ({len(classes)})", str(probabilities.shape))
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "class_probabilities", _read_only(probabilities))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def basis(self) -> np.ndarray:
        return self.classes[0].basis


# ----------------------------------------------------------------------------------------
# Generic evaluation


class _Components(NamedTuple):
    log_weights: Any  # [K], normalised
    means: Any  # [K, d0]
    covariances: Any  # [K, d0, d0]


class _Terms(NamedTuple):
    log_density: Any  # [N]
    score: Any  # [N, m]
    responsibilities: Any  # [N, K]
    natural: Any  # [N, K, m]: Cov_k^-1 (y - center_k)


class _Ambient(NamedTuple):
    log_density: Any  # [N]
    score: Any  # [N, D]
    latent: _Terms  # evaluated at c = G^-1 B^T x with covariances alpha^2 S_k + sigma^2 G^-1


def _components(xp: Precision, mixture: LatentMixture) -> _Components:
    weights = xp.asarray(mixture.weights)
    return _Components(xp.log(weights) - xp.log(xp.sum(weights)), xp.asarray(mixture.means),
                       xp.asarray(mixture.covariances))


def _marginal_components(xp: Precision, mixture: ConditionalMixture) -> _Components:
    probabilities = xp.asarray(mixture.class_probabilities)
    log_classes = xp.log(probabilities) - xp.log(xp.sum(probabilities))
    parts = [_components(xp, m) for m in mixture.classes]
    return _Components(np.concatenate([log_class + part.log_weights for log_class, part in zip(log_classes, parts)]),
                       np.concatenate([part.means for part in parts]),
                       np.concatenate([part.covariances for part in parts]))


def _mixture_terms(xp: Precision, y: Any, log_weights: Any, centers: Any, covariances: Any) -> _Terms:
    """log density, score, responsibilities of sum_k w_k N(center_k, Cov_k) at points y [N, m].

    centers [T, K, m] and covariances [T, K, m, m] with T in {1, N} (per-point times).
    """
    lower = cholesky(xp, covariances, "covariances")
    white = solve_lower(xp, lower, y[:, None, :] - centers)
    m = np.shape(y)[-1]
    log_components = log_weights - (xp.sum(white * white, axis=-1) + log_det_from_cholesky(xp, lower)
                                    + m * xp.log(2 * xp.pi())) / 2
    shift = xp.shift(log_components, axis=-1)
    scaled = xp.exp(log_components - shift)
    total = xp.sum(scaled, axis=-1, keepdims=True)
    responsibilities = scaled / total
    natural = solve_lower_transposed(xp, lower, white)
    score_values = -xp.sum(responsibilities[..., None] * natural, axis=1)
    return _Terms(xp.log(total[:, 0]) + shift[:, 0], score_values, responsibilities, natural)


def _diffused_terms(xp: Precision, y: Any, components: _Components, alpha: Any, noise: Any) -> _Terms:
    """Terms of sum_k w_k N(alpha mu_k, alpha^2 S_k + noise) at y; noise [T, 1, m, m]."""
    centers = alpha[:, None, None] * components.means
    covariances = (alpha * alpha)[:, None, None, None] * components.covariances + noise
    return _mixture_terms(xp, y, components.log_weights, centers, covariances)


def _latent_terms(xp: Precision, components: _Components, h: Any, alpha: Any, sigma2: Any) -> _Terms:
    """p^h_t = sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I) at latents h [N, d0]."""
    noise = sigma2[:, None, None, None] * identity(xp, np.shape(h)[-1])
    return _diffused_terms(xp, h, components, alpha, noise)


def _ambient_terms(xp: Precision, basis: np.ndarray, components: _Components, x: Any, alpha: Any,
                   sigma2: Any) -> _Ambient:
    """log p_t and its score at x [N, D] through the latent structure (module docstring)."""
    b = xp.asarray(basis)
    dim, latent_dim = b.shape
    gram_lower = cholesky(xp, xp.matmul(b.T, b), "basis")
    coordinates = cho_solve(xp, gram_lower, xp.matmul(x, b))
    residual = x - xp.matmul(coordinates, b.T)
    noise = sigma2[:, None, None, None] * inverse_from_cholesky(xp, gram_lower)
    latent = _diffused_terms(xp, coordinates, components, alpha, noise)
    orthogonal_log = -(xp.sum(residual * residual, axis=-1) / sigma2
                       + (dim - latent_dim) * (xp.log(2 * xp.pi()) + xp.log(sigma2))
                       + log_det_from_cholesky(xp, gram_lower)) / 2
    score_values = xp.matmul(cho_solve(xp, gram_lower, latent.score), b.T) - residual / sigma2[:, None]
    return _Ambient(latent.log_density + orthogonal_log, score_values, latent)


def _check_mixture(mixture: Any, kind: type = LatentMixture, argument: str = "mixture") -> None:
    if not isinstance(mixture, kind):
        raise InvalidArgumentError(argument, f"a {kind.__name__}", type(mixture).__name__)


def _check_points(x: Any, dim: int, argument: str = "x") -> None:
    if np.ndim(x) != 2 or np.shape(x)[1] != dim:
        raise ShapeError(argument, f"shape [N, {dim}]", str(np.shape(x)))


def _ambient_at(xp: Precision, mixture: LatentMixture, x: Any, t: Any, schedule: str | Schedule) -> _Ambient:
    _check_mixture(mixture)
    _check_points(x, mixture.ambient_dim)
    _, alpha, sigma2 = coefficients(xp, t, schedule, np.shape(x)[0])
    return _ambient_terms(xp, mixture.basis, _components(xp, mixture), x, alpha, sigma2)


def _latent_at(xp: Precision, mixture: LatentMixture, h: Any, t: Any, schedule: str | Schedule) -> _Terms:
    _check_mixture(mixture)
    _check_points(h, mixture.latent_dim, "h")
    _, alpha, sigma2 = coefficients(xp, t, schedule, np.shape(h)[0])
    return _latent_terms(xp, _components(xp, mixture), h, alpha, sigma2)


# ----------------------------------------------------------------------------------------
# Densities and scores


@reference_function(arrays=("x",))
def log_density(xp: Precision, mixture: LatentMixture, x: Any, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """log p_t(x), p_t = sum_k w_k N(alpha_t B mu_k, alpha_t^2 B S_k B^T + sigma_t^2 I) (docs/claims.md#ground-truth-gaussian-mixtures); x [N, D], t scalar or [N]."""
    return _ambient_at(xp, mixture, x, t, schedule).log_density


@reference_function(arrays=("x",))
def score(xp: Precision, mixture: LatentMixture, x: Any, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """grad_x log p_t(x) = B G^-1 grad log q(G^-1 B^T x) - (I - P) x / sigma_t^2 (module docstring; = LD1 when B^T B = I)."""
    return _ambient_at(xp, mixture, x, t, schedule).score


@reference_function(arrays=("h",))
def latent_log_density(xp: Precision, mixture: LatentMixture, h: Any, t: Any,
                       schedule: str | Schedule = "ou-half") -> Any:
    """log p^h_t(h), p^h_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I) in R^{d0} (Hu et al. 2024, sec. 3)."""
    return _latent_at(xp, mixture, h, t, schedule).log_density


@reference_function(arrays=("h",))
def latent_score(xp: Precision, mixture: LatentMixture, h: Any, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """grad log p^h_t(h) = -sum_k r_k(h) (alpha^2 S_k + sigma^2 I)^-1 (h - alpha mu_k), r_k the responsibilities."""
    return _latent_at(xp, mixture, h, t, schedule).score


@reference_function(arrays=("x",))
def ld1_decomposition(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
                      schedule: str | Schedule = "ou-half") -> tuple[Any, Any]:
    """LD1 (Hu et al. 2024, docs/claims.md#ld1): (B grad log p^h_t(B^T x), -(I - B B^T) x / sigma_t^2); their sum is the score."""
    _check_mixture(mixture)
    _check_points(x, mixture.ambient_dim)
    _, alpha, sigma2 = coefficients(xp, t, schedule, np.shape(x)[0])
    b = xp.asarray(mixture.basis)
    h = xp.matmul(x, b)
    on_subspace = xp.matmul(_latent_terms(xp, _components(xp, mixture), h, alpha, sigma2).score, b.T)
    orthogonal = -(x - xp.matmul(h, b.T)) / sigma2[:, None]
    return on_subspace, orthogonal


@reference_function(arrays=("h",))
def denoiser_q(xp: Precision, mixture: LatentMixture, h: Any, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """LD2's q(h, t) = sigma_t^2 grad log p^h_t(h) + h (Hu et al. 2024, docs/claims.md#ld2): with f = q, ld2_score is the true score."""
    terms = _latent_at(xp, mixture, h, t, schedule)
    _, _, sigma2 = coefficients(xp, t, schedule, np.shape(h)[0])
    return sigma2[:, None] * terms.score + h




def denoiser_q_function(mixture: LatentMixture, schedule: str | Schedule = "ou-half") -> LatentFunction:
    """q as the ``f(xp, h, t)`` that reference.latent.ld2_score expects."""
    _check_mixture(mixture)

    def q(xp: Precision, h: Any, t: Any) -> Any:
        return denoiser_q.generic(xp, mixture, h, t, schedule)

    return q


@reference_function(arrays=("x",))
def posterior_mean_x0(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
                      schedule: str | Schedule = "ou-half") -> Any:
    """Tweedie: E[x_0 | x_t = x] = (x + sigma_t^2 grad log p_t(x)) / alpha_t (Tweedie's formula, Efron 2011, scaled by alpha_t)."""
    _, alpha, sigma2 = coefficients(xp, t, schedule, np.shape(x)[0])
    return (x + sigma2[:, None] * score.generic(xp, mixture, x, t, schedule)) / alpha[:, None]


@reference_function(arrays=("x",))
def posterior_mean_x0_closed_form(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
                                  schedule: str | Schedule = "ou-half") -> Any:
    """E[x_0 | x_t = x] = B sum_k r_k(x) (mu_k + alpha_t S_k M_k^-1 (c - alpha_t mu_k)) by Gaussian conditioning per component.

    Per component, Cov(h, x_t) = alpha S_k B^T, so E_k[h | x_t] = mu_k + alpha S_k B^T C_k^-1 (x_t - alpha B mu_k),
    and B^T C_k^-1 v = M_k^-1 (G^-1 B^T v) because B^T (I - P) = 0 (module docstring). No score is used.
    """
    terms = _ambient_at(xp, mixture, x, t, schedule).latent
    _, alpha, _ = coefficients(xp, t, schedule, np.shape(x)[0])
    components = _components(xp, mixture)
    shrink = xp.sum(components.covariances[None] * terms.natural[:, :, None, :], axis=-1)  # S_k M_k^-1 (c - alpha mu_k)
    per_component = components.means[None] + alpha[:, None, None] * shrink
    latent_mean = xp.sum(terms.responsibilities[..., None] * per_component, axis=1)
    return xp.matmul(latent_mean, xp.asarray(mixture.basis).T)


def diffuse(mixture: LatentMixture, t: float, schedule: str | Schedule = "ou-half") -> LatentMixture:
    """The law of alpha_t x + sigma_t z for a full-rank mixture (d0 = D): means alpha mu_k, covariances alpha^2 S_k + sigma^2 I.

    docs/claims.md#ground-truth-gaussian-mixtures (a Gaussian mixture stays one under the forward process). Float64 (rounded parameters).
    With d0 < D the diffused law is full-rank in R^D and not of latent form: ShapeError.
    """
    _check_mixture(mixture)
    if mixture.latent_dim != mixture.ambient_dim:
        raise ShapeError("mixture", "a full-rank mixture (latent_dim == ambient_dim)",
                         f"latent_dim {mixture.latent_dim} < ambient_dim {mixture.ambient_dim}")
    times = check_times(t, schedule)
    if times.ndim != 0:
        raise ShapeError("t", "a scalar time", str(times.shape))
    sched = get_schedule(schedule)
    alpha = float(sched.alpha(FLOAT64, times))
    sigma2 = float(sched.sigma2(FLOAT64, times))
    covariances = alpha * alpha * mixture.covariances + sigma2 * np.eye(mixture.latent_dim)
    covariances = (covariances + np.swapaxes(covariances, -1, -2)) / 2
    return LatentMixture(mixture.basis, mixture.weights, alpha * mixture.means, covariances)


# ----------------------------------------------------------------------------------------
# Class-conditional scores and classifier-free guidance


def _check_labels(labels: Any, count: int, n_classes: int, *, allow_null: bool) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError("labels", "integer class labels", str(arr.dtype))
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != count):
        raise ShapeError("labels", f"a scalar or shape [{count}]", str(arr.shape))
    arr = np.broadcast_to(arr.astype(np.int64), (count,))
    low = NULL_LABEL if allow_null else 0
    if np.any((arr < low) | (arr >= n_classes)):
        allowed = f"{NULL_LABEL} (dropped) or " if allow_null else ""
        raise InvalidArgumentError("labels", f"labels in {allowed}0..{n_classes - 1}",
                                   f"values from {int(arr.min())} to {int(arr.max())}")
    return arr


@reference_function(arrays=("x",))
def conditional_score(xp: Precision, mixture: ConditionalMixture, x: Any, labels: Any, t: Any,
                      schedule: str | Schedule = "ou-half") -> Any:
    """grad log p_t(x | y) per point; label NULL_LABEL gives the unconditional grad log p_t(x) (docs/claims.md#conditional-setting)."""
    _check_mixture(mixture, ConditionalMixture)
    _check_points(x, mixture.basis.shape[0])
    count = np.shape(x)[0]
    labels = _check_labels(labels, count, mixture.n_classes, allow_null=True)
    _, alpha, sigma2 = coefficients(xp, t, schedule, count)
    out = xp.zeros(np.shape(x))
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        components = (_marginal_components(xp, mixture) if label == NULL_LABEL
                      else _components(xp, mixture.classes[label]))
        out[rows] = _ambient_terms(xp, mixture.basis, components, x[rows], _rows(alpha, rows),
                                   _rows(sigma2, rows)).score
    return out


def _rows(per_time: Any, rows: np.ndarray) -> Any:
    """The entries of a [T] coefficient array for the selected points (T = 1: one shared time)."""
    return per_time[rows] if np.shape(per_time)[0] > 1 else per_time


@reference_function(arrays=("x",))
def marginal_score(xp: Precision, mixture: ConditionalMixture, x: Any, t: Any,
                   schedule: str | Schedule = "ou-half") -> Any:
    """grad log p_t(x) of the unconditional law sum_y pi_y p_t(x | y)."""
    return conditional_score.generic(xp, mixture, x, np.full(np.shape(x)[0], NULL_LABEL), t, schedule)


@reference_function(arrays=("x",))
def cfg_score(xp: Precision, mixture: ConditionalMixture, x: Any, labels: Any, t: Any, guidance: float,
              schedule: str | Schedule = "ou-half") -> Any:
    """Classifier-free guidance (Ho & Salimans 2022): (1 + w) grad log p_t(x|y) - w grad log p_t(x).

    Convention: guidance weight w, w = 0 is the conditional score, w = -1 the unconditional one.
    diffusers and DiT write uncond + s (cond - uncond) (on eps, equivalently on scores): s = 1 + w;
    see diffusers_scale_from_guidance / guidance_from_diffusers_scale.
    """
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.floating)) or not np.isfinite(guidance):
        raise InvalidArgumentError("guidance", "a finite real number w", repr(guidance))
    _check_mixture(mixture, ConditionalMixture)
    _check_points(x, mixture.basis.shape[0])
    labels = _check_labels(labels, np.shape(x)[0], mixture.n_classes, allow_null=False)
    weight = xp.const(float(guidance))
    conditional = conditional_score.generic(xp, mixture, x, labels, t, schedule)
    unconditional = marginal_score.generic(xp, mixture, x, t, schedule)
    return (1 + weight) * conditional - weight * unconditional


def diffusers_scale_from_guidance(guidance: float) -> float:
    """diffusers/DiT guidance_scale s with uncond + s (cond - uncond) = (1 + w) cond - w uncond: s = 1 + w."""
    return 1.0 + guidance


def guidance_from_diffusers_scale(scale: float) -> float:
    """The weight w of cfg_score that reproduces diffusers/DiT guidance_scale s: w = s - 1."""
    return scale - 1.0


# ----------------------------------------------------------------------------------------
# Sampling and the denoising score-matching loss (CF1)


def _draw(mixture: LatentMixture, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n draws of x = B h and their component indices (float64)."""
    components = rng.choice(mixture.n_components, size=n, p=mixture.weights / mixture.weights.sum())
    factors = psd_square_root_factor(mixture.covariances)
    noise = rng.standard_normal((n, mixture.latent_dim))
    h = mixture.means[components] + np.einsum("nij,nj->ni", factors[components], noise)
    return h @ mixture.basis.T, components


def sample(mixture: LatentMixture, n: int, seed: int, *, return_components: bool = False) -> Any:
    """n float64 draws x = B h, h ~ sum_k w_k N(mu_k, S_k) from numpy.random.default_rng(seed); optionally the component indices."""
    _check_mixture(mixture)
    x, components = _draw(mixture, require_positive_int(n, "n"), np.random.default_rng(seed))
    return (x, components) if return_components else x


ScoreFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def optimal_score_function(mixture: ConditionalMixture, schedule: str | Schedule = "ou-half") -> ScoreFunction:
    """s*(x, t, labels) = grad log p_t(x | tau y) (label NULL_LABEL: unconditional), the minimiser of dsm_loss."""
    _check_mixture(mixture, ConditionalMixture)

    def optimal(x: np.ndarray, t: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return conditional_score(mixture, x, labels, t, schedule)

    return optimal


@dataclass(frozen=True, eq=False)
class MonteCarloEstimate:
    """Per-draw values of a Monte Carlo average; subtracting two estimates from the same seed pairs the draws."""

    values: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def standard_error(self) -> float:
        return float(np.std(self.values, ddof=1) / np.sqrt(self.values.size))

    def __sub__(self, other: MonteCarloEstimate) -> MonteCarloEstimate:
        if not isinstance(other, MonteCarloEstimate) or other.values.shape != self.values.shape:
            raise InvalidArgumentError("other", "a MonteCarloEstimate with the same number of draws")
        return MonteCarloEstimate(self.values - other.values)


def _check_time_grid(times: Any, schedule: str | Schedule) -> np.ndarray:
    grid = check_times(times, schedule, "times")
    if grid.ndim != 1 or grid.size == 0:
        raise ShapeError("times", "a non-empty 1-D array of times", str(grid.shape))
    return grid


def dsm_loss(score_fn: ScoreFunction, mixture: ConditionalMixture, times: Any, n: int, seed: int,
             schedule: str | Schedule = "ou-half", drop_probability: float = 0.5) -> MonteCarloEstimate:
    """CF1 loss (Fu, Yang, Wang, Chen 2024; docs/claims.md#cf1) by Monte Carlo: E ||s(x_t, t, tau y) + (x_t - alpha_t x_0)/sigma_t^2||^2.

    Draws: t uniform on the grid ``times``; y ~ class_probabilities; x_0 ~ p(. | y); z ~ N(0, I);
    x_t = alpha_t x_0 + sigma_t z; tau y = NULL_LABEL with probability ``drop_probability``.
    ``score_fn(x [n, D], t [n], labels [n])`` returns [n, D]. The same seed gives the same draws,
    so L(s) - L(s') is a paired estimate (MonteCarloEstimate subtraction).
    """
    _check_mixture(mixture, ConditionalMixture)
    grid = _check_time_grid(times, schedule)
    count = require_positive_int(n, "n")
    if not 0.0 <= drop_probability <= 1.0:
        raise InvalidArgumentError("drop_probability", "a probability in [0, 1]", repr(drop_probability))
    rng = np.random.default_rng(seed)
    t = grid[rng.integers(grid.size, size=count)]
    probabilities = mixture.class_probabilities / mixture.class_probabilities.sum()
    labels = rng.choice(mixture.n_classes, size=count, p=probabilities)
    x0 = np.empty((count, mixture.basis.shape[0]))
    for label in range(mixture.n_classes):
        rows = np.flatnonzero(labels == label)
        x0[rows] = _draw(mixture.classes[label], rows.size, rng)[0]
    sched = get_schedule(schedule)
    alpha = sched.alpha(FLOAT64, t)[:, None]
    sigma2 = sched.sigma2(FLOAT64, t)[:, None]
    xt = alpha * x0 + np.sqrt(sigma2) * rng.standard_normal(x0.shape)
    shown = np.where(rng.random(count) < drop_probability, NULL_LABEL, labels)
    target = -(xt - alpha * x0) / sigma2
    values = np.asarray(score_fn(xt, t, shown), dtype=np.float64)
    if values.shape != xt.shape:
        raise ShapeError("score_fn", f"a function returning shape {xt.shape}", str(values.shape))
    return MonteCarloEstimate(np.sum((values - target) ** 2, axis=1))


def affine_perturbation_energy(mixture: ConditionalMixture, matrix: Any, offset: Any, times: Any,
                               schedule: str | Schedule = "ou-half") -> float:
    """Exact E ||A x_t + c||^2 under dsm_loss's law of (t, y, x_t): the right side of CF1 for s = s* + (A x + c).

    E ||A x + c||^2 = tr(A M2 A^T) + 2 c^T A m1 + ||c||^2 with m1 = alpha B E[h],
    M2 = alpha^2 B E[h h^T] B^T + sigma^2 I, E[h h^T] = sum_y pi_y sum_k w_yk (S_yk + mu_yk mu_yk^T);
    averaged uniformly over the time grid.
    (The mask tau does not change the law of x_t, so it does not enter.) Float64.
    """
    _check_mixture(mixture, ConditionalMixture)
    dim = mixture.basis.shape[0]
    a = as_float64_array(matrix, "matrix")
    c = as_float64_array(offset, "offset")
    if a.shape != (dim, dim):
        raise ShapeError("matrix", f"shape {(dim, dim)}", str(a.shape))
    if c.shape != (dim,):
        raise ShapeError("offset", f"shape {(dim,)}", str(c.shape))
    grid = _check_time_grid(times, schedule)
    pi = mixture.class_probabilities / mixture.class_probabilities.sum()
    first = sum(p * (m.weights / m.weights.sum()) @ m.means for p, m in zip(pi, mixture.classes))
    second = sum(p * np.einsum("k,kij->ij", m.weights / m.weights.sum(),
                               m.covariances + m.means[:, :, None] * m.means[:, None, :])
                 for p, m in zip(pi, mixture.classes))
    projected = a @ mixture.basis  # A B, [D, d0]
    sched = get_schedule(schedule)
    alpha = sched.alpha(FLOAT64, grid)
    sigma2 = sched.sigma2(FLOAT64, grid)
    energies = (alpha**2 * np.sum((projected @ second) * projected) + sigma2 * np.sum(a * a)
                + 2 * alpha * (c @ projected @ first) + c @ c)
    return float(np.mean(energies))


# ----------------------------------------------------------------------------------------
# CF2: the score as a Gaussian term plus the log-gradient of a Gaussian smoothing, by quadrature


class CF2Terms(NamedTuple):
    """CF2's two terms at each point, with the quadrature's error estimate and an a-priori rounding bound.

    gaussian [N, d]: -C2 x/(alpha^2 + C2 sigma^2); smoothing [N, d]: grad h/h by quadrature (the fine
    rule); quadrature_error [N]: max over coordinates of |fine - coarse| (an error estimate of the coarse
    rule, so conservative for the fine one); rounding [N]: float64 rounding bound of the smoothing term.
    """

    gaussian: np.ndarray
    smoothing: np.ndarray
    quadrature_error: np.ndarray
    rounding: np.ndarray


def cf2_smoothing(alpha: float, sigma2: float, c2: float) -> tuple[float, float]:
    """(kappa, v) of CF2's Gaussian smoothing (Fu, Yang, Wang, Chen 2024, arXiv 2403.11968): centre kappa x, variance v I.

    kappa = alpha/(alpha^2 + C2 sigma^2), v = sigma^2/(alpha^2 + C2 sigma^2). Derivation (checked here; docs/claims.md#cf2
    marks the formula "verify"): p_t(x) = int p(u) N(x; alpha u, sigma^2 I) du with p(u) = e^(-C2|u|^2/2) f(u).
    The exponent in u, -C2|u|^2/2 - |x - alpha u|^2/(2 sigma^2), has precision a = (alpha^2 + C2 sigma^2)/sigma^2
    = 1/v and mean alpha x/(sigma^2 a) = kappa x; completing the square leaves
    |x|^2/(2 sigma^2) (alpha^2/(alpha^2 + C2 sigma^2) - 1) = -C2 |x|^2/(2 (alpha^2 + C2 sigma^2)). Hence
    p_t(x) = const e^(-C2|x|^2/(2(alpha^2 + C2 sigma^2))) h(x), h(x) = E_{u ~ N(kappa x, v I)} f(u), and
    grad log p_t = -C2 x/(alpha^2 + C2 sigma^2) + grad h/h. Differentiating the Gaussian kernel,
    grad h/h = (kappa/v) (E[u f(u)]/E[f(u)] - kappa x) = (alpha/sigma^2) (E[u f]/E[f] - kappa x).
    """
    denominator = alpha * alpha + c2 * sigma2
    return alpha / denominator, sigma2 / denominator


def _panel_rule(low: np.ndarray, high: np.ndarray, panels: np.ndarray,
                nodes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis: composite Gauss-Legendre (points, weights), ``panels[j]`` equal panels of ``nodes`` nodes on [low_j, high_j]."""
    base, base_weights = np.polynomial.legendre.leggauss(nodes)
    rules = []
    for lo, hi, count in zip(low, high, panels):
        edges = np.linspace(lo, hi, int(count) + 1)
        half = np.diff(edges) / 2
        rules.append((((edges[:-1] + half)[:, None] + half[:, None] * base[None]).reshape(-1),
                      (half[:, None] * base_weights[None]).reshape(-1)))
    return rules


def _component_integral(log_weight: float, mean: np.ndarray, precision: np.ndarray, log_det: float, c2: float,
                        centre: np.ndarray, root_v: float, panels_per_sd: float,
                        nodes: int) -> tuple[float, np.ndarray, float]:
    """One component of int f(m + sqrt(v) z) phi(z) dz, f_k(u) = w_k N(u; mu_k, S_k) e^(C2 |u|^2/2), by a tensor rule in z.

    The integrand is the component's product Gaussian (precision P = v (S^-1 - C2 I) + I in z); the box is
    +- 12 sd along each principal axis of P (tail mass < e^-72 of the peak); panels are 1/panels_per_sd sd wide.
    Returns (log integral, mean of z, weighted mean of (1 + |exponent terms|) |z - mean|).
    """
    dim = mean.size
    p_z = root_v**2 * (precision - c2 * np.eye(dim)) + np.eye(dim)
    linear = root_v * (precision @ (mean - centre) + c2 * centre)
    peak = np.linalg.solve(p_z, linear)
    # integrate in the principal axes of the integrand (z = peak + Q y / sqrt(lambda)): a box of +- 12 sd per
    # axis, so anisotropic or rotated components need no more nodes than round ones
    lambdas, q = np.linalg.eigh(p_z)
    sd = 1 / np.sqrt(lambdas)
    rules = _panel_rule(np.full(dim, -12.0), np.full(dim, 12.0), np.full(dim, max(math.ceil(24 * panels_per_sd), 1)),
                        nodes)
    y = np.stack([g.reshape(-1) for g in np.meshgrid(*[r[0] for r in rules], indexing="ij")], axis=1)
    z = peak + (y * sd) @ q.T
    log_rule = (np.sum([np.log(g.reshape(-1)) for g in np.meshgrid(*[r[1] for r in rules], indexing="ij")], axis=0)
                + float(np.sum(np.log(sd))))  # the Jacobian of y -> z
    u = centre + root_v * z
    offset = u - mean
    quadratic = 0.5 * np.einsum("ni,ij,nj->n", offset, precision, offset)
    growth = 0.5 * c2 * np.sum(u * u, axis=1)
    gauss = 0.5 * np.sum(z * z, axis=1)
    constant = log_weight - 0.5 * (dim * math.log(2 * math.pi) + log_det)  # log w_k N's normaliser (phi's cancels)
    values = constant - quadratic + growth - gauss + log_rule
    top = float(np.max(values))
    weights = np.exp(values - top)
    total = math.fsum(weights)
    mean_z = (weights @ z) / total
    # first-order rounding of the mean: each weight errs by ~ u (1 + its exponent terms), moving the mean by
    # sum w_i e_i (z_i - mean) / sum w_i, at most the weighted average of (1 + terms_i) |z_i - mean|
    terms = 1 + abs(constant) + quadratic + growth + gauss
    spread = float(weights @ (terms * np.linalg.norm(z - mean_z, axis=1))) / total
    return top + math.log(total), mean_z, spread


def cf2_decomposition(mixture: LatentMixture, x: Any, t: float, c2: float, schedule: str | Schedule = "ou-half", *,
                      nodes: int = 24, panels_per_sd: float = 0.25,
                      smoothing: Callable[[float, float, float], tuple[float, float]] = cf2_smoothing) -> CF2Terms:
    """CF2 (Fu, Yang, Wang, Chen 2024; docs/claims.md#cf2) for p = a full-rank Gaussian mixture in R^d, d in {1, 2}.

    Writes p(u) = e^(-C2 |u|^2/2) f(u) (requires 0 < C2 < 1/lambda_max(S_k): f then decays) and returns
    -C2 x/(alpha^2 + C2 sigma^2) and grad h/h = (kappa/v)(E[u f]/E[f] - kappa x), u ~ N(kappa x, v I),
    (kappa, v) = smoothing(alpha, sigma^2, C2) (cf2_smoothing; a parameter so a test can plant a wrong one).
    The expectations are computed by quadrature in z = (u - kappa x)/sqrt(v), component by component
    (f is a sum, so its integral is), with composite Gauss-Legendre rules along each component integrand's
    principal axes: ``nodes`` per panel, panels 1/panels_per_sd sd wide (coarse rule: twice as wide). The
    fine rule is returned; |fine - coarse| is the stated quadrature error. Uses nothing of the
    closed-form score of p_t (reference.mixtures.score), which CF2 is checked against. Float64, OU-half
    by default (any schedule with alpha, sigma^2 works).
    """
    _check_mixture(mixture)
    dim = mixture.ambient_dim
    if mixture.latent_dim != dim or dim not in (1, 2):
        raise ShapeError("mixture", "a full-rank mixture in 1 or 2 dimensions",
                         f"latent_dim {mixture.latent_dim}, ambient_dim {dim}")
    points = as_float64_array(x, "x")
    _check_points(points, dim)
    times = check_times(t, schedule)
    if times.ndim != 0:
        raise ShapeError("t", "a scalar time", str(times.shape))
    means = mixture.means @ mixture.basis.T
    covariances = mixture.basis @ mixture.covariances @ mixture.basis.T
    largest = float(np.max(np.linalg.eigvalsh(covariances)))
    if not (isinstance(c2, (int, float, np.floating)) and math.isfinite(c2) and 0 < c2 * largest < 1):
        raise InvalidArgumentError("c2", f"0 < C2 < 1/lambda_max(S) = {1 / largest!r}", repr(c2))
    if not (isinstance(nodes, int) and nodes >= 2 and panels_per_sd > 0):
        raise InvalidArgumentError("nodes", "an integer >= 2 and panels_per_sd > 0", f"{nodes!r}, {panels_per_sd!r}")
    sched = get_schedule(schedule)
    alpha = float(sched.alpha(FLOAT64, times))
    sigma2 = float(sched.sigma2(FLOAT64, times))
    kappa, v = smoothing(alpha, sigma2, float(c2))
    root_v = math.sqrt(v)
    precisions = np.linalg.inv(covariances)
    log_dets = np.linalg.slogdet(covariances)[1]
    log_weights = np.log(mixture.weights / mixture.weights.sum())
    count = points.shape[0]
    smooth = np.empty((count, dim))
    error = np.empty(count)
    rounding = np.empty(count)
    for n in range(count):
        centre = kappa * points[n]
        estimates = []
        for density in (panels_per_sd / 2, panels_per_sd):
            parts = [_component_integral(lw, mu, prec, ld, float(c2), centre, root_v, density, nodes)
                     for lw, mu, prec, ld in zip(log_weights, means, precisions, log_dets)]
            logs = np.array([p[0] for p in parts])
            shares = np.exp(logs - logs.max())
            shares /= shares.sum()
            mean_z = sum(share * p[1] for share, p in zip(shares, parts))
            estimates.append((kappa / root_v) * mean_z)  # (kappa/v)(E[u f]/E[f] - m), E[u f]/E[f] = m + sqrt(v) E[z]
            # between components the shares round like the weights inside one; the spread of the component means
            # adds to each one's own spread
            spread = max(p[2] + float(np.linalg.norm(p[1] - mean_z)) * (1 + abs(float(logs.max() - logs.min())))
                         for p in parts)
        smooth[n] = estimates[1]
        error[n] = float(np.max(np.abs(estimates[1] - estimates[0])))
        # each log-integrand value rounds by ~ u (1 + |its terms|) (relative, after exp); 8 (d + K) covers the
        # operation counts of the quadratic forms, exp and the sums with margin
        rounding[n] = (abs(kappa) / root_v) * 8 * (dim + mixture.n_components) * formats.FLOAT64.unit_roundoff * spread
    gaussian = -float(c2) * points / (alpha * alpha + float(c2) * sigma2)
    return CF2Terms(gaussian, smooth, error, rounding)
