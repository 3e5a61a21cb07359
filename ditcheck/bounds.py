"""Bound functions of the claims of docs/claims.md, in one place; properties and backends call these.

Each function names its claim id; the papers are Alman-Song 2023 ("Fast attention requires
bounded entries", arXiv 2302.13214) for AS1-AS4 and Hu et al. 2024 (arXiv 2407.01079) for LD6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ditcheck.fast_attention.polynomial import (MAX_DEGREE, exp_approximation, require_kind, require_radius,
                                               sampled_relative_error)
from ditcheck.reference.gp import check_kernels
from ditcheck.reference.linalg import eigenvalue_error_bound
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.formats import FORMATS, Format, format_named, gamma_or_inf
from ditcheck.reference.precision import FLOAT64, as_float64_array, require_positive_int, require_real
from ditcheck.reference.schedules import coefficients

__all__ = [
    "UnreachableAccuracyError",
    "ld6_threshold",
    "minimal_degree",
    "feature_rank",
    "paper_feature_rank_bound",
    "as2_output_bound",
    "as2_column_bound",
    "as2_paper_bound",
    "gamma",
    "format_of",
    "torch_dtype_of",
    "feature_rounding_bound",
    "poly_attention_rounding_bound",
]


class UnreachableAccuracyError(InvalidArgumentError):
    """The requested eps cannot be certified at a sane degree/rank for this logit radius R and head dim D."""


def require_eps(eps: float) -> float:
    """``eps`` as a float in (0, 1): a relative error below 1 keeps the approximate normaliser positive."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0 < float(eps) < 1:
        raise InvalidArgumentError("eps", "a real number in (0, 1) (eps >= 1 allows a normaliser <= 0)", repr(eps))
    return float(eps)


def _require_norm(value: float, argument: str = "v_inf_norm") -> float:
    return require_real(value, argument, low=0.0)


def ld6_threshold(length: int) -> float:
    """LD6 (Hu et al. 2024, Thm 4.1 / Alman-Song 2023, Thm 1.3): almost-linear attention needs R = o(sqrt(ln L))."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise InvalidArgumentError("length", "an integer >= 2", repr(length))
    return math.sqrt(math.log(length))


def minimal_degree(radius: float, eps: float, *, kind: str = "chebyshev") -> int:
    """AS3 (Alman-Song 2023, Cor. 3.3; Aggarwal-Alman 2022): smallest g with certified sup |P(s)e^-s - 1| <= eps on [-R, R]."""
    radius, eps, kind = require_radius(radius), require_eps(eps), require_kind(kind)
    best, stalled = math.inf, 0
    for degree in range(MAX_DEGREE + 1):
        # a rigorous lower bound above eps rules the degree out without a certificate
        lower = sampled_relative_error(radius, degree, kind)
        if lower > eps:
            # the float64 rounding floor of the coefficients: 4 degrees without halving the error end the search
            stalled = stalled + 1 if lower > best / 2 and degree > 2 * radius else 0
            best = min(best, lower)
            if stalled >= 4:
                break
            continue
        if exp_approximation(radius, degree, kind).eps <= eps:
            return degree
    raise UnreachableAccuracyError(
        "eps", f"a relative error certifiable with float64 {kind} coefficients on [-R, R] with R = {radius:g} "
        f"(the error stops decreasing at about {best:.1e}, degree {degree}; the search stops at degree {MAX_DEGREE})",
        repr(eps))


def feature_rank(dim: int, degree: int) -> int:
    """AS4 (Alman-Song 2023, Lemma 3.5 with symmetric monomials): rank C(d + g, g)."""
    for name, value in (("dim", dim), ("degree", degree)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidArgumentError(name, "an integer >= 0", repr(value))
    return math.comb(int(dim) + int(degree), int(degree))


def paper_feature_rank_bound(dim: int, degree: int) -> int:
    """AS4 (Alman-Song 2023, Lemma 3.5): the paper's upper bound C(2(g + d), 2g) on the rank."""
    feature_rank(dim, degree)
    return math.comb(2 * (int(degree) + int(dim)), 2 * int(degree))


def as2_output_bound(eps: float, v_inf_norm: float) -> float:
    """AS2 (Alman-Song 2023, Lemma 3.4, sharpened): ||D~^-1 A~ V - D^-1 A V||_inf <= eps/(1 - eps) ||V||_inf."""
    eps = require_eps(eps)
    return eps / (1 - eps) * _require_norm(v_inf_norm)


def as2_column_bound(eps: float, v: np.ndarray) -> np.ndarray:
    """AS2 per column (derived: weights change by total variation <= eps/(1-eps), shift V by its mid-range): eps/(1-eps) (max_j V_jk - min_j V_jk)/2.

    ``v`` is [..., L, Dv] (NumPy or torch); returns [..., Dv] as NumPy float64.
    """
    eps = require_eps(eps)
    v = np.asarray(v.detach().cpu().double() if hasattr(v, "detach") else v, dtype=np.float64)
    return eps / (1 - eps) * (v.max(axis=-2) - v.min(axis=-2)) / 2


def as2_paper_bound(eps: float, v_inf_norm: float) -> float:
    """AS2 as stated (Alman-Song 2023, Lemma 3.4): 2 eps ||V||_inf."""
    return 2 * require_eps(eps) * _require_norm(v_inf_norm)


def format_of(dtype: torch.dtype | str, argument: str = "dtype") -> Format:
    """The ditcheck.reference.formats Format of a torch floating dtype or its name ("float16", "torch.float16").

    The one bridge from torch dtypes to formats; InvalidArgumentError naming ``argument`` for anything else.
    """
    if not isinstance(dtype, (torch.dtype, str)):
        raise InvalidArgumentError(argument, f"a torch dtype or one of {tuple(FORMATS)}", repr(dtype))
    return format_named(dtype, argument)


def torch_dtype_of(dtype: torch.dtype | str | Format, argument: str = "dtype") -> torch.dtype:
    """The torch dtype of a Format, of a format's name or of a torch floating dtype ditcheck has a Format for."""
    fmt = dtype if isinstance(dtype, Format) else format_of(dtype, argument)
    return getattr(torch, fmt.name)


def gamma(n: int, unit_roundoff: float | Format) -> float:
    """Higham's gamma_n = n u / (1 - n u) (Accuracy and Stability, eq. 3.8); inf when n u >= 1 (formats.gamma_or_inf)."""
    return gamma_or_inf(n, unit_roundoff)


def feature_rounding_bound(abs_polynomial_value: np.ndarray | float, rank: int, degree: int,
                           unit_roundoff: float) -> np.ndarray:
    """AS1 rounding (derived): |fl(phi_Q . phi_K) - P(s q.k)| <= gamma_{r + 8g + 6} sum_j |c_j| (s sum_d |q_d k_d|)^j.

    Count of roundings (Higham, Lemma 3.1) in one term w_alpha q^alpha k^alpha, |alpha| = j, of
    ``polynomial_features``, per side: each of the j factors x_v sqrt(scale) carries 3 (sqrt,
    cast of the scalar to the dtype, the product), the monomial j - 1 products, and the weight 4
    (c_j * multinomial, its square root, the cast, the product): 4j + 3 per side, 8j + 6 for
    both; then the product of the two sides and the sum of r terms in any order (r - 1 more).
    ``abs_polynomial_value`` is sum_j |c_j| (s sum_d |q_d k_d|)^j (ExpApproximation.abs_polynomial),
    which bounds sum_alpha |term_alpha|.
    """
    return gamma(rank + 8 * degree + 6, unit_roundoff) * np.asarray(abs_polynomial_value, dtype=np.float64)


def poly_attention_rounding_bound(abs_polynomial_at_radius: float, radius: float, eps: float, length: int,
                                  rank: int, degree: int, v_inf_norm: float, unit_roundoff: float) -> float:
    """AS2 rounding (derived): the floating-point part of the poly attention error, <= ((1 + u) X + u) ||V||_inf, X = 2 rho/(1 - rho).

    rho = gamma_n P_abs(R) e^R / (1 - eps) bounds the relative rounding error of the numerator
    and of the denominator of ``ditcheck.fast_attention.attention.poly_attention``: each is a sum over keys and
    features of terms whose absolute sum is <= P_abs(R) sum_j |v_j| (resp. L P_abs(R)), while
    the denominator is >= L (1 - eps) e^-R. Roundings per term of degree j <= g: 4 per factor
    and side in the scaling q sqrt(scale) b, k sqrt(scale)/b (sqrt, the product or quotient
    by b, the cast, the product: 8j for both sides), 2(j - 1) monomial products, 1 for the
    product with V, L - 1 for the sum over keys, 3 for the weight (c_j * multinomial, cast,
    product), 1 + (r - 1) for the contraction with the query features: n = L + r + 10g + 3
    covers every j (j = 0 needs L + r + 3). The ratio then moves by <= X ||V||_inf (the exact
    ratio is a convex combination of V), and the final division adds u (1 + X) ||V||_inf.
    """
    rho = gamma(length + rank + 10 * degree + 3, unit_roundoff) * abs_polynomial_at_radius * math.exp(radius) \
        / (1 - eps)
    if rho >= 1:
        return math.inf
    spread = 2 * rho / (1 - rho)
    return ((1 + unit_roundoff) * spread + unit_roundoff) * float(v_inf_norm)


# --- Gradient bounds (LD8, AS7) ---
# Called by ditcheck/fast_attention/gradient.py and properties/gradient.py.

@dataclass(frozen=True)
class LowRankGradientBound:
    """LD8 error budget of the low-rank gradient chain, each stage an entry-wise (max-norm) bound.

    ``f_relative``: |f~_ij - f_ij| <= f_relative * f_ij;  ``f_max``: f_ij <= f_max;
    ``f_row_l1``: sum_j |f~_ij - f_ij| <= f_row_l1;  ``c_error``: ||c~ - c||max;
    ``q_max``: ||q||max and |r_i|;  ``q_error``: ||q~ - q||max;  ``r_error``: |r~_i - r_i|;
    ``p1_error``: ||f*q - f~*q~||max;  ``p2_error``: ||diag(r) f - diag(r~) f~||max;
    ``gradient_error``: the LD8 entry-wise bound of dL0/dW.
    """

    f_relative: float
    f_max: float
    f_row_l1: float
    c_error: float
    q_max: float
    q_error: float
    r_error: float
    p1_error: float
    p2_error: float
    gradient_error: float


def low_rank_gradient_error(tokens: int, a1_max: float, a2_max: float, p1_error: float, p2_error: float,
                            scale: float = 1.0) -> float:
    """LD8 (Hu et al. 2024, sec. 5 / Alman-Song 2024): |dW~ - dW|max <= |scale| L^2 ||A1||max ||A2||max (||p1 - p1~||max + ||p2 - p2~||max).

    dW - dW~ = scale A1 (p - p~) A2^T with p = p1 - p2, and each entry of A1 E A2^T is a sum
    of L^2 terms A1_mi E_ij A2_nj (the paper's text drops the L^2; docs/claims.md#ld8 keeps it).
    """
    return abs(scale) * tokens ** 2 * a1_max * a2_max * (p1_error + p2_error)


def low_rank_gradient_bound(*, eps: float, radius: float, tokens: int, dim: int, a1_max: float, a2_max: float,
                            h_max: float, y_max: float, scale: float = 1.0) -> LowRankGradientBound:
    """LD8 with computable ||p1 - p1~||max, ||p2 - p2~||max from the certified AS1 eps (Hu et al. 2024, sec. 5).

    Inputs: eps = certified sup |P(s) e^-s - 1| on [-R, R], R >= max |scale A1^T W A2| (logit
    range), L tokens, head size d, and the max-norms of A1, A2, h = A3^T W_OV^T and Y.
    Derivation (delta_ij = A~_ij/A_ij - 1 in [-eps, eps], AS1):

    1. f~_ij/f_ij = (1 + delta_ij)/(1 + dbar_i), dbar_i = sum_j f_ij delta_ij in [-eps, eps], so
       |f~_ij - f_ij| <= f_ij 2 eps/(1 - eps) and f~_ij <= f_ij (1 + eps)/(1 - eps).
    2. f_ij = e^{S_ij} / sum_k e^{S_ik} <= e^R/(L e^-R), so f_max = min(1, e^{2R}/L).
    3. sum_j |f~_ij - f_ij| = sum_j f_ij |delta_ij - dbar_i|/(1 + dbar_i) <= eps/(1 - eps): the
       f-weighted mean absolute deviation of a variable in [-eps, eps] is at most eps (AS2).
    4. c - c~ = (f - f~) h with zero row sums, so |c - c~|_il <= (3) * max_j |h_jl| (AS2 argument);
       |c|max <= ||h||max + ||Y||max since f h is a convex combination of rows of h.
    5. q = c h^T: q_max = d (||h||max + ||Y||max) ||h||max, q_error = d c_error ||h||max;
       |r_i| = |sum_j f_ij q_ij| <= q_max, and
       |r_i - r~_i| <= |sum_j (f - f~)_ij q_ij| + sum_j f~_ij |q - q~|_ij <= (3) q_max + q_error.
    6. |f q - f~ q~| <= |f - f~| |q| + f~ |q - q~| and |r f - r~ f~| <= |r| |f - f~| + |r - r~| f~,
       bounded entry-wise with (1), (2) and (5); then LD8 (low_rank_gradient_error).
    Exact arithmetic is assumed: float64 rounding adds about L u relative, far below eps >= 1e-12.
    """
    if not 0 <= eps < 1:
        raise InvalidArgumentError("eps", "0 <= eps < 1 (a certified relative error of exp)", repr(eps))
    for name, value, low in (("tokens", tokens, 1), ("dim", dim, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidArgumentError(name, f"an integer >= {low}", repr(value))
    if not (math.isfinite(radius) and radius >= 0):
        raise InvalidArgumentError("radius", "a finite real number >= 0", repr(radius))
    f_relative = 2 * eps / (1 - eps)
    f_growth = (1 + eps) / (1 - eps)
    f_max = min(1.0, math.exp(2 * radius) / tokens)
    f_row_l1 = eps / (1 - eps)
    c_error = f_row_l1 * h_max
    q_max = dim * (h_max + y_max) * h_max
    q_error = dim * c_error * h_max
    r_error = f_row_l1 * q_max + q_error
    p1_error = f_relative * f_max * q_max + f_growth * f_max * q_error
    p2_error = q_max * f_relative * f_max + r_error * f_growth * f_max
    return LowRankGradientBound(f_relative, f_max, f_row_l1, c_error, q_max, q_error, r_error, p1_error, p2_error,
                                low_rank_gradient_error(tokens, a1_max, a2_max, p1_error, p2_error, scale))


def softmax_value_derivative_bound(logit_bound: float, tokens: int, dim: int, v_max: float = 1.0) -> float:
    """AS7 (Alman-Song 2024, Lemma E.3): |f'(lambda)| <= 8 B n d v_max^2 for f(lambda) = ||diag(M_lambda 1)^-1 M_lambda V||_F^2.

    M_lambda = exp(lambda S) entry-wise, S in R^{n x n} with |S_ij| <= B, V in R^{n x d},
    lambda in [0, 1] (our reading of the lemma's interpolation; the paper's text was not at
    hand to pin M_lambda, and the bound holds for this definition). The paper states 8 B n with
    entries of V in [-1, 1]; the factor d (one term per column of V) is kept, and
    v_max^2 = ||V||max^2 carries the lemma to any V since f is quadratic in V. Direct argument:
    g = softmax(lambda S) V has |g_il| <= v_max and g'_il = Cov_{f_i}(S_i., V_.l), so
    |g'_il| <= B v_max and |f'| = |2 sum g g'| <= 2 B n d v_max^2 (slack 4 in the lemma).
    """
    return 8 * logit_bound * tokens * dim * v_max ** 2


__all__ += ["LowRankGradientBound", "low_rank_gradient_error", "low_rank_gradient_bound",
            "softmax_value_derivative_bound"]


# --- Gaussian-process bounds (GP2; helper E) ---
# Fu, Dou, Guo, Wang, Chen, ICLR 2025 (arXiv 2407.16134): the unrolled gradient-descent transformer of
# ditcheck.gp.transformer. Imports are local so this section stays independent of the ones above.

__all__ += ["gp2_rate", "gp2_rounding_floor", "gp2_condition_upper"]


def _require_steps(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgumentError("steps", "a non-negative integer", repr(value))
    return int(value)


def gp2_rate(kappa: object, steps: int) -> np.ndarray:
    """GP2 (Fu et al. 2025; docs/claims.md#gp2): ||s^K - s*|| / ||s*|| <= (1 - 1/kappa_t)^K for h = 1/lambda_max, s^0 = 0."""
    return (1.0 - 1.0 / np.asarray(kappa, dtype=np.float64)) ** _require_steps(steps)


def gp2_condition_upper(t: object, gamma_matrix: object, sigma_matrix: object, schedule: object = "ou-half") -> np.ndarray:
    """An upper bound of GP2's kappa_t: the formula with eigvalsh's extremes widened by their error 8 n u ||.||_F."""
    g_matrix, s_matrix = check_kernels(gamma_matrix, sigma_matrix)
    times = as_float64_array(t, "t")
    _, alpha, sigma2 = coefficients(FLOAT64, times, schedule, times.size)
    g, s = np.linalg.eigvalsh(g_matrix), np.linalg.eigvalsh(s_matrix)
    eg, es = float(eigenvalue_error_bound(g_matrix)), float(eigenvalue_error_bound(s_matrix))
    top = alpha**2 * (g[-1] + eg) * (s[-1] + es) + sigma2
    bottom = alpha**2 * max(g[0] - eg, 0.0) * max(s[0] - es, 0.0) + sigma2
    return (top / bottom).reshape(times.shape)


def gp2_rounding_floor(steps: int, kappa: object, frames: int, dim: int, unit_roundoff: float,
                       weight_error: float = 0.0) -> np.ndarray:
    """GP2 rounding floor (derived): ||s~^K - s^K|| / ||s*|| <= min(K, kappa) eta for the computed iterate s~^K.

    A computed step is s~_{k+1} = s~_k - h (A s~_k + x) + delta_k, so e_k = s~_k - s_k obeys
    e_{k+1} = (I - h A) e_k + delta_k with ||I - h A||_2 = 1 - 1/kappa, and
    ||e_K|| <= sum_k (1 - 1/kappa)^(K-1-k) max ||delta|| <= min(K, kappa) max ||delta||.
    One step (V = S Sigma, Y = W V, then s + a Y + b s + c x with gates a, b, c rounded once, inputs rounded
    once) has, with n = H + d + 10 (Higham Thm 3.5; || |A| |B| ||_F <= ||A||_F ||B||_F),
        ||delta|| <= gamma_n (|a| ||Gamma||_F ||Sigma||_F ||S_k|| + (1 + |b|) ||S_k|| + |c| ||x||)
                     + |a| ||W - Gamma||_F ||Sigma||_F ||S_k||.
    From s^0 = 0: ||S_k|| <= (1 + (1 - 1/kappa)^k) ||s*|| <= 2 ||s*||; h ||x|| <= ||s*|| (||A^-1 x|| >= ||x|| / lmax);
    |a| = h alpha^2 <= 1 / (lmax(Gamma) lmax(Sigma)) and |b| <= 1 give |a| ||Gamma||_F ||Sigma||_F <= sqrt(H d), so
        eta = gamma_n (2 sqrt(H d) + 5) + 2 sqrt(d) ||W - Gamma||_F / ||Gamma||_2,
    ``weight_error`` = ||W - Gamma||_F / ||Gamma||_2 of the attention weights actually used.
    """
    steps = _require_steps(steps)
    frames, dim = require_positive_int(frames, "frames"), require_positive_int(dim, "dim")
    eta = gamma(frames + dim + 10, unit_roundoff) * (2 * math.sqrt(frames * dim) + 5) \
        + 2 * math.sqrt(dim) * weight_error
    return np.minimum(steps, np.asarray(kappa, dtype=np.float64)) * eta


# --- Sampler bounds (RT1, LD5) ---

__all__ += ["rt1_coupling", "rt1_segment", "RT1Constants", "rt1_constants", "ld5_orthogonal_variance", "ld5_bound"]


def rt1_coupling(eta: float) -> float:
    """RT1 (Huang et al. 2024, Lemma 3.1; docs/claims.md#rt1): c = 1 / (e^(2 eta) - 1), the curvature of the RTK coupling term."""
    if not (math.isfinite(eta) and eta > 0):
        raise InvalidArgumentError("eta", "a positive segment length", repr(eta))
    return 1.0 / math.expm1(2 * eta)


def rt1_segment(lipschitz: float) -> float:
    """RT1: eta = 1/2 ln(1 + 1/(2L)), the segment length at which c = 2L and g has condition number 3."""
    if not (math.isfinite(lipschitz) and lipschitz > 0):
        raise InvalidArgumentError("lipschitz", "a positive Lipschitz constant of the score", repr(lipschitz))
    return 0.5 * math.log1p(1 / (2 * lipschitz))


class RT1Constants(NamedTuple):
    """RT1: g is ``strong_convexity``-strongly convex and ``smoothness``-smooth; condition = smoothness / strong_convexity."""

    coupling: float
    strong_convexity: float
    smoothness: float
    condition_number: float


def rt1_constants(eta: float, lipschitz: float) -> RT1Constants:
    """RT1 (docs/claims.md#rt1): with the score L-Lipschitz, g is (c - L)-strongly convex and (c + L)-smooth, c = 1/(e^(2 eta) - 1)."""
    if not (math.isfinite(lipschitz) and lipschitz >= 0):
        raise InvalidArgumentError("lipschitz", "a finite Lipschitz constant >= 0", repr(lipschitz))
    c = rt1_coupling(eta)
    mu, smooth = c - lipschitz, c + lipschitz
    return RT1Constants(c, mu, smooth, smooth / mu if mu > 0 else math.inf)


def ld5_orthogonal_variance(T: float, T0: float, mu: float) -> float:  # noqa: N803 (paper's names)
    """LD5 (Hu et al. 2024, Lemma on the orthogonal part; docs/claims.md#ld5): v_{k+1} = v_k (1 + mu (1/2 - 1/sigma_k^2))^2 + mu.

    v_0 = 1, sigma_k^2 = 1 - e^(-(T - k mu)) (OU-half variance), k = 0 .. K-1 with K = (T - T0) / mu an integer
    (to 1e-9): the variance of the Euler-Maruyama sampler's orthogonal component at time T0.
    """
    if not (math.isfinite(T0) and 0 < T0):
        raise InvalidArgumentError("T0", "a positive finite early-stopping time", repr(T0))
    if not (math.isfinite(T) and T0 < T):
        raise InvalidArgumentError("T", f"a finite time > T0 = {T0!r}", repr(T))
    if not (math.isfinite(mu) and mu > 0):
        raise InvalidArgumentError("mu", "a positive step", repr(mu))
    steps = round((T - T0) / mu)
    if abs(steps * mu - (T - T0)) > 1e-9 * max(1.0, T):
        raise InvalidArgumentError("mu", f"a step dividing T - T0 = {T - T0!r}", repr(mu))
    v = 1.0
    for k in range(steps):
        sigma2 = -math.expm1(-(T - k * mu))
        v = v * (1 + mu * (0.5 - 1 / sigma2)) ** 2 + mu
    return v


def ld5_bound(T0: float, mu: float) -> float:  # noqa: N803
    """LD5 (Hu et al. 2024; docs/claims.md#ld5): the final orthogonal variance is <= e (T0 + mu) for T > 1, T0 + mu <= 1."""
    if not (T0 > 0 and mu > 0 and T0 + mu <= 1):
        raise InvalidArgumentError("T0", "T0 > 0, mu > 0, T0 + mu <= 1", f"T0={T0!r}, mu={mu!r}")
    return math.e * (T0 + mu)
