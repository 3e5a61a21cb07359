"""A-priori rounding-error bounds of the DiT layers in any :class:`~ditcheck.reference.formats.Format`.

Part of the reference's rounding analysis (``reference/rounding.py`` holds softmax and attention, in
float64; ``reference/formats.py`` the formats and gamma_n). Each bound here takes the format ``fmt``
the layer computes in and bounds, entrywise, the distance of the computed result from the exact
result of the same inputs: linear (a dot product), LayerNorm (two-pass), RMSNorm, GELU (tanh and erf
forms), SiLU, and the sinusoidal timestep and 2-D position embeddings.

Derivations follow Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., ch. 3:
|fl(a op b) - a op b| <= u |a op b|, gamma_n = n u/(1 - n u), and |fl(x.y) - x.y| <= gamma_n |x|.|y|
in any summation order, FMA included, for round to nearest in ``fmt`` (unit roundoff u) without
underflow or overflow. The inputs are read as exact numbers of ``fmt``: a caller checking a float32
layer rounds its inputs to float32 first (that rounding is the caller's, not the layer's). Where a
bound involves a libm function (exp, log, tanh, erf, sin, cos, pow) it assumes that function is within
LIBM_ULPS ulp of the exact value in ``fmt``; the bound is rigorous under that stated assumption and no
further. Every bound is evaluated in arb ball arithmetic (BOUND_PRECISION) at the exact inputs and
rounded up, so evaluating it adds no error of its own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .formats import FLOAT64, Format, gamma_in
from .layers import GELU_TANH_CUBIC, linear, silu
from .precision import Arb, BallArray

__all__ = [
    "LIBM_ULPS",
    "BOUND_PRECISION",
    "SILU_DOMAIN",
    "silu_domain",
    "upper_bound",
    "dot_product_rounding_bound",
    "linear_rounding_bound",
    "layer_norm_rounding_bound",
    "rms_norm_rounding_bound",
    "gelu_rounding_bound",
    "silu_rounding_bound",
    "timestep_embedding_rounding_bound",
    "pos_embed_rounding_bound",
]

#: Assumed accuracy of libm / SIMD elementary functions, in ulp of the computing format. glibc's table of known
#: maximum errors lists at most 2 ulp for tanh, sin, cos, exp, log, erf and pow on x86-64, SLEEF's u10 kernels
#: (torch on CPU) promise 1 ulp, and the worst measured on this machine over 1e5 arguments each was 1.14 ulp
#: (NumPy's AVX-512 tanh). The bounds below are rigorous under this stated assumption only.
LIBM_ULPS = 4
#: Arb precision (bits) the bounds are evaluated in; 128 bits leave the balls far narrower than any bound.
BOUND_PRECISION = Arb(128)


def silu_domain(fmt: Format = FLOAT64) -> float:
    """The |x| up to which silu_rounding_bound holds in ``fmt``: floor(ln(1/smallest normal)).

    For x in [-D, 0], exp(-x) <= e^D <= 1/smallest_normal stays finite and |x| e^x >= D e^-D >=
    smallest_normal stays normal (D >= 1), so every rounding is relative. For x > 0 an underflowing
    exp(-x) only meets 1 + exp(-x) and changes it by less than u. float64: 708, float32: 87, float16: 9.
    """
    return float(math.floor(-math.log(fmt.smallest_normal)))


#: silu_rounding_bound's domain in float64.
SILU_DOMAIN = silu_domain(FLOAT64)


def upper_bound(balls: Any) -> np.ndarray:
    """Float64 numbers >= every point of each arb ball (its upper endpoint, rounded up)."""
    values, error = BallArray(np.asarray(balls, dtype=object)).to_float64()
    return np.nextafter(values + error, np.inf)


def _libm(xp: Any, u: Any) -> Any:
    """Relative error of one libm call, LIBM_ULPS ulp <= 2 LIBM_ULPS u."""
    return xp.const(2 * LIBM_ULPS) * u


def _constant_error(fmt: Format) -> float:
    """Relative error of a float64 constant such as a norm's eps once stored in ``fmt``: 0 in float64, else u."""
    return 0.0 if fmt.significand_bits >= FLOAT64.significand_bits else fmt.unit_roundoff


def dot_product_rounding_bound(magnitude: BallArray, terms: int, fmt: Format = FLOAT64) -> np.ndarray:
    """gamma_terms * magnitude, rounded up: the error of sums of ``terms`` products whose |x|.|y| is ``magnitude``.

    Higham (3.5): a length-n dot product in any order commits at most n relative roundings per term
    (n - 1 additions, 1 product; an FMA only removes some); an added bias counts as one more term.
    """
    xp = BOUND_PRECISION
    with xp.context():
        return upper_bound(magnitude.balls * gamma_in(xp, terms, fmt))


def linear_rounding_bound(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                          fmt: Format = FLOAT64) -> np.ndarray:
    """|fl(x W^T + b) - (x W^T + b)| <= gamma_{n+1} (|x| |W|^T + |b|) (gamma_n without bias), n = in features."""
    magnitude = linear(np.abs(x), np.abs(weight), None if bias is None else np.abs(bias), precision=BOUND_PRECISION)
    return dot_product_rounding_bound(magnitude, np.shape(weight)[1] + (bias is not None), fmt)


def _normalised_error(xp: Any, centred: Any, centred_error: Any, variance: Any, variance_error: Any, eps: float,
                      weight: np.ndarray | None, bias: np.ndarray | None, fmt: Format) -> np.ndarray:
    """The shared tail of LayerNorm and RMSNorm: z = d / sqrt(r), r = mean d^2 + eps, then * w, + b.

    Given |d^_i - d_i| <= e_i (``centred_error``) and |v^ - v| <= E_v (``variance_error``), with eps
    stored in ``fmt`` with relative error c (0 in float64, u in a narrower format):
      |fl(v^ + eps^) - r| <= E_r = E_v + c eps + u(r + E_v + c eps)
      |s^ - s| <= E_s = E_r/s + u(s + E_r/s)                   (sqrt is 1/(2s)-Lipschitz above 0, <= 1/s)
      |z^_i - z_i| <= [e_i/(s - E_s) + |d_i| E_s/(s(s - E_s))](1 + gamma_2) + gamma_2 |z_i|
    (gamma_2: a division, or a reciprocal then a product, as torch does); then *w: |w|E(1 + u) + u|z w|;
    +b: E(1 + u) + u|z w + b|. Infinite where E_s >= s (the bound says nothing there).
    """
    u = xp.const(fmt.unit_roundoff)
    shifted = variance + xp.const(eps)
    eps_term = xp.const(_constant_error(fmt)) * xp.const(eps)
    shifted_error = variance_error + eps_term + u * (shifted + variance_error + eps_term)
    std = xp.sqrt(shifted)
    std_error = shifted_error / std + u * (std + shifted_error / std)
    slack = std - std_error
    value = centred / std
    gamma2 = gamma_in(xp, 2, fmt)
    error = (centred_error / slack + np.abs(centred) * std_error / (std * slack)) * (1 + gamma2) + gamma2 * np.abs(value)
    if weight is not None:
        w = xp.asarray(weight)
        error = np.abs(w) * error * (1 + u) + u * np.abs(value * w)
        value = value * w
    if bias is not None:
        error = error * (1 + u) + u * np.abs(value + xp.asarray(bias))
    informative = np.broadcast_to(np.frompyfunc(lambda b: bool(b > 0), 1, 1)(slack).astype(bool), np.shape(centred))
    return np.where(informative, upper_bound(error), np.inf)


def layer_norm_rounding_bound(x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                              eps: float = 1e-6, fmt: Format = FLOAT64) -> np.ndarray:
    """Entrywise bound on the error of the two-pass LayerNorm (mean; centre; mean of squares; divide) in ``fmt``.

    Derivation (row of n values, exact mu, d_i = x_i - mu, v = mean d^2, s = sqrt(v + eps), z = d/s):
      |mu^ - mu| <= a = gamma_n mean|x|                      (sum, then divide by n)
      |d^_i - d_i| <= e_i = a(1 + u) + u|d_i|                 (one subtraction)
      |v^ - v| <= E_v = [sum e_i(2|d_i| + e_i) + gamma_{n+1} sum (|d_i| + e_i)^2]/n
    and the normalisation tail of :func:`_normalised_error`. This is a bound for the two-pass algorithm
    only; Welford-style or x*rstd - mean*rstd implementations (torch's CPU kernel) are not covered by it.
    """
    xp, n = BOUND_PRECISION, np.shape(x)[-1]
    with xp.context():
        u = xp.const(fmt.unit_roundoff)
        exact = xp.asarray(x)
        centred = exact - xp.mean(exact, axis=-1, keepdims=True)
        magnitude = np.abs(centred)
        mean_error = gamma_in(xp, n, fmt) * xp.mean(np.abs(exact), axis=-1, keepdims=True)
        centred_error = mean_error * (1 + u) + u * magnitude
        variance_error = (xp.sum(centred_error * (2 * magnitude + centred_error), axis=-1, keepdims=True)
                          + gamma_in(xp, n + 1, fmt) * xp.sum((magnitude + centred_error) ** 2, axis=-1,
                                                              keepdims=True)) / n
        variance = xp.mean(centred * centred, axis=-1, keepdims=True)
        return _normalised_error(xp, centred, centred_error, variance, variance_error, eps, weight, bias, fmt)


def rms_norm_rounding_bound(x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                            eps: float = 1e-6, fmt: Format = FLOAT64) -> np.ndarray:
    """Entrywise bound on the error of RMSNorm x / sqrt(mean(x^2) + eps) * w (+ b) computed in ``fmt``.

    Derivation (row of n values, v = mean x^2): the sum of n squares is a dot product x.x (gamma_n v n),
    the mean divides by n or multiplies by a rounded 1/n (at most two more roundings), so
    |v^ - v| <= E_v = gamma_{n+2} v; x itself is exact (e_i = 0); then the normalisation tail of
    :func:`_normalised_error`, which covers x * rsqrt(v + eps) computed as a reciprocal square root and
    a product (diffusers RMSNorm, torch.nn.functional.rms_norm).
    """
    xp, n = BOUND_PRECISION, np.shape(x)[-1]
    with xp.context():
        exact = xp.asarray(x)
        variance = xp.mean(exact * exact, axis=-1, keepdims=True)
        exact_input = xp.asarray(np.zeros(np.shape(x)))
        return _normalised_error(xp, exact, exact_input, variance, gamma_in(xp, n + 2, fmt) * variance, eps,
                                 weight, bias, fmt)


def gelu_rounding_bound(x: np.ndarray, approximate: str = "tanh", fmt: Format = FLOAT64) -> np.ndarray:
    """Entrywise bound on the error of GELU computed in ``fmt`` as 0.5 x (1 + F(inner)) with F = tanh or erf.

    Derivation (exact inner value w, F Lipschitz on [w - D, w + D] with constant F'(m), m = max(0, |w| - D)):
      tanh form, w = c p, c = sqrt(2/pi), p = x + k x^3: c^ = c(1 + theta_3) (a literal, or 2/pi then sqrt),
        x*x*x, k^ and *k give k x^3 (1 + theta_4); + x: |p^ - p| <= gamma_5 A, A = |x| + k|x|^3;
        times c^: D = c gamma_9 A; F' = sech^2.
      erf form, w = x/sqrt 2: a constant (<= 2 roundings) and a product or quotient: D = gamma_3 |w|;
        F' = (2/sqrt pi) exp(-m^2).
      |F^ - F(w)| <= E_F = D F'(m) + 2 L u (|F(w)| + D F'(m))        (libm within L ulp)
      |fl(1 + F^) - (1 + F)| <= E_1 = E_F + u(|1 + F| + E_F)
      |y^ - y| <= |x|/2 (E_1 (1 + u) + u |1 + F|)                      (0.5 x is exact)
    """
    xp = BOUND_PRECISION
    with xp.context():
        u, exact = xp.const(fmt.unit_roundoff), xp.asarray(x)
        nonnegative = np.frompyfunc(lambda b: b.nonnegative_part(), 1, 1)
        if approximate == "tanh":
            c = xp.sqrt(xp.const(2) / xp.pi())
            k = xp.const(GELU_TANH_CUBIC[0]) / xp.const(GELU_TANH_CUBIC[1])
            inner = c * (exact + k * exact * exact * exact)
            perturbation = c * gamma_in(xp, 9, fmt) * (np.abs(exact) + k * np.abs(exact) ** 3)
            distance = nonnegative(np.abs(inner) - perturbation)
            sech = np.frompyfunc(lambda b: b.sech(), 1, 1)(distance)
            function_error = perturbation * sech * sech
            value = xp.tanh(inner)
        else:
            inner = exact / xp.sqrt(xp.const(2))
            perturbation = gamma_in(xp, 3, fmt) * np.abs(inner)
            distance = nonnegative(np.abs(inner) - perturbation)
            function_error = perturbation * 2 / xp.sqrt(xp.pi()) * xp.exp(-distance * distance)
            value = xp.erf(inner)
        function_error = function_error + _libm(xp, u) * (np.abs(value) + function_error)
        one_plus = np.abs(1 + value)
        sum_error = function_error + u * (one_plus + function_error)
        return upper_bound(np.abs(exact) / 2 * (sum_error * (1 + u) + u * one_plus))


def silu_rounding_bound(x: np.ndarray, fmt: Format = FLOAT64) -> np.ndarray:
    """|fl(x/(1 + exp(-x))) - silu(x)| <= rho |silu(x)|, rho = (1 + u)/((1 - 2Lu)(1 - u)) - 1, for |x| <= silu_domain(fmt).

    Derivation: exp^ = e(1 + d1), |d1| <= 2Lu; 1 + exp^ = (1 + e)(1 + eta)(1 + d2) with
    |eta| = |e d1|/(1 + e) <= 2Lu; the quotient adds (1 + d3). Infinite outside the domain.
    """
    xp = BOUND_PRECISION
    with xp.context():
        u = xp.const(fmt.unit_roundoff)
        rho = (1 + u) / ((1 - _libm(xp, u)) * (1 - u)) - 1
        bound = upper_bound(np.abs(silu(x, precision=xp).balls) * rho)
    return np.where(np.abs(x) <= silu_domain(fmt), bound, np.inf)


def _sinusoid_bound(xp: Any, args: Any, exponent: Any, pow_path: bool, fmt: Format) -> np.ndarray:
    """Bound on |fl(sin or cos)(args^) - (sin or cos)(args)| for args = (scale) t exp(-exponent), exponent >= 0.

    exp path (DiT, diffusers, the reference): exponent^ = ln(P) i / q with ln (L ulp) and two roundings,
    |exponent^ - exponent| <= gamma_{2L+2} |exponent|; frequency relative error
    exp(gamma_{2L+2} |exponent|)(1 + 2Lu) - 1. pow path (MAE: 1/P^(i/q)): the quotient i/q is one
    rounding, pow is L ulp, the reciprocal one more: (1 + u)/(2 - exp(u |exponent|)(1 + 2Lu)) - 1.
    Then at most two products (time_scale, t; or position): args relative error
    (1 + freq)(1 + u)^2 - 1; sin and cos are 1-Lipschitz and L ulp <= 2Lu in [-1, 1].
    """
    u = xp.const(fmt.unit_roundoff)
    libm = _libm(xp, u)
    if pow_path:
        power = xp.exp(u * exponent) * (1 + libm)
        frequency = (1 + u) / (2 - power) - 1
    else:
        frequency = xp.exp(gamma_in(xp, 2 * LIBM_ULPS + 2, fmt) * exponent) * (1 + libm) - 1
    return upper_bound(((1 + frequency) * (1 + u) ** 2 - 1) * np.abs(args) + libm)


def timestep_embedding_rounding_bound(t: np.ndarray, dim: int, max_period: float = 10000,
                                      downscale_freq_shift: float = 0.0, time_scale: float = 1.0,
                                      fmt: Format = FLOAT64, **_: Any) -> np.ndarray:
    """Entrywise error bound of a timestep embedding ([cos | sin] or [sin | cos] | 0) computed in ``fmt``, exp path.

    Other keywords of the embedding (flip_sin_to_cos) only permute columns and are ignored.
    """
    xp, half = BOUND_PRECISION, dim // 2
    with xp.context():
        exponent = (xp.log(xp.const(max_period)) * xp.asarray(np.arange(half, dtype=np.float64))
                    / (xp.const(half) - xp.const(downscale_freq_shift)))
        args = xp.const(time_scale) * xp.asarray(t)[:, None] * xp.exp(-exponent)[None, :]
        bound = _sinusoid_bound(xp, args, np.broadcast_to(exponent, np.shape(args)), False, fmt)
    return np.concatenate([bound, bound, np.zeros((len(t), dim % 2))], axis=-1)


def pos_embed_rounding_bound(embed_dim: int, grid_size: tuple[int, int], pow_path: bool = False,
                             fmt: Format = FLOAT64) -> np.ndarray:
    """Entrywise error bound of the 2-D sin-cos table [sin j w | cos j w | sin i w | cos i w] computed in ``fmt``.

    omega_k = 10000^(-k/(D/4)), k < D/4; every position is at most max(h, w) - 1. ``pow_path``: the
    frequencies as MAE computes them (1/P^(k/q)) instead of exp(-ln(P) k/q).
    """
    xp, quarter = BOUND_PRECISION, embed_dim // 4
    with xp.context():
        exponent = xp.log(xp.const(10000)) * xp.asarray(np.arange(quarter, dtype=np.float64)) / xp.const(quarter)
        frequencies = xp.exp(-exponent)
        largest = xp.const(max(grid_size) - 1)
        bound = _sinusoid_bound(xp, largest * frequencies, exponent, pow_path, fmt)
    per_token = np.concatenate([bound, bound, bound, bound])
    return np.broadcast_to(per_token, (grid_size[0] * grid_size[1], embed_dim))
