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

from ditcheck.reference.attention import softmax, split_mask
from ditcheck.reference.formats import format_named, gamma_or_inf, softmax_relative_error
from ditcheck.reference.precision import FLOAT64
from ditcheck.reference.rounding import EXP_ULPS

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


def _gamma(n: int, u: float) -> float:
    """gamma_n (formats.gamma_or_inf), inf from gamma_n >= 1 (n u >= 1/2) on: the weight bound divides by 1 - gamma."""
    return gamma_or_inf(n, u, limit=0.5)


def _weights_and_error(q: np.ndarray, k: np.ndarray, u: float, tiny: float, scale: float | None,
                       mask: np.ndarray | None = None, u_acc: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(P, E): exact softmax weights and the entrywise bound |P~ - P| <= E of weights computed with roundoff u.

    The softmax part is ditcheck.reference.formats.softmax_relative_error in roundoff u (gamma_n inf from
    n u >= 1/2 on), and rho >= 1 made vacuous instead of negative.
    ``mask`` (SDPA-style, boolean keep or additive with -inf) excludes positions: their weight is exactly 0,
    and a row with nothing to attend to has weights 0 (the reference's fully_masked="zero"). An additive bias
    b costs one more rounding: fl(fl(s q.k) + b) errs by at most gamma_{D+7} (s |q||k| + |b|).
    ``u_acc``: products, sums and the softmax in a wider format of roundoff u_acc, the logits and the weights
    each stored once in the target format (roundoff u): one more u on each (see attention_rounding_bound).
    """
    u_store = 0.0 if u_acc is None else u
    u_acc = u if u_acc is None else u_acc
    head_dim, key_tokens = q.shape[-1], k.shape[-2]
    s = 1 / math.sqrt(head_dim) if scale is None else float(scale)
    raw = (q @ np.swapaxes(k, -1, -2)) * s
    keep, bias = split_mask(FLOAT64, mask, raw.shape)
    keep = np.ones(raw.shape, dtype=bool) if keep is None else keep
    bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), raw.shape)
    logits = raw + bias
    roundings = head_dim + 6 + (mask is not None and np.asarray(mask).dtype != bool)
    logit_error = _gamma(roundings, u_acc) + (_gamma(1, u_store) if u_store else 0.0)
    delta = np.max(np.where(keep, logit_error * (abs(s) * (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2)) +
                                                 np.abs(bias)), 0.0), axis=-1, keepdims=True)
    # the division, then (mixed precision) the weight stored in the target format: store = u_store
    relative = softmax_relative_error(logits, keep, u_acc, EXP_ULPS, _gamma, store=u_store)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rho = np.exp(2 * delta) * (1 + relative) - 1
        weights = softmax(raw, mask=mask, fully_masked="zero")
        allowance = (key_tokens + 2) * 2 * EXP_ULPS * tiny
        error = rho * (weights + allowance) / np.maximum(1 - rho, 0.0) + allowance
        # beyond rho = 1 a computed weight is only known to lie in [0, 1]
        error = np.minimum(np.where(rho < 1, error, 1.0), 1.0)
    return weights, np.where(keep, np.where(np.isnan(error), 1.0, error), 0.0)


def attention_rounding_bound(q: np.ndarray, k: np.ndarray, v: np.ndarray, dtype: Any,
                             scale: float | None = None, mask: np.ndarray | None = None,
                             accumulation: Any = None) -> np.ndarray:
    """Entrywise a-priori bound on |attention computed in ``dtype`` - exact| (Higham ch. 3; reference/rounding.py
    with the unit roundoff u of ``dtype``), inputs (and an additive ``mask``) exactly representable in ``dtype``.

    Assumes the textbook algorithm with every operation rounded to ``dtype`` (any summation order,
    FMA or not; accumulating in a wider type only tightens it): logits fl(q k^T) times a rounded
    scale, or q and k each pre-scaled by a rounded sqrt(scale) (torch's math backend): at most
    gamma_{D+6} s |q||k|^T =: Delta_i per row. Softmax with max-subtraction: e_j within
    exp(+-u|y_j|)(1 +- c) of exp(x_j - m) (c = 2 EXP_ULPS u), the sum within gamma_{L-1}, the
    division u; weights |P~ - P| <= rho P + a with rho = exp(2 Delta)(1 + r) - 1. Output
    fl(P~ V) within gamma_L P~ |V|, plus u |O| for the final rounding to ``dtype``.
    Fused kernels with online rescaling add a few roundings per key block that this does
    not count; the rule's c x naive candidate covers them. The bound assumes no intermediate overflows:
    code that forms q k^T before scaling can overflow where this (scale-first) bound is finite.

    ``accumulation`` (a wider dtype, e.g. float32 for float16 targets): the mixed-precision algorithm of
    SDPA's math backend and of flash kernels: products, sums, softmax in ``accumulation``, the logits and
    the weights each stored once in ``dtype``, the output rounded to ``dtype``. The all-``dtype`` bound
    is vacuous (gamma_n >= 1) once n u >= 1/2 (float16 from ~1000 keys, bfloat16 from ~128); this one
    stays finite there.
    """
    u, tiny = unit_roundoff(dtype), smallest_subnormal(dtype)
    u_acc = None if accumulation is None else unit_roundoff(accumulation)
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    key_tokens = k.shape[-2]
    weights, weight_error = _weights_and_error(q, k, u, tiny, scale, mask, u_acc)
    with np.errstate(over="ignore", invalid="ignore"):
        per_weight = weight_error + _gamma(key_tokens, u if u_acc is None else u_acc) * weights
        bound = per_weight @ np.abs(v) + key_tokens * tiny
        bound = bound + u * (np.abs(weights @ v) + bound)
    return np.where(np.isfinite(bound), bound, np.inf) * (1 + 1e-6)


def attention_vjp_rounding_bound(q: np.ndarray, k: np.ndarray, v: np.ndarray, grad_out: np.ndarray, dtype: Any,
                                 scale: float | None = None, mask: np.ndarray | None = None,
                                 accumulation: Any = None) -> tuple[float, float, float]:
    """max entrywise bound on |dQ|, |dK|, |dV| errors of the textbook attention backward in ``dtype``: FIRST ORDER in u.

    With E the weight error of attention_rounding_bound (P recomputed or stored, either way),
    dP = dO V^T (error gamma_Dv |dO||V|^T), r = rowsum(P dP), dS = P (dP - r), dV = P^T dO,
    dQ = s dS K, dK = s dS^T Q: each error is the propagated input error plus gamma_n times the
    sum of absolute summands, products of two error terms dropped (hence first order, not a
    rigorous bound; reports label this candidate "first-order"). ``accumulation``: as in
    attention_rounding_bound (sums in the wider format, dP and dS stored once in ``dtype``).
    """
    u, tiny = unit_roundoff(dtype), smallest_subnormal(dtype)
    ua = u if accumulation is None else unit_roundoff(accumulation)
    us = 0.0 if accumulation is None else u
    q, k, v, grad_out = (np.asarray(a, dtype=np.float64) for a in (q, k, v, grad_out))
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lq, lk, dv_dim = q.shape[-2], k.shape[-2], v.shape[-1]
    t = lambda a: np.swapaxes(a, -1, -2)  # noqa: E731
    weights, e_p = _weights_and_error(q, k, u, tiny, scale, mask, None if accumulation is None else ua)
    with np.errstate(over="ignore", invalid="ignore"):
        e_dv = t(e_p) @ np.abs(grad_out) + _gamma(lq, ua) * (t(weights) @ np.abs(grad_out))
        dp = grad_out @ t(v)
        abs_dp = np.abs(grad_out) @ t(np.abs(v))
        e_dp = (_gamma(dv_dim, ua) + us) * abs_dp
        r = np.sum(weights * dp, axis=-1, keepdims=True)
        e_r = np.sum(e_p * np.abs(dp) + weights * e_dp, axis=-1, keepdims=True) + \
            _gamma(lk, ua) * np.sum(weights * np.abs(dp), axis=-1, keepdims=True)
        ds = weights * (dp - r)
        e_ds = e_p * np.abs(dp - r) + weights * (e_dp + e_r) + (2 * ua + us) * weights * (np.abs(dp) + np.abs(r))
        e_dq = abs(s) * (e_ds @ np.abs(k) + _gamma(lk + 2, ua) * (np.abs(ds) @ np.abs(k)))
        e_dk = abs(s) * (t(e_ds) @ np.abs(q) + _gamma(lq + 2, ua) * (t(np.abs(ds)) @ np.abs(q)))
        out = []
        for e, g in ((e_dq, abs(s) * ds @ k), (e_dk, abs(s) * t(ds) @ q), (e_dv, t(weights) @ grad_out)):
            e = e + u * (np.abs(g) + e) + max(lq, lk) * tiny
            out.append(float(np.max(np.where(np.isfinite(e), e, np.inf), initial=0.0)) * (1 + 1e-6))
    return tuple(out)  # type: ignore[return-value]


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
