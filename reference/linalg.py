"""Small dense linear algebra written once for every precision, plus float64 matrix checks.

The generic routines take a Precision ``xp`` and arrays of shape [..., n, n] (any
leading batch axes, broadcast like NumPy). They use only ``xp`` arithmetic, so in
arb every step is a ball operation and a Cholesky factor that exists is a proof
of positive definiteness: a pivot that is not certainly positive raises
NotPositiveDefiniteError instead of silently taking the square root of a ball
that straddles zero. Costs are the textbook ones (Cholesky n^3/6 multiply-adds,
each triangular solve n^2/2 per right-hand side); intended for n up to a few dozen.

The float64 checks (symmetry, semi-definiteness, eigenvalue bounds) validate
inputs before any precision is chosen; they read the float64 numbers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import flint
import mpmath
import numpy as np

from .errors import NotPositiveDefiniteError, ShapeError
from .formats import FLOAT64
from .precision import Arb, Float64, Mp, Precision

__all__ = [
    "cholesky",
    "solve_lower",
    "solve_lower_transposed",
    "cho_solve",
    "cho_solve_matrix",
    "inverse_from_cholesky",
    "log_det_from_cholesky",
    "symmetric_eigenvalues",
    "nonnegative_part",
    "certainly_positive",
    "identity",
    "check_square",
    "check_symmetric",
    "check_positive_semidefinite",
    "eigenvalue_error_bound",
    "PositiveDefiniteReport",
    "positive_definite_report",
    "certify_positive_definite",
]

EPS = FLOAT64.machine_epsilon


def certainly_positive(xp: Precision, x: Any) -> np.ndarray:
    """Entrywise x > 0; for arb balls True only when the whole ball is positive."""
    return np.asarray(np.asarray(x) > 0, dtype=bool)


def identity(xp: Precision, n: int) -> Any:
    return xp.asarray(np.eye(n))


def cholesky(xp: Precision, a: Any, argument: str = "matrix") -> Any:
    """Lower-triangular L with L L^T = a, batched over leading axes (Cholesky-Banachiewicz).

    Raises NotPositiveDefiniteError(argument) when a pivot is not (certainly) positive.
    Only the lower triangle of ``a`` is read.
    """
    a = np.asarray(a)
    n = a.shape[-1]
    batch_shape = a.shape[:-2]
    # one flat batch axis keeps every pivot an array (mpf/arb scalars do not support [..., None])
    flat = a.reshape((-1, n, n))
    lower = xp.zeros(flat.shape)
    for j in range(n):
        row = lower[:, j, :j]
        pivot = flat[:, j, j] - xp.sum(row * row, axis=-1)
        bad = ~certainly_positive(xp, pivot)
        if bad.any():
            where = int(np.argmax(bad))
            raise NotPositiveDefiniteError(
                argument, "a symmetric positive definite matrix",
                f"Cholesky pivot {j} of batch entry {where} is {xp.to_float(pivot)[where]:.3g} (not certainly > 0)")
        diagonal = xp.sqrt(pivot)
        lower[:, j, j] = diagonal
        if j + 1 < n:
            below = flat[:, j + 1:, j] - xp.sum(lower[:, j + 1:, :j] * row[:, None, :], axis=-1)
            lower[:, j + 1:, j] = below / diagonal[:, None]
    return lower.reshape(batch_shape + (n, n))


def _solution_array(xp: Precision, lower: Any, b: Any) -> Any:
    shape = np.broadcast_shapes(np.shape(lower)[:-1], np.shape(b))
    return xp.zeros(shape)


def solve_lower(xp: Precision, lower: Any, b: Any) -> Any:
    """x with L x = b (forward substitution); L [..., n, n] lower triangular, b [..., n], batch axes broadcast."""
    n = np.shape(lower)[-1]
    x = _solution_array(xp, lower, b)
    for i in range(n):
        x[..., i] = (b[..., i] - xp.sum(lower[..., i, :i] * x[..., :i], axis=-1)) / lower[..., i, i]
    return x


def solve_lower_transposed(xp: Precision, lower: Any, b: Any) -> Any:
    """x with L^T x = b (back substitution on the transpose of a lower-triangular L)."""
    n = np.shape(lower)[-1]
    x = _solution_array(xp, lower, b)
    for i in reversed(range(n)):
        x[..., i] = (b[..., i] - xp.sum(lower[..., i + 1:, i] * x[..., i + 1:], axis=-1)) / lower[..., i, i]
    return x


def cho_solve(xp: Precision, lower: Any, b: Any) -> Any:
    """x with (L L^T) x = b for vector right-hand sides b [..., n]."""
    return solve_lower_transposed(xp, lower, solve_lower(xp, lower, b))


def cho_solve_matrix(xp: Precision, lower: Any, rhs: Any) -> Any:
    """X with (L L^T) X = R for matrix right-hand sides R [..., n, m]."""
    columns = np.swapaxes(rhs, -1, -2)  # [..., m, n]: each column becomes a batch entry
    return np.swapaxes(cho_solve(xp, np.asarray(lower)[..., None, :, :], columns), -1, -2)


def inverse_from_cholesky(xp: Precision, lower: Any) -> Any:
    """(L L^T)^-1 from its Cholesky factor."""
    n = np.shape(lower)[-1]
    rhs = np.broadcast_to(identity(xp, n), np.shape(lower))
    return cho_solve_matrix(xp, lower, rhs)


def log_det_from_cholesky(xp: Precision, lower: Any) -> Any:
    """log det(L L^T) = 2 sum_i log L_ii."""
    return 2 * xp.sum(xp.log(np.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)


def symmetric_eigenvalues(xp: Precision, a: Any) -> Any:
    """Eigenvalues (ascending) of one symmetric matrix [n, n] in the precision of ``xp``.

    float64: LAPACK eigvalsh (backward stable, see :func:`eigenvalue_error_bound`).
    mp: mpmath.eigsy (Jacobi; not certified). arb: flint's acb_mat.eig with
    ``multiple=True``, which encloses every eigenvalue even when several coincide;
    the exact eigenvalues are real, so the real part of each enclosure contains one.
    """
    if isinstance(xp, Float64):
        return np.linalg.eigvalsh(np.asarray(a, dtype=np.float64))
    if isinstance(xp, Mp):
        values = mpmath.eigsy(mpmath.matrix(np.asarray(a).tolist()), eigvals_only=True)
        out = np.array([values[i] for i in range(values.rows)], dtype=object)
    elif isinstance(xp, Arb):
        enclosures = flint.arb_mat(np.asarray(a).tolist()).eig(multiple=True)
        out = np.array([value.real for value in enclosures], dtype=object)
    else:
        raise TypeError(f"no eigenvalue routine for precision {xp!r}")
    return out[np.argsort(xp.to_float(out), kind="stable")]


def nonnegative_part(xp: Precision, x: Any) -> Any:
    """max(x, 0) entrywise; for a ball, its intersection with [0, inf).

    Used only on quantities known to be >= 0 in exact arithmetic (squared distances),
    so that rounding or a ball straddling 0 does not produce NaN under a square root.
    """
    if isinstance(xp, Arb):
        return np.frompyfunc(flint.arb.nonnegative_part, 1, 1)(x)
    if isinstance(xp, Mp):
        return np.frompyfunc(lambda v: v if v > 0 else mpmath.mpf(0), 1, 1)(x)
    return np.maximum(x, 0.0)


# ----------------------------------------------------------------------------------------
# float64 validation of matrices


def psd_square_root_factor(matrices: np.ndarray) -> np.ndarray:
    """F with F F^T = S for (a stack of) symmetric PSD S, from eigh with clipped eigenvalues (float64).

    eigh rather than Cholesky because covariances may be singular; for sampling only.
    """
    values, vectors = np.linalg.eigh(matrices)
    return vectors * np.sqrt(np.clip(values, 0.0, None))[..., None, :]


def check_square(matrix: np.ndarray, argument: str) -> None:
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ShapeError(argument, "square matrices [..., n, n]", str(matrix.shape))


def check_symmetric(matrix: np.ndarray, argument: str) -> None:
    """Exact symmetry: the exact real matrix a reference certifies against must be symmetric."""
    check_square(matrix, argument)
    asymmetry = np.abs(matrix - np.swapaxes(matrix, -1, -2))
    if np.any(asymmetry > 0):
        raise NotPositiveDefiniteError(argument, "exactly symmetric matrices (symmetrise with (S + S^T) / 2)",
                                       f"max |S - S^T| = {float(asymmetry.max()):.3g}")


def eigenvalue_error_bound(matrix: np.ndarray) -> np.ndarray:
    """Bound on |eigvalsh(S) - exact eigenvalue| for float64 S [..., n, n]: 8 n eps ||S||_2.

    LAPACK's symmetric eigensolvers are backward stable with backward error a small
    multiple of n eps ||S||_2, and eigenvalues of symmetric matrices move by at most
    the 2-norm of the perturbation (Weyl). ||S||_2 is bounded by the Frobenius norm.
    """
    n = matrix.shape[-1]
    return 8 * n * EPS * np.linalg.norm(matrix, axis=(-2, -1))


def check_positive_semidefinite(matrix: np.ndarray, argument: str, *, definite: bool = False) -> None:
    """Raise NotPositiveDefiniteError unless every matrix is exactly symmetric and PSD (PD if ``definite``).

    PSD: lambda_min >= -bound; PD: lambda_min > bound, bound = :func:`eigenvalue_error_bound`
    (a matrix whose smallest eigenvalue float64 cannot resolve from 0 is accepted as PSD, rejected as PD).
    """
    check_symmetric(matrix, argument)
    if matrix.shape[-1] == 0:
        return
    lowest = np.linalg.eigvalsh(matrix)[..., 0]
    bound = eigenvalue_error_bound(matrix)
    bad = lowest <= bound if definite else lowest < -bound
    if np.any(bad):
        index = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
        kind = "positive definite" if definite else "positive semidefinite"
        raise NotPositiveDefiniteError(argument, f"symmetric {kind} matrices",
                                       f"lambda_min = {float(lowest[index]):.3g} at index {tuple(map(int, index))} "
                                       f"(float64 resolution {float(bound[index]):.2g})")


Status = Literal["positive definite", "indefinite", "undecided"]


@dataclass(frozen=True)
class PositiveDefiniteReport:
    """lambda_min of a symmetric matrix with a bound on its float64 error, and the verdict it supports."""

    lambda_min: float
    error_bound: float
    status: Status

    @property
    def positive_definite(self) -> bool:
        return self.status == "positive definite"


def positive_definite_report(matrix: Any, argument: str = "matrix") -> PositiveDefiniteReport:
    """lambda_min by eigvalsh, its error bound, and 'positive definite' / 'indefinite' / 'undecided'."""
    matrix = np.asarray(matrix, dtype=np.float64)
    check_symmetric(matrix, argument)
    if matrix.ndim != 2:
        raise ShapeError(argument, "one square matrix", str(matrix.shape))
    lowest = float(np.linalg.eigvalsh(matrix)[0])
    bound = float(eigenvalue_error_bound(matrix))
    status: Status = "positive definite" if lowest > bound else "indefinite" if lowest < -bound else "undecided"
    return PositiveDefiniteReport(lowest, bound, status)


def certify_positive_definite(matrix: Any, bits: int = 128) -> bool:
    """True iff an arb Cholesky factorisation of the exact float64 matrix succeeds (a proof of PD).

    False means "not proved" (indefinite, singular, or too close to singular for ``bits``).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    check_symmetric(matrix, "matrix")
    xp = Arb(bits)
    with xp.context():
        try:
            cholesky(xp, xp.asarray(matrix))
        except NotPositiveDefiniteError:
            return False
    return True
