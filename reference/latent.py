"""Latent-subspace data x = B h (Hu et al. 2024): the score-network form of claim LD2.

B in R^{D x d0} has orthonormal columns; its check lives here so every user of a
basis (mixtures, score networks, samplers) raises the same error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import NotOrthonormalError, ShapeError
from .precision import Precision, reference_function
from .schedules import Schedule, get_schedule

__all__ = ["check_orthonormal", "ld2_score", "ORTHONORMAL_TOLERANCE"]

ORTHONORMAL_TOLERANCE = 1e-10

LatentFunction = Callable[[Precision, Any, Any], Any]


def check_orthonormal(basis: Any, argument: str = "basis", tolerance: float = ORTHONORMAL_TOLERANCE) -> None:
    """Raise NotOrthonormalError unless basis is [D, d0], d0 <= D, with max |B^T B - I| <= tolerance (float64)."""
    b = np.asarray(basis, dtype=np.float64) if np.asarray(basis).dtype != object else None
    if b is None:
        raise ShapeError(argument, "a float64 matrix", "an object array")
    if b.ndim != 2 or b.shape[1] > b.shape[0]:
        raise ShapeError(argument, "a [D, d0] matrix with d0 <= D", str(b.shape))
    defect = float(np.max(np.abs(b.T @ b - np.eye(b.shape[1])), initial=0.0))
    if not defect <= tolerance:
        raise NotOrthonormalError(argument, f"orthonormal columns (max |B^T B - I| <= {tolerance:g})",
                                  f"max |B^T B - I| = {defect:.3g}")


@reference_function(arrays=("x", "t", "basis"))
def ld2_score(xp: Precision, x: Any, t: Any, basis: Any, f: LatentFunction,
              schedule: str | Schedule = "ou-half") -> Any:
    """LD2 (Hu et al. 2024, eq. 3.2): s(x, t) = B f(B^T x, t)/sigma_t^2 - x/sigma_t^2.

    x: [N, D]; t: [N] or scalar, t > 0; basis: [D, d0] orthonormal; ``f(xp, h, t)`` maps
    latents [N, d0] to [N, d0] in the same precision (any generic reference function).
    """
    check_orthonormal(xp.to_float(basis))
    if np.ndim(x) != 2 or np.shape(x)[1] != np.shape(basis)[0]:
        raise ShapeError("x", f"shape [N, {np.shape(basis)[0]}]", str(np.shape(x)))
    if np.ndim(t) > 1 or (np.ndim(t) == 1 and np.shape(t)[0] != np.shape(x)[0]):
        raise ShapeError("t", f"a scalar or shape [{np.shape(x)[0]}] (one time per point)", str(np.shape(t)))
    sched = get_schedule(schedule)
    sched.check_time(xp.to_float(t), positive=True)
    s2 = sched.sigma2(xp, t)
    if np.ndim(s2) == 1:
        s2 = s2[:, None]
    h = xp.matmul(x, basis)
    fh = f(xp, h, t)
    if np.shape(fh) != np.shape(h):
        raise ShapeError("f", f"a function returning latents of shape {np.shape(h)}", str(np.shape(fh)))
    return (xp.matmul(fh, np.transpose(basis)) - x) / s2
