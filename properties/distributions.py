"""Distributions: strategies for latent mixtures, GP sequences and Gaussian pairs, and the properties that bind them.

Claims (docs/claims.md): LD1, LD2, Tweedie, CF1 and classifier-free guidance for latent Gaussian mixtures;
GP1, GP2 (condition number), GP3 for Gaussian-process sequences; KL, W2 and TV identities for the
distances. Every property takes the implementation under check as an argument (the reference by
default), so a test can plant a bug and show that the property catches it. Cases are small frozen
dataclasses whose repr rebuilds the input (``case.build()`` / ``case.mixture()``).

float64 tolerances are a-priori rounding bounds, written next to each check: u = 2^-53 times a
dimension factor, the conditioning of the matrices solved, and the magnitude of the terms that are
added (sums can cancel, so the bound uses the terms, not the result). Ball checks need no tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mpmath
import numpy as np
from hypothesis import strategies as st

from ditcheck.reference import distances, gp, mixtures, schedules
from ditcheck.reference import formats
from ditcheck.reference.errors import InvalidArgumentError, NotPositiveDefiniteError
from ditcheck.reference.latent import ld2_score
from ditcheck.reference.linalg import positive_definite_report
from ditcheck.reference.precision import UNIT_ROUNDOFF, Arb, BallArray, Mp, resolve_precision
from ditcheck.reference.schedules import SCHEDULES, get_schedule

from .certified import require_contains, require_narrow
from .measurement import Measurement
from .strategies import orthonormal_columns, seeds
from .violation import require

__all__ = [
    "mixture_tolerance",
    "U",
    "exact_orthonormal_columns",
    "MixtureSpec",
    "MixtureCase",
    "ConditionalCase",
    "CF1Case",
    "GPCase",
    "BandingCase",
    "GaussianPairCase",
    "PAIR_STRUCTURES",
    "TVCase",
    "simplex_weights",
    "spd_matrix",
    "mixture_specs",
    "schedule_times",
    "mixture_cases",
    "conditional_cases",
    "cf1_cases",
    "gamma_kinds",
    "gp_cases",
    "banding_cases",
    "gaussian_pair_cases",
    "tv_cases",
    "ld1_tolerance",
    "measure_ld1",
    "check_ld1",
    "ld2_tolerance",
    "measure_ld2",
    "check_ld2",
    "check_score_is_gradient",
    "check_tweedie",
    "check_cfg",
    "measure_cf1",
    "check_cf1",
    "CF2Case",
    "cf2_cases",
    "cf2_tolerance",
    "measure_cf2",
    "check_cf2",
    "check_certified_contains_mp",
    "measure_gp1",
    "check_gp1",
    "check_gp2_condition_number",
    "check_gp3_banding",
    "check_kl",
    "check_w2",
    "check_tv_known_answer",
    "check_variance_preserving",
    "check_ou_time_doubling",
    "check_vp_integral",
    "check_ddpm_cumulative_product",
    "check_prediction_conversions",
]

U = UNIT_ROUNDOFF


# ----------------------------------------------------------------------------------------
# Small pieces


_HADAMARD_4 = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=np.float64) / 2


def exact_orthonormal_columns(rows: int, cols: int, seed: int) -> np.ndarray:
    """[rows, cols] with B^T B = I exactly in binary: signed permutations of Hadamard blocks (entries 0, +-1/2, +-1).

    Float64 QR bases are orthonormal only to rounding; ball-arithmetic checks of LD1/LD2, whose two sides
    differ by terms in B^T B - I, need an exactly orthonormal B.
    """
    if cols > rows:
        raise ValueError(f"argument 'cols': expected at most rows={rows}; got {cols}")
    rng = np.random.default_rng(seed)
    square = np.eye(rows)
    for start in range(0, rows - rows % 4, 4):
        square[start:start + 4, start:start + 4] = _HADAMARD_4
    square = square[rng.permutation(rows)][:, rng.permutation(rows)]
    square *= rng.choice([-1.0, 1.0], size=rows)[:, None]
    return square[:, :cols]


def simplex_weights(count: int, rng: np.random.Generator, floor: float = 0.05) -> np.ndarray:
    """Positive weights summing to 1 (to rounding): Dirichlet(1) mixed with the uniform weights by ``floor``."""
    w = (1 - floor) * rng.dirichlet(np.ones(count)) + floor / count
    return w / w.sum()


def spd_matrix(dim: int, rng: np.random.Generator, condition: float = 10.0, scale: float = 1.0) -> np.ndarray:
    """Exactly symmetric SPD matrix Q diag(l) Q^T with eigenvalues log-uniform in scale * [1, condition]."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    values = scale * np.exp(rng.uniform(0.0, math.log(condition), dim))
    s = (q * values) @ q.T
    return (s + s.T) / 2


# ----------------------------------------------------------------------------------------
# Latent mixtures


@dataclass(frozen=True)
class MixtureSpec:
    """A reproducible LatentMixture: sizes, seeds, whether B is exactly orthonormal, mean scale and condition."""

    ambient: int
    latent: int
    components: int
    seed: int
    basis_seed: int
    exact_basis: bool = False
    mean_scale: float = 1.0
    condition: float = 10.0

    def build(self) -> mixtures.LatentMixture:
        make_basis = exact_orthonormal_columns if self.exact_basis else orthonormal_columns
        basis = make_basis(self.ambient, self.latent, self.basis_seed)
        rng = np.random.default_rng(self.seed)
        weights = simplex_weights(self.components, rng)
        means = self.mean_scale * rng.standard_normal((self.components, self.latent))
        covariances = np.stack([spd_matrix(self.latent, rng, self.condition, 0.3) for _ in range(self.components)])
        return mixtures.LatentMixture(basis, weights, means, covariances)


@st.composite
def mixture_specs(draw: st.DrawFn, exact_basis: bool = False, max_ambient: int = 6, max_latent: int = 3,
                  max_components: int = 3, basis_seed: int | None = None) -> MixtureSpec:
    """MixtureSpecs with d0 <= D (d0 = D included), 1..K components, means and conditioning varied."""
    ambient = draw(st.integers(1, max_ambient))
    return MixtureSpec(ambient, draw(st.integers(1, min(ambient, max_latent))), draw(st.integers(1, max_components)),
                       draw(seeds()), draw(seeds()) if basis_seed is None else basis_seed, exact_basis,
                       draw(st.sampled_from([0.5, 1.0, 3.0])), draw(st.sampled_from([1.0, 10.0, 100.0])))


TIME_RANGES = {"ou-half": (0.01, 8.0), "ou-unit": (0.005, 4.0), "vp-linear": (0.01, 1.0), "ddpm": (1, 999)}


@st.composite
def schedule_times(draw: st.DrawFn, schedules: tuple[str, ...] = SCHEDULES) -> tuple[str, float]:
    """(schedule, t) with t > 0 inside the schedule's domain, log-uniform over its useful range (ddpm: integer steps)."""
    schedule = draw(st.sampled_from(schedules))
    low, high = TIME_RANGES[schedule]
    if schedule == "ddpm":
        return schedule, float(draw(st.integers(low, high)))
    return schedule, float(math.exp(draw(st.floats(math.log(low), math.log(high)))))


def _diffused_points(mixture: mixtures.LatentMixture, count: int, seed: int, schedule: str, t: np.ndarray,
                     spread: float) -> np.ndarray:
    """Points near p_t: alpha x_0 + spread sigma z (spread > 1 reaches into the tails)."""
    rng = np.random.default_rng(seed)
    sched = get_schedule(schedule)
    alpha = np.asarray(sched.alpha(mixtures.FLOAT64, t)).reshape(-1, 1)
    sigma = np.sqrt(np.asarray(sched.sigma2(mixtures.FLOAT64, t))).reshape(-1, 1)
    x0 = mixtures.sample(mixture, count, int(rng.integers(2**32)))
    return alpha * x0 + spread * sigma * rng.standard_normal(x0.shape)


@dataclass(frozen=True)
class MixtureCase:
    """A mixture, N points and their time(s): one shared t, or one per point (``per_point_times``)."""

    spec: MixtureSpec
    points: int
    point_seed: int
    schedule: str
    time: float
    per_point_times: bool = False
    spread: float = 1.0

    @cached_property
    def mixture(self) -> mixtures.LatentMixture:
        return self.spec.build()

    @cached_property
    def t(self) -> Any:
        """float (shared) or [N] array: per-point times spread around ``time`` within the domain."""
        if not self.per_point_times:
            return self.time
        low, high = TIME_RANGES[self.schedule]
        factors = np.random.default_rng(self.point_seed ^ 0x7157).uniform(0.5, 2.0, self.points)
        times = np.clip(self.time * factors, low, high)
        return np.round(times) if self.schedule == "ddpm" else times

    @cached_property
    def x(self) -> np.ndarray:
        return _diffused_points(self.mixture, self.points, self.point_seed, self.schedule, np.asarray(self.t),
                                self.spread)

    def times_array(self) -> np.ndarray:
        """t as an [N] array (reference.latent.ld2_score with mp/arb needs 1-D times)."""
        return np.broadcast_to(np.asarray(self.t, dtype=np.float64), (self.points,)).copy()

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 (alpha_t, sigma_t^2), shape [N, 1]."""
        sched = get_schedule(self.schedule)
        times = self.times_array()
        return (np.asarray(sched.alpha(mixtures.FLOAT64, times)).reshape(-1, 1),
                np.asarray(sched.sigma2(mixtures.FLOAT64, times)).reshape(-1, 1))

    def condition(self) -> np.ndarray:
        """[N, 1]: max_k condition number of alpha^2 S_k + sigma^2 I, the matrices the reference factorises."""
        alpha, sigma2 = self.coefficients()
        values = np.linalg.eigvalsh(self.mixture.covariances)  # [K, d0]
        low = alpha**2 * values[:, 0] + sigma2
        high = alpha**2 * values[:, -1] + sigma2
        return np.max(high / low, axis=1, keepdims=True)


@st.composite
def mixture_cases(draw: st.DrawFn, exact_basis: bool = False, max_points: int = 4, max_ambient: int = 6,
                  max_latent: int = 3, max_components: int = 3,
                  schedules: tuple[str, ...] = SCHEDULES) -> MixtureCase:
    """MixtureCases over every schedule, shared and per-point times, points near p_t and in its tails."""
    spec = draw(mixture_specs(exact_basis, max_ambient, max_latent, max_components))
    schedule, time = draw(schedule_times(schedules))
    return MixtureCase(spec, draw(st.integers(1, max_points)), draw(seeds()), schedule, time,
                       draw(st.booleans()), draw(st.sampled_from([1.0, 1.0, 3.0])))


def _row_norm(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, dtype=np.float64), axis=-1, keepdims=True)


def mixture_tolerance(case: MixtureCase, *terms: np.ndarray) -> np.ndarray:
    """[N, 1] a-priori bound for float64 mixture scores: c u kappa (1 + |log p_t(x)|) sum ||term||.

    The reference factorises alpha^2 S_k + sigma^2 I (condition kappa) and solves with it (relative error
    ~ d0 kappa u per solve); responsibilities come from exp of log-component values, whose absolute
    rounding ~ u |log p| becomes a relative error of the same size; projections by B add D u. The
    factor c = 32 (D + d0 + K) covers the operation counts with margin.
    """
    spec = case.spec
    log_p = np.asarray(mixtures.log_density(case.mixture, case.x, case.t, case.schedule)).reshape(-1, 1)
    factor = 32 * (spec.ambient + spec.latent + spec.components) * U
    return factor * case.condition() * (1 + np.abs(log_p)) * sum(_row_norm(term) for term in terms)




def _precision_kind(precision: str) -> str:
    return precision.partition(":")[0]


def _bits(precision: str) -> int:
    resolved = resolve_precision(precision)
    return resolved.bits if isinstance(resolved, Arb) else 53


def _overlap_or_close(left: Any, right: Any, tolerance: np.ndarray | None, claim: str, message: str,
                      case: Any) -> None:
    """Balls (arb): must overlap. mp: must agree to 10^-(digits - 8) relative. float64: within ``tolerance``."""
    if isinstance(left, BallArray):
        require_narrow(left, claim, case=case)
        require_narrow(right, claim, case=case)
        overlap = left.overlaps(right)
        require(overlap.all(), claim, message + " (balls disjoint)", disjoint=int((~overlap).sum()),
                worst=float(np.max(np.abs(left.mid - right.mid))), case=case)
        return
    left_f, right_f = (np.asarray(np.frompyfunc(float, 1, 1)(v), dtype=np.float64) for v in (left, right))
    if np.asarray(left).dtype == object:  # mpmath: agreement to the working precision, with margin
        diff = np.asarray(np.frompyfunc(lambda a, b: float(abs(a - b)), 2, 1)(left, right), dtype=np.float64)
        tolerance = 10.0 ** (-(mpmath.mp.dps - 8)) * (1 + np.abs(left_f) + np.abs(right_f))
    else:
        diff = np.abs(left_f - right_f)
    require(np.all(diff <= tolerance), claim, message, worst=float(np.max(diff)),
            worst_ratio=float(np.max(diff / tolerance)), case=case)


ScoreFunction = Callable[..., Any]


def _row_measurement(got: Any, expected: np.ndarray, tolerance: np.ndarray, case: Any) -> Measurement:
    """The worst row of a float64 comparison: observed = its max |got - expected| / max |expected| (relative error),
    limit = its tolerance on the same scale, so observed/limit is the row's max |got - expected| / tolerance."""
    diff = np.max(np.abs(np.asarray(got, dtype=np.float64) - expected), axis=-1)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64).reshape(-1), diff.shape)
    ratios = np.divide(diff, tol, out=np.where(diff > 0, np.inf, 0.0), where=tol > 0)
    worst = int(np.argmax(ratios))
    scale = max(float(np.max(np.abs(expected[worst]))), 1e-300)
    return Measurement(float(diff[worst] / scale), float(tol[worst] / scale), case)


def ld1_tolerance(case: MixtureCase, on: np.ndarray, orth: np.ndarray, full: np.ndarray) -> np.ndarray:
    """[N, 1] float64 allowance for LD1: mixture_tolerance of the two terms, the score and x / sigma^2
    (x - B B^T x is formed with error ~ u ||x||, then divided by sigma^2: present even when the terms are ~0)."""
    _, sigma2 = case.coefficients()
    return mixture_tolerance(case, on, orth, full, case.x / sigma2)


def measure_ld1(case: MixtureCase, decomposition: ScoreFunction = mixtures.ld1_decomposition,
                score: ScoreFunction = mixtures.score,
                tolerance: Callable[..., np.ndarray] = ld1_tolerance) -> Measurement:
    """LD1 (Hu et al. 2024, sec. 3, score decomposition): float64 relative error of on + orth vs the score, held to its rounding tolerance.

    ``tolerance(case, on, orth, full)`` -> [N, 1] absolute allowance (ld1_tolerance). The worst point is reported.
    """
    on, orth = decomposition(case.mixture, case.x, case.t, case.schedule)
    full = np.asarray(score(case.mixture, case.x, case.t, case.schedule), dtype=np.float64)
    return _row_measurement(np.asarray(on) + np.asarray(orth), full, tolerance(case, on, orth, full), case)


def check_ld1(case: MixtureCase, decomposition: ScoreFunction = mixtures.ld1_decomposition,
              score: ScoreFunction = mixtures.score, precision: str = "float64") -> None:
    """LD1: B grad log p^h_t(B^T x) - (I - B B^T) x / sigma_t^2 equals grad log p_t(x).

    arb: the balls overlap; mp: agreement to the working precision. Both need an exactly orthonormal B
    (exact_orthonormal_columns): with B^T B != I the two sides differ by terms in B^T B - I, which the
    score keeps and LD1 drops. float64: within mixture_tolerance (measure_ld1).
    """
    if _precision_kind(precision) == "float64":
        m = measure_ld1(case, decomposition, score)
        require(m.ratio <= 1, "LD1", "on-subspace + orthogonal terms != score", relative_error=m.observed,
                tolerance=m.limit, worst_ratio=m.ratio, case=case)
        return
    with mpmath.workdps(60):
        on, orth = decomposition(case.mixture, case.x, case.t, case.schedule, precision=precision)
        full = score(case.mixture, case.x, case.t, case.schedule, precision=precision)
        if isinstance(on, BallArray):
            with Arb(_bits(precision)).context():  # ball sums round at flint's working precision
                total = BallArray(on.balls + orth.balls)
            _overlap_or_close(total, full, None, "LD1", "on-subspace + orthogonal terms != score", case)
            return
        _overlap_or_close(on + orth, full, None, "LD1", "on-subspace + orthogonal terms != score", case)


DenoiserFactory = Callable[[mixtures.LatentMixture, str], Callable[..., Any]]


def ld2_tolerance(case: MixtureCase, network: np.ndarray, full: np.ndarray) -> np.ndarray:
    """[N, 1] float64 allowance for LD2: mixture_tolerance of the score and of 2 x / sigma^2 (the network form
    adds B f / sigma^2 and -x / sigma^2, each far larger than the score when sigma is small)."""
    _, sigma2 = case.coefficients()
    return mixture_tolerance(case, full, 2 * case.x / sigma2)


def measure_ld2(case: MixtureCase, denoiser: DenoiserFactory = mixtures.denoiser_q_function,
                network_score: ScoreFunction = ld2_score, score: ScoreFunction = mixtures.score,
                tolerance: Callable[..., np.ndarray] = ld2_tolerance) -> Measurement:
    """LD2 (Hu et al. 2024, sec. 3, score-network form): float64 relative error of B q(B^T x)/sigma^2 - x/sigma^2 vs the score.

    ``network_score`` has reference.latent.ld2_score's signature (properties.torch_dit.torch_ld2_score
    puts ditcheck's torch LatentScoreNetwork there). ``tolerance(case, network, full)`` -> [N, 1] (ld2_tolerance).
    """
    times = case.times_array()
    f = denoiser(case.mixture, case.schedule)
    network = np.asarray(network_score(case.x, times, case.mixture.basis, f, case.schedule), dtype=np.float64)
    full = np.asarray(score(case.mixture, case.x, case.t, case.schedule), dtype=np.float64)
    return _row_measurement(network, full, tolerance(case, network, full), case)


def check_ld2(case: MixtureCase, denoiser: DenoiserFactory = mixtures.denoiser_q_function,
              network_score: ScoreFunction = ld2_score, score: ScoreFunction = mixtures.score,
              precision: str = "float64") -> None:
    """LD2: with W_B = B and f = q (q = sigma^2 grad log p^h_t + h), s(x, t) = B f(B^T x)/sigma^2 - x/sigma^2 is the score.

    Same exact-basis remark as LD1 for arb. float64: measure_ld2.
    """
    if _precision_kind(precision) == "float64":
        m = measure_ld2(case, denoiser, network_score, score)
        require(m.ratio <= 1, "LD2", "ld2_score with f = q != score", relative_error=m.observed, tolerance=m.limit,
                worst_ratio=m.ratio, case=case)
        return
    with mpmath.workdps(60):
        times = case.times_array()
        f = denoiser(case.mixture, case.schedule)
        network = network_score(case.x, times, case.mixture.basis, f, case.schedule, precision=precision)
        full = score(case.mixture, case.x, case.t, case.schedule, precision=precision)
        _overlap_or_close(network, full, None, "LD2", "ld2_score with f = q != score", case)


def check_score_is_gradient(case: MixtureCase, score: ScoreFunction = mixtures.score,
                            log_density: ScoreFunction = mixtures.log_density, digits: int = 50) -> None:
    """The score is the gradient of the log density: <s(x), d> vs the mp central difference of log p_t along d.

    ``log_density`` must be a reference function (its ``.generic`` runs on mp objects); ``score`` is any
    function with the reference signature returning float64 or mp values.

    At ``digits`` digits with steps h = 1e-12 and h/2 the difference D(h/2) has truncation error
    ~ |D(h) - D(h/2)| / 3 and rounding ~ 10^-digits |log p| / h; the tolerance is 4 |D(h) - D(h/2)|
    plus 10^-(digits - 14) (1 + |log p|) (rounding with margin) plus the float64 rounding of the score
    (mixture_tolerance, times ||d||) when the score under check returns float64.
    """
    direction = np.random.default_rng(case.point_seed ^ 0xD1DE).standard_normal(case.x.shape)
    with mpmath.workdps(digits):
        xp = Mp(digits)
        x_mp = xp.asarray(case.x)
        d_mp = xp.asarray(direction)

        def central(step: mpmath.mpf) -> np.ndarray:
            # perturbed points are not float64 numbers: evaluate the generic function on mp objects
            ahead = log_density.generic(xp, case.mixture, x_mp + step * d_mp, case.t, case.schedule)
            behind = log_density.generic(xp, case.mixture, x_mp - step * d_mp, case.t, case.schedule)
            return (ahead - behind) / (2 * step)

        h = mpmath.mpf("1e-12")
        coarse, fine = central(h), central(h / 2)
        values = score(case.mixture, case.x, case.t, case.schedule)
        log_p = np.asarray(np.frompyfunc(float, 1, 1)(log_density.generic(xp, case.mixture, x_mp, case.t,
                                                                            case.schedule)), dtype=np.float64)
        if np.asarray(values).dtype == object:
            predicted = np.sum(values * d_mp, axis=-1)
            float64_rounding = 0.0
        else:
            predicted = np.sum(np.asarray(values, dtype=np.float64) * direction, axis=-1)
            _, sigma2 = case.coefficients()
            # |<s_float64 - s, d>| <= ||s_float64 - s|| ||d||, the score's rounding as in mixture_tolerance
            float64_rounding = (mixture_tolerance(case, values, case.x / sigma2) * _row_norm(direction))[:, 0]
        gap = np.asarray(np.frompyfunc(lambda a, b: float(abs(a - b)), 2, 1)(predicted, fine), dtype=np.float64)
        truncation = np.asarray(np.frompyfunc(lambda a, b: float(abs(a - b)), 2, 1)(coarse, fine), dtype=np.float64)
    tolerance = 4 * truncation + 10.0 ** (-(digits - 14)) * (1 + np.abs(log_p)) + float64_rounding
    require(np.all(gap <= tolerance), "score-gradient", "score is not the gradient of log_density",
            worst=float(np.max(gap)), tolerance=float(np.max(tolerance)), case=case)


def check_tweedie(case: MixtureCase, from_score: ScoreFunction = mixtures.posterior_mean_x0,
                  closed_form: ScoreFunction = mixtures.posterior_mean_x0_closed_form,
                  precision: str = "float64") -> None:
    """Tweedie: (x + sigma_t^2 grad log p_t(x)) / alpha_t equals E[x_0 | x_t = x] from per-component Gaussian conditioning.

    Holds for the exact given B (no orthonormality needed), so arb balls must overlap for QR bases too.
    float64: the Tweedie side adds x and sigma^2 s (each up to |x|) then divides by alpha.
    """
    with mpmath.workdps(60):
        tweedie = from_score(case.mixture, case.x, case.t, case.schedule, precision=precision)
        direct = closed_form(case.mixture, case.x, case.t, case.schedule, precision=precision)
        if isinstance(tweedie, BallArray):
            _overlap_or_close(tweedie, direct, None, "Tweedie", "Tweedie posterior mean != closed form", case)
            return
        alpha, _ = case.coefficients()
        tolerance = None if _precision_kind(precision) != "float64" else mixture_tolerance(
            case, case.x / alpha, tweedie, direct)
        _overlap_or_close(tweedie, direct, tolerance, "Tweedie", "Tweedie posterior mean != closed form", case)


# ----------------------------------------------------------------------------------------
# Class-conditional mixtures: guidance and CF1


def _conditional_mixture(classes: tuple[MixtureSpec, ...], probability_seed: int) -> mixtures.ConditionalMixture:
    """The class-conditional mixture of ``classes`` with class probabilities drawn from ``probability_seed``."""
    rng = np.random.default_rng(probability_seed)
    return mixtures.ConditionalMixture(tuple(spec.build() for spec in classes), simplex_weights(len(classes), rng))


@dataclass(frozen=True)
class ConditionalCase:
    """Class-conditional mixtures sharing one basis, their class probabilities, points, a time and a guidance weight."""

    classes: tuple[MixtureSpec, ...]
    probability_seed: int
    points: int
    point_seed: int
    schedule: str
    time: float
    guidance: float = 1.0

    @cached_property
    def mixture(self) -> mixtures.ConditionalMixture:
        return _conditional_mixture(self.classes, self.probability_seed)

    @cached_property
    def labels(self) -> np.ndarray:
        return np.random.default_rng(self.point_seed ^ 0x1AB).integers(len(self.classes), size=self.points)

    @cached_property
    def x(self) -> np.ndarray:
        return _diffused_points(self.mixture.classes[0], self.points, self.point_seed, self.schedule,
                                np.asarray(self.time), 1.5)


@st.composite
def _shared_basis_specs(draw: st.DrawFn, max_classes: int, max_ambient: int,
                        max_latent: int) -> tuple[MixtureSpec, ...]:
    first = draw(mixture_specs(max_ambient=max_ambient, max_latent=max_latent))
    others = [MixtureSpec(first.ambient, first.latent, draw(st.integers(1, 3)), draw(seeds()), first.basis_seed,
                          mean_scale=draw(st.sampled_from([0.5, 1.0, 3.0])))
              for _ in range(draw(st.integers(1, max_classes - 1)))]
    return (first, *others)


@st.composite
def conditional_cases(draw: st.DrawFn, max_classes: int = 3, max_points: int = 4, max_ambient: int = 5,
                      max_latent: int = 3) -> ConditionalCase:
    """ConditionalCases with 2..max_classes classes and guidance weights around DiT's (w = 3, i.e. scale 4)."""
    schedule, time = draw(schedule_times())
    return ConditionalCase(draw(_shared_basis_specs(max_classes, max_ambient, max_latent)), draw(seeds()),
                           draw(st.integers(1, max_points)), draw(seeds()), schedule, time,
                           draw(st.sampled_from([0.5, 1.0, 3.0, -0.5, 7.0])))


def check_cfg(case: ConditionalCase, cfg: ScoreFunction = mixtures.cfg_score,
              conditional: ScoreFunction = mixtures.conditional_score,
              marginal: ScoreFunction = mixtures.marginal_score) -> None:
    """Guidance convention: cfg(w) = (1 + w) s(x|y) - w s(x) = diffusers' uncond + s (cond - uncond) with s = 1 + w.

    Also cfg(0) is the conditional score and cfg(-1) the unconditional one. float64 tolerance:
    the combination of two scores, each within its own rounding, magnified by |1 + w| + |w|.
    """
    m, x, labels, t, w = case.mixture, case.x, case.labels, case.time, case.guidance
    cond = conditional(m, x, labels, t, case.schedule)
    uncond = marginal(m, x, t, case.schedule)
    magnitude = _row_norm(cond) + _row_norm(uncond)
    tolerance = 64 * x.shape[1] * U * (2 + 2 * abs(w)) * magnitude
    scale = mixtures.diffusers_scale_from_guidance(w)
    converted = mixtures.guidance_from_diffusers_scale(scale)
    expectations = {
        "(1 + w) cond - w uncond": ((1 + w) * cond - w * uncond, cfg(m, x, labels, t, w, case.schedule)),
        "diffusers form uncond + s (cond - uncond)": (uncond + scale * (cond - uncond),
                                                      cfg(m, x, labels, t, converted, case.schedule)),
        "w = 0 is the conditional score": (cond, cfg(m, x, labels, t, 0.0, case.schedule)),
        "w = -1 is the unconditional score": (uncond, cfg(m, x, labels, t, -1.0, case.schedule)),
    }
    for name, (expected, actual) in expectations.items():
        gap = np.abs(np.asarray(actual, dtype=np.float64) - expected)
        require(np.all(gap <= tolerance), "CFG", f"guidance convention broken: {name}",
                worst=float(gap.max()), case=case)


@dataclass(frozen=True)
class CF1Case:
    """CF1 problem: class-conditional mixtures, an affine perturbation delta(x) = A x + c, a time grid and a Monte Carlo size."""

    classes: tuple[MixtureSpec, ...]
    probability_seed: int
    perturbation_seed: int
    perturbation_scale: float
    times: tuple[float, ...]
    draws: int
    seed: int
    schedule: str = "ou-half"

    @cached_property
    def mixture(self) -> mixtures.ConditionalMixture:
        return _conditional_mixture(self.classes, self.probability_seed)

    @cached_property
    def perturbation(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.perturbation_seed)
        dim = self.classes[0].ambient
        return (self.perturbation_scale * rng.standard_normal((dim, dim)),
                self.perturbation_scale * rng.standard_normal(dim))


@st.composite
def cf1_cases(draw: st.DrawFn, draws: int = 4000, max_classes: int = 3) -> CF1Case:
    """CF1Cases on OU-half (the paper's process) with 1..3 grid times in [0.05, 2]."""
    times = tuple(sorted(draw(st.lists(st.floats(0.05, 2.0), min_size=1, max_size=3))))
    return CF1Case(draw(_shared_basis_specs(max_classes, 4, 2)), draw(seeds()), draw(seeds()),
                   draw(st.sampled_from([0.1, 0.3, 1.0])), times, draws, draw(seeds()))


LossFunction = Callable[..., mixtures.MonteCarloEstimate]
STATISTICAL_Z = 5.0  # two-sided false-alarm probability 5.7e-7 per case under the CLT


def measure_cf1(case: CF1Case, loss: LossFunction = mixtures.dsm_loss,
                optimal: Callable[..., Any] = mixtures.optimal_score_function,
                energy: Callable[..., float] = mixtures.affine_perturbation_energy,
                z: float = STATISTICAL_Z) -> Measurement:
    """CF1 (Fu, Yang, Wang, Chen 2024, DSM identity): |L(s* + delta) - L(s*) - E||delta||^2| held to STATISTICAL_Z standard errors.

    delta(x) = A x + c; the left side is a paired Monte Carlo estimate (same seed, so the draws are
    shared), the right side exact (affine_perturbation_energy). The identity holds only if s* is the
    conditional expectation of the loss target, so a wrong target, a wrong alpha or an unmasked s* all
    leave a bias 2 E[delta . (s* - target)]. limit = z se + 1e-12 E||delta||^2 (rounding), z = STATISTICAL_Z.
    """
    a, c = case.perturbation
    best = optimal(case.mixture, case.schedule)

    def perturbed(x: np.ndarray, t: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return best(x, t, labels) + x @ a.T + c

    difference = (loss(perturbed, case.mixture, case.times, case.draws, case.seed, case.schedule)
                  - loss(best, case.mixture, case.times, case.draws, case.seed, case.schedule))
    expected = energy(case.mixture, a, c, case.times, case.schedule)
    return Measurement(abs(difference.mean - expected), z * difference.standard_error + 1e-12 * expected, case)


def check_cf1(case: CF1Case, loss: LossFunction = mixtures.dsm_loss,
              optimal: Callable[..., Any] = mixtures.optimal_score_function,
              energy: Callable[..., float] = mixtures.affine_perturbation_energy) -> None:
    """CF1: L(s* + delta) - L(s*) = E ||delta||^2 for delta(x) = A x + c, with dsm_loss's time and mask averaging.

    Tolerance: STATISTICAL_Z standard errors of the paired estimate (measure_cf1).
    """
    m = measure_cf1(case, loss, optimal, energy)
    require(m.ratio <= 1, "CF1", "L(s* + delta) - L(s*) differs from E||delta||^2 beyond the statistical tolerance",
            gap=m.observed, tolerance=m.limit, z=STATISTICAL_Z, case=case)


# ----------------------------------------------------------------------------------------
# CF2: score = Gaussian term + log-gradient of a Gaussian smoothing


@dataclass(frozen=True)
class CF2Case:
    """CF2 problem: a full-rank Gaussian mixture in R^dim (dim 1 or 2) read as p(x | y) for one label y,
    C2 = c2_fraction / lambda_max(S_k), points near p_t (``spread`` > 1: tails) at one OU-half time."""

    dim: int
    components: int
    seed: int
    c2_fraction: float
    time: float
    points: int
    point_seed: int
    spread: float = 1.0
    mean_scale: float = 1.0
    condition: float = 4.0

    @cached_property
    def mixture(self) -> mixtures.LatentMixture:
        rng = np.random.default_rng(self.seed)
        weights = simplex_weights(self.components, rng)
        means = self.mean_scale * rng.standard_normal((self.components, self.dim))
        covariances = np.stack([spd_matrix(self.dim, rng, self.condition, 0.3) for _ in range(self.components)])
        return mixtures.gaussian_mixture(weights, means, covariances)

    @property
    def c2(self) -> float:
        return self.c2_fraction / float(np.max(np.linalg.eigvalsh(self.mixture.covariances)))

    @cached_property
    def x(self) -> np.ndarray:
        return _diffused_points(self.mixture, self.points, self.point_seed, "ou-half", np.asarray(self.time),
                                self.spread)


@st.composite
def cf2_cases(draw: st.DrawFn, max_points: int = 3) -> CF2Case:
    """CF2Cases: 1-2 dimensions, 1-3 components, C2 from far below to just below 1/lambda_max, t in [1e-3, 8]."""
    return CF2Case(draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(seeds()),
                   draw(st.sampled_from([0.05, 0.5, 0.9, 0.99])),
                   float(math.exp(draw(st.floats(math.log(1e-3), math.log(8.0))))), draw(st.integers(1, max_points)),
                   draw(seeds()), draw(st.sampled_from([1.0, 1.0, 3.0])), draw(st.sampled_from([0.5, 1.0, 3.0])),
                   draw(st.sampled_from([1.0, 4.0, 10.0])))


#: the most CF2's quadrature may claim for itself, relative to the size of the score terms
CF2_QUADRATURE_CAP = 1e-10


def cf2_tolerance(case: CF2Case, terms: mixtures.CF2Terms, full: np.ndarray) -> np.ndarray:
    """[N] allowance for CF2: 2 x the quadrature error estimate (|fine - coarse|, itself an overestimate of the
    fine rule's error) + the quadrature's a-priori rounding bound, together at most CF2_QUADRATURE_CAP times
    the terms' size, + the rounding of the closed-form score and of
    the sum, 32 (2 d + K) u kappa (1 + |log p_t|) (||s|| + ||gaussian|| + ||x||/lambda_min) as in
    mixture_tolerance (kappa, lambda_min: condition and smallest eigenvalue of alpha^2 S_k + sigma^2 I, the
    matrices the closed form solves with)."""
    mixture, x, t = case.mixture, case.x, case.time
    sched = get_schedule("ou-half")
    alpha = float(sched.alpha(mixtures.FLOAT64, np.float64(t)))
    sigma2 = float(sched.sigma2(mixtures.FLOAT64, np.float64(t)))
    values = np.linalg.eigvalsh(mixture.covariances)
    low, high = alpha**2 * values[:, 0] + sigma2, alpha**2 * values[:, -1] + sigma2
    condition = float(np.max(high / low))
    log_p = np.abs(np.asarray(mixtures.log_density(mixture, x, t, "ou-half"), dtype=np.float64))
    magnitude = _row_norm(full)[:, 0] + _row_norm(terms.gaussian)[:, 0] + _row_norm(x)[:, 0] / float(np.min(low))
    score_rounding = 32 * (2 * case.dim + case.components) * U * condition * (1 + log_p) * magnitude
    # the quadrature's own error estimate comes from the code under check: capped, so a coarse or broken rule
    # cannot widen its own tolerance
    reported = np.minimum(2 * terms.quadrature_error + terms.rounding, CF2_QUADRATURE_CAP * magnitude)
    return reported + score_rounding


def measure_cf2(case: CF2Case, decomposition: Callable[..., mixtures.CF2Terms] = mixtures.cf2_decomposition,
                score: ScoreFunction = mixtures.score,
                tolerance: Callable[..., np.ndarray] = cf2_tolerance) -> Measurement:
    """CF2 (Fu, Yang, Wang, Chen 2024, score decomposition): -C2 x/(alpha^2 + C2 sigma^2) + grad h/h vs the score.

    Relative error of the decomposition (grad h/h by quadrature, reference.mixtures.cf2_decomposition) against
    the closed-form mixture score, held to cf2_tolerance. The worst point (largest error / tolerance) is reported, both relative to max |score| there.
    """
    terms = decomposition(case.mixture, case.x, case.time, case.c2)
    full = np.asarray(score(case.mixture, case.x, case.time, "ou-half"), dtype=np.float64)
    return _row_measurement(terms.gaussian + terms.smoothing, full, tolerance(case, terms, full), case)


def check_cf2(case: CF2Case, decomposition: Callable[..., mixtures.CF2Terms] = mixtures.cf2_decomposition,
              score: ScoreFunction = mixtures.score) -> None:
    """CF2: grad log p_t = -C2 x/(alpha^2 + C2 sigma^2) + grad h/h, h the N(alpha x/(alpha^2 + C2 sigma^2),
    sigma^2/(alpha^2 + C2 sigma^2)) smoothing of f = p e^(C2|x|^2/2), within quadrature and rounding (measure_cf2)."""
    m = measure_cf2(case, decomposition, score)
    require(m.ratio <= 1, "CF2", "Gaussian term + grad h/h != score", relative_error=m.observed, tolerance=m.limit,
            worst_ratio=m.ratio, case=case)


CERTIFIED_FUNCTIONS = ("log_density", "score", "latent_score", "ld1_decomposition")


def check_certified_contains_mp(case: MixtureCase, name: str, fn: ScoreFunction | None = None, bits: int = 128,
                                digits: int = 60) -> None:
    """arb:bits balls of a certified mixture function contain the mp:digits reference values.

    mp at 60 digits errs by ~1e-58 relative, far inside a 128-bit ball (~1e-36), so a miss means the arb
    path is wrong (e.g. something computed in float64). The balls must also be narrow.
    ``fn`` is the implementation checked (default: the reference function ``name``); mp always comes
    from the reference.
    """
    reference = getattr(mixtures, name)
    fn = fn or reference
    argument = case.x @ case.mixture.basis if name == "latent_score" else case.x
    with mpmath.workdps(digits):
        balls = fn(case.mixture, argument, case.t, case.schedule, precision=f"arb:{bits}")
        values = reference(case.mixture, argument, case.t, case.schedule, precision=f"mp:{digits}")
    for ball, value in zip(balls if isinstance(balls, tuple) else (balls,),
                           values if isinstance(values, tuple) else (values,)):
        require_contains(ball, value, "REF-arb", f"arb {name}", case=case)


# ----------------------------------------------------------------------------------------
# Gaussian-process sequences


def gamma_kinds() -> st.SearchStrategy[tuple[str, dict[str, float]]]:
    """(kind, parameters) for gamma_matrix: length scales 0.5..8, polynomial exponents 0.1..4."""
    return st.one_of(
        st.tuples(st.just("exponential"), st.builds(lambda l: {"length_scale": l}, st.floats(0.5, 8.0))),
        st.tuples(st.just("squared-exponential"), st.builds(lambda l: {"length_scale": l}, st.floats(0.5, 4.0))),
        st.tuples(st.just("polynomial"), st.builds(lambda nu: {"nu": nu}, st.floats(0.1, 4.0))))


@dataclass(frozen=True)
class GPCase:
    """GP problem: H frames in R^d, a kernel kind with parameters, Sigma from a seed, N sequences and a time."""

    frames: int
    dim: int
    kind: str
    parameters: tuple[tuple[str, float], ...]
    seed: int
    sequences: int
    schedule: str
    time: float

    @cached_property
    def gamma(self) -> np.ndarray:
        return gp.gamma_matrix(self.frames, self.kind, **dict(self.parameters))

    @cached_property
    def sigma_matrix(self) -> np.ndarray:
        return spd_matrix(self.dim, np.random.default_rng(self.seed), condition=20.0)

    @cached_property
    def x(self) -> np.ndarray:
        return gp.sample_gp(self.gamma, self.sigma_matrix, self.sequences, self.seed ^ 0x6A)

    def operator(self) -> np.ndarray:
        """Dense A_t = alpha^2 Gamma (x) Sigma + sigma^2 I (np.kron order), for checks on small sizes."""
        sched = get_schedule(self.schedule)
        alpha2 = float(sched.alpha(mixtures.FLOAT64, np.float64(self.time))) ** 2
        sigma2 = float(sched.sigma2(mixtures.FLOAT64, np.float64(self.time)))
        return alpha2 * np.kron(self.gamma, self.sigma_matrix) + sigma2 * np.eye(self.frames * self.dim)


@st.composite
def gp_cases(draw: st.DrawFn, max_frames: int = 8, max_dim: int = 3) -> GPCase:
    """GPCases over kernel kinds, H x d up to max_frames x max_dim, every schedule."""
    kind, parameters = draw(gamma_kinds())
    schedule, time = draw(schedule_times())
    return GPCase(draw(st.integers(1, max_frames)), draw(st.integers(1, max_dim)), kind,
                  tuple(sorted(parameters.items())), draw(seeds()), draw(st.integers(1, 3)), schedule, time)


def measure_gp1(case: GPCase, kronecker: ScoreFunction = gp.gp_score,
                dense: ScoreFunction = gp.gp_score_dense) -> Measurement:
    """GP1 (Fu et al. 2025; docs/claims.md#gp1): max over rows ||s_Kron - s_dense|| / ||s_dense|| vs 16 n u kappa(A_t).

    Tolerances (n = H d): both solvers are backward stable with backward error <= 8 n u ||A_t||, so they
    differ by <= 2 * 8 n u kappa(A_t) ||s||, and the residual is <= 8 n u (||A_t|| ||s|| + ||x||) per row.
    ``forms``: "residual": max over rows of ||A_t s + x|| over its allowance, with A_t built here from the
    schedule (case.operator), not by the reference's GP helpers, so a coefficient bug shared by both solvers shows.
    """
    fast = kronecker(case.x, case.time, case.gamma, case.sigma_matrix, case.schedule)
    slow = dense(case.x, case.time, case.gamma, case.sigma_matrix, case.schedule)
    a_t = case.operator()
    n = a_t.shape[0]
    norm_a = np.linalg.norm(a_t, 2)
    kappa = float(np.linalg.cond(a_t))
    size = np.linalg.norm(slow.reshape(slow.shape[0], -1), axis=1)
    gap = np.linalg.norm((fast - slow).reshape(slow.shape[0], -1), axis=1)
    relative = np.where(gap > 0, gap / np.maximum(size, formats.FLOAT64.smallest_normal), 0.0)
    rows = fast.reshape(fast.shape[0], -1)
    residual_norm = np.linalg.norm(rows @ a_t.T + case.x.reshape(rows.shape), axis=1)
    x_norm = np.linalg.norm(case.x.reshape(case.x.shape[0], -1), axis=1)
    fast_norm = np.linalg.norm(fast.reshape(fast.shape[0], -1), axis=1)
    allowed = 8 * n * U * (norm_a * fast_norm + x_norm)
    residual_ratio = np.where(residual_norm > 0, residual_norm / np.maximum(allowed, formats.FLOAT64.smallest_normal), 0.0)
    return Measurement(float(relative.max()), 16 * n * U * kappa, case,
                       forms={"residual": float(residual_ratio.max())})


def check_gp1(case: GPCase, kronecker: ScoreFunction = gp.gp_score, dense: ScoreFunction = gp.gp_score_dense) -> None:
    """GP1: the Kronecker-eigendecomposition score equals the dense solve, and A_t s = -x (measure_gp1)."""
    m = measure_gp1(case, kronecker, dense)
    require(m.ratio <= 1, "GP1", "Kronecker score != dense score", relative=m.observed, tolerance=m.limit, case=case)
    require(m.forms["residual"] <= 1, "GP1", "A_t s != -x", residual_ratio=m.forms["residual"], case=case)


def check_gp2_condition_number(case: GPCase, condition: Callable[..., Any] = gp.condition_number) -> None:
    """GP2's kappa_t formula equals lambda_max / lambda_min of the dense A_t (eigvalsh, error 8 n u ||A_t|| each)."""
    values = np.linalg.eigvalsh(case.operator())
    n = values.size
    slack = 8 * n * U * values[-1]
    expected = values[-1] / values[0]
    bound = expected * (slack / values[-1] + slack / values[0]) * 2 + 4 * U * expected
    actual = float(np.asarray(condition(case.time, case.gamma, case.sigma_matrix, case.schedule)))
    require(abs(actual - expected) <= bound, "GP2", "condition number formula != lambda_max / lambda_min of A_t",
            actual=actual, expected=float(expected), case=case)


@dataclass(frozen=True)
class BandingCase:
    """GP3: a kernel and a band half-width."""

    frames: int
    kind: str
    parameters: tuple[tuple[str, float], ...]
    width: int

    @cached_property
    def gamma(self) -> np.ndarray:
        return gp.gamma_matrix(self.frames, self.kind, **dict(self.parameters))


@st.composite
def banding_cases(draw: st.DrawFn, max_frames: int = 24) -> BandingCase:
    """Kernels and widths, including slowly decaying ones whose bands are indefinite."""
    kind, parameters = draw(gamma_kinds())
    frames = draw(st.integers(2, max_frames))
    return BandingCase(frames, kind, tuple(sorted(parameters.items())), draw(st.integers(0, min(frames - 1, 4))))


def check_gp3_banding(case: BandingCase, banded: Callable[..., np.ndarray] = gp.banded) -> None:
    """GP3: banded() returns exactly the truncation Gamma 1{|i-j| <= w} only when it is provably PD, and raises otherwise.

    "Provably PD" and "provably indefinite" use eigvalsh with its error bound (linalg.positive_definite_report);
    an undecided verdict must raise too (banded promises positive definiteness).
    """
    lags = np.abs(np.subtract.outer(np.arange(case.frames), np.arange(case.frames)))
    truncation = np.where(lags <= case.width, case.gamma, 0.0)
    report = positive_definite_report(truncation)
    try:
        out = banded(case.gamma, case.width)
    except NotPositiveDefiniteError:
        require(not report.positive_definite, "GP3", "banded() rejected a positive definite truncation",
                lambda_min=report.lambda_min, case=case)
        return
    require(np.array_equal(out, truncation), "GP3", "banded() does not return the band truncation", case=case)
    require(report.positive_definite, "GP3", "banded() returned a matrix that is not positive definite",
            lambda_min=report.lambda_min, status=report.status, case=case)


# ----------------------------------------------------------------------------------------
# Distances


PAIR_STRUCTURES = ("general", "diagonal", "block")


@dataclass(frozen=True)
class GaussianPairCase:
    """Two Gaussians N(m1, S1), N(m2, S2) in R^n.

    ``structure``: "general" SPD covariances, "diagonal", or "block" (a general 2 x 2 block, then a diagonal;
    n >= 2), for which KL and W2 split into a 2-D part and 1-D parts with independent closed forms.
    """

    dim: int
    seed: int
    structure: str = "general"
    condition: float = 10.0

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        m1, m2 = rng.standard_normal(self.dim), rng.standard_normal(self.dim)
        covariances = []
        for _ in range(2):
            if self.structure == "general":
                covariances.append(spd_matrix(self.dim, rng, self.condition))
                continue
            s = np.diag(np.exp(rng.uniform(0, math.log(self.condition), self.dim)))
            if self.structure == "block":
                s[:2, :2] = spd_matrix(2, rng, self.condition)
            covariances.append(s)
        return m1, covariances[0], m2, covariances[1]


@st.composite
def gaussian_pair_cases(draw: st.DrawFn, max_dim: int = 4) -> GaussianPairCase:
    dim = draw(st.integers(1, max_dim))
    structure = draw(st.sampled_from(PAIR_STRUCTURES if dim >= 2 else PAIR_STRUCTURES[:2]))
    return GaussianPairCase(dim, draw(seeds()), structure, draw(st.sampled_from([1.0, 10.0, 100.0])))


def _kl_1d(m1: float, v1: float, m2: float, v2: float) -> float:
    """KL(N(m1, v1) || N(m2, v2)) = log(s2/s1) + (v1 + (m1 - m2)^2)/(2 v2) - 1/2."""
    return 0.5 * math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5


def _trace_sqrt_2x2(m: np.ndarray) -> float:
    """tr sqrt(M) for a 2 x 2 SPD M: sqrt(tr M + 2 sqrt(det M)) (square the trace of the root; Levinger 1980)."""
    return math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))


def check_kl(case: GaussianPairCase, kl: ScoreFunction = distances.kl_gaussian) -> None:
    """KL: 0 at equality, >= 0, and additive over independent blocks: the sum of 1-D KLs for diagonal
    covariances; for "block" pairs the 2-D KL of the leading block (from ``kl`` in 2-D) plus 1-D KLs.

    float64 tolerance 64 n u kappa (1 + |terms|): tr(S2^-1 S1), the Mahalanobis term and the log-determinants
    are each computed with relative error ~ n u kappa and cancel against n.
    """
    m1, s1, m2, s2 = case.build()
    n = case.dim
    kappa = max(np.linalg.cond(s1), np.linalg.cond(s2))
    value = float(kl(m1, s1, m2, s2))
    same = float(kl(m1, s1, m1, s1))
    terms = n + abs(value) + abs(math.log(np.linalg.det(s1))) + abs(math.log(np.linalg.det(s2)))
    tolerance = 64 * n * U * kappa * (1 + terms)
    require(abs(same) <= tolerance, "KL", "KL(N, N) != 0", value=same, case=case)
    require(value >= -tolerance, "KL", "KL < 0", value=value, case=case)
    if case.structure == "general":
        return
    first = 2 if case.structure == "block" else 0
    expected = sum(_kl_1d(m1[i], s1[i, i], m2[i], s2[i, i]) for i in range(first, n))
    if first:
        expected += float(kl(m1[:2], s1[:2, :2], m2[:2], s2[:2, :2]))
    require(abs(value - expected) <= 2 * tolerance, "KL", "KL is not additive over independent blocks",
            value=value, expected=expected, case=case)


def check_w2(case: GaussianPairCase, w2: ScoreFunction = distances.w2_gaussian) -> None:
    """W2: ~0 at equality, symmetric, and closed forms without matrix roots where they exist.

    1-D parts: (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2. A 2 x 2 block (structure "block", or n = 2):
    tr((S2^1/2 S1 S2^1/2)^1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)). Tolerance on W2^2:
    64 n u kappa (tr S1 + tr S2 + ||m1 - m2||^2) (eigenvalues of L2^T S1 L2 to n u ||S1|| ||S2||, square
    roots amplified by sqrt(kappa)).
    """
    m1, s1, m2, s2 = case.build()
    n = case.dim
    kappa = max(np.linalg.cond(s1), np.linalg.cond(s2))
    squared = float(w2(m1, s1, m2, s2, squared=True))
    scale = np.trace(s1) + np.trace(s2) + float(np.sum((m1 - m2) ** 2))
    tolerance = 64 * n * U * kappa * scale
    same = float(w2(m1, s1, m1, s1, squared=True))
    require(abs(same) <= tolerance, "W2", "W2(N, N)^2 != 0", value=same, case=case)
    swapped = float(w2(m2, s2, m1, s1, squared=True))
    require(abs(squared - swapped) <= 2 * tolerance, "W2", "W2 is not symmetric", forward=squared,
            backward=swapped, case=case)
    block = 2 if case.structure == "block" or (case.structure == "general" and n == 2) else 0
    if case.structure == "general" and not block:
        return
    expected = float(np.sum((m1 - m2) ** 2)) + sum(
        (math.sqrt(s1[i, i]) - math.sqrt(s2[i, i])) ** 2 for i in range(block, n))
    if block:
        expected += float(np.trace(s1[:2, :2]) + np.trace(s2[:2, :2]) - 2 * _trace_sqrt_2x2(s1[:2, :2] @ s2[:2, :2]))
    require(abs(squared - expected) <= 2 * tolerance, "W2", "W2^2 != closed form", value=squared,
            expected=expected, case=case)


@dataclass(frozen=True)
class TVCase:
    """Two Gaussians with one shared covariance (TV = erf(delta / (2 sqrt 2)), delta the Mahalanobis distance).

    Wrapped as mixtures: p has one component; q is either the same law split into two identical
    components with weights (w, 1 - w) (still the same density), or a density callable (``callable_q``, 1-D).
    """

    dim: int
    separation: float
    scale: float
    seed: int
    split: float = 1.0
    callable_q: bool = False

    def build(self) -> tuple[mixtures.LatentMixture, Any, float, dict[str, Any]]:
        """(p, q, exact TV, extra keyword arguments for the TV function: derivative bounds and domain of a callable q)."""
        rng = np.random.default_rng(self.seed)
        covariance = spd_matrix(self.dim, rng, 4.0, self.scale**2) if self.dim > 1 else np.array([[self.scale**2]])
        direction = rng.standard_normal(self.dim)
        whitened = direction / math.sqrt(direction @ np.linalg.solve(covariance, direction))
        shift = self.separation * whitened
        centre = rng.standard_normal(self.dim)
        p = mixtures.gaussian_mixture([1.0], [centre], [covariance])
        exact = math.erf(self.separation / (2 * math.sqrt(2)))
        other = centre + shift
        if self.callable_q:
            s = self.scale

            def q_density(points: np.ndarray) -> np.ndarray:
                return np.exp(-((points[:, 0] - other[0]) / s) ** 2 / 2) / (s * math.sqrt(2 * math.pi))

            # sup |phi'| = e^-1/2 / (s^2 sqrt(2 pi)); sup |phi''''| = 3 / (s^5 sqrt(2 pi)) (He_4(0) = 3)
            bounds = (math.exp(-0.5) / (s * s * math.sqrt(2 * math.pi)), 3 / (s**5 * math.sqrt(2 * math.pi)))
            domain = [[other[0] - 12 * s], [other[0] + 12 * s]]
            return p, q_density, exact, {"derivative_bounds": bounds, "domain": domain}
        weights = [self.split, 1 - self.split] if self.split < 1 else [1.0]
        q = mixtures.gaussian_mixture(weights, [other] * len(weights), [covariance] * len(weights))
        return p, q, exact, {}


@st.composite
def tv_cases(draw: st.DrawFn, dim: int = 1, allow_callable: bool = True) -> TVCase:
    """Known-answer TV cases: separations from 0 to 6 Mahalanobis units, scales 0.1..10."""
    separation = draw(st.one_of(st.just(0.0), st.floats(0.01, 6.0)))
    return TVCase(dim, separation, draw(st.sampled_from([0.1, 1.0, 10.0])), draw(seeds()),
                  draw(st.sampled_from([1.0, 0.3])), allow_callable and dim == 1 and draw(st.booleans()))


TVFunction = Callable[..., distances.TotalVariation]


def check_tv_known_answer(case: TVCase, tv: TVFunction | None = None, tolerance: float | None = None) -> None:
    """TV between equal-covariance Gaussians equals erf(delta / (2 sqrt 2)) within the stated error bound.

    The stated bound must also be useful: <= the requested tolerance (the exact value itself is erf to
    ~1 ulp, 4 u added). Default tolerances: 1e-9 for two 1-D mixtures (exact interval masses), 1e-4 for a
    1-D callable (only global derivative bounds: first-order convergence where p ~ q), 1e-3 in 2-D
    (keeps an example near 0.1 s; the bound converges like the number of boxes^-1 along p = q).
    """
    tv = tv or (distances.tv_mixture_1d if case.dim == 1 else distances.tv_mixture_2d)
    tolerance = tolerance or (1e-3 if case.dim == 2 else 1e-4 if case.callable_q else 1e-9)
    p, q, exact, extra = case.build()
    result = tv(p, q, tolerance=tolerance, **extra)
    require(abs(result.value - exact) <= result.error_bound + 4 * U, "TV",
            "TV quadrature outside its stated error bound", value=result.value, exact=exact,
            error_bound=result.error_bound, case=case)
    require(result.error_bound <= tolerance, "TV", "TV error bound not reached", error_bound=result.error_bound,
            tolerance=tolerance, case=case)


# ----------------------------------------------------------------------------------------
# Schedules (times are passed as 1-element arrays: Mp/Arb.asarray return bare scalars for 0-d input)


def check_variance_preserving(schedule: str, t: float, alpha: ScoreFunction = schedules.alpha,
                              sigma2: ScoreFunction = schedules.sigma2, precision: str = "float64") -> None:
    """alpha_t^2 + sigma_t^2 = 1. float64: within 8 u (exp and expm1 within 1 ulp, one square, one sum of terms <= 1);
    arb: the ball of the sum contains 1."""
    a = alpha(np.array([t]), schedule, precision=precision)
    s2 = sigma2(np.array([t]), schedule, precision=precision)
    if isinstance(a, BallArray):
        with Arb(_bits(precision)).context():
            total = BallArray(a.balls * a.balls + s2.balls)
        require_narrow(total, "SCHED", case=(schedule, t))
        require(total.contains(np.ones(1)).all(), "SCHED", "alpha^2 + sigma^2 != 1 (ball misses 1)",
                schedule=schedule, t=t)
        return
    total = float(a[0]) ** 2 + float(s2[0])
    require(abs(total - 1.0) <= 8 * U, "SCHED", "alpha^2 + sigma^2 != 1", total=total, schedule=schedule, t=t)


def check_ou_time_doubling(t: float, alpha: ScoreFunction = schedules.alpha,
                           sigma2: ScoreFunction = schedules.sigma2) -> None:
    """OU-unit at t is OU-half at 2t (docs/conventions.md#diffusion-schedules): both give log alpha = -t exactly, so float64 values are identical."""
    for name, fn in (("alpha", alpha), ("sigma2", sigma2)):
        unit, half = float(fn(np.array([t]), "ou-unit")[0]), float(fn(np.array([2 * t]), "ou-half")[0])
        require(unit == half, "SCHED", f"OU-unit {name}(t) != OU-half {name}(2t)", unit=unit, half=half, t=t)


def check_vp_integral(t: float, alpha: ScoreFunction = schedules.alpha) -> None:
    """VP-linear: alpha_t = exp(-1/2 int_0^t beta(s) ds), beta(s) = b0 + s (b1 - b0), the integral by mpmath.quad at 30 digits.

    float64 tolerance 32 u relative: the exponent (<= 5.05) is a 3-operation polynomial, so its absolute error
    is a few u times 5, plus exp's ulp.
    """
    with mpmath.workdps(30):
        low, high = mpmath.mpf(1) / 10, mpmath.mpf(20)  # score_sde's b0 = 0.1, b1 = 20 as exact decimals
        integral = mpmath.quad(lambda u: low + u * (high - low), [0, mpmath.mpf(t)])
        expected = float(mpmath.exp(-integral / 2))
    actual = float(alpha(np.array([t]), "vp-linear")[0])
    require(abs(actual - expected) <= 32 * U * expected, "SCHED", "VP alpha != exp(-1/2 int beta)",
            actual=actual, expected=expected, t=t)


def check_ddpm_cumulative_product(step: int, alpha: ScoreFunction = schedules.alpha, bits: int = 256) -> None:
    """DDPM: alpha_n^2 = prod_{i <= n} (1 - beta_i). arb: the reference's ball overlaps a direct ball product.
    float64: alpha_n^2 within (n + 1)(|log alpha_bar| + 2) 2u relative of np.cumprod (both accumulate n roundings)."""
    balls = alpha(np.array([float(step)]), "ddpm", precision=f"arb:{bits}")
    xp = Arb(bits)
    with xp.context():
        product = np.prod(1 - xp.asarray(schedules.DDPM_BETAS[:step + 1]))
        squared = BallArray(balls.balls * balls.balls)
        require(squared.overlaps(BallArray(product)).all(), "SCHED", "alpha_n^2 != prod (1 - beta_i) (balls disjoint)",
                step=step)
    cumulative = float(np.cumprod(1 - schedules.DDPM_BETAS)[step])
    actual = float(alpha(np.array([float(step)]), "ddpm")[0]) ** 2
    tolerance = (step + 1) * (abs(math.log(cumulative)) + 2) * 2 * U * cumulative
    require(abs(actual - cumulative) <= tolerance, "SCHED", "alpha_n^2 != np.cumprod(1 - betas)[n]",
            actual=actual, expected=cumulative, step=step)


def check_prediction_conversions(schedule: str, t: float, seed: int,
                                 convert: ScoreFunction = schedules.convert_prediction, bits: int = 128) -> None:
    """Parameterisations (docs/conventions.md#parameterisations), in arb from exact x_0 and eps with x = alpha x_0 + sigma eps:
    eps -> x0 gives x_0, eps -> v gives alpha eps - sigma x_0, eps -> score gives -eps / sigma, and every
    conversion followed by its inverse returns the input (balls overlap)."""
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal(4), rng.standard_normal(4)
    xp = Arb(bits)
    generic = getattr(convert, "generic", None)
    if generic is None:
        raise InvalidArgumentError("convert", "a reference function with a generic (precision-independent) form",
                                   type(convert).__name__)
    with xp.context():
        times = xp.asarray(np.array([t]))
        sched = get_schedule(schedule)
        a, s = sched.alpha(xp, times), xp.sqrt(sched.sigma2(xp, times))
        x0_b, eps_b = xp.asarray(x0), xp.asarray(eps)
        x = a * x0_b + s * eps_b
        values = {"eps": eps_b, "x0": x0_b, "v": a * eps_b - s * x0_b, "score": -eps_b / s}
        for source, value in values.items():
            for target, expected in values.items():
                got = generic(xp, value, x, times, source, target, schedule)
                back = generic(xp, got, x, times, target, source, schedule)
                for label, left, right in ((f"{source} -> {target}", got, expected),
                                           (f"{source} -> {target} -> {source}", back, value)):
                    left_balls = BallArray(np.asarray(left, dtype=object))
                    require_narrow(left_balls, "SCHED", case=(schedule, t, seed, label))
                    ok = left_balls.overlaps(np.asarray(right, dtype=object))
                    require(ok.all(), "SCHED", f"prediction conversion {label} is wrong", schedule=schedule, t=t,
                            seed=seed)
