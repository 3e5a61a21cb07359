"""The floating-point formats a target may compute in, and Higham's gamma_n: the one home of both.

Every tolerance in ditcheck that rests on a rounding analysis reads the unit roundoff, the
smallest normal and subnormal and the largest finite number from here (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., section 2.1 and table 2.1), and every count of
roundings is turned into a relative error by :func:`gamma` (Higham eq. 3.8). The a-priori bounds
built on them, each parameterised by a unit roundoff ``u`` taken from a :class:`Format`, are:

* dot products, sums, linear layers: ``gamma(n, fmt)`` times the sum of absolute products
  (Higham Lemma 3.1, eq. 3.5 / Thm 3.5 eq. 3.13);
* softmax and attention, on the float64 reference path and in a target format with or without
  wider accumulation: ``ditcheck.reference.rounding``, built on :func:`softmax_relative_error` below;
* linear, LayerNorm, RMSNorm, GELU, SiLU, sinusoidal embeddings (arb-evaluated, in any format):
  ``ditcheck.reference.layer_rounding`` through :func:`gamma_in`;
* claim bounds (AS1, AS2 rounding, GP2 floor): ``ditcheck.bounds`` through :func:`gamma_or_inf`.

The reference imports no torch: a format names its torch dtype as a string (``"torch.float16"``),
and :func:`format_named` accepts both ``"float16"`` and ``str(torch.float16)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = [
    "Format",
    "FLOAT16",
    "BFLOAT16",
    "FLOAT32",
    "FLOAT64",
    "FORMATS",
    "format_named",
    "unit_roundoff_of",
    "gamma",
    "gamma_or_inf",
    "gamma_in",
    "softmax_relative_error",
]


@dataclass(frozen=True)
class Format:
    """One IEEE-style binary floating-point format (Higham section 2.1, table 2.1)."""

    #: the dtype's name, as NumPy and torch spell it without the module ("float16", "bfloat16", ...)
    name: str
    #: p, the significand precision in bits including the implicit leading one
    significand_bits: int
    #: the largest finite number, (2 - 2^(1-p)) 2^e_max
    max_finite: float
    #: 2^e_min, the smallest positive normal number
    smallest_normal: float
    #: 2^(e_min + 1 - p), the smallest positive subnormal number
    smallest_subnormal: float
    #: the torch dtype's ``str()`` ("torch.float16"); the reference imports no torch
    torch_dtype: str
    #: the reference precision to compare a result in this format against (a ``resolve_precision`` string)
    reference: str

    @property
    def unit_roundoff(self) -> float:
        """u = 2^-p: round to nearest errs by at most u relative in the normal range (Higham Thm 2.2)."""
        return 2.0 ** -self.significand_bits

    @property
    def machine_epsilon(self) -> float:
        """eps = 2^(1-p) = 2u, the gap from 1 to the next number, the unit of ``finfo(...).eps``."""
        return 2.0 ** (1 - self.significand_bits)


FLOAT16 = Format("float16", 11, 65504.0, 2.0**-14, 2.0**-24, "torch.float16", "float64")
BFLOAT16 = Format("bfloat16", 8, (2 - 2.0**-7) * 2.0**127, 2.0**-126, 2.0**-133, "torch.bfloat16", "float64")
FLOAT32 = Format("float32", 24, (2 - 2.0**-23) * 2.0**127, 2.0**-126, 2.0**-149, "torch.float32", "float64")
FLOAT64 = Format("float64", 53, float(np.finfo(np.float64).max), 2.0**-1022, 2.0**-1074, "torch.float64", "arb")

#: every format by name, narrowest first
FORMATS: dict[str, Format] = {f.name: f for f in (FLOAT16, BFLOAT16, FLOAT32, FLOAT64)}


def format_named(name: Any, argument: str = "dtype") -> Format:
    """The :class:`Format` called ``name`` ("float16", or a torch dtype / its str, "torch.float16").

    Raises InvalidArgumentError naming ``argument`` for any other value.
    """
    if isinstance(name, Format):
        return name
    key = str(name).removeprefix("torch.")
    if key not in FORMATS:
        raise InvalidArgumentError(argument, f"one of {tuple(FORMATS)}", repr(name))
    return FORMATS[key]


def unit_roundoff_of(fmt: Format | float) -> float:
    """u of a Format, or ``fmt`` itself when it is already a unit roundoff (a float in (0, 1/2])."""
    if isinstance(fmt, Format):
        return fmt.unit_roundoff
    u = float(fmt)
    if not 0 < u <= 0.5:
        raise InvalidArgumentError("unit_roundoff", "a Format or a unit roundoff in (0, 1/2]", repr(fmt))
    return u


def gamma(n: int | np.ndarray, fmt: Format | float, limit: float = 1.0) -> np.ndarray:
    """gamma_n = n u / (1 - n u), the relative error of n roundings (Higham Lemma 3.1, eq. 3.8).

    Vectorised over ``n``. Raises InvalidArgumentError naming ``n`` unless n u < ``limit`` (<= 1):
    the float64 reference uses limit = 1e-7 so that the bound's own float64 evaluation is
    dominated by a 1 + 1e-6 inflation.
    """
    if not 0 < limit <= 1:
        raise InvalidArgumentError("limit", "a number in (0, 1]", repr(limit))
    nu = np.asarray(n, dtype=np.float64) * unit_roundoff_of(fmt)
    if np.any(nu >= limit) or np.any(nu < 0):
        raise InvalidArgumentError("n", f"0 <= n with n u < {limit:g} for the rounding bound to be meaningful",
                                   str(n))
    return nu / (1 - nu)


def gamma_or_inf(n: int, fmt: Format | float, limit: float = 1.0) -> float:
    """gamma_n (Higham eq. 3.8) as a float, inf from n u >= ``limit`` on (no bound: a vacuous tolerance).

    limit 1/2 is where gamma_n reaches 1, for callers that divide by 1 - gamma_n.
    """
    nu = n * unit_roundoff_of(fmt)
    return nu / (1 - nu) if nu < limit else math.inf


def gamma_in(xp: Any, n: int, fmt: Format | float = FLOAT64) -> Any:
    """gamma_n (Higham eq. 3.8) evaluated in the precision ``xp`` (e.g. arb balls: an enclosure of the exact value)."""
    nu = xp.const(n) * xp.const(unit_roundoff_of(fmt))
    return nu / (1 - nu)


def softmax_relative_error(logits: np.ndarray, keep: np.ndarray | None, fmt: Format | float, exp_ulps: int,
                           gamma_n: Any = None, store: float = 0.0) -> np.ndarray:
    """Entrywise relative error bound r of softmax(logits) computed with max-subtraction in roundoff u (Higham ch. 3).

    The path is y = fl(x - m), e = fl(exp(y)), s = fl(sum e), p = fl(e / s). e_j / exp(x_j - m)
    lies in [exp(-u|y_j|)(1 - c), exp(u|y_j|)(1 + c)], c = 2 ``exp_ulps`` u (one ulp is at most
    2u relative), so its relative error is at most eta_j = exp(u|y_j|)(1 + c) - 1; the sum adds
    gamma_{n-1} (eq. 3.8) and the division u; hence p~_j / p_j lies in
    [(1 - eta_j)(1 - u) / ((1 + eta_max)(1 + g)), (1 + eta_j)(1 + u) / ((1 - eta_max)(1 - g))].
    ``gamma_n`` (default :func:`gamma`) maps (n, u) to gamma_n, so a caller chooses how n u near 1
    is handled. ``store``: the roundoff of one more rounding of each weight (mixed precision: the
    weight computed in roundoff u and stored in a narrower format), 0 for none. ``keep`` (boolean, broadcastable) excludes masked positions; an all-masked row
    uses shift 0. Returns max(upper, lower) uninflated; overflow gives inf, never an exception.
    """
    u = unit_roundoff_of(fmt)
    gamma_n = (lambda n, u_: float(gamma(n, u_))) if gamma_n is None else gamma_n
    x = np.asarray(logits, dtype=np.float64)
    kept = np.ones(x.shape, dtype=bool) if keep is None else np.broadcast_to(keep, x.shape)
    shift = np.max(np.where(kept, x, -np.inf), axis=-1, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    y = np.abs(np.where(kept, x - shift, 0.0))
    g = gamma_n(max(x.shape[-1] - 1, 1), u)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        eta = np.exp(u * y) * (1 + 2 * exp_ulps * u) - 1
        eta_max = np.max(eta, axis=-1, keepdims=True)
        upper = (1 + eta) * (1 + u) * (1 + store) / ((1 - eta_max) * (1 - g)) - 1
        lower = 1 - (1 - eta) * (1 - u) * (1 - store) / ((1 + eta_max) * (1 + g))
    return np.maximum(upper, lower)
