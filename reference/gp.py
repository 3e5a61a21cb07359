"""Gaussian-process sequence data (Fu, Dou, Guo, Wang, Chen, ICLR 2025, arXiv 2407.16134): vec(x) ~ N(0, Gamma (x) Sigma).

Layout: a sequence is x [H, d] with frames as rows; batches are [N, H, d]. vec is the row-major
flatten (index i d + a), so Cov(x_ia, x_jb) = Gamma_ij Sigma_ab = np.kron(Gamma, Sigma)[i d + a, j d + b].
For symmetric Gamma, Sigma: (Gamma (x) Sigma) vec(X) = vec(Gamma X Sigma).

Temporal kernels gamma(i, j) = c_|i-j| (the source formulas were marked "verify"; checked here, docs/claims.md#gaussian-process-data-model):

* exponential c_k = exp(-k / l) = rho^k, rho = e^(-1/l) in (0, 1): the Kac-Murdock-Szego matrix, the
  covariance of a stationary AR(1) process, det = (1 - rho^2)^(H-1) > 0: positive definite for every l > 0.
* squared-exponential c_k = exp(-k^2 / (2 l^2)): the Gaussian function is positive definite on R
  (Bochner: its Fourier transform is a positive Gaussian), so the matrix on distinct integers is PD for
  every l > 0; its smallest eigenvalue decays so fast in l that float64 cannot resolve it from 0 beyond
  l of a few units (such matrices are accepted as PSD).
* polynomial c_k = (1 + k)^(-nu): for nu > 0 the sequence is decreasing, strictly convex and tends to 0,
  so by Polya's criterion for sequences (c_k = sum_{m >= k} (m + 1 - k) Delta^2 c_m, a positive combination
  of triangular sequences max(0, 1 - k/(m+1)) whose Toeplitz matrices are PSD, Fejer kernels) it is PD for
  every nu > 0; nu = 0 is the all-ones matrix (PSD, rank 1); nu < 0 is never PSD for H >= 2
  (c_1 > c_0 makes a 2 x 2 minor negative). So "may fail PSD for small nu" does not happen for nu > 0 in
  exact arithmetic; gamma_matrix still checks every matrix and raises NotPositiveDefiniteError
  (argument 'nu') when nu < 0. Verified numerically by certified (arb) Cholesky in tests/test_gp.py.

Banding (GP3) keeps |i - j| <= w and can destroy positive definiteness (e.g. squared-exponential with
large l): ``banded`` checks and raises, ``banding_report`` reports.

Precisions: gp_score (Kronecker eigendecomposition), condition_number, gradient_descent_step_size, banded,
banding_report and sample_gp are float64 (eigh has no ball version here); gp_score_dense,
gp_covariance_product and gradient_descent (GP2's iteration, for a given float64 step) are generic
(float64, mp, arb: dense Cholesky in the working precision, meant for small H d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from .errors import InvalidArgumentError, NotPositiveDefiniteError, PrecisionError, ShapeError
from .linalg import (Status, psd_square_root_factor, check_positive_semidefinite, check_square, cho_solve, cholesky, identity,
                     positive_definite_report)
from .precision import (FLOAT64, Float64, Precision, as_float64_array, reference_function, require_choice,
                        require_positive_int, require_real, resolve_precision)
from .schedules import Schedule, coefficients

__all__ = [
    "check_kernels",
    "GAMMA_KINDS",
    "gamma_matrix",
    "gp_score",
    "gp_score_dense",
    "gp_covariance_product",
    "condition_number",
    "gradient_descent_step_size",
    "gradient_descent",
    "banded",
    "BandingReport",
    "banding_report",
    "sample_gp",
]

GammaKind = Literal["exponential", "squared-exponential", "polynomial"]
GAMMA_KINDS: tuple[GammaKind, ...] = get_args(GammaKind)


def _lags(size: int) -> np.ndarray:
    """|i - j| for 0 <= i, j < size, as float64."""
    return np.abs(np.subtract.outer(np.arange(size), np.arange(size))).astype(np.float64)


def gamma_matrix(H: int, kind: GammaKind, *, length_scale: float | None = None, nu: float | None = None) -> np.ndarray:
    """Temporal kernel [H, H]: exp(-|i-j|/l), exp(-|i-j|^2/(2 l^2)) or (1+|i-j|)^-nu (Fu et al. 2025, sec. 3; docs/claims.md#gaussian-process-data-model)."""
    H = require_positive_int(H, "H")
    require_choice(kind, GAMMA_KINDS, "kind")
    needed, unused = ("nu", "length_scale") if kind == "polynomial" else ("length_scale", "nu")
    given = {"length_scale": length_scale, "nu": nu}
    if given[unused] is not None:
        raise InvalidArgumentError(unused, f"not given for kind {kind!r} (it takes {needed!r})", repr(given[unused]))
    if given[needed] is None:
        raise InvalidArgumentError(needed, f"a value for kind {kind!r}")
    parameter = require_real(given[needed], needed)
    if needed == "length_scale" and not parameter > 0:
        raise InvalidArgumentError("length_scale", "a positive length scale", repr(parameter))
    lags = _lags(H)
    if kind == "exponential":
        gamma = np.exp(-lags / parameter)
    elif kind == "squared-exponential":
        gamma = np.exp(-lags**2 / (2 * parameter**2))
    else:
        gamma = (1 + lags) ** (-parameter)
    check_positive_semidefinite(gamma, needed)
    return gamma


def check_kernels(gamma: Any, sigma_matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    """(Gamma, Sigma) as float64 arrays after checking they are valid kernel matrices (errors name the argument)."""
    out = []
    for name, value in (("gamma", gamma), ("sigma_matrix", sigma_matrix)):
        matrix = as_float64_array(value, name)
        check_square(matrix, name)
        if matrix.ndim != 2:
            raise ShapeError(name, "one square matrix", str(matrix.shape))
        check_positive_semidefinite(matrix, name)
        out.append(matrix)
    return out[0], out[1]


def _check_sequences(x: Any, H: int, d: int) -> tuple[Any, bool]:
    """[N, H, d] view of x ([H, d] or [N, H, d]) and whether a batch axis was added."""
    shape = np.shape(x)
    if shape[-2:] != (H, d) or len(shape) not in (2, 3):
        raise ShapeError("x", f"shape [H, d] = {(H, d)} or [N, H, d]", str(shape))
    return (x[None], True) if len(shape) == 2 else (x, False)


def _kronecker_score(x: np.ndarray, alpha: np.ndarray, sigma2: np.ndarray, gamma: np.ndarray,
                     sigma_matrix: np.ndarray) -> np.ndarray:
    """-(alpha^2 Gamma (x) Sigma + sigma^2 I)^-1 vec(x) via Gamma = U g U^T, Sigma = V s V^T; x [N, H, d].

    A_t = (U (x) V) diag(alpha^2 g (x) s + sigma^2) (U (x) V)^T and (U (x) V)^T vec(X) = vec(U^T X V).
    Needs A_t positive definite, not Gamma: used on banded (possibly indefinite) kernels too.
    """
    g, u = np.linalg.eigh(gamma)
    s, v = np.linalg.eigh(sigma_matrix)
    spectrum = (alpha**2)[:, None, None] * np.multiply.outer(g, s) + sigma2[:, None, None]
    if not np.all(spectrum > 0):
        raise NotPositiveDefiniteError("gamma", "alpha_t^2 Gamma (x) Sigma + sigma_t^2 I positive definite",
                                       f"smallest eigenvalue {float(spectrum.min()):.3g}")
    rotated = u.T @ x @ v
    return -(u @ (rotated / spectrum) @ v.T)


def gp_score(x: Any, t: Any, gamma: Any, sigma_matrix: Any, schedule: str | Schedule = "ou-half", *,
             precision: str | Precision = "float64") -> np.ndarray:
    """GP1 (Fu et al. 2025; docs/claims.md#gp1): -(alpha_t^2 Gamma (x) Sigma + sigma_t^2 I)^-1 vec(x) by Kronecker eigendecomposition.

    x [H, d] or [N, H, d]; t scalar or [N]. Cost O(H^3 + d^3) for the two eigh plus O(N (H^2 d + H d^2));
    a dense solve would cost O((H d)^3). float64 only (see gp_score_dense for mp and arb).
    """
    if not isinstance(resolve_precision(precision), Float64):
        raise PrecisionError("precision", "'float64' (gp_score_dense computes mp and arb)", repr(precision))
    gamma, sigma_matrix = check_kernels(gamma, sigma_matrix)
    arr = as_float64_array(x, "x")
    batch, added = _check_sequences(arr, gamma.shape[0], sigma_matrix.shape[0])
    _, alpha, sigma2 = coefficients(FLOAT64, t, schedule, batch.shape[0])
    out = _kronecker_score(batch, alpha, sigma2, gamma, sigma_matrix)
    return out[0] if added else out


def _kronecker(xp: Precision, gamma: Any, sigma_matrix: Any) -> Any:
    """Dense Gamma (x) Sigma in xp (np.kron index order)."""
    h, d = np.shape(gamma)[0], np.shape(sigma_matrix)[0]
    return (gamma[:, None, :, None] * sigma_matrix[None, :, None, :]).reshape(h * d, h * d)


@reference_function(arrays=("x", "gamma", "sigma_matrix"))
def gp_score_dense(xp: Precision, x: Any, t: Any, gamma: Any, sigma_matrix: Any,
                   schedule: str | Schedule = "ou-half") -> Any:
    """GP1 by a dense Cholesky solve of (alpha_t^2 Gamma (x) Sigma + sigma_t^2 I) s = -vec(x): the independent check, O((H d)^3)."""
    check_kernels(xp.to_float(gamma), xp.to_float(sigma_matrix))
    h, d = np.shape(gamma)[0], np.shape(sigma_matrix)[0]
    batch, added = _check_sequences(x, h, d)
    count = np.shape(batch)[0]
    _, alpha, sigma2 = coefficients(xp, t, schedule, count)
    a_t = (alpha * alpha)[:, None, None] * _kronecker(xp, gamma, sigma_matrix) \
        + sigma2[:, None, None] * identity(xp, h * d)
    lower = cholesky(xp, a_t, "gamma")
    out = -cho_solve(xp, lower, np.reshape(batch, (count, h * d))).reshape(count, h, d)
    return out[0] if added else out


@reference_function(arrays=("x", "gamma", "sigma_matrix"))
def gp_covariance_product(xp: Precision, x: Any, t: Any, gamma: Any, sigma_matrix: Any,
                          schedule: str | Schedule = "ou-half") -> Any:
    """A_t vec(x) = vec(alpha_t^2 Gamma X Sigma + sigma_t^2 X) for symmetric Gamma, Sigma (GP1/GP2's operator)."""
    check_kernels(xp.to_float(gamma), xp.to_float(sigma_matrix))  # inputs are exact floats: no rounding here
    h, d = np.shape(gamma)[0], np.shape(sigma_matrix)[0]
    batch, added = _check_sequences(x, h, d)
    _, alpha, sigma2 = coefficients(xp, t, schedule, np.shape(batch)[0])
    out = (alpha * alpha)[:, None, None] * xp.matmul(xp.matmul(gamma, batch), sigma_matrix) \
        + sigma2[:, None, None] * batch
    return out[0] if added else out


def condition_number(t: Any, gamma: Any, sigma_matrix: Any, schedule: str | Schedule = "ou-half") -> np.ndarray:
    """GP2's kappa_t = (alpha^2 lmax(Gamma) lmax(Sigma) + sigma^2) / (alpha^2 lmin(Gamma) lmin(Sigma) + sigma^2), float64.

    Exact for PSD Gamma, Sigma: the eigenvalues of Gamma (x) Sigma are the products g_i s_j >= 0.
    Returns one value per time (t scalar or 1-D).
    """
    gamma, sigma_matrix = check_kernels(gamma, sigma_matrix)
    times = as_float64_array(t, "t")
    _, alpha, sigma2 = coefficients(FLOAT64, times, schedule, times.size)
    g = np.linalg.eigvalsh(gamma)
    s = np.linalg.eigvalsh(sigma_matrix)
    kappa = (alpha**2 * g[-1] * s[-1] + sigma2) / (alpha**2 * max(g[0], 0.0) * max(s[0], 0.0) + sigma2)
    return kappa.reshape(times.shape)


def gradient_descent_step_size(t: Any, gamma: Any, sigma_matrix: Any, schedule: str | Schedule = "ou-half") -> np.ndarray:
    """GP2's step h = 1 / lambda_max(A_t) = 1 / (alpha_t^2 lmax(Gamma) lmax(Sigma) + sigma_t^2), float64, one per time."""
    gamma, sigma_matrix = check_kernels(gamma, sigma_matrix)
    times = as_float64_array(t, "t")
    _, alpha, sigma2 = coefficients(FLOAT64, times, schedule, times.size)
    top = np.linalg.eigvalsh(gamma)[-1] * np.linalg.eigvalsh(sigma_matrix)[-1]
    return (1.0 / (alpha**2 * top + sigma2)).reshape(times.shape)


@reference_function(arrays=("x", "gamma", "sigma_matrix", "step_size"))
def gradient_descent(xp: Precision, x: Any, t: Any, gamma: Any, sigma_matrix: Any, steps: int,
                     schedule: str | Schedule = "ou-half", step_size: Any = None) -> Any:
    """GP2 (Fu et al. 2025; docs/claims.md#gp2): s^K of s^{k+1} = s^k - h (A_t s^k + x), s^0 = 0, h = 1/lambda_max(A_t).

    x [H, d] or [N, H, d]; ``step_size`` (scalar or [N]) defaults to gradient_descent_step_size, computed in
    float64 and then read as an exact number in every precision (so arb balls contain the exact iterate for
    that h). ``steps = 0`` returns s^0 = 0. Cost O(K N (H^2 d + H d^2)).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InvalidArgumentError("steps", "a non-negative integer number of steps", repr(steps))
    h_dim, d = np.shape(gamma)[0], np.shape(sigma_matrix)[0]
    batch, added = _check_sequences(x, h_dim, d)
    count = np.shape(batch)[0]
    if step_size is None:
        h = gradient_descent_step_size(t, xp.to_float(gamma), xp.to_float(sigma_matrix), schedule)
        step = xp.asarray(np.reshape(h, (-1,)))
    else:
        step = step_size
    if np.ndim(step) > 1 or (np.ndim(step) == 1 and np.shape(step)[0] not in (1, count)):
        raise ShapeError("step_size", f"a scalar or shape [{count}]", str(np.shape(step)))
    step = np.reshape(step, (-1,))[:, None, None]
    _, alpha, sigma2 = coefficients(xp, t, schedule, count)
    a2 = (alpha * alpha)[:, None, None]
    s2 = sigma2[:, None, None]
    state = batch * 0
    for _ in range(int(steps)):
        product = a2 * xp.matmul(xp.matmul(gamma, state), sigma_matrix) + s2 * state
        state = state - step * (product + batch)
    return state[0] if added else state


def _check_width(width: Any) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise InvalidArgumentError("width", "a non-negative integer band half-width", repr(width))
    return int(width)


def _band(gamma: np.ndarray, width: int) -> np.ndarray:
    return np.where(_lags(gamma.shape[0]) <= width, gamma, 0.0)


def banded(gamma: Any, width: int, *, require_positive_definite: bool = True) -> np.ndarray:
    """GP3 truncation Gamma_ij 1{|i-j| <= width}; raises NotPositiveDefiniteError unless the result is provably PD.

    "Provably" in float64: lambda_min(eigvalsh) exceeds its error bound 8 n eps ||Gamma||_F
    (linalg.positive_definite_report). ``require_positive_definite=False`` skips the check (then see banding_report).
    """
    matrix = as_float64_array(gamma, "gamma")
    check_square(matrix, "gamma")
    if matrix.ndim != 2:
        raise ShapeError("gamma", "one square matrix", str(matrix.shape))
    out = _band(matrix, _check_width(width))
    if require_positive_definite:
        report = positive_definite_report(out, "gamma")
        if not report.positive_definite:
            raise NotPositiveDefiniteError("width", "a band width keeping Gamma positive definite (GP3)",
                                           f"width {width}: lambda_min {report.lambda_min:.3g} ({report.status})")
    return out


@dataclass(frozen=True)
class BandingReport:
    """GP3 for one band width: PD status of the banded kernel and, given Sigma and t (and x), the effect on A_t and the score.

    kernel_relative_error = ||Gamma_w - Gamma||_2 / ||Gamma||_2; a_t_lambda_min = min eigenvalue of
    alpha^2 Gamma_w (x) Sigma + sigma^2 I; score_relative_error = ||s_w - s|| / ||s|| over all of x
    (None when A_t of the banded kernel is not positive definite: the banded "score" does not exist).
    """

    width: int
    lambda_min: float
    lambda_min_error_bound: float
    status: Status
    kernel_relative_error: float
    a_t_lambda_min: float | None = None
    score_relative_error: float | None = None

    @property
    def positive_definite(self) -> bool:
        return self.status == "positive definite"


def banding_report(gamma: Any, width: int, sigma_matrix: Any = None, t: Any = None, x: Any = None,
                   schedule: str | Schedule = "ou-half") -> BandingReport:
    """GP3 report for Gamma banded at ``width`` (docs/claims.md#gp3's worked example: RBF, t = 0.05, band 3 gave lambda_min 0.011, score error 1.39)."""
    matrix = as_float64_array(gamma, "gamma")
    check_positive_semidefinite(matrix, "gamma")
    band = _band(matrix, _check_width(width))
    report = positive_definite_report(band, "gamma")
    kernel_error = float(np.linalg.norm(band - matrix, 2) / np.linalg.norm(matrix, 2))
    a_t_min = score_error = None
    if sigma_matrix is not None and t is not None:
        matrix, sigma_matrix = check_kernels(matrix, sigma_matrix)
        times = as_float64_array(t, "t")
        if times.ndim != 0:
            raise ShapeError("t", "a scalar time", str(times.shape))
        _, alpha, sigma2 = coefficients(FLOAT64, times, schedule, 1)
        products = np.multiply.outer(np.linalg.eigvalsh(band), np.linalg.eigvalsh(sigma_matrix))
        a_t_min = float(alpha[0] ** 2 * products.min() + sigma2[0])
        if x is not None and a_t_min > 0:
            batch, _ = _check_sequences(as_float64_array(x, "x"), matrix.shape[0], sigma_matrix.shape[0])
            exact = _kronecker_score(batch, alpha, sigma2, matrix, sigma_matrix)
            truncated = _kronecker_score(batch, alpha, sigma2, band, sigma_matrix)
            score_error = float(np.linalg.norm(truncated - exact) / np.linalg.norm(exact))
    return BandingReport(int(width), report.lambda_min, report.error_bound, report.status, kernel_error,
                         a_t_min, score_error)


def sample_gp(gamma: Any, sigma_matrix: Any, n: int, seed: int) -> np.ndarray:
    """n float64 sequences [n, H, d] with vec(x) ~ N(0, Gamma (x) Sigma): X = F_Gamma Z F_Sigma^T, F F^T the eigh factors."""
    gamma, sigma_matrix = check_kernels(gamma, sigma_matrix)
    n = require_positive_int(n, "n")
    factors = [psd_square_root_factor(matrix) for matrix in (gamma, sigma_matrix)]
    noise = np.random.default_rng(seed).standard_normal((int(n), gamma.shape[0], sigma_matrix.shape[0]))
    return factors[0] @ noise @ factors[1].T
