"""A-priori rounding-error bounds of softmax and attention (Higham, *Accuracy and Stability*, ch. 3).

The float64 reference path (softmax_error_bound, attention_error_bound): each bound is rigorous for IEEE double arithmetic under two stated assumptions:
a dot product or sum of n terms, in any order and with or without FMA, errs by at
most gamma_n times the sum of absolute products (Higham Thm 3.5 / eq. 3.13); and
NumPy's ``exp`` is within EXP_ULPS ulps (glibc: < 1 ulp; NumPy's SIMD kernels document
up to 4). Bounds are evaluated in float64 and then inflated by BOUND_INFLATION,
which dominates the relative rounding of the bound's own evaluation while n u < 1e-7.
Attention computed by a target in any format, all in it or accumulating in a wider one
(attention_rounding_bound, attention_vjp_rounding_bound): the a-priori candidate of the validation rule
(``ditcheck.properties.validation``). The layers' bounds (linear, norms, activations, embeddings), in any
format: ``reference/layer_rounding.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import precision
from .attention import softmax, split_mask
from .formats import FLOAT64, format_named, gamma_or_inf, softmax_relative_error
from .formats import gamma as formats_gamma

__all__ = ["UNIT_ROUNDOFF", "EXP_ULPS", "gamma", "softmax_error_bound",
           "attention_error_bound", "attention_rounding_bound", "attention_vjp_rounding_bound"]

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


# ----------------------------------------------------------------------------------------
# Attention computed in a target format (the validation rule's a-priori candidate, properties.validation)


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
    keep, bias = split_mask(precision.FLOAT64, mask, raw.shape)
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
    """Entrywise a-priori bound on |attention computed in ``dtype`` - exact| (Higham ch. 3; attention_error_bound's
    derivation with the unit roundoff u of ``dtype``), inputs (and an additive ``mask``) exactly representable in ``dtype``.

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
    fmt = format_named(dtype)
    u, tiny = fmt.unit_roundoff, fmt.smallest_subnormal
    u_acc = None if accumulation is None else format_named(accumulation, "accumulation").unit_roundoff
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
    fmt = format_named(dtype)
    u, tiny = fmt.unit_roundoff, fmt.smallest_subnormal
    ua = u if accumulation is None else format_named(accumulation, "accumulation").unit_roundoff
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
