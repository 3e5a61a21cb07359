"""RF1: a single attention layer with random features (Fu, Guo, Bai, Mei, NeurIPS 2023, arXiv 2307.11353).

Input: a query x0 in R^d and N keys x_1..x_N in R^d. With M heads and frozen query-key matrices
W_m = W0 + s G_m (G_m with iid N(0, 1) entries) and trainable value vectors v_m in R^d,

    f(X) = sum_m (1/N) sum_i exp(<x0, W_m x_i>) <v_m, x_i> = sum_m <v_m, phi_{W_m}(X)>,
    phi_W(X) = (1/N) sum_i exp(<x0, W x_i>) x_i.

(The paper's exp is unnormalised attention; with a softmax the weights would not factor into heads this way.)

Infinite-head kernel (docs/claims.md#rf1, source marked "verify"; derived here): <x0, W x_i> = <W, x0 x_i^T>_F, so with
C_ij = x0 x_i^T + x0' x'_j^T and W = W0 + s G, E exp(<W, C>) = exp(<W0, C> + s^2 ||C||_F^2 / 2) (Gaussian
moment generating function, <G, C> ~ N(0, ||C||_F^2)), and

    K(X, X') = E_W <phi_W(X), phi_W(X')> = (1/N^2) sum_{i,j} exp(<W0, C_ij> + s^2 ||C_ij||_F^2 / 2) <x_i, x'_j>,
    ||C_ij||_F^2 = |x0|^2 |x_i|^2 + |x0'|^2 |x'_j|^2 + 2 <x0, x0'> <x_i, x'_j>.

The M-head Gram K_M = (1/M) sum_m <phi_{W_m}(X), phi_{W_m}(X')> is an average of M iid terms with mean K,
so |K_M - K| = O(M^-1/2) (central limit theorem). Both f and K are invariant to permuting the keys.

Data for the learning curves (our choice; the paper's experiments use the same kind of setting): x0 and
the keys iid uniform on the unit sphere of R^d; targets f*_p(X) = (1/N) sum_i He_p(sqrt(d) <x0, x_i>) sqrt(d) x_i[0]
(degree p in <x0, x_i>, odd under (x0, X) -> (-x0, -X) like every model term), all permutation invariant.
Zero-mean W0 = 0 vs non-zero-mean W0 = b I.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.precision import as_float64_array, require_positive_int

__all__ = [
    "RandomFeatureAttention",
    "rf1_kernel",
    "rf1_features",
    "random_query_key_matrices",
    "sphere_sequences",
    "polynomial_target",
    "LearningCurve",
    "ridge_learning_curve",
    "monte_carlo_kernel_error",
]


def random_query_key_matrices(heads: int, dim: int, scale: float, mean: Any = None, *, seed: int = 0) -> np.ndarray:
    """W_m = W0 + s G_m, m < heads, G_m iid N(0, 1) entries, float64 [heads, dim, dim]; W0 = 0 unless ``mean`` given."""
    heads, dim = require_positive_int(heads, "heads"), require_positive_int(dim, "dim")
    w0 = _mean_matrix(mean, dim)
    return w0 + float(scale) * np.random.default_rng(seed).standard_normal((heads, dim, dim))


def _mean_matrix(mean: Any, dim: int) -> np.ndarray:
    if mean is None:
        return np.zeros((dim, dim))
    w0 = as_float64_array(mean, "mean")
    if w0.shape != (dim, dim):
        raise ShapeError("mean", f"a [{dim}, {dim}] matrix W0", str(w0.shape))
    return w0


def _check_inputs(x0: Any, keys: Any) -> tuple[np.ndarray, np.ndarray]:
    query = as_float64_array(x0, "x0")
    k = as_float64_array(keys, "keys")
    if query.ndim != 2:
        raise ShapeError("x0", "queries [B, d]", str(query.shape))
    if k.ndim != 3 or k.shape[0] != query.shape[0] or k.shape[2] != query.shape[1] or k.shape[1] < 1:
        raise ShapeError("keys", f"keys [B, N, d] with B, d = {query.shape}", str(k.shape))
    return query, k


def rf1_features(x0: Any, keys: Any, weights: Any) -> np.ndarray:
    """phi_{W_m}(X) = (1/N) sum_i exp(<x0, W_m x_i>) x_i for every head: float64 [B, M, d]."""
    query, k = _check_inputs(x0, keys)
    w = as_float64_array(weights, "weights")
    if w.ndim != 3 or w.shape[1:] != (query.shape[1], query.shape[1]):
        raise ShapeError("weights", f"[M, d, d] with d = {query.shape[1]}", str(w.shape))
    logits = np.einsum("ba,mac,bnc->bmn", query, w, k)
    return np.exp(logits) @ k / k.shape[1]


def rf1_kernel(x0: Any, keys: Any, x0_other: Any, keys_other: Any, scale: float, mean: Any = None) -> np.ndarray:
    """RF1 kernel (Fu et al. 2023; docs/claims.md#rf1): (1/N^2) sum_ij exp(<W0, C_ij> + s^2 ||C_ij||_F^2 / 2) <x_i, x'_j>.

    Returns the Gram matrix [B, B'] between the sequences (x0, keys) [B, d], [B, N, d] and (x0_other,
    keys_other) [B', d], [B', N', d]; W0 = ``mean`` (default 0), s = ``scale``.
    """
    q, k = _check_inputs(x0, keys)
    q2, k2 = _check_inputs(x0_other, keys_other)
    if q.shape[1] != q2.shape[1]:
        raise ShapeError("x0_other", f"queries of dimension {q.shape[1]}", str(q2.shape))
    w0 = _mean_matrix(mean, q.shape[1])
    s2 = float(scale) ** 2
    a = np.einsum("ba,ac,bnc->bn", q, w0, k)  # <W0, x0 x_i^T> = x0^T W0 x_i
    a2 = np.einsum("ba,ac,bnc->bn", q2, w0, k2)
    own = np.sum(q**2, 1)[:, None] * np.sum(k**2, 2)  # |x0|^2 |x_i|^2, [B, N]
    own2 = np.sum(q2**2, 1)[:, None] * np.sum(k2**2, 2)
    cross = np.einsum("bnc,emc->bnem", k, k2)  # <x_i, x'_j>, [B, N, B', N']
    queries = q @ q2.T  # <x0, x0'>, [B, B']
    exponent = (a + s2 / 2 * own)[:, :, None, None] + (a2 + s2 / 2 * own2)[None, None] \
        + s2 * queries[:, None, :, None] * cross
    return np.sum(np.exp(exponent) * cross, axis=(1, 3)) / (k.shape[1] * k2.shape[1])


class RandomFeatureAttention(nn.Module):
    """RF1's model: M heads, frozen W_m [M, d, d], trainable values v [M, d]; (x0 [B, d], keys [B, N, d]) -> [B]."""

    def __init__(self, weights: Any, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        w = as_float64_array(weights, "weights")
        if w.ndim != 3 or w.shape[1] != w.shape[2]:
            raise ShapeError("weights", "query-key matrices [M, d, d]", str(w.shape))
        factory = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        self.register_buffer("weights", torch.as_tensor(w, **factory))
        self.values = nn.Parameter(torch.zeros(w.shape[0], w.shape[1], **factory))

    def features(self, x0: Tensor, keys: Tensor) -> Tensor:
        """phi_{W_m}(X) [B, M, d]: (1/N) sum_i exp(<x0, W_m x_i>) x_i."""
        if x0.dim() != 2 or keys.dim() != 3 or keys.shape[0] != x0.shape[0] or keys.shape[2] != x0.shape[1] \
                or x0.shape[1] != self.weights.shape[1]:
            raise ShapeError("keys", f"x0 [B, d] and keys [B, N, d], d = {self.weights.shape[1]}",
                             f"{tuple(x0.shape)} and {tuple(keys.shape)}")
        logits = torch.einsum("ba,mac,bnc->bmn", x0, self.weights, keys)
        return torch.exp(logits) @ keys / keys.shape[1]

    def forward(self, x0: Tensor, keys: Tensor) -> Tensor:
        return torch.einsum("bmd,md->b", self.features(x0, keys), self.values)


def sphere_sequences(count: int, keys: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x0 [count, dim], keys [count, keys, dim]) iid uniform on the unit sphere of R^dim."""
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((require_positive_int(count, "count"), require_positive_int(keys, "keys") + 1,
                                  require_positive_int(dim, "dim")))
    points /= np.linalg.norm(points, axis=-1, keepdims=True)
    return points[:, 0], points[:, 1:]


def polynomial_target(x0: np.ndarray, keys: np.ndarray, degree: int) -> np.ndarray:
    """f*_p(X) = (1/N) sum_i He_p(sqrt(d) <x0, x_i>) sqrt(d) x_i[0] (probabilists' Hermite He_p).

    Why the factor x_i[0]: every model term exp(<x0, W x_i>) <v, x_i> is odd under (x0, X) -> (-x0, -X), so a
    target that is even under that flip (e.g. (1/N) sum_i <x0, x_i>^p alone) is orthogonal to every model.
    """
    degree = int(degree)
    if degree < 0:
        raise InvalidArgumentError("degree", "a non-negative integer", repr(degree))
    dim = x0.shape[1]
    z = math.sqrt(dim) * np.einsum("bd,bnd->bn", x0, keys)
    coefficients = np.zeros(degree + 1)
    coefficients[degree] = 1.0
    return (np.polynomial.hermite_e.hermeval(z, coefficients) * math.sqrt(dim) * keys[..., 0]).mean(axis=1)


@dataclass(frozen=True)
class LearningCurve:
    """Relative test error ||f_hat - f*||^2 / ||f*||^2 of ridge regression on M-head features, per training size."""

    degree: int
    mean_scale: float
    sizes: tuple[int, ...]
    test_errors: tuple[float, ...]


def ridge_learning_curve(degree: int, mean_scale: float, sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024), *,
                         heads: int = 512, dim: int = 4, keys: int = 4, scale: float = 1.0, ridge: float = 1e-3,
                         test_size: int = 1000, seed: int = 0) -> LearningCurve:
    """RF1 learning curve: fit v by ridge regression on phi (features [n, M d]) for f*_degree, W0 = mean_scale I.

    Ridge penalty ``ridge`` times the mean squared feature norm (scale-free). Same W_m, data and test set for
    every size (nested training sets). With n approaching the number of features M d and a small ridge the
    curve need not be monotone (double descent: degree 2 at M = 128 measured 1.38, 1.50, 0.35 at n = 32, 128, 512).
    """
    weights = random_query_key_matrices(heads, dim, scale, mean_scale * np.eye(dim), seed=seed)
    x0, k = sphere_sequences(max(sizes) + test_size, keys, dim, seed + 1)
    target = polynomial_target(x0, k, degree)
    features = rf1_features(x0, k, weights).reshape(x0.shape[0], -1)
    train, test = features[test_size:], features[:test_size]
    y_train, y_test = target[test_size:], target[:test_size]
    errors = []
    for n in sizes:
        a = train[:n]
        gram = a @ a.T
        penalty = ridge * np.trace(gram) / n
        coefficients = a.T @ np.linalg.solve(gram + penalty * np.eye(n), y_train[:n])  # dual form: n <= M d
        errors.append(float(np.mean((test @ coefficients - y_test) ** 2) / np.mean(y_test**2)))
    return LearningCurve(int(degree), float(mean_scale), tuple(int(n) for n in sizes), tuple(errors))


def monte_carlo_kernel_error(heads: tuple[int, ...] = (64, 256, 1024, 4096, 16384), *, budget: int = 2**16,
                             sequences: int = 4, dim: int = 4, keys: int = 4, scale: float = 0.5,
                             mean_scale: float = 0.0, seed: int = 0,
                             kernel: Callable[..., np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """RF1 rate: RMS relative Gram error ||K_M - K||_F / ||K||_F per M, and the fitted slope of log error vs log M.

    Each M gets max(4, budget // M) independent M-head draws (the same total number of heads for every M, so
    every RMS is equally precise). The claim is slope -1/2: E ||K_M - K||_F^2 = (1/M) sum Var(per-head product).
    ``kernel`` (default rf1_kernel) is the closed form the Monte Carlo Gram is compared with.
    """
    x0, k = sphere_sequences(sequences, keys, dim, seed)
    mean = mean_scale * np.eye(dim)
    exact = (rf1_kernel if kernel is None else kernel)(x0, k, x0, k, scale, mean)
    errors = []
    for m in heads:
        repeats = max(4, budget // m)
        phi = rf1_features(x0, k, random_query_key_matrices(m * repeats, dim, scale, mean, seed=seed + m))
        grams = np.einsum("brd,crd->rbc", *(phi.reshape(sequences, repeats, m * dim),) * 2) / m
        trials = np.linalg.norm(grams - exact, axis=(1, 2)) / np.linalg.norm(exact)
        errors.append(math.sqrt(float(np.mean(trials**2))))
    errors_array = np.array(errors)
    slope = float(np.polyfit(np.log(heads), np.log(errors_array), 1)[0])
    return errors_array, slope
