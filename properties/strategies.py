"""Small named strategy pieces that every area composes.

Large arrays are never drawn element by element (Hypothesis would fill most of
them with one repeated value, which makes softmax near-uniform and hides bugs):
Hypothesis draws a seed, a scale and a value family, and NumPy fills the array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "FAMILIES",
    "ArraySpec",
    "seeds",
    "families",
    "scales",
    "array_specs",
    "fill",
    "orthonormal_columns",
    "exact_orthonormal_columns",
    "simplex_weights",
    "spd_matrix",
    "gaussian_mixture_parameters",
]

Family = Literal["normal", "uniform", "heavy_tailed", "sparse", "near_ties", "integers"]
FAMILIES: tuple[Family, ...] = ("normal", "uniform", "heavy_tailed", "sparse", "near_ties", "integers")


def seeds() -> st.SearchStrategy[int]:
    """A NumPy generator seed; the only entropy a large array gets from Hypothesis."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def families() -> st.SearchStrategy[Family]:
    """Value families: Gaussian, uniform, heavy-tailed, mostly-zero, near-ties, small integers."""
    return st.sampled_from(FAMILIES)


def scales(low: float = 1e-3, high: float = 1e2) -> st.SearchStrategy[float]:
    """Magnitudes spread log-uniformly over [low, high] (with the edges drawn often)."""
    return st.one_of(st.sampled_from([low, 1.0, high]),
                     st.floats(np.log(low), np.log(high)).map(lambda e: float(np.exp(e))))


@dataclass(frozen=True)
class ArraySpec:
    """Everything needed to rebuild an array: shape, seed, family and scale (a reproducer)."""

    shape: tuple[int, ...]
    seed: int
    family: Family = "normal"
    scale: float = 1.0

    def build(self) -> np.ndarray:
        return fill(self.shape, self.seed, self.family, self.scale)


def fill(shape: tuple[int, ...], seed: int, family: Family = "normal", scale: float = 1.0) -> np.ndarray:
    """A float64 array of ``shape`` drawn from ``family``, multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    if family == "normal":
        x = rng.standard_normal(shape)
    elif family == "uniform":
        x = rng.uniform(-1.0, 1.0, shape)
    elif family == "heavy_tailed":
        x = rng.standard_t(2.0, shape)
        x /= max(1.0, float(np.max(np.abs(x), initial=1.0)))
    elif family == "sparse":
        x = rng.standard_normal(shape) * (rng.random(shape) < 0.2)
    elif family == "near_ties":
        x = 1.0 + 1e-9 * rng.standard_normal(shape)
    elif family == "integers":
        x = rng.integers(-3, 4, shape).astype(np.float64)
    else:
        raise ValueError(f"argument 'family': expected one of {FAMILIES}; got {family!r}")
    return np.asarray(x * scale, dtype=np.float64)


def array_specs(shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
                family: st.SearchStrategy[Family] | None = None,
                scale: st.SearchStrategy[float] | None = None) -> st.SearchStrategy[ArraySpec]:
    """ArraySpecs with a fixed or drawn shape, a drawn seed, family and scale."""
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    return st.builds(ArraySpec, shapes, seeds(), family if family is not None else families(),
                     scale if scale is not None else scales())


def orthonormal_columns(rows: int, cols: int, seed: int) -> np.ndarray:
    """A [rows, cols] matrix with orthonormal columns (QR of a Gaussian matrix, sign-fixed)."""
    if cols > rows:
        raise ValueError(f"argument 'cols': expected at most rows={rows}; got {cols}")
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


_HADAMARD_4 = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=np.float64) / 2


def exact_orthonormal_columns(rows: int, cols: int, seed: int) -> np.ndarray:
    """[rows, cols] with B^T B = I exactly in binary: signed permutations of Hadamard blocks (entries 0, +-1/2, +-1).

    Float64 QR bases are orthonormal only to rounding; ball-arithmetic checks of LD1/LD2, whose two sides
    differ by terms in B^T B - I, need an exactly orthonormal B.
    """
    if cols > rows:
        raise ValueError(f"argument 'cols': expected at most rows={rows}; got {cols}")
    rng = np.random.default_rng(seed)
    square = np.eye(rows)
    for start in range(0, rows - rows % 4, 4):
        square[start:start + 4, start:start + 4] = _HADAMARD_4
    square = square[rng.permutation(rows)][:, rng.permutation(rows)]
    square *= rng.choice([-1.0, 1.0], size=rows)[:, None]
    return square[:, :cols]


def simplex_weights(count: int, rng: np.random.Generator, floor: float = 0.05) -> np.ndarray:
    """Positive weights summing to 1 (to rounding): Dirichlet(1) mixed with the uniform weights by ``floor``."""
    w = (1 - floor) * rng.dirichlet(np.ones(count)) + floor / count
    return w / w.sum()


def spd_matrix(dim: int, rng: np.random.Generator, condition: float = 10.0, scale: float = 1.0) -> np.ndarray:
    """Exactly symmetric SPD matrix Q diag(l) Q^T with eigenvalues log-uniform in scale * [1, condition]."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    values = scale * np.exp(rng.uniform(0.0, math.log(condition), dim))
    s = (q * values) @ q.T
    return (s + s.T) / 2


def gaussian_mixture_parameters(dim: int, components: int, rng: np.random.Generator, mean_scale: float,
                                condition: float, scale: float, weight_floor: float
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights [K], means [K, dim], covariances [K, dim, dim]) of a random Gaussian mixture, drawn from ``rng`` in
    that order: simplex_weights(weight_floor), mean_scale N(0, I) means, spd_matrix(condition, scale) covariances."""
    weights = simplex_weights(components, rng, weight_floor)
    means = mean_scale * rng.standard_normal((components, dim))
    covariances = np.stack([spd_matrix(dim, rng, condition, scale) for _ in range(components)])
    return weights, means, covariances
