"""Certified polynomial fast attention (Alman-Song): strategies and the AS1-AS4 properties.

Every property takes the implementation under check as an argument (ditcheck's by default),
so a test can plant a bug and show that the property catches it. Tolerances are derived:
certified eps for the mathematics, Higham-style gamma_n terms (``ditcheck.bounds``) for the
floating-point part, and the reference's own a-priori bound for the float64 reference.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import mpmath
import numpy as np
import torch
from hypothesis import strategies as st
from torch.utils import flop_counter

from ditcheck import bounds
from ditcheck.fast_attention.attention import AttentionResult, attention, certified_radius
from ditcheck.fast_attention.polynomial import (ExpApproximation, monomial_coefficients, certified_relative_error,
                                 exp_approximation, polynomial_features)
from ditcheck.reference import attention as reference_attention
from ditcheck.reference import formats
from ditcheck.reference.rounding import attention_error_bound

from .measurement import Measurement
from .strategies import seeds
from .violation import require

__all__ = [
    "INDICATIVE_DEGREES",
    "CERTIFIED_RADII",
    "EPS_LEVELS",
    "CertificateCase",
    "certificate_cases",
    "dense_relative_error",
    "check_certificate_bounds_error",
    "FeatureCase",
    "feature_cases",
    "certified_eps",
    "measure_entrywise_relative_error",
    "check_entrywise_relative_error",
    "numerical_rank",
    "MAX_PROBED_RANK",
    "RankCase",
    "rank_cases",
    "measure_feature_rank",
    "check_feature_rank",
    "DegreeCase",
    "degree_cases",
    "check_minimal_degree",
    "check_taylor_not_better",
    "PolyAttentionCase",
    "poly_attention_cases",
    "Tightness",
    "check_poly_attention_output",
    "measure_poly_attention_output",
    "indicative_degree_table",
    "degree_series",
    "counted_flops",
    "fixed_radius_inputs",
    "attention_flops",
    "rademacher_inputs",
    "hardness_table",
]

#: docs/claims.md#as3: indicative minimal Chebyshev-interpolant degrees {R: (g at eps 1e-3, g at eps 1e-6)}.
INDICATIVE_DEGREES: dict[float, tuple[int, int]] = {0.25: (2, 4), 1.0: (5, 7), 4.0: (11, 15), 8.0: (20, 24)}
#: Radii on the certificate grid 2^(k/16) (so certificates are shared between cases and cached).
CERTIFIED_RADII: tuple[float, ...] = (0.0625, 0.25, 0.5, 1.0, 2.0, 4.0)
EPS_LEVELS: tuple[float, ...] = (1e-1, 1e-3, 1e-6)

Kind = Literal["chebyshev", "minimax", "taylor"]


# ----------------------------------------------------------------------------- certificate

@dataclass(frozen=True)
class CertificateCase:
    """A polynomial to certify: the degree-g interpolant (or Taylor) of e^s on [-radius, radius]."""

    radius: float
    degree: int
    kind: Kind = "chebyshev"

    def coefficients(self) -> tuple[float, ...]:
        return monomial_coefficients(self.radius, self.degree, self.kind)


def certificate_cases(max_degree: int = 10) -> st.SearchStrategy[CertificateCase]:
    """Radii from 1e-3 to 8 (log-uniform), degrees 0..max_degree, both kinds."""
    return st.builds(CertificateCase, radius=st.floats(math.log(1e-3), math.log(8.0)).map(math.exp),
                     degree=st.integers(0, max_degree), kind=st.sampled_from(("chebyshev", "taylor")))


def dense_relative_error(coefficients: Sequence[float], radius: float, points: int = 401,
                         digits: int = 40) -> float:
    """max |P(s) e^-s - 1| over ``points`` equispaced s in [-R, R] (endpoints included), in mpmath."""
    with mpmath.workdps(digits):
        cs = [mpmath.mpf(c) for c in coefficients]
        best = mpmath.mpf(0)
        for i in range(points):
            s = mpmath.mpf(radius) * (2 * mpmath.mpf(i) / (points - 1) - 1)
            value = mpmath.mpf(0)
            for c in reversed(cs):
                value = value * s + c
            best = max(best, abs(value * mpmath.exp(-s) - 1))
        return float(best)


def check_certificate_bounds_error(case: CertificateCase,
                                   certify: Callable[[Sequence[float], float], float] = certified_relative_error,
                                   tightness: float = 1.25) -> float:
    """AS1 certificate: dense mpmath sampling never exceeds the certified sup, which is also tight (<= tightness x sampled).

    Returns sampled / certified.
    """
    coefficients = case.coefficients()
    certified = certify(coefficients, case.radius)
    sampled = dense_relative_error(coefficients, case.radius)
    require(sampled <= certified, "AS1", "dense mpmath sampling exceeds the certified sup |P(s)e^-s - 1|",
            sampled=sampled, certified=certified, case=case)
    require(certified <= tightness * sampled + 1e-300, "AS1", "the certificate is loose (or wrong)",
            sampled=sampled, certified=certified, tightness=tightness, case=case)
    return sampled / certified if certified > 0 else 1.0


# ----------------------------------------------------------------------------- features (AS1, AS4)

Family = Literal["normal", "aligned", "sparse", "one_variable"]
FAMILIES: tuple[Family, ...] = ("normal", "aligned", "sparse", "one_variable")


def _logit_inputs(rng: np.random.Generator, shape_q: tuple[int, ...], shape_k: tuple[int, ...], radius: float,
                  scale: float, family: Family) -> tuple[np.ndarray, np.ndarray]:
    """q, k with Cauchy-Schwarz bound scale max||q|| max||k|| = radius (1 - 1e-9); 'aligned' attains it."""
    q = rng.standard_normal(shape_q)
    k = rng.standard_normal(shape_k)
    if family == "aligned":  # some queries parallel or anti-parallel to some keys: logits reach +-R
        n = min(q.shape[-2], k.shape[-2])
        sign = rng.choice([-1.0, 1.0], size=(n, 1))
        q[..., :n, :] = sign * k[..., :n, :] * rng.uniform(0.5, 2.0)
    elif family == "sparse":
        q *= rng.random(q.shape) < 0.3
        k *= rng.random(k.shape) < 0.3
    elif family == "one_variable":
        q[..., 1:] = 0.0
        k[..., 1:] = 0.0
    q_norm = max(float(np.linalg.norm(q, axis=-1).max()), 1e-300)
    k_norm = max(float(np.linalg.norm(k, axis=-1).max()), 1e-300)
    factor = math.sqrt(radius * (1 - 1e-9) / scale)
    return q * (factor / q_norm), k * (factor / k_norm)


@dataclass(frozen=True)
class FeatureCase:
    """Queries and keys (one head) whose logits lie in [-radius, radius], and the target eps."""

    dim: int
    query_tokens: int
    key_tokens: int
    seed: int
    radius: float
    eps: float
    kind: Kind = "chebyshev"
    family: Family = "normal"
    scale: float | None = None

    def logit_scale(self) -> float:
        return 1 / math.sqrt(self.dim) if self.scale is None else self.scale

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return _logit_inputs(rng, (self.query_tokens, self.dim), (self.key_tokens, self.dim), self.radius,
                             self.logit_scale(), self.family)

    def approximation(self) -> ExpApproximation:
        return exp_approximation(self.radius, bounds.minimal_degree(self.radius, self.eps, kind=self.kind), self.kind)


@st.composite
def feature_cases(draw: st.DrawFn, max_dim: int = 6, max_tokens: int = 12) -> FeatureCase:
    """Radii on the certificate grid, eps in {1e-1, 1e-3, 1e-6}; D <= 3 at R = 2, D <= 2 at R = 4 (small ranks)."""
    radius = draw(st.sampled_from(CERTIFIED_RADII))
    dim = draw(st.integers(1, 2 if radius >= 4 else 3 if radius >= 2 else max_dim))
    return FeatureCase(dim=dim, query_tokens=draw(st.integers(1, max_tokens)),
                       key_tokens=draw(st.integers(1, max_tokens)), seed=draw(seeds()), radius=radius,
                       eps=draw(st.sampled_from(EPS_LEVELS)), kind=draw(st.sampled_from(("chebyshev", "taylor"))),
                       family=draw(st.sampled_from(FAMILIES)),
                       scale=draw(st.sampled_from([None, 1.0, 0.25, 4.0])))


FeatureFunction = Callable[..., torch.Tensor]


def certified_eps(approximation: ExpApproximation) -> float:
    """AS1's limit: the certified sup |P(s) e^-s - 1| on [-R, R] (certified_relative_error, cached per (R, g, kind))."""
    return float(approximation.eps)


@functools.lru_cache(maxsize=256)
def _dense_sampled(radius: float, degree: int, kind: Kind) -> float:
    return dense_relative_error(monomial_coefficients(radius, degree, kind), radius)


def measure_entrywise_relative_error(case: FeatureCase, features: FeatureFunction = polynomial_features,
                                     eps_fn: Callable[[ExpApproximation], float] = certified_eps) -> Measurement:
    """AS1 (Alman-Song 2023, Lemma 3.1 / Cor. 3.3): max_ij |phi(q_i).phi(k_j) - e^{s_ij}| / e^{s_ij} <= certified eps.

    Logits are formed in float64: |fl(s q.k) - s q.k| <= Delta = gamma_{D+2} s sum|q_d k_d|, so
    e^{exact} lies within e^{+-Delta} of e^{fl}; np.exp is taken within 2u. The features' own
    rounding is ``bounds.feature_rounding_bound``. observed = max over entries of
    (|error| - rounding)^+ / e^{exact} (upper bound), limit = ``eps_fn(approximation)``.
    ``forms``: dense mpmath sampling of sup |P e^-s - 1| over the certified eps (certificate tightness).
    """
    q, k = case.build()
    scale = case.logit_scale()
    approximation = case.approximation()
    a = features(torch.from_numpy(q), approximation, scale, side="query")
    b = features(torch.from_numpy(k), approximation, scale, side="key")
    approx = (a @ b.mT).numpy()
    u = formats.FLOAT64.unit_roundoff
    abs_logits = scale * (np.abs(q) @ np.abs(k).T)
    delta = bounds.gamma(case.dim + 2, u) * abs_logits
    computed = np.exp(scale * (q @ k.T))
    exact_upper = computed * np.exp(delta) / (1 - 2 * u)
    rounding = (computed * np.expm1(delta) + 2 * u * computed
                + bounds.feature_rounding_bound(approximation.abs_polynomial(abs_logits), a.shape[-1],
                                                approximation.degree, u))
    excess = np.maximum(np.abs(approx - computed) - rounding, 0.0) / exact_upper
    limit = float(eps_fn(approximation))
    sampled = _dense_sampled(approximation.radius, approximation.degree, approximation.kind)
    return Measurement(float(excess.max()), limit, case,
                       forms={"dense sampled sup / certified": sampled / approximation.eps
                              if approximation.eps > 0 else 1.0})


def check_entrywise_relative_error(case: FeatureCase, features: FeatureFunction = polynomial_features) -> float:
    """AS1: |phi_Q(q).phi_K(k) - e^{scale q.k}| <= eps e^{scale q.k} + derived rounding, every entry (float64).

    (measure_entrywise_relative_error.) Returns max relative error beyond rounding / certified eps.
    """
    m = measure_entrywise_relative_error(case, features)
    require(m.ratio <= 1, "AS1", "entry-wise relative error of P(scale q.k) exceeds the certified eps",
            ratio=m.ratio, eps=m.limit, case=case)
    return m.ratio


def numerical_rank(matrix: np.ndarray) -> int:
    """Rank of ``matrix`` after scaling its columns to unit norm (rank-invariant; it removes the spread of
    monomial magnitudes R^(j/2) sqrt|c_j|): singular values above sigma_max max(n, r) 2^-52 (NumPy's rule)."""
    norms = np.linalg.norm(matrix, axis=0)
    scaled = matrix[:, norms > 0] / norms[norms > 0]
    if scaled.size == 0:
        return 0
    singular = np.linalg.svd(scaled, compute_uv=False)
    return int(np.sum(singular > singular[0] * max(scaled.shape) * formats.FLOAT64.machine_epsilon))


#: Largest C(D+g, g) whose numerical rank check_feature_rank measures (an (r + 8) x r SVD); above, columns only.
MAX_PROBED_RANK = 512


@dataclass(frozen=True)
class RankCase:
    """AS4 input: head dim D and degree g of the features of the degree-g approximation of e^s on [-radius, radius]."""

    dim: int
    degree: int
    seed: int
    radius: float = 1.0
    kind: Kind = "chebyshev"
    scale: float = 1.0

    def approximation(self) -> ExpApproximation:
        """The polynomial (coefficients as exp_approximation's; the rank does not need its certificate: eps NaN)."""
        return ExpApproximation(self.radius, self.degree, self.kind,
                                monomial_coefficients(self.radius, self.degree, self.kind), math.nan)


@st.composite
def rank_cases(draw: st.DrawFn, max_dim: int = 8, max_degree: int = 20, max_rank: int = 256) -> RankCase:
    """D in 1..max_dim, g in 0..max_degree with C(D+g, g) <= max_rank (an SVD of (r + 8) x r), certificate-grid radii."""
    dim = draw(st.integers(1, max_dim))
    degree = draw(st.integers(0, max(g for g in range(max_degree + 1) if math.comb(dim + g, g) <= max_rank)))
    return RankCase(dim, degree, draw(seeds()), draw(st.sampled_from(CERTIFIED_RADII)),
                    draw(st.sampled_from(("chebyshev", "taylor"))), draw(st.sampled_from([1.0, 0.25, 4.0])))


def measure_feature_rank(case: RankCase, features: FeatureFunction = polynomial_features,
                         rank_fn: Callable[[int, int], int] = bounds.feature_rank) -> Measurement:
    """AS4 (Alman-Song 2023, Lemma 3.5, symmetric monomials): phi has C(D + g, g) columns and that numerical rank.

    Rank is a property of the feature map, measured on C(D+g, g) + 8 probe points uniform in the
    box [-1, 1]^D (better conditioned for monomials than Gaussian points), scaled to the case's
    radius, on the query and the key side; then rank(phi(Q) phi(K)^T) = C(D+g, g) too (the paper's
    C(2(g+D), 2g) is an upper bound). observed = max |column count or rank - rank_fn(D, g)|, limit 0.
    """
    approximation = case.approximation()
    rng = np.random.default_rng(case.seed)
    points = math.comb(case.dim + case.degree, case.degree) + 8
    root = math.sqrt(case.radius / case.scale) / math.sqrt(case.dim)  # max ||x|| sqrt(scale) <= sqrt(radius)
    q, k = (rng.uniform(-1.0, 1.0, (points, case.dim)) * root for _ in range(2))
    expected = rank_fn(case.dim, case.degree)
    a = features(torch.from_numpy(q), approximation, case.scale, side="query").numpy()
    b = features(torch.from_numpy(k), approximation, case.scale, side="key").numpy()
    observed = max(abs(value - expected) for value in (a.shape[-1], b.shape[-1], numerical_rank(a), numerical_rank(b)))
    return Measurement(float(observed), 0.0, case)


def check_feature_rank(case: FeatureCase, features: FeatureFunction = polynomial_features) -> int:
    """AS4: the features have exactly C(D + g, g) columns, and that numerical rank when C(D+g, g) <= MAX_PROBED_RANK
    (measure_feature_rank), and reproduce P (AS1 to rounding). Returns the rank.
    """
    approximation = case.approximation()
    expected = bounds.feature_rank(case.dim, approximation.degree)
    q, k = case.build()
    scale = case.logit_scale()
    a = features(torch.from_numpy(q), approximation, scale, side="query")
    b = features(torch.from_numpy(k), approximation, scale, side="key")
    require(a.shape[-1] == expected and b.shape[-1] == expected, "AS4", "feature count differs from C(D+g, g)",
            query_rank=a.shape[-1], key_rank=b.shape[-1], expected=expected, case=case)
    if expected <= MAX_PROBED_RANK:
        m = measure_feature_rank(RankCase(case.dim, approximation.degree, case.seed, approximation.radius,
                                          case.kind, scale), features)
        require(m.ratio <= 1, "AS4", "numerical rank of the features differs from C(D+g, g)",
                max_difference=m.observed, expected=expected, case=case)
    require(math.comb(case.dim + approximation.degree, approximation.degree) == expected, "AS4",
            "bounds.feature_rank differs from C(D+g, g)", expected=expected, case=case)
    abs_logits = scale * (np.abs(q) @ np.abs(k).T)
    u = formats.FLOAT64.unit_roundoff
    # P evaluated by Horner in float64 at fl(s q.k): Horner's own error gamma_2g and the logit error through P'
    horner = approximation(scale * (q @ k.T))
    p_abs = approximation.abs_polynomial(abs_logits)
    c_abs = np.abs(np.asarray(approximation.coefficients))
    slope_abs = sum(j * c_abs[j] * abs_logits ** (j - 1) for j in range(1, len(c_abs))) * (1 + 1e-12)
    tolerance = (bounds.feature_rounding_bound(p_abs, expected, approximation.degree, u)
                 + bounds.gamma(2 * approximation.degree + 2, u) * p_abs
                 + bounds.gamma(case.dim + 3, u) * abs_logits * slope_abs)
    error = np.abs((a @ b.mT).numpy() - horner)
    require(np.all(error <= tolerance), "AS4", "feature inner products do not reproduce P(scale q.k)",
            max_error=float(error.max()), tolerance=float(tolerance.max()), case=case)
    return expected


# ----------------------------------------------------------------------------- degree (AS3)

@dataclass(frozen=True)
class DegreeCase:
    radius: float
    eps: float
    kind: Kind = "chebyshev"


def degree_cases(max_radius: float = 4.0) -> st.SearchStrategy[DegreeCase]:
    """Radii log-uniform in [1e-2, max_radius], eps log-uniform in [1e-9, 0.5], both kinds."""
    return st.builds(DegreeCase, radius=st.floats(math.log(1e-2), math.log(max_radius)).map(math.exp),
                     eps=st.floats(math.log(1e-9), math.log(0.5)).map(math.exp),
                     kind=st.sampled_from(("chebyshev", "taylor")))


DegreeFunction = Callable[..., int]


def check_minimal_degree(case: DegreeCase, degree_fn: DegreeFunction = bounds.minimal_degree) -> int:
    """AS3: the chosen degree g passes the certified check (eps_g <= eps) and g - 1 fails it. Returns g."""
    degree = degree_fn(case.radius, case.eps, kind=case.kind)
    certified = exp_approximation(case.radius, degree, case.kind).eps
    require(certified <= case.eps, "AS3", "the chosen degree does not reach eps", degree=degree,
            certified=certified, case=case)
    if degree > 0:
        below = exp_approximation(case.radius, degree - 1, case.kind).eps
        require(below > case.eps, "AS3", "degree g - 1 also reaches eps: g is not minimal", degree=degree,
                certified_below=below, case=case)
    return degree


def check_taylor_not_better(case: DegreeCase, degree_fn: DegreeFunction = bounds.minimal_degree) -> tuple[int, int]:
    """AS3: Taylor needs at least the Chebyshev interpolant's degree. Returns (chebyshev, taylor)."""
    chebyshev = degree_fn(case.radius, case.eps, kind="chebyshev")
    taylor = degree_fn(case.radius, case.eps, kind="taylor")
    require(taylor >= chebyshev, "AS3", "Taylor reaches eps at a lower degree than Chebyshev",
            chebyshev=chebyshev, taylor=taylor, case=case)
    return chebyshev, taylor


def indicative_degree_table(kind: Kind = "chebyshev", max_radius: float = 8.0) -> list[tuple[float, float, int, int]]:
    """(R, eps, ours, the indicative degree) for the AS3 table of docs/claims.md#as3 (rows with R <= max_radius)."""
    rows = []
    for radius, expected in INDICATIVE_DEGREES.items():
        if radius > max_radius:
            continue
        for eps, g in zip((1e-3, 1e-6), expected):
            rows.append((radius, eps, bounds.minimal_degree(radius, eps, kind=kind), g))
    return rows


# ----------------------------------------------------------------------------- output (AS2)

ValueFamily = Literal["normal", "offset", "outlier", "balanced"]


def _balanced_inputs(case: PolyAttentionCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AS2's near-extremal input: the logits sit where the backend's polynomial errs most (+) and least (-),
    the key counts n1, n - 1 - n1 balance the two groups' softmax mass, and V is +1 / -1 on them, so
    D~^-1 A~ V - D^-1 A V ~ (e+ - e-) / 4 * 2 approaches eps ||V||_inf. One more key (value 0; logit 0, or R
    when D = 1) pins the Cauchy-Schwarz radius at R, so the backend picks the polynomial analysed here."""
    scale = case.logit_scale()
    radius = case.radius * (1 - 1e-9)
    grid = certified_radius(radius)
    approximation = exp_approximation(grid, bounds.minimal_degree(grid, case.eps, kind=case.kind), case.kind)
    s = np.linspace(-radius, radius, 4001)
    relative = np.polynomial.polynomial.polyval(s, np.asarray(approximation.coefficients, float)) * np.exp(-s) - 1
    high, low = float(s[relative.argmax()]), float(s[relative.argmin()])
    pin = 0.0 if case.dim > 1 else radius
    groups = max(case.key_tokens - 1, 2)

    def predicted(n1: int) -> float:  # |softmax-weighted mean of v under the perturbed weights - exact|
        w = np.array([n1 * math.exp(high), (groups - n1) * math.exp(low), math.exp(pin)])
        e = np.array([relative.max(), relative.min(), float(np.interp(pin, s, relative))])
        v = np.array([1.0, -1.0, 0.0])
        return abs((w * (1 + e)) @ v / (w * (1 + e)).sum() - w @ v / w.sum())

    n1 = max(range(1, groups), key=predicted)
    u = np.zeros(case.dim)
    u[0] = 1.0
    logits = np.array([high] * n1 + [low] * (groups - n1))
    keys = np.outer(logits, u) / math.sqrt(radius * scale)
    pin_key = np.zeros(case.dim)
    if case.dim > 1:
        pin_key[1] = math.sqrt(radius / scale)
    else:
        pin_key[0] = math.sqrt(radius / scale)
    k = np.vstack([keys, pin_key])
    q = np.tile(u * math.sqrt(radius / scale), (case.query_tokens, 1))
    v = np.concatenate([np.ones(n1), -np.ones(groups - n1), [0.0]])[:, None].repeat(case.value_dim, 1)
    lead = (case.batch, case.heads)
    return (np.broadcast_to(q, lead + q.shape).copy(), np.broadcast_to(k, lead + k.shape).copy(),
            np.broadcast_to(v, lead + v.shape).copy())


@dataclass(frozen=True)
class PolyAttentionCase:
    """Inputs [B, H, L, D] with Cauchy-Schwarz logit radius ``radius``, the target eps and the chunk size.

    ``values="balanced"`` builds logits and values together against the polynomial (``_balanced_inputs``;
    ``family`` and ``seed`` are then unused and L = max(key_tokens, 3)).
    """

    batch: int
    heads: int
    query_tokens: int
    key_tokens: int
    dim: int
    value_dim: int
    seed: int
    radius: float
    eps: float
    kind: Kind = "chebyshev"
    family: Family = "normal"
    values: ValueFamily = "normal"
    scale: float | None = None
    chunk_size: int | None = None
    dtype: Literal["float64", "float32"] = "float64"

    def logit_scale(self) -> float:
        return 1 / math.sqrt(self.dim) if self.scale is None else self.scale

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float64 arrays, already rounded through ``dtype`` (bit-identical inputs for both sides)."""
        q, k, v = self._build()
        return tuple(a.astype(self.dtype).astype(np.float64) for a in (q, k, v))  # type: ignore[return-value]

    def _build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.values == "balanced":  # logits and values both placed against the polynomial (key_tokens >= 3)
            return _balanced_inputs(self)
        rng = np.random.default_rng(self.seed)
        lead = (self.batch, self.heads)
        q, k = _logit_inputs(rng, lead + (self.query_tokens, self.dim), lead + (self.key_tokens, self.dim),
                             self.radius, self.logit_scale(), self.family)
        v = rng.standard_normal(lead + (self.key_tokens, self.value_dim))
        if self.values == "offset":  # large common offset: the per-column bound is far tighter than ||V||_inf
            v = 100.0 + 0.1 * v
        elif self.values == "outlier":
            v[..., rng.integers(self.key_tokens), :] *= 1e3
        return q, k, v


@st.composite
def poly_attention_cases(draw: st.DrawFn, max_tokens: int = 24, max_dim: int = 6) -> PolyAttentionCase:
    """Small [B, H, L, D] cases on the certificate grid of radii, all value and logit families, small chunks."""
    radius = draw(st.sampled_from(CERTIFIED_RADII))
    dim = draw(st.integers(1, 2 if radius >= 4 else 3 if radius >= 2 else max_dim))
    key_tokens = draw(st.integers(1, max_tokens))
    eps = draw(st.sampled_from(EPS_LEVELS))
    return PolyAttentionCase(
        batch=draw(st.integers(1, 2)), heads=draw(st.integers(1, 2)),
        query_tokens=draw(st.integers(1, max_tokens)), key_tokens=key_tokens, dim=dim,
        value_dim=draw(st.integers(1, 5)), seed=draw(seeds()), radius=radius, eps=eps,
        kind=draw(st.sampled_from(("chebyshev", "chebyshev", "taylor"))), family=draw(st.sampled_from(FAMILIES)),
        values=draw(st.sampled_from(("normal", "offset", "outlier", "balanced"))),
        scale=draw(st.sampled_from([None, 1.0, 0.25, 4.0])),
        chunk_size=draw(st.sampled_from([None, 1, 3, 7, 16])),
        # float32 only at eps 1e-1: at smaller eps its rounding allowance exceeds the AS2 bound (the check would be vacuous)
        dtype="float32" if eps == 1e-1 and draw(st.booleans()) else "float64")


@dataclass(frozen=True)
class Tightness:
    """Observed max error over each AS2 form of the bound (<= 1 for the two proved forms)."""

    sharp: float  # error / (eps/(1-eps) ||V||_inf)
    column: float  # max over columns of error / (eps/(1-eps) (max - min)/2)
    paper: float  # error / (2 eps ||V||_inf)


AttentionFunction = Callable[..., AttentionResult]


def _poly_rounding(case: PolyAttentionCase, q: np.ndarray, k: np.ndarray, v_inf: float,
                   result: AttentionResult) -> float:
    """bounds.poly_attention_rounding_bound for these inputs: Cauchy-Schwarz R (norms widened by their
    float64 rounding, gamma_{D+2}), and the certified polynomial exp_approximation(R', g, kind) of the
    result's certificate radius R' and degree g (the polynomial the backend must have used)."""
    norms = [float(np.sqrt((x * x).sum(-1)).max()) for x in (q, k)]
    radius = case.logit_scale() * norms[0] * norms[1] * (1 + 2 * bounds.gamma(case.dim + 2, formats.FLOAT64))
    require(result.approximation is not None and result.degree is not None, "AS2",
            "the poly result does not report its polynomial", case=case)
    approximation = exp_approximation(result.approximation.radius, result.degree, case.kind)
    unit = formats.format_named(case.dtype).unit_roundoff
    return bounds.poly_attention_rounding_bound(
        float(approximation.abs_polynomial(radius)), radius, approximation.eps, case.key_tokens,
        bounds.feature_rank(case.dim, result.degree), result.degree, v_inf, unit)


def measure_poly_attention_output(case: PolyAttentionCase, attention_fn: AttentionFunction = attention,
                                  bound: Callable[[float, float], float] = bounds.as2_output_bound) -> Measurement:
    """AS2 (Alman-Song 2023, Thm 3.8 sharpened): max |poly - exact| beyond rounding, held to eps/(1-eps) ||V||_inf.

    poly runs in ``case.dtype`` on inputs rounded through it; exact is the float64 reference on
    the same (rounded) inputs, with its a-priori rounding bound. The floating-point part of the
    poly result is covered by ``bounds.poly_attention_rounding_bound`` for its dtype, computed
    here (not taken from the result under check) from the Cauchy-Schwarz radius of the inputs
    and the certified polynomial of the reported degree; observed = max(error - rounding, 0).
    ``forms``: the same excess over the per-column bound and over the paper's 2 eps ||V||_inf.
    """
    q, k, v = case.build()
    scale = case.logit_scale()
    dtype = bounds.torch_dtype_of(case.dtype)
    result = attention_fn(*(torch.from_numpy(a).to(dtype) for a in (q, k, v)), backend="poly",
                          eps=case.eps, kind=case.kind, scale=scale, chunk_size=case.chunk_size)
    require(result.eps is not None and result.eps <= case.eps, "AS2", "the certified eps exceeds the requested eps",
            certified=result.eps, case=case)
    output = result.output.detach().double().numpy()
    exact = reference_attention(q, k, v, scale=scale)
    error = np.abs(output - exact)
    v_inf = float(np.abs(v).max())
    slack = _poly_rounding(case, q, k, v_inf, result) + attention_error_bound(q, k, v, scale=scale)
    excess = np.maximum(error - slack, 0.0)
    # the eps of the polynomial the result says it used, certified here (not the eps it reports about itself)
    eps = exp_approximation(result.approximation.radius, result.degree, case.kind).eps  # type: ignore[union-attr]
    column = bounds.as2_column_bound(eps, v)[..., None, :]
    paper = bounds.as2_paper_bound(eps, v_inf)
    column_ratio = float(np.max(np.where(excess > 0, excess / np.maximum(column, 1e-300), 0.0)))
    return Measurement(float(excess.max()), float(bound(eps, v_inf)), case,
                       forms={"per column": column_ratio, "paper 2 eps": float(excess.max() / paper) if paper > 0 else 0.0})


def check_poly_attention_output(case: PolyAttentionCase, attention_fn: AttentionFunction = attention) -> Tightness:
    """AS2: ||poly - exact||_inf <= eps/(1-eps) ||V||_inf and per column eps/(1-eps)(max - min)/2, beyond rounding
    (measure_poly_attention_output); returns the tightness of the sharp, per-column and paper forms."""
    m = measure_poly_attention_output(case, attention_fn)
    require(m.ratio <= 1, "AS2", "poly output error exceeds eps/(1-eps) ||V||_inf beyond rounding",
            excess=m.observed, bound=m.limit, case=case)
    require(m.forms["per column"] <= 1, "AS2", "poly output error exceeds the per-column bound",
            ratio=m.forms["per column"], case=case)
    return Tightness(sharp=m.ratio, column=m.forms["per column"], paper=m.forms["paper 2 eps"])


# ----------------------------------------------------------------------------- rates (AS3, AS5, LD6) and AS6

def degree_series(radii: Sequence[float], eps: float, kind: Kind = "chebyshev",
                  degree_fn: DegreeFunction = bounds.minimal_degree) -> list[int]:
    """AS3 (Alman-Song 2023, Cor. 3.3; Aggarwal-Alman 2022): the minimal certified degree g(R, eps) at each radius."""
    return [int(degree_fn(float(radius), eps, kind=kind)) for radius in radii]


def _flop_mapping() -> dict[object, Callable[..., int]]:
    """FlopCounterMode formulas it lacks: in-place baddbmm_/addmm_ (poly's key contraction), the CPU flash SDPA op."""
    aten = torch.ops.aten

    def raw(formula: Callable[..., int]) -> Callable[..., int]:
        # the registry's formulas already take tensors (shape-wrapped): mark them so they are not wrapped twice
        def counted(*args: object, **kwargs: object) -> int:
            return formula(*args, **kwargs)

        counted._get_raw = True  # type: ignore[attr-defined]
        return counted

    return {aten.baddbmm_: raw(flop_counter.flop_registry[aten.baddbmm]),
            aten.addmm_: raw(flop_counter.flop_registry[aten.addmm]),
            aten._scaled_dot_product_flash_attention_for_cpu:
                raw(flop_counter.flop_registry[aten._scaled_dot_product_flash_attention])}


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products ``fn()`` runs (torch.utils.flop_counter: 2 per multiply-add), deterministic.

    Only products are counted (mm, bmm, baddbmm, addmm and their in-place forms, SDPA's two
    products): exps, softmax and element-wise monomial products are not, on either backend.
    """
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def fixed_radius_inputs(length: int, dim: int, value_dim: int, radius: float, seed: int,
                        scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [1, 1, L, D] float64 whose Cauchy-Schwarz logit radius is ``radius`` (1 - 1e-9) for every L."""
    rng = np.random.default_rng(seed)
    q, k = _logit_inputs(rng, (1, 1, length, dim), (1, 1, length, dim), radius,
                         1 / math.sqrt(dim) if scale is None else scale, "normal")
    v = rng.standard_normal((1, 1, length, value_dim))
    return torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)


def attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str, *, eps: float = 1e-3,
                    scale: float | None = None, attention_fn: AttentionFunction = attention
                    ) -> tuple[int, AttentionResult]:
    """AS5: counted FLOPs of ``attention_fn(q, k, v, backend=backend, ...)`` (the real call, run once), its result."""
    results: list[AttentionResult] = []
    flops = counted_flops(lambda: results.append(attention_fn(q, k, v, backend=backend, eps=eps, scale=scale)))
    return flops, results[0]


def rademacher_inputs(length: int, dim: int, bound: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LD6: q, k, v [1, 1, L, D] with entries +-B (|entries| <= B exactly; ||q_i|| = sqrt(D) B), v Gaussian.

    With the Alman-Song scale 1/D, the Cauchy-Schwarz logit radius is exactly B^2 and is attained
    wherever q_i = +-k_j (frequent for small D).
    """
    rng = np.random.default_rng(seed)
    q, k = (bound * rng.choice([-1.0, 1.0], size=(1, 1, length, dim)) for _ in range(2))
    v = rng.standard_normal((1, 1, length, dim))
    return torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)


def hardness_table(lengths: Sequence[int], c_dim: float = 1.0, c_radius: float = 1.0,
                   eps: float = 1e-3) -> list[dict[str, float]]:
    """AS6 illustration (Alman-Song 2023, SETH lower bound): along D = ceil(c ln L), R = c' ln L, the certified
    degree g(R, eps) and rank C(D + g, g) of the polynomial method, and rank / L (it outgrows L: no L^(1+o(1))
    method this way)."""
    rows = []
    for length in lengths:
        dim = max(1, math.ceil(c_dim * math.log(length)))
        radius = c_radius * math.log(length)
        degree = bounds.minimal_degree(certified_radius(radius), eps)
        rank = bounds.feature_rank(dim, degree)
        rows.append({"L": int(length), "D": dim, "R": round(radius, 3), "eps": eps, "degree g": degree,
                     "rank C(D+g,g)": rank, "rank / L": round(rank / length, 4)})
    return rows
