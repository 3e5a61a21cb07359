"""The reference evaluated in a NumPy native format: float32 (the naive same-dtype baseline) and long double.

Two more :class:`~ditcheck.reference.precision.Precision` objects for the component-level validator
(``ditcheck.validate.components``), which needs, for every recorded call of a target in float32 or
float64, the same mathematics evaluated (a) in the target's own format, the *naive same-dtype
implementation* of the tolerance rule (docs/conventions.md#tolerances), and (b) in a format wider than
the target's, a stand-in for the exact value fast enough for whole tensors:

* ``Native("float32")``: every operation rounded to float32 (NumPy's float32 ufuncs and BLAS; erf is
  libm's float64 erf rounded to float32, within one float32 ulp of the exact value).
* ``Native("float64")`` is :data:`~ditcheck.reference.precision.FLOAT64`'s arithmetic under this name.
* ``Native("longdouble")``: x87 80-bit extended (u = 2^-64, 2^11 times finer than float64) where the
  platform has it; erf is the one step still in float64 (libm), so a long-double erf errs by up to one
  float64 ulp. Used as "exact" against float64 targets, whose tolerance floor is 4 float64 ulps.

Neither is certified; arb stays the certified truth (``precision="arb"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import PrecisionError
from .formats import FORMATS
from .precision import NumpyPrecision

__all__ = ["Native", "NATIVE_DTYPES", "SUMMATION_ORDERS", "native_unit_roundoff"]

NATIVE_DTYPES: dict[str, Any] = {"float16": np.float16, "float32": np.float32, "float64": np.float64,
                                 "longdouble": np.longdouble}


def native_unit_roundoff(name: str) -> float:
    """u of a NumPy native format: the Format's, or for 'longdouble' the platform's (2^-64 on x86-64, 2^-53 where
    it is plain double, so it is read from NumPy rather than from reference.formats' fixed table)."""
    if name not in NATIVE_DTYPES:
        raise PrecisionError("name", f"one of {tuple(NATIVE_DTYPES)}", repr(name))
    if name in FORMATS:
        return FORMATS[name].unit_roundoff
    return float(np.finfo(NATIVE_DTYPES[name]).eps) / 2


#: summation orders of matrix products: NumPy's (BLAS, blocked), sequential left to right, sequential right to left
SUMMATION_ORDERS = ("blas", "sequential", "reversed")


class Native(NumpyPrecision):
    """Vectorised NumPy arithmetic in one native format (every operation rounded to it; not certified).

    ``order`` picks the summation order of matrix products (SUMMATION_ORDERS): rounding errors of a
    same-dtype implementation depend on it, and a target's order is unknown, so the validator measures the
    naive baseline in each order and keeps the worst.
    """

    def __init__(self, name: str = "float32", order: str = "blas"):
        if name not in NATIVE_DTYPES:
            raise PrecisionError("name", f"one of {tuple(NATIVE_DTYPES)}", repr(name))
        if order not in SUMMATION_ORDERS:
            raise PrecisionError("order", f"one of {SUMMATION_ORDERS}", repr(order))
        self.dtype = NATIVE_DTYPES[name]
        self.order = order
        self.name = f"native:{name}" + ("" if order == "blas" else f":{order}")

    def matmul(self, a: Any, b: Any) -> Any:
        if self.order == "blas":
            return np.matmul(a, b)
        a, b = np.asarray(a), np.asarray(b)
        if self.order == "reversed":
            a, b = a[..., ::-1], (b[::-1] if b.ndim == 1 else b[..., ::-1, :])
        # einsum without optimisation sums the contracted index in a plain loop, in index order
        if b.ndim == 1:
            return np.einsum("...j,j->...", a, b, optimize=False)
        if a.ndim == 1:
            return np.einsum("j,...jk->...k", a, b, optimize=False)
        return np.einsum("...ij,...jk->...ik", a, b, optimize=False)

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=self.dtype)

    def const(self, value: float | int) -> Any:
        if isinstance(value, (int, np.integer)) and self.dtype == np.longdouble:
            return np.longdouble(int(value))  # exact for |value| < 2^64
        return self.dtype(value)

    def pi(self) -> Any:
        if self.dtype == np.longdouble:
            # pi to 21 digits, rounded once to long double
            return np.longdouble("3.14159265358979323846")
        return self.dtype(np.pi)

    def erf(self, x: Any) -> Any:
        # NumPy has no erf; libm's float64 erf (about 1 ulp), rounded to this format
        return np.asarray(np.frompyfunc(lambda v: math.erf(float(v)), 1, 1)(x), dtype=self.dtype)

    def shift(self, x: Any, axis: int) -> np.ndarray:
        """The maximum along ``axis`` in this format (a float64 shift would promote the arithmetic to float64)."""
        return np.max(np.asarray(x, dtype=self.dtype), axis=axis, keepdims=True)

    def to_float(self, x: Any) -> np.ndarray:
        """The entries in this format (used for shifts: they must not promote the arithmetic)."""
        return np.asarray(x, dtype=self.dtype)

    def zeros(self, shape: Any) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype)
