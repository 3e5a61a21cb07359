"""A-priori rounding-error bounds of the float64 reference path (Higham, *Accuracy and Stability*, ch. 3).

Each bound is rigorous for IEEE double arithmetic under two stated assumptions:
a dot product or sum of n terms, in any order and with or without FMA, errs by at
most gamma_n times the sum of absolute products (Higham Thm 3.5 / eq. 3.13); and
NumPy's ``exp`` is within EXP_ULPS ulps (glibc: < 1 ulp; NumPy's SIMD kernels document
up to 4). Bounds are evaluated in float64 and then inflated by BOUND_INFLATION,
which dominates the relative rounding of the bound's own evaluation while n u < 1e-7.
The layers' bounds (linear, norms, activations, embeddings), in any format: ``reference/layer_rounding.py``.
"""

from __future__ import annotations

import numpy as np

from .attention import softmax
from .formats import FLOAT64, softmax_relative_error
from .formats import gamma as formats_gamma

__all__ = ["UNIT_ROUNDOFF", "EXP_ULPS", "gamma", "softmax_error_bound",
           "attention_error_bound"]

UNIT_ROUNDOFF = FLOAT64.unit_roundoff
EXP_ULPS = 4
EXP_RELATIVE_ERROR = 2 * EXP_ULPS * UNIT_ROUNDOFF  # one ulp is at most 2u relative
SMALLEST_SUBNORMAL = FLOAT64.smallest_subnormal
BOUND_INFLATION = 1 + 1e-6


def gamma(n: int | np.ndarray) -> np.ndarray:
    """gamma_n of float64 (Higham eq. 3.8), refused from n u >= 1e-7 on (see BOUND_INFLATION): formats.gamma."""
    return formats_gamma(n, FLOAT64, limit=1e-7)


def _softmax_relative_error(logits: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Entrywise relative error bound r of float64 softmax(logits), inflated (formats.softmax_relative_error).

    Below the normal range (exp(y) < 2^-1022) exp and the division err absolutely, not
    relatively; since the largest term is exp(0) = 1, the sum is >= 1 and these errors add
    at most underflow_allowance(n) to each probability (see softmax_error_bound).
    """
    return softmax_relative_error(logits, keep, FLOAT64, EXP_ULPS, lambda n, u: gamma(n)) * BOUND_INFLATION


def _underflow_allowance(n: int) -> float:
    """Absolute error per probability from subnormal exp results and quotients (n terms, sum >= 1)."""
    return (n + 2) * 2 * EXP_ULPS * SMALLEST_SUBNORMAL


def _absolute_from_relative(r: np.ndarray, computed: np.ndarray, allowance: float) -> np.ndarray:
    """|p~ - p| bound from |p~ - p| <= r p + a: then p <= (p~ + a)/(1 - r), so |p~ - p| <= r (p~ + a)/(1 - r) + a.

    From r >= 1 on (logits so large that exp(2 Delta) overflows the relative argument) only
    0 <= p, p~ <= 1 is known, so the bound is 1: vacuous but true, never NaN.
    """
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        bound = r * (computed + allowance) / (1 - r) + allowance
    return np.where(r < 1, bound, 1.0)


def softmax_error_bound(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Entrywise |float64 softmax(x) - exact softmax(x)| bound along the last axis (boolean mask optional)."""
    probabilities = softmax(x, mask=mask, fully_masked="zero")
    r = _softmax_relative_error(x, mask)
    return _absolute_from_relative(r, probabilities, _underflow_allowance(np.shape(x)[-1])) * BOUND_INFLATION


def attention_error_bound(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None = None,
                          mask: np.ndarray | None = None) -> np.ndarray:
    """Entrywise |float64 attention(q, k, v) - exact| bound, the float64 path being the reference's.

    Logits: S~ = fl(fl(Q K^T) * s~) with s~ = fl(1/fl(sqrt D)) (or the given scale, exact), so
    |S~ - S| <= gamma_{D+3} s |Q| |K|^T =: Delta (3 extra roundings: sqrt, division, product).
    Exact softmax of logits off by at most Delta_i in row i changes each weight by a factor
    within exp(+-2 Delta_i). With the float64 softmax's own relative error r (above), every
    computed weight satisfies |P~ - P| <= rho P + a, rho = exp(2 Delta_i)(1 + r) - 1, with a the
    underflow allowance. The output O~ = fl(P~ V) then satisfies
    |O~ - P V| <= sum_j (E_ij + gamma_Lk P~_ij) |V_jk| + Lk 2^-1074, E the weight error bound
    (the last term covers subnormal products).
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    head_dim = q.shape[-1]
    scale_abs = 1 / np.sqrt(head_dim) * (1 + 4 * UNIT_ROUNDOFF) if scale is None else abs(float(scale))
    logits_bound = gamma(head_dim + 3) * scale_abs * (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2))
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), logits_bound.shape)
    delta = np.max(logits_bound if keep is None else np.where(keep, logits_bound, 0.0), axis=-1, keepdims=True)
    scale_used = 1 / np.sqrt(head_dim) if scale is None else float(scale)
    logits = (q @ np.swapaxes(k, -1, -2)) * scale_used
    weights = softmax(logits, mask=keep, fully_masked="zero")
    r = _softmax_relative_error(logits, keep)
    with np.errstate(over="ignore"):  # exp(2 Delta) = inf gives rho = inf: a vacuous weight bound of 1
        rho = np.exp(2 * delta) * (1 + r) - 1
    key_tokens = k.shape[-2]
    per_weight = _absolute_from_relative(rho, weights, _underflow_allowance(key_tokens)) + gamma(key_tokens) * weights
    return (per_weight @ np.abs(v) + key_tokens * SMALLEST_SUBNORMAL) * BOUND_INFLATION
