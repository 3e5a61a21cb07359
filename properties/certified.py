"""Comparisons against certified balls, shared by every area's properties."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ditcheck.reference import formats
from ditcheck.reference.precision import Arb, BallArray, resolve_precision

from .violation import require

__all__ = ["NARROW", "second_opinion_digits", "precision_bits", "require_narrow", "require_contains", "require_within"]

# Relative radius below which a containment or overlap test is informative: narrower than
# float64 resolution, so the ball can judge any float64 result.
NARROW = formats.FLOAT64.unit_roundoff


def second_opinion_digits(bits: int) -> int:
    """mpmath digits carrying about twice the bits of an arb computation (plus a margin)."""
    return math.ceil(2 * bits * math.log10(2)) + 5


def precision_bits(precision: str) -> int:
    """Working bits of a precision name: an arb:bits precision's bits, 53 for float64 and mp."""
    resolved = resolve_precision(precision)
    return resolved.bits if isinstance(resolved, Arb) else 53


def require_narrow(balls: BallArray, claim: str, limit: float = NARROW, **context: Any) -> None:
    """The balls are narrow enough (rad <= limit (1 + |mid|)) for containment to say something."""
    require(isinstance(balls, BallArray), claim, "expected a BallArray from the certified path",
            got=type(balls).__name__, **context)
    require(np.all(balls.rad <= limit * (1 + np.abs(balls.mid))), claim,
            "certified result too wide to be informative", max_rad=balls.max_rad(), **context)


def require_contains(balls: BallArray, values: Any, claim: str, what: str, **context: Any) -> None:
    """Narrow balls of the right shape contain ``values`` (float64, mpmath objects or balls) exactly."""
    require_narrow(balls, claim, **context)
    require(balls.shape == np.shape(values), claim, f"{what}: shapes differ", balls=balls.shape,
            values=np.shape(values), **context)
    outside = ~balls.contains(values)
    require(not outside.any(), claim, f"{what}: the ball misses the second opinion", outside=int(outside.sum()),
            first_miss=tuple(int(i) for i in np.argwhere(outside)[0]) if outside.any() else None, **context)


def require_within(balls: BallArray, value: np.ndarray, tolerance: np.ndarray, claim: str, what: str,
                   **context: Any) -> None:
    """|value - exact| <= tolerance is possible for every entry (exact comparison against the balls)."""
    require(np.shape(value) == balls.shape, claim, f"{what}: wrong shape", got=np.shape(value), **context)
    # a NaN midpoint makes an arb ball that overlaps everything, so non-finite results are rejected first
    require(np.all(np.isfinite(value)), claim, f"{what}: non-finite float64 result", **context)
    # a NaN tolerance would make every comparison vacuous: it is a defect of the bound function
    require(not np.any(np.isnan(tolerance)), claim, f"{what}: NaN tolerance (the bound is undefined)", **context)
    inside = balls.within(value, tolerance)
    if not inside.all():
        index = tuple(int(i) for i in np.argwhere(~inside)[0])
        ratio = np.abs(np.asarray(value, dtype=np.float64) - balls.mid) / np.maximum(tolerance, formats.FLOAT64.smallest_normal)
        require(False, claim, f"{what}: float64 result outside its tolerance", index=index,
                got=float(np.asarray(value)[index]), exact=float(balls.mid[index]),
                tolerance=float(np.broadcast_to(tolerance, balls.shape)[index]), worst_ratio=float(ratio.max()),
                **context)
