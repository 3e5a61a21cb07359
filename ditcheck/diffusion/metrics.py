"""Distances between samples and exact targets: binned TV (1-2 D), fitted-Gaussian W2 and KL, sliced W2, MMD, LD5's subspace error.

Targets are reference.mixtures.LatentMixture laws (for a sampler stopped at t_end, the diffused law; see
:func:`diffused_target`). What each estimate means:

* :func:`tv_binned`: 1/2 sum_bins |P(bin) - n_bin / n| + P(outside the grid), P the exact target mass of each
  bin (1-D: exact Gaussian CDFs; 2-D: tensor Gauss-Legendre on the exact density). By the data-processing
  inequality the population value is <= TV(target, sampler law); the empirical value is biased upwards by
  sampling noise: under exact sampling its mean is about ``noise_floor`` = 1/2 sum_b sqrt(2 P_b (1 - P_b) / (pi n))
  (E|N(0, v)| = sqrt(2 v / pi) per bin, the normal approximation of the binomial counts; it is never above
  1/2 sum_b sqrt(P_b (1 - P_b) / n), the Cauchy-Schwarz bound, returned as ``noise_bound``). Report both;
  a sampler's error is resolved only where value >> noise_floor.
* :func:`w2_fitted_gaussian`, :func:`kl_fitted_gaussian`: closed forms (reference.distances) between
  N(sample mean, sample covariance) and the target's mean and covariance (exact moments of the mixture).
* :func:`sliced_w2`: sqrt of the mean over random unit directions of W2^2 between the projected samples and
  the exact projected target (a 1-D mixture), by the quantile coupling at levels (i - 1/2)/n.
* :func:`mmd`: unbiased MMD^2 with a Gaussian kernel between two sample sets (Gretton et al. 2012, eq. 3).
* :func:`subspace_error`: ||(I - B B^T) x|| per sample (LD5).
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ditcheck.reference import distances
from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.mixtures import LatentMixture, gaussian_mixture
from ditcheck.reference.latent import check_orthonormal

__all__ = ["TVEstimate", "diffused_target", "mixture_moments", "tv_binned", "tv_exact", "w2_fitted_gaussian",
           "kl_fitted_gaussian", "sliced_w2", "mmd", "subspace_error"]


def _numpy_samples(samples: Any, dim: int | None = None, argument: str = "samples") -> np.ndarray:
    array = samples.detach().cpu().to(torch.float64).numpy() if isinstance(samples, torch.Tensor) else np.asarray(
        samples, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2 or (dim is not None and array.shape[1] != dim):
        raise ShapeError(argument, f"shape [n >= 2, {dim if dim is not None else 'D'}]", str(array.shape))
    if not np.all(np.isfinite(array)):
        raise InvalidArgumentError(argument, "finite samples", "NaN or Inf")
    return array


def _check_mixture(mixture: Any) -> LatentMixture:
    if not isinstance(mixture, LatentMixture):
        raise InvalidArgumentError("target", "a LatentMixture", type(mixture).__name__)
    return mixture


def diffused_target(mixture: LatentMixture, alpha: float, sigma2: float) -> LatentMixture:
    """The law of alpha x + sigma z in R^D as a full-rank mixture: means alpha B mu_k, covariances alpha^2 B S_k B^T + sigma^2 I."""
    _check_mixture(mixture)
    b = mixture.basis
    covariances = alpha * alpha * (b @ mixture.covariances @ b.T) + sigma2 * np.eye(b.shape[0])
    covariances = (covariances + np.swapaxes(covariances, -1, -2)) / 2
    return gaussian_mixture(mixture.weights, alpha * mixture.means @ b.T, covariances)


def _ambient_components(mixture: LatentMixture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = mixture.basis
    weights = mixture.weights / mixture.weights.sum()
    return weights, mixture.means @ b.T, b @ mixture.covariances @ b.T


def mixture_moments(mixture: LatentMixture) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of sum_k w_k N(m_k, C_k): sum w m, sum w (C + m m^T) - mean mean^T."""
    weights, means, covariances = _ambient_components(_check_mixture(mixture))
    mean = weights @ means
    second = np.einsum("k,kij->ij", weights, covariances + means[:, :, None] * means[:, None, :])
    covariance = second - np.outer(mean, mean)
    return mean, (covariance + covariance.T) / 2


@dataclass(frozen=True)
class TVEstimate:
    """Binned TV between samples and an exact target; ``noise_floor`` bounds its mean under exact sampling."""

    value: float
    noise_floor: float  # approximate mean of value under exact sampling (normal approximation)
    noise_bound: float  # upper bound on that mean (Cauchy-Schwarz)
    outside_mass: float  # exact target mass outside the grid (included in value)
    quadrature_error: float  # |difference| between two quadrature orders for the bin masses (2-D; 0 in 1-D)
    bins: int


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _erfc(z: np.ndarray) -> np.ndarray:
    """Vectorised erfc in float64 (math.erfc elementwise; NumPy has none)."""
    return np.asarray(_ERFC(z), dtype=np.float64)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * _erfc(-z / math.sqrt(2.0))


def _bin_masses_1d(mixture: LatentMixture, edges: np.ndarray) -> np.ndarray:
    weights, means, covariances = _ambient_components(mixture)
    sd = np.sqrt(covariances[:, 0, 0])
    cdf = _normal_cdf((edges[None, :] - means[:, :1]) / sd[:, None])  # [K, bins + 1]
    return weights @ np.diff(cdf, axis=1)


def _density(mixture: LatentMixture, points: np.ndarray) -> np.ndarray:
    weights, means, covariances = _ambient_components(mixture)
    precisions = np.linalg.inv(covariances)
    offsets = points[:, None, :] - means[None]
    r2 = np.einsum("nki,kij,nkj->nk", offsets, precisions, offsets)
    norm = (2 * np.pi) ** (-points.shape[1] / 2) / np.sqrt(np.linalg.det(covariances))
    return np.exp(-r2 / 2) @ (weights * norm)


def _bin_masses_2d(mixture: LatentMixture, edges_x: np.ndarray, edges_y: np.ndarray, order: int) -> np.ndarray:
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes, weights = (nodes + 1) / 2, weights / 2
    wx, wy = np.diff(edges_x), np.diff(edges_y)
    px = (edges_x[:-1, None] + wx[:, None] * nodes[None]).ravel()  # [bx * order]
    py = (edges_y[:-1, None] + wy[:, None] * nodes[None]).ravel()
    grid = np.stack(np.meshgrid(px, py, indexing="ij"), -1).reshape(-1, 2)
    values = _density(mixture, grid).reshape(wx.size, order, wy.size, order)
    return np.einsum("aibj,i,j->ab", values, weights, weights) * wx[:, None] * wy[None, :]


def tv_binned(samples: Any, target: LatentMixture, *, bins: int = 40, radius: float = 5.0,
              quadrature_order: int = 6) -> TVEstimate:
    """Binned TV between samples [n, m] (m = 1 or 2) and an exact full-rank mixture target (module docstring).

    The grid covers the target's mean +- ``radius`` standard deviations (per axis, over the mixture's
    overall covariance) with ``bins`` bins per axis; samples outside count in the outside cell.
    """
    target = _check_mixture(target)
    dim = target.ambient_dim
    if dim not in (1, 2) or target.latent_dim != dim:
        raise ShapeError("target", "a full-rank mixture in 1 or 2 dimensions", f"ambient_dim {dim}")
    x = _numpy_samples(samples, dim)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise InvalidArgumentError("bins", "an integer >= 2", repr(bins))
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise InvalidArgumentError("radius", "a positive number of standard deviations", repr(radius))
    if isinstance(quadrature_order, bool) or not isinstance(quadrature_order, int) or quadrature_order < 4:
        raise InvalidArgumentError("quadrature_order", "an integer >= 4 (the error estimate uses order - 2)",
                                   repr(quadrature_order))
    mean, covariance = mixture_moments(target)
    sd = np.sqrt(np.diag(covariance))
    edges = [np.linspace(mean[j] - radius * sd[j], mean[j] + radius * sd[j], bins + 1) for j in range(dim)]
    if dim == 1:
        masses = _bin_masses_1d(target, edges[0])
        quadrature_error = 0.0
        counts = np.histogram(x[:, 0], bins=edges[0])[0]
    else:
        masses = _bin_masses_2d(target, edges[0], edges[1], quadrature_order)
        coarse = _bin_masses_2d(target, edges[0], edges[1], max(2, quadrature_order - 2))
        quadrature_error = float(np.abs(masses - coarse).sum())
        counts = np.histogram2d(x[:, 0], x[:, 1], bins=edges)[0]
    n = x.shape[0]
    outside_mass = max(0.0, 1.0 - float(masses.sum()))
    empirical = counts / n
    outside_empirical = 1.0 - float(empirical.sum())
    value = 0.5 * (float(np.abs(masses - empirical).sum()) + abs(outside_mass - outside_empirical))
    all_masses = np.append(masses.ravel(), outside_mass)
    noise_bound = 0.5 * float(np.sqrt(all_masses * (1 - all_masses) / n).sum())
    return TVEstimate(value, noise_bound * math.sqrt(2 / math.pi), noise_bound, outside_mass, quadrature_error, int(masses.size))


def tv_exact(p: LatentMixture, q: LatentMixture, *, tolerance: float = 1e-6) -> distances.TotalVariation:
    """Exact TV between two 1-D or 2-D mixtures by bounded quadrature (reference.distances)."""
    dim = _check_mixture(p).ambient_dim
    if dim == 1:
        return distances.tv_mixture_1d(p, q, tolerance=tolerance)
    if dim == 2:
        return distances.tv_mixture_2d(p, q, tolerance=tolerance)
    raise ShapeError("p", "a 1-D or 2-D mixture", f"ambient_dim {dim}")


def _fitted(samples: Any, target: LatentMixture) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    target = _check_mixture(target)
    x = _numpy_samples(samples, target.ambient_dim)
    mean, covariance = mixture_moments(target)
    fitted = np.cov(x, rowvar=False).reshape(mean.size, mean.size)
    return x.mean(axis=0), (fitted + fitted.T) / 2, mean, covariance


def w2_fitted_gaussian(samples: Any, target: LatentMixture) -> float:
    """W2(N(sample mean, sample covariance), N(target mean, target covariance)) (Dowson & Landau 1982)."""
    m1, s1, m2, s2 = _fitted(samples, target)
    return float(distances.w2_gaussian(m1, s1, m2, s2))


def kl_fitted_gaussian(samples: Any, target: LatentMixture) -> float:
    """KL(N(sample mean, sample covariance) || N(target mean, target covariance)); exact KL for Gaussian targets' moments."""
    m1, s1, m2, s2 = _fitted(samples, target)
    return float(distances.kl_gaussian(m1, s1, m2, s2))


def _mixture_quantiles(weights: np.ndarray, means: np.ndarray, sds: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles of the 1-D mixture sum_k w_k N(m_k, sd_k^2) at ``levels``.

    Inverse interpolation of the CDF on 4097 points over [min m - 12 sd, max m + 12 sd], then three Newton
    steps with the exact CDF and density (error far below the sampling error of any sample it is compared with).
    """
    lo, hi = float(np.min(means - 12 * sds)), float(np.max(means + 12 * sds))
    grid = np.linspace(lo, hi, 4097)

    def cdf(x: np.ndarray) -> np.ndarray:
        return _normal_cdf((x[:, None] - means[None]) / sds[None]) @ weights

    def density(x: np.ndarray) -> np.ndarray:
        z = (x[:, None] - means[None]) / sds[None]
        return (np.exp(-z * z / 2) / (sds[None] * math.sqrt(2 * math.pi))) @ weights

    q = np.interp(levels, cdf(grid), grid)
    for _ in range(3):
        q = np.clip(q - (cdf(q) - levels) / np.maximum(density(q), 1e-300), lo, hi)
    return q


def _normal_quantile(levels: np.ndarray) -> np.ndarray:
    inv = NormalDist().inv_cdf
    return np.array([inv(float(p)) for p in levels])


@functools.lru_cache(maxsize=32)
def _sliced_reference(target: LatentMixture, n: int, projections: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(directions [P, D], exact projected quantiles [P, n] at levels (i - 1/2)/n); cached per target object."""
    weights, means, covariances = _ambient_components(target)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((projections, target.ambient_dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    levels = (np.arange(n) + 0.5) / n
    standard = _normal_quantile(levels) if weights.size == 1 else None
    quantiles = np.empty((projections, n))
    for p, u in enumerate(directions):
        projected_means = means @ u
        projected_sds = np.sqrt(np.einsum("i,kij,j->k", u, covariances, u))
        if standard is not None:
            quantiles[p] = projected_means[0] + projected_sds[0] * standard
        else:
            quantiles[p] = _mixture_quantiles(weights, projected_means, projected_sds, levels)
    return directions, quantiles


def sliced_w2(samples: Any, target: LatentMixture, *, projections: int = 32, seed: int = 0, trim: float = 0.0) -> float:
    """Sliced W2: sqrt(mean_u W2^2(u^T samples, u^T target)) over ``projections`` random unit directions u (seeded).

    Each 1-D W2^2 is (1/n) sum_i (x_(i) - F^-1((i - 1/2)/n))^2 with F the exact projected mixture CDF,
    the quantile coupling of the empirical law with the exact one at the midpoints. The exact quantiles are
    cached per (target object, n, projections, seed), so comparing many samplers on one target is cheap.
    Under exact sampling the value is not 0 but a floor that shrinks with n (about 0.1 at n = 4000 for a
    spread 8-D mixture, dominated by the tails): compare samplers at one n, next to the floor of exact draws.
    ``trim`` in [0, 0.25) drops the order statistics below level trim and above 1 - trim in each projection
    (a trimmed W2 on the central part of the law), so a few stray points cannot dominate; it also hides them.
    """
    target = _check_mixture(target)
    x = _numpy_samples(samples, target.ambient_dim)
    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise InvalidArgumentError("projections", "a positive integer", repr(projections))
    if not (isinstance(trim, (int, float)) and 0 <= trim < 0.25):
        raise InvalidArgumentError("trim", "a fraction in [0, 0.25)", repr(trim))
    directions, quantiles = _sliced_reference(target, x.shape[0], projections, int(seed))
    projected = np.sort(x @ directions.T, axis=0).T  # [P, n]
    cut = int(math.floor(trim * x.shape[0]))
    keep = slice(cut, x.shape[0] - cut)
    return math.sqrt(float(np.mean((projected[:, keep] - quantiles[:, keep]) ** 2)))


def mmd(x: Any, y: Any, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with k(a, b) = exp(-||a - b||^2 / (2 h^2)); h = median pairwise distance if None."""
    a = torch.as_tensor(_numpy_samples(x, argument="x"))
    b = torch.as_tensor(_numpy_samples(y, a.shape[1], argument="y"))
    if bandwidth is None:
        pooled = torch.cat([a, b])[:2000]
        bandwidth = float(torch.cdist(pooled, pooled).median())
    if not (math.isfinite(bandwidth) and bandwidth > 0):
        raise InvalidArgumentError("bandwidth", "a positive bandwidth", repr(bandwidth))

    def kernel_mean(p: torch.Tensor, q: torch.Tensor, same: bool) -> float:
        k = torch.exp(-torch.cdist(p, q).pow(2) / (2 * bandwidth**2))
        if same:
            n = p.shape[0]
            return float((k.sum() - k.diagonal().sum()) / (n * (n - 1)))
        return float(k.mean())

    return kernel_mean(a, a, True) + kernel_mean(b, b, True) - 2 * kernel_mean(a, b, False)


def subspace_error(x: torch.Tensor, basis: Any) -> torch.Tensor:
    """LD5 (Hu et al. 2024; docs/claims.md#ld5): ||(I - B B^T) x|| for each row of x [N, D], B [D, d0] orthonormal."""
    b_np = np.array(basis, dtype=np.float64)
    check_orthonormal(b_np, "basis")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != b_np.shape[0]:
        raise ShapeError("x", f"a tensor of shape [N, {b_np.shape[0]}]", str(getattr(x, "shape", type(x))))
    b = torch.as_tensor(b_np, dtype=x.dtype, device=x.device)
    return torch.linalg.vector_norm(x - (x @ b) @ b.T, dim=-1)
