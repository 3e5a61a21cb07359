"""Tolerance rules for validating third-party code against the reference (docs/conventions.md#tolerances).

A candidate conforms when its error against the float64/certified reference is at most

    max(c x error of a naive same-dtype implementation, an a-priori rounding bound, a few-ulp floor)

(FlashAttention's rule, with the floor its zero-baseline failure calls for). Every candidate is
kept, with the one that applied, so a report can show how the tolerance was derived.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ditcheck.reference.attention import softmax
from ditcheck.reference.formats import format_named
# the rule's a-priori candidates; their one home is the reference's rounding analysis
from ditcheck.reference.rounding import EXP_ULPS, attention_rounding_bound, attention_vjp_rounding_bound

from .violation import require

__all__ = [
    "FORWARD_FACTOR",
    "GRADIENT_FACTOR",
    "FLOOR_ULPS",
    "EXP_ULPS",
    "Tolerance",
    "unit_roundoff",
    "smallest_subnormal",
    "derive_tolerance",
    "attention_rounding_bound",
    "attention_vjp_rounding_bound",
    "attention_vjp_magnitudes",
    "check_conforms",
]

#: c for outputs and for gradients (FlashAttention's test suite: 2x forward, 3x backward).
FORWARD_FACTOR = 2.0
GRADIENT_FACTOR = 3.0
#: The floor: this many ulps (of the target dtype) of the largest exact entry.
FLOOR_ULPS = 4

def unit_roundoff(dtype: Any) -> float:
    """u = 2^-p of a floating format (torch dtype or its name; ditcheck.reference.formats, Higham Thm 2.2)."""
    return format_named(dtype).unit_roundoff


def smallest_subnormal(dtype: Any) -> float:
    """The smallest positive subnormal of a floating format (torch dtype or its name; ditcheck.reference.formats)."""
    return format_named(dtype).smallest_subnormal


@dataclass(frozen=True)
class Tolerance:
    """The three candidates of the rule (None where one is not available) and the one that applied."""

    naive: float | None
    apriori: float | None
    floor: float
    factor: float
    naive_error: float | None
    #: what the a-priori candidate is: "a-priori" (a rounding bound) or "first-order" (first order in u only)
    apriori_label: str = "a-priori"

    @property
    def value(self) -> float:
        return max(v for v in (self.naive, self.apriori, self.floor) if v is not None)

    def ratio(self, error: float) -> float:
        """error / value: <= 1 conforms (0 for no error, inf for an error against a zero tolerance)."""
        return error / self.value if self.value > 0 else (0.0 if not error else math.inf)

    @property
    def applied(self) -> str:
        """'naive', the a-priori label or 'floor': the largest candidate, i.e. the one that sets the tolerance."""
        candidates = {"naive": self.naive, self.apriori_label: self.apriori, "floor": self.floor}
        return max((v, k) for k, v in candidates.items() if v is not None)[1]

    def describe(self) -> str:
        parts = [f"{self.factor:g} x naive {self.naive_error:.3g} = {self.naive:.3g}" if self.naive is not None
                 else "naive: n/a",
                 f"{self.apriori_label} {self.apriori:.3g}" if self.apriori is not None else
                 f"{self.apriori_label}: n/a",
                 f"floor {self.floor:.3g}"]
        return f"max({', '.join(parts)}) -> {self.applied}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "value": self.value, "applied": self.applied}


def derive_tolerance(naive_error: float | None, apriori: float | None, exact_magnitude: float, dtype: Any,
                     factor: float = FORWARD_FACTOR, floor_ulps: int = FLOOR_ULPS,
                     apriori_label: str = "a-priori") -> Tolerance:
    """The tolerance max(factor x naive_error, apriori, floor_ulps ulps of max |exact|) of the target dtype.

    ``exact_magnitude`` = max |exact| over the compared entries; one ulp of x is at most 2u|x|.
    ``apriori_label`` names the a-priori candidate in reports ("first-order" when it is not rigorous).
    """
    floor = floor_ulps * 2 * unit_roundoff(dtype) * float(exact_magnitude)
    floor = max(floor, floor_ulps * smallest_subnormal(dtype))
    naive = None if naive_error is None else factor * float(naive_error)
    return Tolerance(naive=naive, apriori=None if apriori is None else float(apriori), floor=floor,
                     factor=factor, naive_error=None if naive_error is None else float(naive_error),
                     apriori_label=apriori_label)


def attention_vjp_magnitudes(q: np.ndarray, k: np.ndarray, v: np.ndarray, grad_out: np.ndarray,
                             scale: float | None = None, mask: np.ndarray | None = None) -> tuple[float, float, float]:
    """max of the summand magnitudes behind dQ, dK, dV: the scale their rounding errors are relative to.

    dV = P^T dO sums P|dO|; dS = P (dP - rowsum(P dP)) cancels terms of size P(|dP| + rowsum(P|dP|)),
    dP = dO V^T, and dQ = s dS K, dK = s dS^T Q sum those times |K|, |Q|. A gradient that is exactly
    0 (one key: softmax is constant) still carries rounding errors of this size, so the floor of the
    gradient rule counts ulps of these magnitudes, not of the (possibly zero) exact gradient.
    """
    q, k, v, grad_out = (np.asarray(a, dtype=np.float64) for a in (q, k, v, grad_out))
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    weights = softmax((q @ np.swapaxes(k, -1, -2)) * s, mask=mask, fully_masked="zero")
    dp = np.abs(grad_out @ np.swapaxes(np.abs(v), -1, -2)) + np.abs(grad_out) @ np.swapaxes(np.abs(v), -1, -2)
    ds = weights * (dp + np.sum(weights * dp, axis=-1, keepdims=True))
    dq = abs(s) * ds @ np.abs(k)
    dk = abs(s) * np.swapaxes(ds, -1, -2) @ np.abs(q)
    dv = np.swapaxes(weights, -1, -2) @ np.abs(grad_out)
    return tuple(float(np.max(m, initial=0.0)) for m in (dq, dk, dv))  # type: ignore[return-value]


def check_conforms(observed: float, tolerance: Tolerance, claim: str, message: str, **context: Any) -> None:
    """The property of every validation check: observed error (finite) within the derived tolerance."""
    require(np.isfinite(observed) and observed <= tolerance.value, claim, message, observed=observed,
            tolerance=tolerance.value, derivation=tolerance.describe(), **context)
